"""`tpsbench explain --measured FILE.csv`: tokens/s measured elsewhere, held against tpsbench's predictions.

The CSV has one row per measurement: ``model``, ``gpu``, ``tokens_per_s`` (a training step's throughput),
and optionally ``tokens`` or ``microbatch`` (microbatch tokens, default 32768, the users' microbatch), ``impl``
(the MoE implementation, default the one that computes what the model trained with: capacity or dropless; empty
for dense models), ``global_tokens`` (tokens per optimizer step, default 1,048,576, the users' global batch),
``stack`` and ``compile`` (true when the step ran torch.compile'd). A measured row ran, so it fit its GPU: where
the memory model predicts otherwise, the table says the model overestimates, never "does not fit".

What comes out:
- each row against its roofline prediction (the floor of the step time on that GPU's datasheet ceilings,
  at the row's global batch): the fraction of the bound reached, and the tensor and
  (cost-model) bandwidth utilisation the measured rate implies;
- each model measured on two GPUs: the speedup next to the compute ratio, bandwidth ratio, 1x and the
  roofline's prediction, with a verdict;
- each dense/MoE pair on one GPU: the measured gap next to the predicted one; and across GPUs, how the
  measured gap changes against how the roofline says it should;
- a fit: for each explanation, the RMS error of the speedups it predicts (bandwidth: the bandwidth ratio,
  compute: the compute ratio, overhead: 1x, roofline: both combined per op), the best first.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

from tpsbench.analysis.limits import StepLimits, step_limits
from tpsbench.analysis.measured_gap import MeasuredGap, MeasuredStep, measured_gap
from tpsbench.analysis.points import slots_dict
from tpsbench.analysis.verdict import Evidence, Finding, Verdict, speedup_verdict, workload_verdict
from tpsbench.costmodel import (
    FlopConvention,
    flops_per_token,
    get_policy,
    global_step_bytes,
    train_workload,
)
from tpsbench.errors import InputError, UnknownNameError, read_text
from tpsbench.impls import cost_model_names
from tpsbench.models import USERS_MICROBATCH_TOKENS, ModelSpec, default_global_batch, get_model
from tpsbench.profiles import GPUProfile, ProfileError, load_profile
from tpsbench.results.typed import JsonObject
from tpsbench.roofline import CeilingError, predict
from tpsbench.stacks import StackChoiceError, get_stack

REQUIRED = ("model", "gpu", "tokens_per_s")
OPTIONAL = ("tokens", "microbatch", "impl", "global_tokens", "stack", "compile")
TRUE, FALSE = ("true", "yes", "1"), ("false", "no", "0", "")


class MeasuredCsvError(InputError):
    """A CSV that cannot be read as measurements; the message says which row and what to change."""


@dataclass(frozen=True, slots=True)
class Measured:
    row: int  # line number in the file
    model: ModelSpec
    profile: GPUProfile
    tokens_per_s: float
    tokens: int
    impl: str  # MoE implementation, or "dense"
    global_tokens: int  # tokens per optimizer step
    stack: str = "tpsbench"  # whose step the tokens/s were measured with: tpsbench or olmo-core
    compiled: bool = False  # the step ran torch.compile'd (its memory and launches differ from eager)


@dataclass(frozen=True, slots=True)
class RowResult:
    m: Measured
    predicted_tokens_per_s: float
    fraction_of_bound: float  # measured / predicted (> 1: faster than the floor allows: check the inputs)
    tensor_util: float  # exact matmul FLOP/s implied by the measured rate / datasheet peak
    bw_util: float  # cost-model bytes/s implied / datasheet bandwidth (a lower bound)
    predicted_memory_share: float
    finding: Finding
    limits: StepLimits | None = None  # the expected-time model's estimate of the same optimizer step

    @property
    def expected_tokens_per_s(self) -> float | None:
        return None if self.limits is None else self.limits.expected_tokens_per_s


@dataclass(frozen=True, slots=True)
class SpeedupResult:
    model: str
    impl: str
    tokens: int
    from_gpu: str
    to_gpu: str
    speedup: float
    compute_ratio: float
    bandwidth_ratio: float
    predicted: float
    finding: Finding
    expected: float | None = None  # the expected-time model's speedup (None without efficiency data)
    limits: tuple[str, ...] = ()  # per GPU: what the expected model says does not scale (host, launches, fp32)


@dataclass(frozen=True, slots=True)
class GapResult:
    gpu: str
    dense: str
    moe: str
    impl: str
    tokens: int
    measured: float  # dense tokens/s / MoE tokens/s
    predicted: float  # the roofline floors' ratio
    excess: float  # measured / predicted: > 1 is slowdown the roofline does not account for
    expected: float | None = None  # the expected-time model's ratio (None without an efficiency table)

    @property
    def beyond_expected(self) -> float | None:
        """measured / expected: > 1 is slowdown the expected-time model does not account for."""
        return None if self.expected is None else self.measured / self.expected


@dataclass(frozen=True, slots=True)
class GapTrend:
    dense: str
    moe: str
    impl: str
    from_gpu: str
    to_gpu: str
    measured_change: float  # gap on to_gpu / gap on from_gpu
    predicted_change: float


@dataclass(frozen=True, slots=True)
class Fit:
    explanation: str
    rms_error: float  # exp(RMS of ln(measured / predicted speedup)) - 1
    pairs: int


@dataclass(slots=True)
class Explanation:
    rows: list[RowResult] = field(default_factory=list)
    speedups: list[SpeedupResult] = field(default_factory=list)
    gaps: list[GapResult] = field(default_factory=list)
    measured_gaps: list[MeasuredGap] = field(default_factory=list)  # each gap against the expected model, by group
    trends: list[GapTrend] = field(default_factory=list)
    fits: list[Fit] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # rows whose numbers cannot be right as given
    summary: str = ""

    def to_dict(self) -> JsonObject:
        return {
            "warnings": self.warnings,
            "rows": [{"row": r.m.row, "model": r.m.model.name, "gpu": r.m.profile.name, "impl": r.m.impl,
                      "stack": r.m.stack,
                      "tokens": r.m.tokens, "global_tokens": r.m.global_tokens, "tokens_per_s": r.m.tokens_per_s,
                      "predicted_tokens_per_s": r.predicted_tokens_per_s, "fraction_of_bound": r.fraction_of_bound,
                      "tensor_util": r.tensor_util, "bw_util": r.bw_util,
                      "predicted_memory_share": r.predicted_memory_share,
                      "expected_tokens_per_s": r.expected_tokens_per_s,
                      "expected": None if r.limits is None else r.limits.estimate.to_dict(),
                      **r.finding.to_dict()} for r in self.rows],
            "speedups": [{"model": s.model, "impl": s.impl, "tokens": s.tokens, "from_gpu": s.from_gpu,
                          "to_gpu": s.to_gpu, "speedup": s.speedup, "compute_ratio": s.compute_ratio,
                          "bandwidth_ratio": s.bandwidth_ratio, "predicted": s.predicted, "expected": s.expected,
                          "limits": list(s.limits), **s.finding.to_dict()}
                         for s in self.speedups],
            "gaps": [{**slots_dict(g), "beyond_expected": g.beyond_expected} for g in self.gaps],
            "measured_gaps": [g.to_dict() for g in self.measured_gaps],
            "gap_trends": [slots_dict(t) for t in self.trends],
            "fits": [slots_dict(f) for f in self.fits],
            "summary": self.summary,
        }


def read_measured_csv(path: str | Path) -> list[Measured]:
    p = Path(path)
    text = read_text(p, MeasuredCsvError, f"a CSV with columns {', '.join(REQUIRED)}", encoding="utf-8-sig")
    try:
        return _read_rows(p, text)
    except csv.Error as exc:
        raise MeasuredCsvError(f"{p}: not a readable CSV ({exc})") from None


def _read_rows(p: Path, text: str) -> list[Measured]:
    reader = csv.DictReader(text.splitlines())
    header = [h.strip().lower() for h in reader.fieldnames or []]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise MeasuredCsvError(f"{p}: missing column(s) {', '.join(missing)}; the header must name "
                               f"{', '.join(REQUIRED)} (optional: {', '.join(OPTIONAL)})")
    out = []
    for i, raw in enumerate(reader, start=2):
        if None in raw:  # csv puts the fields past the header's under the key None
            named = len(reader.fieldnames or [])
            raise MeasuredCsvError(f"{p}:{i}: {named + len(raw[None])} fields, the header has {named}: remove the "
                                   "extra fields or name them in the header")
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items()}
        if not any(row.values()):
            continue
        out.append(_parse_row(p, i, row))
    if not out:
        raise MeasuredCsvError(f"{p}: no data rows; add one line per measurement under the header")
    return out


def _parse_row(p: Path, i: int, row: dict[str, str]) -> Measured:
    where = f"{p}:{i}"
    try:
        model = get_model(row["model"])
        profile = load_profile(row["gpu"])
    except (UnknownNameError, ProfileError) as exc:
        raise MeasuredCsvError(f"{where}: {exc}") from None
    try:
        tps = float(row["tokens_per_s"].replace("_", ""))
    except ValueError:
        raise MeasuredCsvError(f"{where}: tokens_per_s '{row['tokens_per_s']}' is not a number") from None
    if not (tps > 0 and math.isfinite(tps)):
        raise MeasuredCsvError(f"{where}: tokens_per_s must be a positive number, got {row['tokens_per_s']}")
    if row.get("tokens") and row.get("microbatch") and row["tokens"] != row["microbatch"]:
        raise MeasuredCsvError(f"{where}: tokens {row['tokens']} and microbatch {row['microbatch']} differ; they "
                               "name one thing (tokens per microbatch): keep one")
    tokens_text = row.get("tokens") or row.get("microbatch") or str(USERS_MICROBATCH_TOKENS)
    try:
        tokens = int(tokens_text)
    except ValueError:
        raise MeasuredCsvError(f"{where}: tokens '{tokens_text}' is not a whole number of tokens") from None
    if tokens <= 0 or tokens % model.seq_len:
        raise MeasuredCsvError(f"{where}: tokens {tokens} must be a positive multiple of {model.name}'s sequence "
                               f"length {model.seq_len} (tokens per microbatch)")
    impl = row.get("impl") or ""
    if model.moe is None:
        if impl not in ("", "dense"):
            raise MeasuredCsvError(f"{where}: {model.name} is dense; leave impl empty (got '{impl}')")
        impl = "dense"
    else:
        impl = impl or model.trained_impl  # what the model trained with: its capacity factor, or dropless
        if impl not in cost_model_names():
            raise MeasuredCsvError(f"{where}: impl '{impl}' is not one of {', '.join(cost_model_names())}")
    default_global = default_global_batch(tokens)
    global_text = row.get("global_tokens") or str(default_global)
    try:
        global_tokens = int(global_text)
    except ValueError:
        raise MeasuredCsvError(f"{where}: global_tokens '{global_text}' is not a whole number of tokens") from None
    if global_tokens <= 0 or global_tokens % tokens:
        raise MeasuredCsvError(f"{where}: global_tokens {global_tokens} must be a positive multiple of tokens {tokens}")
    stack = row.get("stack") or "tpsbench"
    try:
        get_stack(stack).prediction_choices(None, impl if impl != "dense" else "dropless", default_dtype="amp_bf16")
    except StackChoiceError as exc:
        raise MeasuredCsvError(f"{where}: {exc}") from None
    compiled_text = row.get("compile", "").lower()
    if compiled_text not in TRUE + FALSE:
        raise MeasuredCsvError(f"{where}: compile '{row['compile']}': write true or false (or leave it empty)")
    return Measured(i, model, profile, tps, tokens, impl, global_tokens, stack, compiled_text in TRUE)


def _row_result(m: Measured, ceilings: str) -> RowResult:
    # tpsbench's measurements: bf16 autocast over fp32 master weights; OLMo-core's: what it executes (olmo_core)
    policy = get_policy(get_stack(m.stack).prediction_choices(None, "dropless", default_dtype="amp_bf16")[0])
    cap = m.model.moe.capacity_factor if m.model.moe else None
    w = train_workload(m.model, m.impl, m.tokens, policy, cap)
    global_tokens = m.global_tokens
    p = predict(w, m.profile, ceilings=ceilings, global_batch_tokens=global_tokens)
    tensor = flops_per_token(w, FlopConvention.EXACT) * m.tokens_per_s / (m.profile.bf16_tflops.value * 1e12)
    bytes_per_token = global_step_bytes(w, global_tokens // m.tokens) / global_tokens
    bw = bytes_per_token * m.tokens_per_s / (m.profile.mem_bandwidth_gbs.value * 1e9)
    fraction = m.tokens_per_s / p.global_tokens_per_s
    ev = Evidence(model_bw_util=bw, tensor_util=tensor, roofline_fraction=fraction,
                  predicted_memory_share=p.memory_bound_share)
    limits = step_limits(w, m.profile, compiled=m.compiled, accumulation=global_tokens // m.tokens)
    return RowResult(m, p.global_tokens_per_s, fraction, tensor, bw, p.memory_bound_share, workload_verdict(ev),
                     limits)


def _faster_than_floor(r: RowResult) -> str:
    return (f"row {r.m.row}: {r.m.model.name} on {r.m.profile.name} at {r.m.tokens_per_s:,.0f} tokens/s is "
            f"{100 * r.fraction_of_bound:.0f}% of its roofline bound ({r.predicted_tokens_per_s:,.0f} tokens/s, no "
            "launch gaps, every op at its ceiling): faster than the floor allows. Check the row: tokens/s of one GPU "
            "(not of several), its gpu, and tokens / global_tokens (microbatch and optimizer-step sizes)")


def _rms(values: list[float]) -> float:
    return math.exp(math.sqrt(sum(v * v for v in values) / len(values))) - 1


def explain(measured: list[Measured], *, ceilings: str = "spec") -> Explanation:
    try:
        rows = [_row_result(m, ceilings) for m in measured]
    except CeilingError as exc:
        raise MeasuredCsvError(str(exc)) from None
    out = Explanation(rows=rows)
    by_model: dict[tuple[str, str, int], list[RowResult]] = {}
    for r in rows:
        by_model.setdefault((r.m.model.name, r.m.impl, r.m.tokens), []).append(r)
    for (model, impl, tokens), group in by_model.items():
        for a, b in combinations(group, 2):
            if a.m.profile.name == b.m.profile.name:
                continue
            speedup = b.m.tokens_per_s / a.m.tokens_per_s
            compute = b.m.profile.bf16_tflops.value / a.m.profile.bf16_tflops.value
            bandwidth = b.m.profile.mem_bandwidth_gbs.value / a.m.profile.mem_bandwidth_gbs.value
            predicted = b.predicted_tokens_per_s / a.predicted_tokens_per_s
            la, lb = a.limits, b.limits
            assert la is not None and lb is not None
            ta, tb = la.expected_tokens_per_s, lb.expected_tokens_per_s
            out.speedups.append(SpeedupResult(model, impl, tokens, a.m.profile.name, b.m.profile.name, speedup,
                                              compute, bandwidth, predicted,
                                              speedup_verdict(speedup, compute, bandwidth, predicted),
                                              None if ta is None or tb is None else tb / ta,
                                              (la.text(), lb.text())))
    for a in rows:
        for b in rows:
            if (a.m.model.moe is None and b.m.model.moe is not None and a.m.profile.name == b.m.profile.name
                    and a.m.tokens == b.m.tokens):
                measured_gap = a.m.tokens_per_s / b.m.tokens_per_s
                predicted_gap = a.predicted_tokens_per_s / b.predicted_tokens_per_s
                ea, eb = a.expected_tokens_per_s, b.expected_tokens_per_s
                out.gaps.append(GapResult(a.m.profile.name, a.m.model.name, b.m.model.name, b.m.impl, b.m.tokens,
                                          measured_gap, predicted_gap, measured_gap / predicted_gap,
                                          ea / eb if ea and eb else None))
                if a.limits is not None and b.limits is not None:
                    pair = _measured_gap(a, b)
                    if pair is not None:
                        out.measured_gaps.append(pair)
    for g1, g2 in combinations(out.gaps, 2):
        if (g1.dense, g1.moe, g1.impl, g1.tokens) == (g2.dense, g2.moe, g2.impl, g2.tokens) and g1.gpu != g2.gpu:
            out.trends.append(GapTrend(g1.dense, g1.moe, g1.impl, g1.gpu, g2.gpu, g2.measured / g1.measured,
                                       g2.predicted / g1.predicted))
    if out.speedups:
        hyps = {
            "bandwidth (speedup = bandwidth ratio)": [math.log(s.speedup / s.bandwidth_ratio) for s in out.speedups],
            "compute (speedup = compute ratio)": [math.log(s.speedup / s.compute_ratio) for s in out.speedups],
            "overhead (speedup = 1x)": [math.log(s.speedup) for s in out.speedups],
            "roofline (per-op mix of both)": [math.log(s.speedup / s.predicted) for s in out.speedups],
        }
        out.fits = sorted((Fit(name, _rms(errs), len(errs)) for name, errs in hyps.items()),
                          key=lambda f: f.rms_error)
    out.warnings = [_faster_than_floor(r) for r in rows if r.fraction_of_bound > 1.0]
    out.summary = _summary(out)
    return out


def _measured_gap(a: RowResult, b: RowResult) -> MeasuredGap | None:
    steps = []
    for r in (a, b):
        assert r.limits is not None
        est = r.limits.estimate
        if est.expected is None:
            return None
        steps.append(MeasuredStep(r.m.model, r.m.tokens_per_s, est.expected, est.tokens))
    return measured_gap(a.m.profile.name, b.m.impl, a.m.tokens, steps[0], steps[1])


def _summary(e: Explanation) -> str:
    parts = []
    if e.fits:
        best = e.fits[0]
        parts.append(f"cross-GPU speedups fit {best.explanation} best (RMS error {100 * best.rms_error:.0f}% over "
                     f"{best.pairs} pair(s); next: {e.fits[1].explanation} {100 * e.fits[1].rms_error:.0f}%)")
        verdicts = {s.finding.verdict for s in e.speedups}
        if verdicts == {Verdict.INCONCLUSIVE}:
            parts.append("no single pair separates the explanations")
    if e.gaps:
        worst = max(e.gaps, key=lambda g: g.excess)
        parts.append(f"largest dense/MoE gap beyond the roofline: {worst.moe}/{worst.impl} on {worst.gpu}, measured "
                     f"{worst.measured:.2f}x vs the floors' {worst.predicted:.2f}x ({worst.excess:.2f}x unexplained by "
                     "bandwidth or compute: overhead or kernels below roofline)")
        modelled = [g for g in e.gaps if g.beyond_expected is not None]
        if modelled:
            far = max(modelled, key=lambda g: abs(math.log(g.beyond_expected or 1.0)))
            parts.append(f"against the expected model ({far.expected:.2f}x) it leaves {far.beyond_expected:.2f}x of "
                         f"{far.moe}/{far.impl}'s measured {far.measured:.2f}x on {far.gpu} unaccounted for"
                         if far is worst else
                         f"furthest from the expected model: {far.moe}/{far.impl} on {far.gpu}, measured "
                         f"{far.measured:.2f}x vs expected {far.expected:.2f}x ({far.beyond_expected:.2f}x)")
    if not parts:
        low = min(e.rows, key=lambda r: r.fraction_of_bound)
        parts.append(f"one GPU per model: no speedup to test; lowest share of the roofline bound: {low.m.model.name} "
                     f"on {low.m.profile.name} at {100 * low.fraction_of_bound:.0f}%")
    return "; ".join(parts)
