"""`worth --law`: each model's tokens to the target by its own curve's fit and by a law across runs, side by side,
and which of the two answers (the per-run fit extrapolates one run; the law pools every run, and covers a model
whose own curve cannot reach the target or is too short to fit)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tpsbench.analysis.worth import ModelFit
from tpsbench.report.tables import TableData
from tpsbench.scaling.plan import Law
from tpsbench.scaling.runs import experts, not_covered, parameter_count


@dataclass(frozen=True, slots=True)
class LawTokens:
    model: str
    fit_tokens: float | None  # the per-run fit's D*
    law_tokens: float | None  # the law's D*
    law_interval: tuple[float, float] | None
    answered_by: str  # "both", "the law", "the per-run fit", or why neither


def law_tokens(fits: Sequence[ModelFit], law: Law, target: float) -> list[LawTokens]:
    out = []
    for f in fits:
        model = f.curve.model
        if not_covered(law.form, model) is not None:
            out.append(LawTokens(f.name, f.fitted_tokens, None, None,
                                 f"the per-run fit (the {law.form.name} law cannot cover "
                                 f"{'an MoE' if model.moe is not None else 'a dense model'})"))
            continue
        n, e = parameter_count(law.form, model), experts(model, law.form)
        tokens = law.form.tokens_to_loss(law.values, n, target, e)
        samples = [law.form.tokens_to_loss(dict(zip(law.form.parameters, s, strict=True)), n, target, e)
                   for s in law.samples]
        reached = [t for t in samples if t is not None]
        iv = (float(np.percentile(reached, 5)), float(np.percentile(reached, 95))) if reached else None
        if tokens is None and f.fitted_tokens is None:
            answered = "neither: the target is below both floors (unreachable)"
        elif tokens is None:
            answered = "the per-run fit (unreachable under the law)"
        elif f.fitted_tokens is None:
            answered = "the law (the run's own fit cannot reach the target or has too few points)"
        else:
            answered = "both"
        out.append(LawTokens(f.name, f.fitted_tokens, tokens, iv, answered))
    return out


def law_table(rows: Sequence[LawTokens], law: Law, target: float) -> TableData:
    def tokens(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.3g}"

    t = TableData(f"Tokens to loss {target:g}: each model's own fit against the law ({law.source})",
                  ["model", "per-run fit", "law", "law 90%", "law / fit", "answered by"],
                  left={"model", "answered by"})
    for r in rows:
        ratio = None if r.fit_tokens is None or r.law_tokens is None else r.law_tokens / r.fit_tokens
        iv = "n/a" if r.law_interval is None else f"[{r.law_interval[0]:.3g}, {r.law_interval[1]:.3g}]"
        t.add(r.model, tokens(r.fit_tokens), tokens(r.law_tokens), iv, "n/a" if ratio is None else f"{ratio:.2f}",
              r.answered_by)
    return t
