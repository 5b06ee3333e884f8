"""`tpsbench compare`: results of several runs side by side, across GPUs, models and implementations.

Four views, all computed from the results files (nothing is estimated that was not measured or predicted):
- throughput: tokens/s of every point on every GPU, with the share of the roofline floor reached;
- MoE/dense ratios on each GPU: whole training steps of a dense model over an MoE model at the same
  microbatch (measured and roofline-predicted), and, within one MoE run, the MoE layer over its dense
  bracket of equal active width (time, and DRAM GB/s where counters exist);
- speedups from one GPU to another next to the compute ratio, bandwidth ratio and roofline prediction,
  with a verdict (see ``verdict.speedup_verdict``);
- a verdict per workload on each GPU (see ``verdict.workload_verdict``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tpsbench.analysis.consistency import INCONSISTENT
from tpsbench.analysis.measured_gap import MeasuredGap, measured_pairs
from tpsbench.analysis.points import evidence, profile_named, slots_dict
from tpsbench.analysis.speedups import (
    GpuInfo,
    SpeedupRow,
    calibration_notes,
    load_ceilings,
    matmul_math_of,
    speedup_rows,
)
from tpsbench.analysis.verdict import Finding, workload_verdict
from tpsbench.costmodel import get_policy
from tpsbench.estimate.expected import Expected
from tpsbench.estimate.points import estimate_point
from tpsbench.estimate.select import table_for
from tpsbench.estimate.table import EfficiencyError
from tpsbench.impls import BRACKETS, baseline, moe_impl_names
from tpsbench.options import LayerMode, PointKind
from tpsbench.points import NO_IMPL, MeasuredPoint, PointKey
from tpsbench.profiles import GPUProfile
from tpsbench.results.typed import JsonObject
from tpsbench.stacks import DEFAULT_STACK, is_modelled, stack_named


@dataclass(frozen=True, slots=True)
class ThroughputRow:
    label: str
    key: PointKey
    per_gpu: dict[str, MeasuredPoint]  # gpu -> entry


@dataclass(frozen=True, slots=True)
class StackRow:
    """The same training step of the same model on the same GPU, measured with tpsbench's and another stack."""

    gpu: str
    label: str  # the tpsbench point
    stack: str
    tokens_per_s: float  # tpsbench's
    stack_tokens_per_s: float

    @property
    def ratio(self) -> float:
        """tpsbench tokens/s over the other stack's (> 1: the other stack is slower)."""
        return self.tokens_per_s / self.stack_tokens_per_s


@dataclass(frozen=True, slots=True)
class BaselineRow:
    """One MoE implementation against the registry's baseline implementation on the same point and GPU."""

    gpu: str
    label: str  # the implementation's point
    impl: str
    baseline_impl: str
    median_s: float
    baseline_median_s: float

    @property
    def speedup(self) -> float:
        """Baseline time / this implementation's time (> 1: faster than the baseline)."""
        return self.baseline_median_s / self.median_s


@dataclass(frozen=True, slots=True)
class RatioRow:
    gpu: str
    dense: str  # what runs dense: a dense model, or a bracket of the MoE model
    moe: str
    impl: str
    tokens: int
    compiled: bool
    measured: float | None  # MoE time / dense time (> 1: the MoE is slower)
    predicted: float | None
    moe_dram_gbs: float | None = None
    dense_dram_gbs: float | None = None
    note: str = ""


@dataclass(frozen=True, slots=True)
class ExpectedRow:
    """A measured training step next to the expected-time model's estimate of it (tpsbench.estimate)."""

    gpu: str
    label: str
    measured_tokens_per_s: float
    expected_tokens_per_s: float | None  # None: no efficiency table for this GPU (``basis`` says why)
    floor_tokens_per_s: float | None
    basis: str

    @property
    def error(self) -> float | None:
        e = self.expected_tokens_per_s
        return None if e is None else self.measured_tokens_per_s / e - 1.0  # time error: expected / measured - 1


@dataclass(frozen=True, slots=True)
class VerdictRow:
    gpu: str
    label: str
    entry: MeasuredPoint
    finding: Finding


@dataclass(frozen=True, slots=True)
class ScalingRow:
    """A training step on several GPUs (run --dist) next to the same step on one: tokens/s per GPU over one's."""

    gpu: str
    label: str
    per_gpu_tokens_per_s: float
    single_tokens_per_s: float

    @property
    def efficiency(self) -> float:
        return self.per_gpu_tokens_per_s / self.single_tokens_per_s


