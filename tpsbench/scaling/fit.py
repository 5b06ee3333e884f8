"""Fitting a law to the user's runs: Hoffmann's approach 3 as Besiroglu et al. 2024 redid it.

Every point of every run after its warm-up, each run weighted equally whatever its length (a run's points share
a weight of 1); Huber loss (delta 1e-3) on the log of the loss; scipy's L-BFGS-B from a grid of starting points
(the objective evaluated at every grid point, the optimiser run from the best four) with E bounded by the lowest
observed loss. Parameters the runs cannot identify are held at a published value: with two model sizes, alpha;
with one, A and alpha too (A / N^alpha is then one number, which E absorbs). Intervals: a seeded bootstrap over
runs and, within each, over points; each resample refitted from the full fit's optimum; 5th and 95th percentiles.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from tpsbench.errors import InputError
from tpsbench.scaling.forms import LawForm, PublishedLaw

HUBER_DELTA = 1e-3
# the optimiser's coordinates: E, ln A, ln B, alpha, beta
NAMES = ("E", "A", "B", "alpha", "beta")
LOG_SCALED = {"A", "B"}
BOUNDS = {"E": (0.0, None), "A": (0.0, 30.0), "B": (0.0, 30.0), "alpha": (0.01, 2.0), "beta": (0.01, 2.0)}
GRID = {"A": (2.0, 6.0, 10.0), "B": (2.0, 6.0, 10.0), "alpha": (0.1, 0.3, 0.5), "beta": (0.1, 0.3, 0.5)}
MIN_POINTS = 10
POLISHED = 4  # grid starts refined by L-BFGS-B


class ScalingFitError(InputError):
    """Runs a form cannot be fitted to (too few, one point each, a loss that is not positive); one line."""


@dataclass(frozen=True, slots=True)
class RunPoints:
    """One run's points the fit uses: its model's parameter count as the form counts them, tokens and losses."""

    run: str
    model: str
    n: float
    tokens: np.ndarray
    losses: np.ndarray


@dataclass(frozen=True, slots=True)
class Coefficient:
    name: str
    value: float
    low: float | None  # the 90% interval (None when held)
    high: float | None
    held: str | None = None  # why and at which published law's value it is held; None when fitted


@dataclass(frozen=True, slots=True)
class LawFit:
    form: LawForm
    coefficients: tuple[Coefficient, ...]
    runs: tuple[RunPoints, ...]
    samples: np.ndarray  # bootstrap resamples x coefficients (in NAMES order), held ones constant
    seed: int

    def values(self) -> dict[str, float]:
        return {c.name: c.value for c in self.coefficients}

    def coefficient(self, name: str) -> Coefficient:
        return next(c for c in self.coefficients if c.name == name)

    def loss(self, n: float, tokens: float | np.ndarray) -> np.ndarray:
        return self.form.loss(self.values(), np.asarray(n, float), np.asarray(tokens, float))

    def loss_interval(self, n: float, tokens: float) -> tuple[float, float]:
        """The 90% interval of the law's loss at (n, tokens) over the bootstrap resamples."""
        if not len(self.samples):
            raise ValueError("a fit without bootstrap resamples has no interval")
        preds = [self.form.loss(dict(zip(NAMES, s, strict=True)), np.asarray(n, float), np.asarray(tokens, float))
                 for s in self.samples]
        return float(np.percentile(preds, 5)), float(np.percentile(preds, 95))

    @property
    def held(self) -> list[Coefficient]:
        return [c for c in self.coefficients if c.held is not None]


def tokens_to_loss(values: dict[str, float], n: float, target: float) -> float | None:
    """Tokens at which the law reaches ``target`` for a model of ``n`` parameters; None when it never does (the
    target is at or below what infinite data would give, E + A / N^alpha)."""
    floor = values["E"] + values["A"] * n ** -values["alpha"]
    if target <= floor:
        return None
    return float((values["B"] / (target - floor)) ** (1.0 / values["beta"]))


def _to_x(values: dict[str, float], free: Sequence[str]) -> np.ndarray:
    return np.array([math.log(values[k]) if k in LOG_SCALED else values[k] for k in free])


def _from_x(x: np.ndarray, free: Sequence[str], fixed: dict[str, float]) -> dict[str, float]:
    out = dict(fixed)
    for k, v in zip(free, x, strict=True):
        out[k] = math.exp(v) if k in LOG_SCALED else float(v)
    return out


@dataclass(frozen=True, slots=True)
class _Data:
    log_n: np.ndarray
    log_d: np.ndarray
    log_l: np.ndarray
    weights: np.ndarray


def _data(runs: Sequence[RunPoints]) -> _Data:
    log_n = np.concatenate([np.full(len(r.tokens), math.log(r.n)) for r in runs])
    weights = np.concatenate([np.full(len(r.tokens), 1.0 / (len(r.tokens) * len(runs))) for r in runs])
    return _Data(log_n, np.log(np.concatenate([r.tokens for r in runs])),
                 np.log(np.concatenate([r.losses for r in runs])), weights)


