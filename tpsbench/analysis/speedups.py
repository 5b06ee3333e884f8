"""Speedups of one workload from one GPU to another, next to what each explanation predicts.

For every point measured on two GPUs: the measured speedup (first GPU's median time / second's) next to
- the compute ratio and the bandwidth ratio of the two datasheets;
- the same two ratios of the ceilings `tpsbench calibrate` measured on each GPU, where both GPUs have a
  calibration file (the datasheet H100 -> H200 bandwidth ratio is 4,800 / 3,350 = 1.43; what the hardware
  reaches can differ, and it is the reached rate a bandwidth-bound kernel scales with);
- the roofline floor's predicted speedup (the ratio of the floors recorded in the two files);
- the expected-time model's predicted speedup (tpsbench.estimate: each GPU's efficiency table, or one
  transferred from a GPU of the same architecture, which its basis says);
and a verdict with the bounded-share decomposition (tpsbench.analysis.shares), from the calibrated ratios
where both exist, else the datasheet's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

from tpsbench.analysis.verdict import Finding, speedup_verdict
from tpsbench.costmodel import get_policy
from tpsbench.points import MeasuredPoint, PointKey
from tpsbench.results.calibration import load_calibration


@dataclass(frozen=True, slots=True)
class MeasuredCeilings:
    """One GPU's ceilings as `tpsbench calibrate` measured them."""

    gpu: str  # profile name
    matmul_tflops: float | None  # best matmul of the runs' matmul dtype
    copy_gbs: float | None  # best large-array copy (bytes read + written)
    source: str  # the calibration file


@dataclass(frozen=True, slots=True)
class SpeedupRow:
    label: str
    from_gpu: str
    to_gpu: str
    speedup: float
    compute_ratio: float  # datasheets
    bandwidth_ratio: float
    predicted: float | None  # roofline floors
    finding: Finding
    calibrated_compute_ratio: float | None = None  # measured ceilings (both GPUs calibrated)
    calibrated_bandwidth_ratio: float | None = None
    expected: float | None = None  # the expected-time model's speedup
    ratios_used: str = "datasheet"  # which pair of ratios the verdict and the shares use


def load_ceilings(paths: Iterable[str | Path], matmul_math: str) -> dict[str, MeasuredCeilings]:
    """The measured ceilings per GPU profile from calibration files (a later file of the same GPU wins)."""
    out: dict[str, MeasuredCeilings] = {}
    for path in paths:
        doc = load_calibration(path)
        best = doc.best
        mm = best.bf16_tflops if matmul_math != "fp32" else best.fp32_tflops
        out[doc.profile] = MeasuredCeilings(doc.profile, mm, best.copy_gbs, str(path))
    return out


def _ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num is not None and den else None


@dataclass(frozen=True, slots=True)
class GpuInfo:
    """A GPU of the compared runs, with its datasheet ceilings (None: the CPU, or a profile no longer known)."""

    name: str
    display_name: str
    matmul_tflops: float | None  # datasheet, for the runs' dtype policy
    bandwidth_gbs: float | None


def _ok(e: MeasuredPoint | None) -> bool:
    return e is not None and e.ok


def speedup_rows(table: dict[PointKey, dict[str, MeasuredPoint]], gpus: list[GpuInfo],
                 measured: dict[str, MeasuredCeilings] | None = None,
                 expected_s: Callable[[MeasuredPoint], float | None] | None = None) -> list[SpeedupRow]:
    """A row per point measured on two GPUs with known datasheets, for every pair of them in the given order.
    ``expected_s`` gives the expected-time model's seconds of an entry on its own GPU (None: not estimable)."""
    measured = measured or {}
    rows = []
    known = [g for g in gpus if g.matmul_tflops and g.bandwidth_gbs]
    for a, b in combinations(known, 2):
        assert a.matmul_tflops and b.matmul_tflops and a.bandwidth_gbs and b.bandwidth_gbs
        ma, mb = measured.get(a.name), measured.get(b.name)
        cal_compute = _ratio(mb.matmul_tflops, ma.matmul_tflops) if ma and mb else None
        cal_bandwidth = _ratio(mb.copy_gbs, ma.copy_gbs) if ma and mb else None
        for per_gpu in table.values():
            ea, eb = per_gpu.get(a.name), per_gpu.get(b.name)
            if not (_ok(ea) and _ok(eb)):
                continue
            assert ea is not None and eb is not None and ea.median_s and eb.median_s
            speedup = ea.median_s / eb.median_s
            compute, bandwidth = b.matmul_tflops / a.matmul_tflops, b.bandwidth_gbs / a.bandwidth_gbs
            predicted = _ratio(ea.predicted_s, eb.predicted_s)
            expected = _ratio(expected_s(ea), expected_s(eb)) if expected_s is not None else None
            if cal_compute is not None and cal_bandwidth is not None:
                use_c, use_b, ratios = cal_compute, cal_bandwidth, "calibrated"
            else:
                use_c, use_b, ratios = compute, bandwidth, "datasheet"
            finding = speedup_verdict(speedup, use_c, use_b, predicted, expected=expected, ratios=ratios)
            rows.append(SpeedupRow(ea.label, a.name, b.name, speedup, compute, bandwidth, predicted, finding,
                                   cal_compute, cal_bandwidth, expected, ratios))
    return rows


def calibration_notes(measured: dict[str, MeasuredCeilings], gpus: list[str]) -> list[str]:
    """What compare says of the calibration files: which GPU each one calibrates, and those no run used."""
    notes = []
    for gpu, m in measured.items():
        if gpu not in gpus:
            notes.append(f"{m.source} calibrates {gpu}, which none of the results ran on: not used")
    missing = [g for g in gpus if g != "cpu" and g not in measured]
    if measured and missing:
        notes.append("no calibration for " + ", ".join(missing) + ": their speedups use the datasheet ratios")
    return notes


def matmul_math_of(entries: list[MeasuredPoint]) -> str:
    """The matmul dtype of the runs (the first entry's policy, as compare's GPU table uses)."""
    return get_policy(entries[0].policy if entries else "amp_bf16").matmul_math


__all__ = ["GpuInfo", "MeasuredCeilings", "SpeedupRow", "calibration_notes",
           "load_ceilings", "matmul_math_of", "speedup_rows"]