@dataclass(slots=True)
class Comparison:
    gpus: list[GpuInfo]
    throughput: list[ThroughputRow] = field(default_factory=list)
    ratios: list[RatioRow] = field(default_factory=list)
    speedups: list[SpeedupRow] = field(default_factory=list)
    verdicts: list[VerdictRow] = field(default_factory=list)
    baseline_speedups: list[BaselineRow] = field(default_factory=list)
    stacks: list[StackRow] = field(default_factory=list)
    expected: list[ExpectedRow] = field(default_factory=list)
    scaling: list[ScalingRow] = field(default_factory=list)
    measured_gaps: list[MeasuredGap] = field(default_factory=list)  # dense/MoE step gaps against the expected model
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> JsonObject:
        def entry(e: MeasuredPoint) -> JsonObject:
            return {"tokens_per_s": e.tokens_per_s, "median_s": e.median_s, "status": e.status,
                    "roofline_fraction": e.roofline_fraction, "dram_gbs": e.dram_gbs, "idle_share": e.idle_share,
                    "predicted_tokens_per_s": e.predicted_tokens_per_s, "source": e.source}

        return {
            "gpus": [slots_dict(g) for g in self.gpus],
            "throughput": [{"point": r.label, "per_gpu": {g: entry(e) for g, e in r.per_gpu.items()}}
                           for r in self.throughput],
            "moe_dense_ratios": [slots_dict(r) for r in self.ratios],
            "speedups": [{**{k: v for k, v in slots_dict(r).items() if k != "finding"}, **r.finding.to_dict()}
                         for r in self.speedups],
            "verdicts": [{"gpu": r.gpu, "point": r.label, **r.finding.to_dict()} for r in self.verdicts],
            "baseline_speedups": [{**slots_dict(r), "speedup": r.speedup} for r in self.baseline_speedups],
            **({"stacks": [{**slots_dict(r), "ratio": r.ratio} for r in self.stacks]} if self.stacks else {}),
            "expected": [{**slots_dict(r), "error": r.error} for r in self.expected],
            **({"scaling": [{**slots_dict(r), "efficiency": r.efficiency} for r in self.scaling]}
               if self.scaling else {}),
            "measured_gaps": [g.to_dict() for g in self.measured_gaps],
            "notes": self.notes,
        }


IN_SAMPLE = "in-sample"  # the efficiency table was fitted to the point's file: its error is not a prediction's


def _expected(e: MeasuredPoint) -> tuple[Expected | None, str]:
    """The expected-time model's estimate of an entry on its own GPU, and the table's basis (None and the reason
    when the GPU has no table, or the point is of a kind the model does not estimate)."""
    profile = profile_named(e.gpu)
    if profile is None or not is_modelled(e.key.stack) or e.key.dist is not None:
        return None, "not estimated (CPU, another stack, or several GPUs)"
    try:
        table = table_for(profile)
        in_sample = f", {IN_SAMPLE}" if table.fitted_to(e.source) else ""
        return estimate_point(e, table, profile), table.basis + in_sample
    except EfficiencyError as exc:
        return None, str(exc)
    except (KeyError, ValueError) as exc:  # a layer or implementation this version cannot estimate
        return None, f"not estimated ({exc})"


def _table_basis(profile: GPUProfile) -> str:
    try:
        table = table_for(profile)
    except EfficiencyError as exc:
        return str(exc)
    return f"{table.gpu}'s table, {table.basis}"


def _expected_row(e: MeasuredPoint, seconds: float | None, basis: str) -> ExpectedRow:
    """A measured training step next to the expected-time model's estimate of it (no table: its reason)."""
    assert e.tokens_per_s is not None
    expected = None if seconds is None else e.step_tokens / seconds
    return ExpectedRow(e.gpu, e.label, e.tokens_per_s, expected, e.predicted_tokens_per_s, basis)


def _gpu_info(gpu: str, policy: str) -> GpuInfo:
    entry_profile = profile_named(gpu)
    if entry_profile is None:
        return GpuInfo(gpu, "CPU" if gpu == "cpu" else gpu, None, None)
    peak = entry_profile.matmul_peak(get_policy(policy).matmul_math)
    return GpuInfo(gpu, entry_profile.display_name, peak.value, entry_profile.mem_bandwidth_gbs.value)


def _ok(e: MeasuredPoint | None) -> bool:
    return e is not None and e.ok


