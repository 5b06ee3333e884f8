"""What one measured point hands to the sweep: its raw record (samples and facts) and the counters read in its
own window. Adding a metric: a field of the results schema (tpsbench/results/schema.py), the computation that
fills it where the point is measured, and its test (docs/extending.md)."""

from __future__ import annotations

from dataclasses import dataclass

from tpsbench.bench.timing import Timed
from tpsbench.counters.summary import WindowSummary
from tpsbench.results.schema import Counters, Derived, Raw


@dataclass(frozen=True, slots=True)
class Measurement:
    raw: Raw
    counters: Counters | None  # null on the CPU's counter-less runs or with counters off


def counters_of(timed: Timed) -> Counters | None:
    """The counters of a timing's window: read back to back after the timed repetitions (bench/timing.py)."""
    if not isinstance(timed.window, WindowSummary):
        return None
    return timed.window.record(timed.window_info)


def rates(tokens: int, median_s: float, matmul_flops: float, nbytes: float) -> Derived:
    """The rates every point reports, from its median time and the cost model's counts of what it timed; a layer
    and a training step add their own fields to these."""
    return Derived(tokens_per_s=tokens / median_s, matmul_flops=matmul_flops, bytes=nbytes,
                   achieved_tflops=matmul_flops / median_s / 1e12, achieved_gbs=nbytes / median_s / 1e9,
                   intensity=matmul_flops / nbytes if nbytes else None)

