"""`tpsbench plan`: which candidate model, on which GPU, reaches a target loss soonest (or the lowest loss within
hours or a budget): the law's tokens for each candidate times the expected-time model's tokens/s at the largest
microbatch that fits the GPU, with both uncertainties carried into the hours.

Tokens/s: the expected estimate of the candidate's training step at the users' microbatch (32,768 tokens) or the
largest whole-sequence microbatch below it that fits, at the users' global batch; its stated relative
uncertainty widens the hours' interval. Loss: the law's, with the 90% interval of its bootstrap resamples (a
published law has none). A candidate the law cannot cover (an MoE under a dense law) or that fits no GPU is a
marked row, never a number.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

import numpy as np

from tpsbench.analysis.worth_inputs import flop_conventions
from tpsbench.costmodel import Workload, get_policy, train_workload
from tpsbench.costmodel.comm import fsdp_mixed_precision
from tpsbench.estimate.distributed import predict_dist
from tpsbench.estimate.step import expected_for
from tpsbench.estimate.way_out import GPU_COUNTS, largest_microbatch
from tpsbench.impls import moe_impls
from tpsbench.models import USERS_MICROBATCH_TOKENS, ModelSpec, default_global_batch
from tpsbench.options import DistLayout, DistMode
from tpsbench.profiles import GPUProfile
from tpsbench.scaling.fit import tokens_to_loss
from tpsbench.scaling.forms import EXPANSION_RATE, LawForm
from tpsbench.scaling.runs import experts, not_covered, parameter_count

PF_DAY = 1e15 * 86400


class Goal(StrEnum):
    TARGET = "target loss"
    HOURS = "hours"
    BUDGET = "budget"


@dataclass(frozen=True, slots=True)
class Law:
    """A law to plan with: its form, values, bootstrap resamples (possibly none) and fitted range."""

    form: LawForm
    values: dict[str, float]
    samples: np.ndarray
    source: str
    sizes: tuple[float, float] | None  # the fitted runs' smallest and largest N
    max_tokens: float | None
    flop_convention: str = "6N"  # PF-days as the user's runs logged them (scaling fit matched it), else 6N
    experts: tuple[float, float] | None = None  # the fitted runs' fewest and most experts


@dataclass(frozen=True, slots=True)
class Throughput:
    tokens_per_s: float
    uncertainty: float  # relative (0 for a measured step: the interval then carries the law's alone)
    microbatch: int | None  # per GPU; None for a measured step (the file says how it ran: ``basis``)
    basis: str  # the efficiency table's basis, or "measured: <what and where>"
    gpus: int = 1  # tokens/s of all of them together (FSDP when more than one)
    impl: str | None = None  # the MoE implementation the expected step ran (None: dense, or measured)


@dataclass(frozen=True, slots=True)
class PlanRow:
    model: str
    gpu: str
    n: float
    throughput: Throughput | None
    unavailable: str | None  # why there is no number (the law cannot cover it, no GPU fits it, unreachable)
    tokens: float | None = None
    tokens_interval: tuple[float, float] | None = None
    hours: float | None = None
    hours_interval: tuple[float, float] | None = None
    loss: float | None = None
    loss_interval: tuple[float, float] | None = None
    cost: float | None = None
    pf_days: float | None = None  # under the law's FLOP convention
    flags: tuple[str, ...] = ()
    hours_samples: tuple[float, ...] = ()  # per law resample (paired across rows: the same resample)
    experts: float = 1.0  # the law's architecture variable of the candidate (E or G)
    flops: dict[str, float] | None = None  # the training FLOPs under each convention (6N, olmo, olmo pre-3.0, exact)


def throughput(model: ModelSpec, profile: GPUProfile, gpus: int = 1) -> Throughput | str:
    """The expected tokens/s of ``model``'s step on one ``profile`` GPU with the fastest implementation that
    computes what it trains with (a capacity factor drops tokens: only ``capacity`` then; a dropless MoE: every
    dropless one) at the largest microbatch that fits; or, when it fits none and ``gpus`` > 1, on FSDP over
    ``gpus`` of them; or why there is none."""
    options = [impl_throughput(model, impl, profile, gpus) for impl in implementations(model)]
    found = [o for o in options if isinstance(o, Throughput)]
    return max(found, key=lambda t: t.tokens_per_s) if found else options[0]


def implementations(model: ModelSpec) -> list[str]:
    """The implementations whose tokens/s may stand for ``model``'s: those computing what it trains with."""
    if model.moe is None:
        return [model.trained_impl]
    dropless = model.trained_impl == "dropless"
    return [i.name for i in moe_impls() if i.dropless == dropless]


