"""Verdicts: which limit a workload runs into, from the evidence tpsbench measured. Pure arithmetic.

On one GPU (``workload_verdict``) the evidence is three shares of the measured time:
- GPU idle: wall time minus the union of kernel time, from the profiler (``raw.gpu_time``);
- DRAM bandwidth used: GPM's DRAM-bandwidth utilisation where the GPU has it, otherwise the cost model's
  bytes / measured time (a lower bound: the cost model counts the minimum traffic of fused chains);
- tensor throughput used: the exact matmul FLOP count (checked against FlopCounterMode) / measured time,
  as a fraction of the matmul ceiling.
The two utilisations are divided by the busy share (1 - idle), so they describe the time the GPU worked.
A workload is bound by each limit it reaches; exactly one reached limit gives the verdict, none or
several give "inconclusive", with the numbers in one line either way ("DRAM>=" marks the cost-model
lower bound where no counter was read).

Across two GPUs (``speedup_verdict``) the evidence is the measured speedup of the same workload next to
the GPUs' compute ratio (bound by compute), bandwidth ratio (bound by bandwidth) and 1x (bound by the host:
a faster GPU waits the same). The design notes that H100 -> H200 (same compute, ~1.43x bandwidth) is the
cleanest such experiment; a pair whose ratios are close cannot separate the explanations, and says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

from tpsbench.analysis.shares import decompose
from tpsbench.report.format import pct
from tpsbench.results.typed import JsonObject

# GPU idle for >= 30% of the time: host/launch overhead is a first-order cost (on a GPU-bound training
# step the profiler shows a few percent of gaps).
IDLE_OVERHEAD = 0.30
# >= 60% of a *datasheet* ceiling while busy counts as "at" that ceiling: what the hardware reaches is 78-90% of
# the datasheet (calibrate on the H100), so 60% is 67-77% of it (docs/analyses.md).
NEAR_CEILING = 0.60
# Two speedups within 15% of each other are the same answer: run-to-run and clock differences between
# machines alone reach several percent.
SPEEDUP_TOLERANCE = 0.15


class Verdict(StrEnum):
    BANDWIDTH = "bandwidth-bound"
    COMPUTE = "compute-bound"
    OVERHEAD = "overhead-bound"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True, slots=True)
class Evidence:
    """Fractions in [0, 1] (None: not measured). ``dram_util`` from GPM counters; ``model_bw_util`` from
    cost-model bytes; ``tensor_util`` from exact matmul FLOPs; all against datasheet ceilings."""

    idle_share: float | None = None
    dram_util: float | None = None
    model_bw_util: float | None = None
    tensor_util: float | None = None
    roofline_fraction: float | None = None  # predicted floor / measured time
    predicted_memory_share: float | None = None  # share of the floor in memory-bound ops


@dataclass(frozen=True, slots=True)
class Finding:
    verdict: Verdict
    evidence: str  # one line, the numbers behind the verdict
    values: dict[str, float | None] = field(default_factory=dict)

    def to_dict(self) -> JsonObject:
        return {"verdict": str(self.verdict), "evidence": self.evidence, "values": self.values}


def workload_verdict(ev: Evidence) -> Finding:
    """The limit one workload on one GPU runs into (see the module docstring for the rules)."""
    busy = 1.0 - ev.idle_share if ev.idle_share is not None else 1.0
    bw_source = "DRAM" if ev.dram_util is not None else "DRAM>="  # cost-model bytes: a lower bound
    bw = ev.dram_util if ev.dram_util is not None else ev.model_bw_util
    bw_busy = bw / busy if bw is not None and busy > 0 else None
    tc_busy = ev.tensor_util / busy if ev.tensor_util is not None and busy > 0 else None
    values = {"idle_share": ev.idle_share, "bandwidth_util_busy": bw_busy, "tensor_util_busy": tc_busy,
              "roofline_fraction": ev.roofline_fraction, "predicted_memory_share": ev.predicted_memory_share}
    line = (f"idle {pct(ev.idle_share)}; busy: {bw_source}{pct(bw_busy)} tensor {pct(tc_busy)} of peak; "
            f"{pct(ev.roofline_fraction)} of roofline")
    if ev.idle_share is None and bw_busy is None and tc_busy is None:
        return Finding(Verdict.INCONCLUSIVE, "no evidence: no profiler idle time, no counters, no GPU profile", values)
    reached = []
    if ev.idle_share is not None and ev.idle_share >= IDLE_OVERHEAD:
        reached.append(Verdict.OVERHEAD)
    if bw_busy is not None and bw_busy >= NEAR_CEILING:
        reached.append(Verdict.BANDWIDTH)
    if tc_busy is not None and tc_busy >= NEAR_CEILING:
        reached.append(Verdict.COMPUTE)
    if len(reached) == 1:
        return Finding(reached[0], line, values)
    if reached:
        return Finding(Verdict.INCONCLUSIVE, f"mixed ({', '.join(reached)}): {line}", values)
    why = "idle not measured: overhead or slow kernels" if ev.idle_share is None else "kernels below both ceilings"
    return Finding(Verdict.INCONCLUSIVE, f"no limit reached ({why}): {line}", values)


def speedup_verdict(speedup: float, compute_ratio: float, bandwidth_ratio: float,
                    predicted: float | None = None, *, expected: float | None = None,
                    ratios: str = "datasheet") -> Finding:
    """Which ratio the measured speedup of one workload between two GPUs matches. ``ratios`` names where the
    compute and bandwidth ratios come from (the datasheets, or the ceilings `tpsbench calibrate` measured);
    ``predicted`` and ``expected`` are the roofline floor's and the expected-time model's speedups, shown."""
    candidates = {Verdict.COMPUTE: compute_ratio, Verdict.BANDWIDTH: bandwidth_ratio, Verdict.OVERHEAD: 1.0}
    tol = math.log1p(SPEEDUP_TOLERANCE)
    dist = {v: abs(math.log(speedup / r)) for v, r in candidates.items()}
    matches = [v for v, d in dist.items() if d <= tol]
    shares = decompose(speedup, compute_ratio, bandwidth_ratio)
    values = {"speedup": speedup, "compute_ratio": compute_ratio, "bandwidth_ratio": bandwidth_ratio,
              "predicted_speedup": predicted, "expected_speedup": expected, "ratios": ratios,
              "shares": shares.to_dict()}
    which = "" if ratios == "datasheet" else f" ({ratios})"
    line = (f"speedup {speedup:.2f}x vs compute {compute_ratio:.2f}x, bandwidth {bandwidth_ratio:.2f}x{which}, "
            f"host 1x" + ("" if predicted is None else f", roofline {predicted:.2f}x")
            + ("" if expected is None else f", expected {expected:.2f}x") + f"; {shares.text}")
    if len(matches) == 1:
        return Finding(matches[0], line, values)
    if matches:
        return Finding(Verdict.INCONCLUSIVE, f"{' and '.join(matches)} fit alike (these GPUs cannot separate them): "
                       + line, values)
    return Finding(Verdict.INCONCLUSIVE, "between the explanations (mixed): " + line, values)
