"""Leave-one-run-out: each run predicted by the law fitted without it, at its last logged tokens (and, given a
target loss the run reaches, the tokens it took), with the 90% interval of that fit; the share of runs whose
observed loss falls inside is the intervals' coverage."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tpsbench.scaling.fit import LawFit, RunPoints, fit_law, tokens_to_loss
from tpsbench.scaling.forms import PublishedLaw

TAIL = 0.05  # the observed loss at the end of a run: the median of its last 5% of points (one point is noisy)


@dataclass(frozen=True, slots=True)
class LeftOut:
    run: str
    tokens: float  # where the run's end is taken (the median tokens of its last 5% of points)
    observed: float
    predicted: float
    low: float | None
    high: float | None
    observed_tokens_to_target: float | None = None
    predicted_tokens_to_target: float | None = None

    @property
    def error(self) -> float:
        return self.predicted / self.observed - 1.0

    @property
    def covered(self) -> bool | None:
        return None if self.low is None or self.high is None else self.low <= self.observed <= self.high

    @property
    def target_error(self) -> float | None:
        if self.observed_tokens_to_target is None or self.predicted_tokens_to_target is None:
            return None
        return self.predicted_tokens_to_target / self.observed_tokens_to_target - 1.0


def observed_end(r: RunPoints) -> tuple[float, float]:
    """The run's loss at its end and where: the median loss and median tokens of its last 5% of points."""
    k = max(1, int(len(r.losses) * TAIL))
    return float(np.median(r.tokens[-k:])), float(np.median(r.losses[-k:]))


def observed_tokens_to(r: RunPoints, target: float) -> float | None:
    """Where the run's running median (over 5% of its points) first reaches target: the window's median tokens;
    None when it never does, or already does in its first window (it crossed before the fitted points began, in
    the warm-up left out, so where is not seen)."""
    k = max(1, int(len(r.losses) * TAIL))
    for i in range(k, len(r.losses) + 1):
        if np.median(r.losses[i - k:i]) <= target:
            return None if i == k else float(np.median(r.tokens[i - k:i]))
    return None


def leave_one_run_out(fit: LawFit, published: PublishedLaw, *, resamples: int = 40,
                      target: float | None = None) -> list[LeftOut]:
    out = []
    runs: Sequence[RunPoints] = fit.runs
    if len(runs) < 3:
        return out
    for i, r in enumerate(runs):
        rest = [x for j, x in enumerate(runs) if j != i]
        held = [c.name for c in fit.held]
        without = fit_law(fit.form, rest, published=published, resamples=resamples, seed=fit.seed + 1 + i,
                          hold=held, start=fit.values())
        at, observed = observed_end(r)
        low, high = without.loss_interval(r.n, at, r.experts) if resamples else (None, None)
        obs_t = None if target is None else observed_tokens_to(r, target)
        pred_t = None if target is None else tokens_to_loss(without.values(), r.n, target, fit.form, r.experts)
        out.append(LeftOut(r.run, at, observed, float(without.loss(r.n, at, r.experts)), low, high, obs_t, pred_t))
    return out


def coverage(rows: Sequence[LeftOut]) -> float | None:
    judged = [r.covered for r in rows if r.covered is not None]
    return None if not judged else sum(judged) / len(judged)
