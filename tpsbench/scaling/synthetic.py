"""Loss curves from a known law, for testing fits: several model sizes, unequal lengths, noise, a warm-up far
above the law, and runs continued under a second name (the overlap logged twice)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tpsbench.analysis.losses import LossRun
from tpsbench.scaling.fit import RunPoints
from tpsbench.scaling.forms import CHINCHILLA, LawForm

# The known law: Besiroglu et al.'s refit of Hoffmann's (E 1.8172, A 482.01, B 2085.43, alpha .3478, beta .3658)
TRUTH = dict(CHINCHILLA.published_law("besiroglu2024").values)
NOISE = 0.004  # relative sd of a logged loss (one batch's loss is noisy; a few tenths of a percent at 1M tokens)
WARMUP_FRACTION = 0.05  # the first 5% of a run sit far above the law, falling to it
TOKENS_PER_STEP = 1_048_576


@dataclass(frozen=True, slots=True)
class SyntheticSize:
    name: str  # the run's name
    n: float  # parameters as the form counts them
    steps: int  # logged steps (one point each)
    tokens_per_parameter: float  # how far the run goes
    continued_at: float | None = None  # the share of the run after which it goes on under "<name>-resume"
    experts: float = 1.0  # the joint MoE law's E


def synthetic_curves(sizes: Sequence[SyntheticSize], *, seed: int, law: dict[str, float] | None = None,
                     form: LawForm = CHINCHILLA, noise: float = NOISE) -> list[LossRun]:
    values = law or TRUTH
    rng = np.random.default_rng(seed)
    out = []
    for s in sizes:
        tokens = np.linspace(s.n * s.tokens_per_parameter / s.steps, s.n * s.tokens_per_parameter, s.steps)
        steps = np.round(tokens / TOKENS_PER_STEP).astype(int)
        loss = form.loss(values, np.full(s.steps, s.n), tokens, s.experts) * np.exp(rng.normal(0.0, noise, s.steps))
        warm = max(2, int(s.steps * WARMUP_FRACTION))
        loss[:warm] += np.linspace(3.0, 0.0, warm)
        if s.continued_at is None:
            out.append(LossRun(s.name, tuple(int(x) for x in steps), tuple(float(x) for x in loss),
                               tuple(float(x) for x in tokens)))
            continue
        cut = int(s.steps * s.continued_at)
        first, second = slice(0, cut), slice(max(0, cut - 5), s.steps)  # the resumed run re-logs 5 steps
        for name, part in ((s.name, first), (f"{s.name}-resume", second)):
            out.append(LossRun(name, tuple(int(x) for x in steps[part]), tuple(float(x) for x in loss[part]),
                               tuple(float(x) for x in tokens[part])))
    return out


def synthetic_points(spec: Sequence[tuple[float, float, float]], *, seed: int, law: dict[str, float],
                     form: LawForm, steps: int = 90) -> list[RunPoints]:
    """Runs of (N, the form's architecture variable, tokens per parameter) drawn from ``law`` as a fit takes them:
    one run each, its first 10% of tokens left out."""
    sizes = [SyntheticSize(f"m{i}", n, steps, tpp, experts=e) for i, (n, e, tpp) in enumerate(spec)]
    out = []
    for s, c in zip(sizes, synthetic_curves(sizes, seed=seed, law=law, form=form), strict=True):
        t, loss = np.array(c.tokens), np.array(c.losses)
        keep = t > 0.1 * t[-1]
        out.append(RunPoints(s.name, s.name, s.n, t[keep], loss[keep], s.experts))
    return out