def _ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num is not None and den else None


def compare(entries: list[MeasuredPoint], *, all_points: bool = False,
            calibrations: Iterable[str | Path] = ()) -> Comparison:
    """Everything `tpsbench compare` shows, as data. Later files win when two hold the same point.
    ``calibrations``: `tpsbench calibrate` files of the GPUs, for the speedups' calibrated ratios."""
    gpus: list[str] = []
    for e in entries:
        if e.gpu not in gpus:
            gpus.append(e.gpu)
    policy = entries[0].policy if entries else "amp_bf16"
    out = Comparison(gpus=[_gpu_info(g, policy) for g in gpus])
    if len({e.policy for e in entries}) > 1:
        out.notes.append("runs use different dtype policies: " + ", ".join(sorted({e.policy for e in entries})))
    table: dict[PointKey, dict[str, MeasuredPoint]] = {}
    for e in entries:
        if all_points or e.is_headline:
            table.setdefault(e.key, {})[e.gpu] = e
    labels = {e.key: e.label for e in entries}
    out.throughput = [ThroughputRow(labels[k], k, v) for k, v in table.items()]
    out.ratios = _e2e_ratios(table, gpus) + _layer_ratios(entries)
    measured = load_ceilings(calibrations, matmul_math_of(entries))
    out.notes += calibration_notes(measured, gpus)
    estimates: dict[tuple[str, str, PointKey], tuple[Expected | None, str]] = {}  # each entry estimated once

    def estimate(e: MeasuredPoint) -> tuple[Expected | None, str]:
        at = (e.source, e.gpu, e.key)
        if at not in estimates:
            estimates[at] = _expected(e)
        return estimates[at]

    def expected(e: MeasuredPoint) -> tuple[float | None, str]:
        est, basis = estimate(e)
        return None if est is None else est.seconds, basis

    out.speedups = speedup_rows(table, out.gpus, measured, lambda e: expected(e)[0])
    for gpu in dict.fromkeys(g for r in out.speedups if r.expected is not None for g in (r.from_gpu, r.to_gpu)):
        profile = profile_named(gpu)
        if profile is not None:
            out.notes.append(f"expected speedups: {gpu} estimated with {_table_basis(profile)}")
    out.baseline_speedups = _baseline_speedups(table)
    out.stacks = _stack_rows(table)
    out.expected = [_expected_row(e, *expected(e)) for row in out.throughput for e in row.per_gpu.values()
                    if _ok(e) and e.key.kind is PointKind.E2E and e.gpu != "cpu" and is_modelled(e.key.stack)
                    and e.key.dist is None]
    out.scaling = _scaling_rows(table)
    if any(r.basis.endswith(IN_SAMPLE) for r in out.expected):
        out.notes.append(f"expected estimates marked {IN_SAMPLE}: the efficiency table was fitted to those files' "
                         "points, so their errors show the fit, not a prediction (`tpsbench validate "
                         "--leave-one-model-out` predicts each model from the others)")
    out.measured_gaps = measured_pairs((e for v in table.values() for e in v.values()), lambda e: estimate(e)[0])
    for row in out.throughput:
        for g, e in row.per_gpu.items():
            if _ok(e) and g != "cpu":
                out.verdicts.append(VerdictRow(g, row.label, e, workload_verdict(evidence(e))))
    contradicted = [e for e in entries if e.status == INCONSISTENT]
    if contradicted:
        out.notes.append(f"{len(contradicted)} points are inconsistent (e.g. {contradicted[0].label}: "
                         f"{contradicted[0].error}): shown as 'inconsistent' and left out of every ratio; rerun "
                         "them on a quiet machine")
    if any(e.throttled for e in entries):
        out.notes.append("some points ran with throttled clocks (marked * in the throughput table)")
    return out


def _scaling_rows(table: dict[PointKey, dict[str, MeasuredPoint]]) -> list[ScalingRow]:
    """Each multi-GPU training step whose one-GPU run (same model, implementation, tokens per GPU, GPU) is in
    the files: the scaling efficiency, measured."""
    rows = []
    for key, per_gpu in table.items():
        if key.kind is not PointKind.E2E or key.dist is None:
            continue
        single = table.get(key._replace(dist=None), {})
        for gpu, e in per_gpu.items():
            one = single.get(gpu)
            if _ok(e) and _ok(one) and e.tokens_per_s and one is not None and one.tokens_per_s:
                rows.append(ScalingRow(gpu, e.label, e.tokens_per_s, one.tokens_per_s))
    return rows


