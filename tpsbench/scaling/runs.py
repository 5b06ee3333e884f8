"""The user's loss curves as the points a law is fitted to: each model's runs joined (a continued run is one
run), its warm-up left out, and its points thinned to at most ``MAX_POINTS`` spaced evenly in log tokens (a
curve logged every step is thousands of strongly correlated points; thinning changes no run's weight, each run
weighs 1 whatever its length)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tpsbench.analysis.worth_inputs import ModelCurve
from tpsbench.models import ModelSpec
from tpsbench.scaling.fit import RunPoints
from tpsbench.scaling.forms import LawForm, ParameterCount

# Without --skip-tokens: a run's points up to the end of its learning-rate warm-up (where the logged rate first
# reaches its peak) are left out; without a logged rate, its first 10% of tokens (a warm-up is typically 1-5% of a
# run, and its steep start is what a power law in D does not describe).
DEFAULT_SKIP_FRACTION = 0.10
PEAK = 0.999  # the warm-up ends where the rate first reaches this share of its maximum
MAX_POINTS = 256


def parameter_count(form: LawForm, model: ModelSpec) -> float:
    if form.counts is ParameterCount.NON_EMBEDDING:
        return float(model.n_layers * model.block_params())
    return float(model.total_params if form.counts is ParameterCount.TOTAL else model.active_params)


def experts(model: ModelSpec, form: LawForm | None = None) -> float:
    """The form's architecture variable: the joint MoE law's E (routed experts, 1 for a dense model), or the
    granularity law's G (the experts a token is routed to, each 1/G of the FFN the top-k replace)."""
    if form is not None and form.name == "granularity":
        return float(model.moe.top_k) if model.moe is not None else 1.0
    return float(model.moe.num_experts) if model.moe is not None else 1.0


def not_covered(form: LawForm, model: ModelSpec) -> str | None:
    """Why ``form`` cannot give ``model`` a loss (None when it can)."""
    if model.moe is not None and form.name == "chinchilla":
        return (f"the {form.name} law counts {form.counts} of dense models: it cannot cover an MoE (fit the "
                "joint_moe form, or plan with --published ludziejewski2025)")
    if model.moe is None and form.name == "granularity":
        return ("the granularity law describes MoE at one expansion rate: it cannot cover a dense model (fit the "
                "joint_moe form, or plan with --published ludziejewski2025)")
    return None


def default_skip(c: ModelCurve) -> float:
    """Tokens left out of ``c`` without --skip-tokens: through the end of its logged learning-rate warm-up, else
    its first 10%."""
    if c.lr is not None and len(c.lr) == len(c.tokens) and np.nanmax(c.lr) > 0:
        peak = int(np.argmax(c.lr >= PEAK * np.nanmax(c.lr)))
        return float(c.tokens[peak])
    return DEFAULT_SKIP_FRACTION * float(c.tokens[-1])


def skip_summary(curves: Sequence[ModelCurve], skip_tokens: float | None) -> str:
    """How each run's warm-up was left out, in one line."""
    if skip_tokens is not None:
        return f"warm-up left out: every run's points up to {skip_tokens:.3g} tokens (--skip-tokens)"
    logged = sum(c.lr is not None for c in curves)
    parts = ([f"through the end of the logged learning-rate warm-up ({logged} runs)"] if logged else []) + (
        [f"the first {DEFAULT_SKIP_FRACTION:.0%} of tokens ({len(curves) - logged} runs without a learning-rate "
         "column)"] if logged < len(curves) else [])
    return "warm-up left out: " + "; ".join(parts)


def run_points(form: LawForm, curves: Sequence[ModelCurve], *, skip_tokens: float | None = None) -> list[RunPoints]:
    out = []
    for c in curves:
        skip = skip_tokens if skip_tokens is not None else default_skip(c)
        keep = (c.tokens > skip) & (c.tokens > 0) & np.isfinite(c.losses)
        tokens, losses = c.tokens[keep], c.losses[keep]
        if len(tokens) > MAX_POINTS:
            idx = np.unique(np.round(np.geomspace(1, len(tokens), MAX_POINTS)).astype(int) - 1)
            tokens, losses = tokens[idx], losses[idx]
        if len(tokens):
            out.append(RunPoints("+".join(c.runs), c.model.name, parameter_count(form, c.model), tokens, losses,
                                 experts(c.model, form)))
    return out
