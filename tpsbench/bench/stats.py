"""Summary statistics of repeated timings (the results schema's :class:`Stats`). Pure Python, exact, unit-tested
on hand-fed samples.

Quartiles use linear interpolation between order statistics (numpy's default, Hyndman & Fan type 7).
Outliers are flagged, never dropped, by the modified z-score of Iglewicz and Hoaglin (1993):
``M_i = 0.6745 * (x_i - median) / MAD``, outlier when ``|M_i| > 3.5``. When MAD is 0 (more than half
the samples identical) no sample is flagged: the rule cannot judge spread it cannot see.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from tpsbench.results.schema import Stats

MODIFIED_Z_THRESHOLD = 3.5
MAD_TO_Z = 0.6745


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """Type-7 quantile of already sorted values."""
    if not sorted_values:
        raise ValueError("quantile of no samples")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q={q} outside [0, 1]")
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def median(values: Sequence[float]) -> float:
    return quantile(sorted(values), 0.5)


def summarize(samples: Sequence[float]) -> Stats:
    if not samples:
        raise ValueError("no samples to summarize")
    s = sorted(samples)
    med = quantile(s, 0.5)
    mad = median([abs(x - med) for x in samples])
    mean = sum(samples) / len(samples)
    stdev = (math.sqrt(sum((x - mean) ** 2 for x in samples) / (len(samples) - 1))
             if len(samples) > 1 else None)
    outliers: list[int] = []
    if mad > 0:
        outliers = [i for i, x in enumerate(samples) if abs(MAD_TO_Z * (x - med) / mad) > MODIFIED_Z_THRESHOLD]
    q1, q3 = quantile(s, 0.25), quantile(s, 0.75)
    return Stats(n=len(samples), median=med, q1=q1, q3=q3, min=s[0], max=s[-1], mean=mean, stdev=stdev, mad=mad,
                 outliers=outliers, iqr=q3 - q1)