def impl_throughput(model: ModelSpec, impl: str, profile: GPUProfile, gpus: int) -> Throughput | str:
    cap = model.moe.capacity_factor if model.moe else None
    w = train_workload(model, impl, USERS_MICROBATCH_TOKENS, get_policy("amp_bf16"), cap)
    tokens = largest_microbatch(w, profile, compiled=False)
    if tokens is None and gpus > 1:
        return _fsdp_throughput(w, profile, gpus)
    if tokens is None:
        more = next((k for k in GPU_COUNTS if largest_microbatch(w, profile, compiled=False, fsdp_gpus=k)), None)
        would = (f"FSDP over {more} GPUs would (plan --gpus {more})" if more
                 else f"not even FSDP over {GPU_COUNTS[-1]} GPUs would")
        return f"fits no {profile.name}: one {model.seq_len}-token sequence does not fit its memory; {would}"
    w = replace(w, tokens=tokens)
    accumulation = default_global_batch(tokens) // tokens
    est = expected_for(w, profile, accumulation=accumulation)
    if est.expected is None:
        return f"no expected estimate on {profile.name} ({est.reason})"
    return Throughput(est.tokens / est.expected.seconds, est.expected.uncertainty, tokens,
                      f"{est.expected.table.basis}; {_impl_name(model, impl)}", 1,
                      None if model.moe is None else impl)


def _impl_name(model: ModelSpec, impl: str) -> str:
    return "dense" if model.moe is None else f"MoE implementation {impl}"


def _fsdp_throughput(w: Workload, profile: GPUProfile, gpus: int) -> Throughput | str:
    """FSDP over ``gpus`` GPUs at the largest microbatch per GPU that fits: the expected compute with the
    predicted collectives, between no overlap and full overlap (the midpoint, its half-width added to the
    expected estimate's uncertainty); FSDP's bf16 mixed precision, as OLMo-core trains (its weights' casts are then
    made per block, not kept for the whole model)."""
    w = replace(w, policy=fsdp_mixed_precision(w.policy))
    tokens = largest_microbatch(w, profile, compiled=False, fsdp_gpus=gpus)
    if tokens is None:
        more = next((k for k in (*GPU_COUNTS, 16, 32, 64) if k > gpus and largest_microbatch(
            w, profile, compiled=False, fsdp_gpus=k)), None)
        return (f"fits no {profile.name} even under FSDP over {gpus}: one {w.seq_len}-token sequence per GPU does "
                "not fit" + (f"; {more} GPUs would (--gpus {more})" if more else "; not even 64 would"))
    d = predict_dist(replace(w, tokens=tokens), profile, DistLayout(DistMode.FSDP, gpus))
    slow, fast = d.tokens_per_s_per_gpu("expected", "none"), d.tokens_per_s_per_gpu("expected", "full")
    est = expected_for(replace(w, tokens=tokens), profile)
    if slow is None or fast is None or est.expected is None:
        return f"no expected estimate on {profile.name} ({est.reason})"
    rate = gpus * (slow + fast) / 2
    spread = (fast - slow) / (slow + fast)
    return Throughput(rate, min(0.95, est.expected.uncertainty + spread), tokens,
                      f"{est.expected.table.basis}; {_impl_name(w.model, w.impl)}; FSDP over {gpus}, bf16 mixed "
                      "precision (communication between no and full overlap)", gpus,
                      None if w.model.moe is None else w.impl)


