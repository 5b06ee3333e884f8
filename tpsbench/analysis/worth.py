"""`tpsbench worth`: the hours (and dollars) each model needs to reach a target loss on each GPU, from the
user's loss curves and tokens/s, and the MoE-vs-dense ratios with bootstrap intervals.

hours = D* / tokens_per_s / 3600, D* the tokens the fitted L(D) = E + B D^-beta needs to reach the target.
The intervals come from the fit's seeded bootstrap (tpsbench/analysis/lossfit.py): each resample's D*, so a
ratio of two models' hours takes the ratio resample by resample (the two curves are resampled independently);
tokens/s is taken as its median (a training step's spread is ~0.1-1% on the committed H100 runs, far below the
fit's). A target at or below a model's fitted floor E is unreachable for it: said so, never a number.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

from tpsbench.analysis.lossfit import (
    CONFIDENCE,
    MIN_POINTS,
    SEED,
    Interval,
    LossFit,
    fit_loss_curve,
    observed_tokens_to_target,
    quantile_interval,
)
from tpsbench.analysis.worth_inputs import ModelCurve, Throughput, ThroughputBasis, flop_conventions
from tpsbench.report.format import fmt
from tpsbench.results.typed import JsonObject

SECONDS_PER_HOUR = 3600.0
PF_DAY = 1e15 * 86400.0  # FLOPs in a petaflop/s-day


@dataclass(frozen=True, slots=True)
class ModelFit:
    """A model's curve, its fit and the tokens it needs to reach the target."""

    curve: ModelCurve
    fit: LossFit | None  # None when the curve is too short (``reason``)
    observed_tokens: float | None  # first tokens where the smoothed loss reaches the target; None: never
    flops_per_token: dict[str, float]  # by convention (6N, olmo, exact)
    reason: str | None = None

    @property
    def name(self) -> str:
        return self.curve.model.name

    @property
    def is_moe(self) -> bool:
        return self.curve.model.moe is not None

    @property
    def fitted_tokens(self) -> float | None:
        """D* from the fit; None when the target is at or below E (or there is no fit)."""
        if self.fit is None or self.fit.target is None or self.fit.target <= self.fit.e:
            return None
        return (self.fit.b / (self.fit.target - self.fit.e)) ** (1.0 / self.fit.beta)

    def samples(self) -> np.ndarray:
        return np.array(() if self.fit is None else self.fit.tokens_samples, float)


@dataclass(frozen=True, slots=True)
class WorthRow:
    """One model on one GPU: hours, cost and FLOPs to the target."""

    model: str
    gpu: str
    throughput: Throughput
    tokens: float | None  # D*; None: unreachable
    hours: float | None
    hours_interval: Interval | None
    cost_usd: float | None  # at --price; None without a price
    cost_interval: Interval | None
    observed_hours: float | None  # at the observed tokens to the target, when the curve reached it
    flops: dict[str, float | None]  # FLOPs to the target by convention

    @property
    def gpu_hours(self) -> float | None:
        return self.hours  # one GPU per run: every throughput tpsbench has is single-GPU

    def pf_days(self, convention: str = "6N") -> float | None:
        f = self.flops.get(convention)
        return None if f is None else f / PF_DAY


@dataclass(frozen=True, slots=True)
class Ratio:
    """An MoE model against a dense one on one GPU with one kind of throughput: MoE / dense."""

    gpu: str
    basis: ThroughputBasis
    moe: str
    dense: str
    hours: float | None
    hours_interval: Interval | None
    tokens: float | None
    tokens_interval: Interval | None
    flops_6n: float | None
    flops_6n_interval: Interval | None
    throughput: float  # tokens/s MoE / dense

    @property
    def verdict(self) -> str:
        iv = self.hours_interval
        if self.hours is None or iv is None:
            return "cannot tell (a target unreachable for one model)"
        if iv.high < 1.0:
            return "the MoE reaches the target sooner"
        if iv.low > 1.0:
            return "the dense model reaches the target sooner"
        return "cannot tell apart at 90% (the interval holds 1x)"


