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

# Without --skip-tokens: the first 10% of a run's tokens are left out (its learning-rate warm-up, typically 1-5%
# of a run, and the steep start that a power law in D does not describe).
DEFAULT_SKIP_FRACTION = 0.10
MAX_POINTS = 256


def parameter_count(form: LawForm, model: ModelSpec) -> float:
    return float(model.total_params if form.counts is ParameterCount.TOTAL else model.active_params)


def experts(model: ModelSpec) -> float:
    """The joint MoE law's E: the routed experts (1 for a dense model)."""
    return float(model.moe.num_experts) if model.moe is not None else 1.0


def run_points(form: LawForm, curves: Sequence[ModelCurve], *, skip_tokens: float | None = None) -> list[RunPoints]:
    out = []
    for c in curves:
        skip = skip_tokens if skip_tokens is not None else DEFAULT_SKIP_FRACTION * float(c.tokens[-1])
        keep = (c.tokens > skip) & (c.tokens > 0) & np.isfinite(c.losses)
        tokens, losses = c.tokens[keep], c.losses[keep]
        if len(tokens) > MAX_POINTS:
            idx = np.unique(np.round(np.geomspace(1, len(tokens), MAX_POINTS)).astype(int) - 1)
            tokens, losses = tokens[idx], losses[idx]
        if len(tokens):
            out.append(RunPoints("+".join(c.runs), c.model.name, parameter_count(form, c.model), tokens, losses,
                                 experts(c.model)))
    return out
