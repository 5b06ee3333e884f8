"""`tpsbench validate`: every measured point next to its expected estimate and its floor, the error of each, and
summary statistics by kind of point (layer, stage, training step); in-sample (the table as stored) and
leave-one-model-out (the table refitted without a model's points, then used to predict them)."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tpsbench.estimate.memory import step_memory
from tpsbench.estimate.points import estimate_point, step_workload
from tpsbench.estimate.table import EfficiencyTable
from tpsbench.options import Scope
from tpsbench.points import MeasuredPoint

MOE_LAYER = "moe layer"
KINDS = (Scope.STEP.value, MOE_LAYER, Scope.LAYER.value, Scope.STAGE.value, Scope.GEMM.value)


def kind_of(p: MeasuredPoint) -> str:
    """The row of the error summary: training step, MoE layer, other layer (attention, MLP, brackets), MoE stage
    or GEMM."""
    return MOE_LAYER if p.key.scope is Scope.LAYER and p.key.layer == "moe" else p.key.scope.value


@dataclass(frozen=True, slots=True)
class ValidatedPoint:
    point: MeasuredPoint
    expected_s: float
    floor_s: float
    expected_idle_fraction: float
    lomo_expected_s: float | None  # fitted without this point's model
    expected_peak_bytes: float | None  # training steps

    @property
    def measured_s(self) -> float:
        assert self.point.median_s is not None  # validate takes measured points only
        return self.point.median_s

    @property
    def error(self) -> float:
        return self.expected_s / self.measured_s - 1.0

    @property
    def floor_error(self) -> float:
        return self.floor_s / self.measured_s - 1.0

    @property
    def lomo_error(self) -> float | None:
        return None if self.lomo_expected_s is None else self.lomo_expected_s / self.measured_s - 1.0

    @property
    def memory_error(self) -> float | None:
        p = self.point.peak_memory_bytes
        return None if p is None or self.expected_peak_bytes is None else self.expected_peak_bytes / p - 1.0


@dataclass(frozen=True, slots=True)
class ErrorSummary:
    kind: str
    points: int
    median_abs: float | None
    max_abs: float | None
    floor_median_abs: float | None
    lomo_median_abs: float | None
    lomo_max_abs: float | None
    memory_max_abs: float | None


def _stats(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    vals = [abs(v) for v in values if v is not None]
    return (statistics.median(vals), max(vals)) if vals else (None, None)


def summarize(rows: Sequence[ValidatedPoint]) -> list[ErrorSummary]:
    out = []
    for kind in KINDS:
        sel = [r for r in rows if kind_of(r.point) == kind]
        if not sel:
            continue
        med, mx = _stats([r.error for r in sel])
        fmed, _ = _stats([r.floor_error for r in sel])
        lmed, lmx = _stats([r.lomo_error for r in sel])
        _, mem = _stats([r.memory_error for r in sel])
        out.append(ErrorSummary(kind, len(sel), med, mx, fmed, lmed, lmx, mem))
    return out


def validate(points: Sequence[MeasuredPoint], table: EfficiencyTable,
             refit: Callable[[Sequence[MeasuredPoint]], EfficiencyTable] | None = None) -> list[ValidatedPoint]:
    """``refit``: fits a table to points (leave-one-model-out runs it once per model, without that model)."""
    lomo: dict[str, EfficiencyTable] = {}
    if refit is not None:
        for model in sorted({p.key.model for p in points}):
            rest = [p for p in points if p.key.model != model]
            if rest:
                lomo[model] = refit(rest)
    rows = []
    for p in points:
        e = estimate_point(p, table)
        held_out = lomo.get(p.key.model)
        peak = None
        if p.key.scope is Scope.STEP:
            peak = step_memory(step_workload(p), compiled=p.key.compiled, overhead_fraction=0.0).peak_bytes
        rows.append(ValidatedPoint(p, e.seconds, e.floor_s, e.timeline.gpu_idle_fraction,
                                   None if held_out is None else estimate_point(p, held_out).seconds, peak))
    return rows