@dataclass(frozen=True, slots=True)
class WorthReport:
    target: float
    fits: tuple[ModelFit, ...]
    rows: tuple[WorthRow, ...]  # ranked by hours within (gpu, kind)
    ratios: tuple[Ratio, ...]
    left_out_runs: tuple[str, ...]
    notes: tuple[str, ...]

    def summary_lines(self) -> list[str]:
        hours = {(r.gpu, r.throughput.basis, r.model): r for r in self.rows}
        out = []
        for q in self.ratios:
            m, d = hours[(q.gpu, q.basis, q.moe)], hours[(q.gpu, q.basis, q.dense)]
            kind = "" if q.basis is ThroughputBasis.MEASURED else f" ({q.basis} tokens/s)"
            out.append(f"on {q.gpu}{kind}, {q.moe} reaches loss {self.target:g} in {_h(m.hours, m.hours_interval)} vs "
                       f"{q.dense} {_h(d.hours, d.hours_interval)}: {_x(q.hours, q.hours_interval)} the hours "
                       f"({_x(q.tokens, q.tokens_interval)} the tokens at {q.throughput:.2f}x the tokens/s): "
                       f"{q.verdict}")
        return out


def _h(v: float | None, iv: Interval | None) -> str:
    if v is None:
        return "unreachable"
    return f"{v:.3g} h" + ("" if iv is None else f" [{iv.low:.3g}, {_hi(iv.high)}]")


def _x(v: float | None, iv: Interval | None) -> str:
    return fmt(v, "{:.2f}x") + ("" if v is None or iv is None else f" [{iv.low:.2f}, {_hi(iv.high, '.2f')}]")


def _hi(v: float, spec: str = ".3g") -> str:
    return fmt(v, f"{{:{spec}}}", infinite="unreachable")


def fit_model(curve: ModelCurve, target: float, impl: str | None) -> ModelFit:
    """Fit ``curve`` (seeded per model name, so a report does not depend on the order of the files)."""
    fpt = flop_conventions(curve.model, impl)
    observed = observed_tokens_to_target(curve.tokens, curve.losses, target)
    seed = SEED + zlib.crc32(curve.model.name.encode())
    try:
        fit = fit_loss_curve(curve.tokens, curve.losses, target=target, seed=seed)
    except ValueError:
        return ModelFit(curve, None, observed, fpt,
                        reason=f"{len(curve.tokens)} points: the fit needs {MIN_POINTS} after the first 10% of tokens")
    return ModelFit(curve, fit, observed, fpt)


def _row(f: ModelFit, t: Throughput, price: float | None) -> WorthRow:
    d = f.fitted_tokens
    per_hour = t.tokens_per_s * SECONDS_PER_HOUR
    hours = None if d is None else d / per_hour
    samples = f.samples()
    h_iv = quantile_interval(samples / per_hour) if hours is not None and len(samples) else None
    cost = None if hours is None or price is None else hours * price
    c_iv = None if h_iv is None or price is None else Interval(h_iv.low * price, h_iv.high * price)
    obs = None if f.observed_tokens is None else f.observed_tokens / per_hour
    flops = {k: None if d is None else d * v for k, v in f.flops_per_token.items()}
    return WorthRow(f.name, t.gpu, t, d, hours, h_iv, cost, c_iv, obs, flops)


def _ratio(moe: ModelFit, dense: ModelFit, m: WorthRow, d: WorthRow) -> Ratio:
    speed = m.throughput.tokens_per_s / d.throughput.tokens_per_s
    if m.tokens is None or d.tokens is None:
        return Ratio(m.gpu, m.throughput.basis, moe.name, dense.name, None, None, None, None, None, None, speed)
    tokens = m.tokens / d.tokens
    a, b = moe.samples(), dense.samples()
    with np.errstate(invalid="ignore", divide="ignore"):  # inf / inf: unreachable in both resamples -> nan
        t_s = a / b if len(a) and len(a) == len(b) else np.array(())
    t_iv = quantile_interval(t_s) if len(t_s) else None
    fl = moe.flops_per_token["6N"] / dense.flops_per_token["6N"]
    return Ratio(m.gpu, m.throughput.basis, moe.name, dense.name, tokens / speed, _scaled(t_iv, 1 / speed), tokens,
                 t_iv, tokens * fl, _scaled(t_iv, fl), speed)


def _scaled(iv: Interval | None, k: float) -> Interval | None:
    """The interval of k times a ratio whose interval is ``iv`` (hours = tokens / speed; 6N FLOPs = tokens x)."""
    return None if iv is None else Interval(iv.low * k, iv.high * k)