def variable_flags(law: Law, model: ModelSpec, value: float) -> list[str]:
    """Where the candidate's architecture lies outside what the law saw (experts, routing, granularity)."""
    flags = []
    what = {"E": "experts", "G": "granularity"}.get(law.form.variable, "")
    if law.experts is not None and model.moe is not None and not law.experts[0] <= value <= law.experts[1]:
        flags.append(f"{law.form.variable} = {value:g} outside the fitted {law.experts[0]:g}-{law.experts[1]:g} {what}")
    if model.moe is not None and model.moe.top_k > 1 and law.form.name == "joint_moe":
        flags.append(f"top-{model.moe.top_k} routing: the joint law was fitted on top-1 (Switch) MoE")
    if model.moe is not None and law.form.name == "granularity":
        rate = model.moe.num_experts / model.moe.top_k
        if rate != EXPANSION_RATE:
            flags.append(f"expansion rate {rate:g} (experts / G): the granularity law was fitted at {EXPANSION_RATE}")
    return flags


def _law_values(law: Law) -> list[dict[str, float]]:
    return [dict(zip(law.form.parameters, s, strict=True)) for s in law.samples]


def _spread(interval: tuple[float, float] | None) -> bool:
    """An interval worth printing: one with width (a published law with measured tokens/s has none to give)."""
    return interval is not None and interval[1] > interval[0] * (1 + 1e-9)


def _interval(xs: Sequence[float]) -> tuple[float, float] | None:
    return (float(np.percentile(xs, 5)), float(np.percentile(xs, 95))) if len(xs) else None


def plan_row(law: Law, model: ModelSpec, profile: GPUProfile, goal: Goal, amount: float,
             price: float | None, measured: Throughput | None = None, gpus: int = 1) -> PlanRow:
    """One candidate on one GPU (or FSDP over ``gpus`` when one holds too little); ``measured``: its measured
    tokens/s there (else the expected model's)."""
    n, e = parameter_count(law.form, model), experts(model, law.form)
    if (why := not_covered(law.form, model)) is not None:
        return PlanRow(model.name, profile.name, n, None, why)
    tp = measured if measured is not None else throughput(model, profile, gpus)
    if isinstance(tp, str):
        return PlanRow(model.name, profile.name, n, None, tp)
    flags = []
    if law.sizes is not None and not law.sizes[0] <= n <= law.sizes[1]:
        flags.append(f"N outside the fitted {law.sizes[0]:.3g}-{law.sizes[1]:.3g}")
    flags += variable_flags(law, model, e)
    if measured is not None:
        flags.append(f"tokens/s {tp.basis}")
    if "transferred" in tp.basis:
        flags.append("efficiencies transferred from another GPU")
    if tp.impl is not None and len(implementations(model)) > 1:
        flags.append(f"MoE implementation {tp.impl}: the fastest expected of those computing what it trains with")
    if tp.gpus > 1:
        flags.append(f"FSDP over {tp.gpus} GPUs (no single GPU holds it): hours on all, cost of all; communication "
                     "predicted, between no and full overlap")
    rate, u = tp.tokens_per_s, tp.uncertainty
    # Each law resample paired with a throughput drawn within the stated uncertainty (seeded): the intervals carry
    # both; a law without resamples (a published one) carries the throughput's alone.
    samples = _law_values(law) or [law.values] * 200
    # each (model, GPU) its own seeded draws: two candidates' throughput errors are not assumed to cancel
    factor = np.random.default_rng(zlib.crc32(f"{model.name}@{profile.name}".encode())).uniform(1 - u, 1 + u,
                                                                                              len(samples))
    if goal is Goal.TARGET:
        tokens = tokens_to_loss(law.values, n, amount, law.form, e)
        if tokens is None:
            return PlanRow(model.name, profile.name, n, tp, f"unreachable: the law's loss for {model.name} never gets "
                           f"to {amount:g} (its infinite-data loss is above it)")
        per_sample = [np.nan if t is None else t / (rate * f) / 3600
                      for t, f in zip((tokens_to_loss(v, n, amount, law.form, e) for v in samples), factor,
                                      strict=True)]
        reached = [h for h in per_sample if np.isfinite(h)]
        t_iv = _interval([h * rate * f * 3600 for h, f in zip(per_sample, factor, strict=True) if np.isfinite(h)])
        hours = tokens / rate / 3600
        h_iv = _interval(reached)
        hours_samples = tuple(per_sample)
        loss, l_iv = amount, None
    else:
        hours = amount if goal is Goal.HOURS else amount / ((price or float("nan")) * tp.gpus)
        tokens = rate * hours * 3600
        t_iv = _interval(list(rate * factor * hours * 3600))
        h_iv = None
        hours_samples = ()
        loss = float(law.form.loss(law.values, np.asarray(n), np.asarray(tokens), e))
        l_iv = _interval([float(law.form.loss(v, np.asarray(n), np.asarray(rate * f * hours * 3600), e))
                          for v, f in zip(samples, factor, strict=True)])
    if tokens < n:
        flags.append("fewer tokens than parameters")
    if law.max_tokens is not None and tokens > law.max_tokens:
        flags.append("more tokens than the longest fitted run")
    per_token = flop_conventions(model, None)
    flops = {name: f * tokens for name, f in per_token.items()}
    return PlanRow(model.name, profile.name, n, tp, None, tokens, t_iv, hours, h_iv, loss, l_iv,
                   None if price is None else hours * price * tp.gpus, flops[law.flop_convention] / PF_DAY,
                   tuple(flags), hours_samples, e, flops)