def _objective(x: np.ndarray, free: Sequence[str], fixed: dict[str, float], data: _Data
               ) -> tuple[float, np.ndarray]:
    """The weighted Huber loss of log L and its gradient in the free coordinates."""
    v = _from_x(x, free, fixed)
    a_term = np.exp(math.log(v["A"]) - v["alpha"] * data.log_n)
    b_term = np.exp(math.log(v["B"]) - v["beta"] * data.log_d)
    pred = v["E"] + a_term + b_term
    r = np.log(pred) - data.log_l
    small = np.abs(r) <= HUBER_DELTA
    loss = np.where(small, 0.5 * r * r, HUBER_DELTA * (np.abs(r) - 0.5 * HUBER_DELTA))
    # In units of delta: the loss is then about the mean |residual| / delta, large enough for L-BFGS-B's
    # tolerances (at its raw scale, ~1e-5, the optimiser stops where it starts: Besiroglu et al.'s finding).
    dr = data.weights * np.clip(r, -HUBER_DELTA, HUBER_DELTA) / pred / HUBER_DELTA
    partial = {"E": dr.sum(), "A": (dr * a_term).sum(), "B": (dr * b_term).sum(),
               "alpha": -(dr * a_term * data.log_n).sum(), "beta": -(dr * b_term * data.log_d).sum()}
    return float((data.weights * loss).sum() / HUBER_DELTA), np.array([partial[k] for k in free])


def _minimise(starts: Sequence[dict[str, float]], free: Sequence[str], fixed: dict[str, float], data: _Data,
              e_max: float) -> dict[str, float]:
    bounds = [(BOUNDS[k][0], e_max) if k == "E" else BOUNDS[k] for k in free]
    low, high = [b[0] for b in bounds], [np.inf if b[1] is None else b[1] for b in bounds]
    points = [np.clip(_to_x(start, free), low, high) for start in starts]
    if len(points) > POLISHED:  # the grid's objective is cheap: L-BFGS-B from its best few starts only
        points = sorted(points, key=lambda x: _objective(x, free, fixed, data)[0])[:POLISHED]
    best = None
    for x0 in points:
        res = minimize(_objective, x0, args=(free, fixed, data), jac=True, method="L-BFGS-B", bounds=bounds,
                       options={"ftol": 1e-13, "gtol": 1e-9, "maxiter": 5000})
        if best is None or res.fun < best.fun:
            best = res
    assert best is not None
    return _from_x(best.x, free, fixed)


def held_parameters(runs: Sequence[RunPoints]) -> tuple[tuple[str, ...], str | None]:
    """What the runs cannot identify, and why (None when they identify everything)."""
    sizes = len({round(r.n) for r in runs})
    if sizes >= 3:
        return (), None
    if sizes == 2:
        return ("alpha",), "two model sizes identify E + A / N^alpha at two N only: alpha held"
    return ("A", "alpha"), "one model size: A / N^alpha is one number, which E absorbs; A and alpha held"


def fit_law(form: LawForm, runs: Sequence[RunPoints], *, published: PublishedLaw, resamples: int = 200,
            seed: int = 0, hold: Sequence[str] = ()) -> LawFit:
    """The law fitted to ``runs``, with bootstrap intervals; ``published`` supplies held values."""
    if len(runs) < 2:
        raise ScalingFitError(f"{len(runs)} run: a law needs at least 2 runs (mapped with --map RUN=MODEL)")
    if sum(len(r.tokens) for r in runs) < MIN_POINTS:
        raise ScalingFitError(f"{sum(len(r.tokens) for r in runs)} points after the warm-up: a law needs at least "
                              f"{MIN_POINTS} (lower --skip-tokens, or add runs)")
    for r in runs:
        if (r.losses <= 0).any() or (r.tokens <= 0).any():
            raise ScalingFitError(f"run {r.run}: losses and tokens must be positive")
    unidentified, why = held_parameters(runs)
    held_names = tuple(dict.fromkeys([*unidentified, *hold]))
    fixed = {k: published.values[k] for k in held_names}
    free = [k for k in NAMES if k not in fixed]
    e_max = float(min(r.losses.min() for r in runs))
    data = _data(runs)
    grid = [dict(zip(GRID, combo, strict=True)) for combo in itertools.product(*GRID.values())]
    starts = [{**{k: (math.exp(v) if k in LOG_SCALED else v) for k, v in g.items()}, "E": e_max * f, **fixed}
              for g in grid for f in (0.5, 0.9)]
    best = _minimise(starts, free, fixed, data, e_max)
    rng = np.random.default_rng(seed)
    samples = np.empty((resamples, len(NAMES)))
    for i in range(resamples):
        picked = [runs[j] for j in rng.integers(0, len(runs), len(runs))]
        boot = [RunPoints(r.run, r.model, r.n, r.tokens[idx], r.losses[idx])
                for r in picked for idx in [rng.integers(0, len(r.tokens), len(r.tokens))]]
        values = _minimise([best], free, fixed, _data(boot), e_max)
        samples[i] = [values[k] for k in NAMES]
    coefficients = []
    for j, k in enumerate(NAMES):
        if k in fixed:
            reason = why if k in unidentified else "held by --hold"
            coefficients.append(Coefficient(k, best[k], None, None, f"{reason} at {published.name}'s value"))
        elif resamples:
            coefficients.append(Coefficient(k, best[k], float(np.percentile(samples[:, j], 5)),
                                            float(np.percentile(samples[:, j], 95))))
        else:
            coefficients.append(Coefficient(k, best[k], None, None))
    return LawFit(form, tuple(coefficients), tuple(runs), samples, seed)