def _e2e_ratios(table: dict[PointKey, dict[str, MeasuredPoint]], gpus: list[str]) -> list[RatioRow]:
    """Every dense model against every MoE model measured on the same GPU at the same microbatch, global
    batch and compile setting, per MoE implementation."""
    rows = []
    steps = [(k, v) for k, v in table.items() if k.kind is PointKind.E2E]
    for gpu in gpus:
        dense = [v[gpu] for k, v in steps if gpu in v and k.impl == "dense" and _ok(v[gpu])]
        moe = [v[gpu] for k, v in steps if gpu in v and k.impl not in ("dense", *BRACKETS) and _ok(v[gpu])]
        for d in dense:
            for m in moe:
                dk, mk = d.key, m.key
                if (dk.tokens, dk.global_tokens, dk.compiled) != (mk.tokens, mk.global_tokens, mk.compiled):
                    continue
                rows.append(RatioRow(gpu, dk.model, mk.model, mk.impl, mk.tokens, mk.compiled,
                                     _ratio(d.tokens_per_s, m.tokens_per_s),
                                     _ratio(d.predicted_tokens_per_s, m.predicted_tokens_per_s),
                                     moe_dram_gbs=m.dram_gbs, dense_dram_gbs=d.dram_gbs,
                                     note="train step, dense tokens/s / MoE tokens/s"))
    return rows


def _layer_ratios(entries: list[MeasuredPoint]) -> list[RatioRow]:
    """Within one MoE run: the MoE layer (each implementation) against ``dense_active``, the dense SwiGLU
    of the same active width, forward+backward."""
    rows = []
    by_key = {(e.gpu, e.key.model, e.key.kind, e.key.layer, e.key.impl, e.key.mode, e.key.tokens): e
              for e in entries}
    for e in entries:
        k = e.key
        if k.kind is not PointKind.MICRO or k.layer != "moe" or k.mode != LayerMode.FWD_BWD or not _ok(e):
            continue
        d = by_key.get((e.gpu, k.model, PointKind.MICRO, "dense_active", NO_IMPL, LayerMode.FWD_BWD, k.tokens))
        if not _ok(d):
            continue
        assert d is not None
        rows.append(RatioRow(e.gpu, f"{k.model}:dense_active layer", k.model, k.impl, k.tokens, False,
                             _ratio(e.median_s, d.median_s), _ratio(e.predicted_s, d.predicted_s),
                             moe_dram_gbs=e.dram_gbs, dense_dram_gbs=d.dram_gbs,
                             note="layer fwd+bwd, MoE time / dense-active time"))
    return rows


def _stack_rows(table: dict[PointKey, dict[str, MeasuredPoint]]) -> list[StackRow]:
    """Training steps and layers (their headline mode) of another stack next to tpsbench's same point (the
    implementation of tpsbench's that computes what the stack's implementation does)."""
    rows = []
    for key, per_gpu in table.items():
        stack = stack_named(key.stack)
        if stack is None or stack.modelled or (counterpart := stack.counterpart(key.impl)) is None:
            continue
        ours = table.get(key._replace(stack=DEFAULT_STACK, impl=counterpart), {})
        for gpu, e in per_gpu.items():
            t = ours.get(gpu)
            if _ok(e) and _ok(t) and e.tokens_per_s and t is not None and t.tokens_per_s:
                rows.append(StackRow(gpu, t.label, key.stack, t.tokens_per_s, e.tokens_per_s))
    return rows


def _baseline_speedups(table: dict[PointKey, dict[str, MeasuredPoint]]) -> list[BaselineRow]:
    """Each MoE implementation's point against the baseline implementation's same point (same model, layer or
    training step, mode, tokens, compile setting) on the same GPU: the speed-up columns of tritonbench."""
    base = baseline().name
    impls = set(moe_impl_names())
    rows = []
    for key, per_gpu in table.items():
        if key.impl == base or key.impl not in impls or not is_modelled(key.stack):
            continue
        ref = table.get(key._replace(impl=base), {})
        for gpu, e in per_gpu.items():
            b = ref.get(gpu)
            if _ok(e) and _ok(b):
                assert b is not None and e.median_s and b.median_s
                rows.append(BaselineRow(gpu, e.label, key.impl, base, e.median_s, b.median_s))
    return rows