def ranked(rows: Sequence[PlanRow], goal: Goal) -> list[PlanRow]:
    """Rows with numbers, best first (soonest to the target, or lowest loss), then the marked rows."""
    good = [r for r in rows if r.unavailable is None]
    key = (lambda r: r.hours) if goal is Goal.TARGET else (lambda r: r.loss)
    return sorted(good, key=key) + [r for r in rows if r.unavailable is not None]


def _on(r: PlanRow) -> str:
    """How many GPUs the hours are on, where more than one (their GPU-hours then differ from the hours)."""
    gpus = r.throughput.gpus if r.throughput is not None else 1
    return "" if gpus == 1 or r.hours is None else f" on {gpus} GPUs, {r.hours * gpus:.3g} GPU-h"


def answer(rows: Sequence[PlanRow], goal: Goal, amount: float, gpu: str) -> str:
    best = [r for r in ranked([r for r in rows if r.gpu == gpu], goal) if r.unavailable is None]
    if not best:
        return f"on {gpu}, no candidate has a number (see the marked rows)"
    a = best[0]
    if goal is Goal.TARGET:
        iv = "" if not _spread(a.hours_interval) else f" [{a.hours_interval[0]:.3g}, {a.hours_interval[1]:.3g}]"
        line = f"on {gpu}, {a.model} reaches loss {amount:g} in {a.hours:.3g} h{iv}{_on(a)}"
        if len(best) > 1:
            b = best[1]
            assert a.hours and b.hours
            ratios = [y / x for x, y in zip(a.hours_samples, b.hours_samples, strict=True)
                      if np.isfinite(x) and np.isfinite(y)]
            iv = _interval(ratios)
            line += (f", {b.hours / a.hours:.2f}x" + ("" if not _spread(iv) else f" [{iv[0]:.2f}, {iv[1]:.2f}]")
                     + f" sooner than {b.model} ({b.hours:.3g} h{_on(b)})")
        return line
    line = f"on {gpu}, {a.model} reaches loss {a.loss:.4f}"
    if _spread(a.loss_interval):
        line += f" [{a.loss_interval[0]:.4f}, {a.loss_interval[1]:.4f}]"
    line += f" in {a.hours:.3g} h" if a.hours else ""
    if len(best) > 1:
        line += f", {best[1].model} {best[1].loss:.4f}"
    return line