def worth(fits: list[ModelFit], throughput: list[Throughput], target: float, *, prices: dict[str, float],
          left_out_runs: list[str], notes: list[str]) -> WorthReport:
    """Rows per (GPU, kind of throughput) ranked by hours, and every MoE-vs-dense ratio on each."""
    by_name = {f.name: f for f in fits}
    notes = list(notes)
    groups: dict[tuple[str, str], list[WorthRow]] = {}
    for t in throughput:
        f = by_name[t.model]
        groups.setdefault((t.gpu, t.basis), []).append(_row(f, t, prices.get(t.gpu)))
    rows, ratios = [], []
    for (gpu, kind), group in groups.items():
        group.sort(key=lambda r: (r.hours is None, r.hours or 0.0))
        rows += group
        missing = sorted(set(by_name) - {r.model for r in group})
        if missing:
            notes.append(f"{gpu} ({kind}): no tokens/s for {', '.join(missing)}; left out of its ranking")
        for m in (r for r in group if by_name[r.model].is_moe):
            for d in (r for r in group if not by_name[r.model].is_moe):
                ratios.append(_ratio(by_name[m.model], by_name[d.model], m, d))
    for gpu in sorted(set(prices) - {t.gpu for t in throughput}):
        notes.append(f"--price {gpu}: no tokens/s on {gpu}; the price is unused")
    return WorthReport(target, tuple(fits), tuple(rows), tuple(ratios), tuple(left_out_runs), tuple(notes))


# --- the JSON document of `worth --json` -------------------------------------------------------------
def _iv_dict(iv: Interval | None) -> list[float | None] | None:
    return None if iv is None else [iv.low if math.isfinite(iv.low) else None,
                                    iv.high if math.isfinite(iv.high) else None]


def _fit_dict(f: ModelFit) -> JsonObject:
    fit = f.fit
    return {
        "model": f.name, "runs": list(f.curve.runs), "points": len(f.curve.tokens),
        "tokens_source": f.curve.tokens_source, "reason": f.reason,
        "fit": None if fit is None else {
            "e": fit.e, "b": fit.b, "beta": fit.beta, "e_interval": _iv_dict(fit.e_interval),
            "beta_interval": _iv_dict(fit.beta_interval), "rms_residual": fit.rms_residual,
            "fitted_points": fit.points, "last_tokens": fit.last_tokens, "last_loss_smoothed": fit.last_loss,
            "above_e": fit.plateau_gap},
        "tokens_to_target": {"observed": f.observed_tokens, "fitted": f.fitted_tokens,
                             "fitted_interval": None if fit is None else _iv_dict(fit.tokens_interval),
                             "unreachable": fit is not None and f.fitted_tokens is None},
        "flops_per_token": f.flops_per_token, "implied_flops_per_token": f.curve.implied_flops_per_token,
    }


def _row_dict(w: WorthRow) -> JsonObject:
    t = w.throughput
    return {"model": w.model, "gpu": w.gpu, "tokens_per_s": t.tokens_per_s, "throughput_kind": t.basis,
            "throughput_from": t.detail, "tokens": w.tokens, "hours": w.hours,
            "hours_interval": _iv_dict(w.hours_interval), "gpus": 1, "gpu_hours": w.gpu_hours,
            "observed_hours": w.observed_hours, "cost_usd": w.cost_usd, "cost_interval": _iv_dict(w.cost_interval),
            "flops_to_target": w.flops}


def _ratio_dict(q: Ratio) -> JsonObject:
    return {"gpu": q.gpu, "throughput_kind": q.basis, "moe": q.moe, "dense": q.dense, "hours": q.hours,
            "hours_interval": _iv_dict(q.hours_interval), "tokens": q.tokens,
            "tokens_interval": _iv_dict(q.tokens_interval), "flops_6n": q.flops_6n,
            "flops_6n_interval": _iv_dict(q.flops_6n_interval), "tokens_per_s": q.throughput, "verdict": q.verdict}


def worth_json(r: WorthReport) -> JsonObject:
    return {"target_loss": r.target, "confidence": CONFIDENCE, "models": [_fit_dict(f) for f in r.fits],
            "rows": [_row_dict(w) for w in r.rows], "ratios": [_ratio_dict(q) for q in r.ratios],
            "summary": r.summary_lines(), "left_out_runs": list(r.left_out_runs), "notes": list(r.notes)}
