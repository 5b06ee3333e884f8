"""A cross-GPU speedup decomposed into bounded shares of the first GPU's time: the share that scales with
bandwidth (``b``), with compute (``c``), and not at all (``n``: host, launches, syncs), each in [0, 1]:

    1 / speedup = b / bandwidth_ratio + c / compute_ratio + n,    b + c + n = 1,    b, c, n >= 0

One measured speedup is one equation for two free shares, so the data give a range for each share (the
segment where that line crosses the triangle of shares), not a point. What can be said from it:

* a speedup one pure explanation reproduces (within the tolerance) names it;
* a speedup below both ratios means at least ``n_min`` of the time does not scale with the GPU;
* a speedup that no mix reaches (above both ratios, or below 1x on a faster GPU) is outside the model: GPU-
  specific behaviour (a faster fp32 CUDA-core rate, a different kernel path, a larger L2) must be at work;
* when the two GPUs have equal compute (H100 -> H200), compute-bound and non-scaling time both predict 1x and
  cannot be told apart: the decomposition says so, and which measurement would separate them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tpsbench.results.typed import JsonObject

TOLERANCE = 0.10  # a speedup within 10% of a ratio matches it (as tpsbench.analysis.verdict does)


@dataclass(frozen=True, slots=True)
class ShareRange:
    low: float
    high: float

    def text(self) -> str:
        lo, hi = round(100 * self.low) + 0, round(100 * self.high) + 0  # + 0: no "-0"
        return f"{lo}%" if lo == hi else f"{lo}-{hi}%"


@dataclass(frozen=True, slots=True)
class Decomposition:
    speedup: float
    compute_ratio: float
    bandwidth_ratio: float
    bandwidth: ShareRange | None  # None: no mix of the three reaches the speedup
    compute: ShareRange | None
    not_scaling: ShareRange | None
    single: str | None  # the one pure explanation the speedup matches, if exactly one does
    indistinguishable: tuple[str, ...]  # explanations these two GPUs cannot tell apart (equal ratios)
    text: str

    @property
    def feasible(self) -> bool:
        return self.bandwidth is not None

    def to_dict(self) -> JsonObject:
        def rng(r: ShareRange | None) -> list[float] | None:
            return None if r is None else [r.low, r.high]
        return {"bandwidth_share": rng(self.bandwidth), "compute_share": rng(self.compute),
                "not_scaling_share": rng(self.not_scaling), "single_explanation": self.single,
                "indistinguishable": list(self.indistinguishable), "text": self.text}


def _segment(inv: float, ib: float, ic: float) -> list[tuple[float, float, float]]:
    """Points (b, c, n) of the triangle's edges on the line b*ib + c*ic + n = inv, b + c + n = 1."""
    pts: list[tuple[float, float, float]] = []

    def add(b: float, c: float) -> None:
        n = 1.0 - b - c
        eps = 1e-9
        if min(b, c, n) >= -eps and max(b, c, n) <= 1 + eps:
            pts.append((min(max(b, 0.0), 1.0), min(max(c, 0.0), 1.0), min(max(n, 0.0), 1.0)))

    # edge c = 0: b*ib + (1-b) = inv
    if abs(ib - 1) > 1e-12:
        add((inv - 1) / (ib - 1), 0.0)
    # edge b = 0: c*ic + (1-c) = inv
    if abs(ic - 1) > 1e-12:
        add(0.0, (inv - 1) / (ic - 1))
    # edge n = 0: b*ib + (1-b)*ic = inv
    if abs(ib - ic) > 1e-12:
        b = (inv - ic) / (ib - ic)
        add(b, 1.0 - b)
    return pts


def decompose(speedup: float, compute_ratio: float, bandwidth_ratio: float) -> Decomposition:
    """Bounded shares of a speedup between two GPUs (ratios of the second GPU's ceilings over the first's)."""
    tol = math.log1p(TOLERANCE)
    ratios = {"bandwidth": bandwidth_ratio, "compute": compute_ratio, "not scaling (host, launches, syncs)": 1.0}
    near = {name: abs(math.log(speedup / r)) <= tol for name, r in ratios.items()}
    # explanations that predict the same speedup on these GPUs cannot be told apart by it
    names = list(ratios)
    alike = {a for a in names for b in names if a != b and abs(math.log(ratios[a] / ratios[b])) <= tol}
    matching = [n for n, ok in near.items() if ok]
    single = matching[0] if len(matching) == 1 else None
    pts = _segment(1.0 / speedup, 1.0 / bandwidth_ratio, 1.0 / compute_ratio)
    if not pts:
        hi = max(ratios.values())
        lo = min(ratios.values())
        where = "above every ratio" if speedup > hi else "below every ratio"
        text = (f"speedup {speedup:.2f}x is {where} (bandwidth {bandwidth_ratio:.2f}x, compute {compute_ratio:.2f}x, "
                f"not scaling 1x, range {lo:.2f}-{hi:.2f}x): no mix of bandwidth-, compute- and non-scaling time "
                "gives it; a GPU-specific difference is at work (a different kernel path, fp32 CUDA-core work, L2 "
                "size), or the two measurements are not of the same workload")
        return Decomposition(speedup, compute_ratio, bandwidth_ratio, None, None, None, single,
                             tuple(sorted(alike & set(matching))), text)
    b = ShareRange(min(p[0] for p in pts), max(p[0] for p in pts))
    c = ShareRange(min(p[1] for p in pts), max(p[1] for p in pts))
    n = ShareRange(min(p[2] for p in pts), max(p[2] for p in pts))
    parts = [f"of the first GPU's time: bandwidth-bound {b.text()}, compute-bound {c.text()}, not scaling "
             f"{n.text()}"]
    if speedup < min(bandwidth_ratio, compute_ratio) * (1 - 1e-9) and n.low > 0.005:
        parts.append(f"the speedup is below both the bandwidth and the compute ratio: at least {100 * n.low:.0f}% "
                     "of the step does not scale with the GPU (host, launches, syncs) or runs slower on the second")
    indistinct = tuple(sorted(alike))
    if indistinct:
        same = ratios[indistinct[0]]
        parts.append(f"{' and '.join(indistinct)} predict the same speedup on these GPUs ({same:.2f}x): this pair "
                     "cannot tell their shares apart; " + _separating_measurement(indistinct))
    if single is not None and single not in indistinct:
        parts.append(f"the simplest reading: {single} ({ratios[single]:.2f}x)")
    return Decomposition(speedup, compute_ratio, bandwidth_ratio, b, c, n, single, indistinct, "; ".join(parts))


def _separating_measurement(names: tuple[str, ...]) -> str:
    if any(n.startswith("not scaling") for n in names):
        return ("the profiler's GPU idle time on each GPU (`run` records it unless --no-gpu-time) measures the "
                "non-scaling share directly, or a GPU pair with a different compute ratio separates them")
    return "a GPU pair whose bandwidth and compute ratios differ separates them"
