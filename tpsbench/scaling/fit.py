"""Fitting a law to the user's runs: Hoffmann's approach 3 as Besiroglu et al. 2024 redid it.

Every point of every run after its warm-up, each run weighted equally whatever its length (a run's points share
a weight of 1); Huber loss (delta 1e-3) on the log of the loss; scipy's L-BFGS-B from a grid of starting points
(the objective evaluated at every grid point, the optimiser run from the best two) with E bounded by the lowest
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
NAMES = ("E", "A", "B", "alpha", "beta")  # the Chinchilla form's, in its order
MIN_POINTS = 10
POLISHED = 2  # grid starts refined by L-BFGS-B
# L-BFGS-B's stopping rules: tight with the Chinchilla form's exact gradient; with central differences (the joint
# form) a gradient below 1e-6 is noise, and the loss in units of delta changes by < 1e-11 only at the optimum
TOLERANCES = {True: {"ftol": 1e-13, "gtol": 1e-9, "maxiter": 5000},
              False: {"ftol": 1e-11, "gtol": 1e-6, "maxiter": 5000}}


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
    experts: float = 1.0  # the joint MoE law's E (1 for a dense model)


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
    samples: np.ndarray  # bootstrap resamples x coefficients (in the form's order), held ones constant
    seed: int

    def values(self) -> dict[str, float]:
        return {c.name: c.value for c in self.coefficients}

    def coefficient(self, name: str) -> Coefficient:
        return next(c for c in self.coefficients if c.name == name)

    def loss(self, n: float, tokens: float | np.ndarray, experts: float = 1.0) -> np.ndarray:
        return self.form.loss(self.values(), np.asarray(n, float), np.asarray(tokens, float), experts)

    def sample_values(self) -> list[dict[str, float]]:
        return [dict(zip(self.form.parameters, s, strict=True)) for s in self.samples]

    def loss_interval(self, n: float, tokens: float, experts: float = 1.0) -> tuple[float, float]:
        """The 90% interval of the law's loss at (n, tokens) over the bootstrap resamples."""
        if not len(self.samples):
            raise ValueError("a fit without bootstrap resamples has no interval")
        preds = [self.form.loss(v, np.asarray(n, float), np.asarray(tokens, float), experts)
                 for v in self.sample_values()]
        return float(np.percentile(preds, 5)), float(np.percentile(preds, 95))

    @property
    def held(self) -> list[Coefficient]:
        return [c for c in self.coefficients if c.held is not None]


def tokens_to_loss(values: dict[str, float], n: float, target: float, form: LawForm | None = None,
                   experts: float = 1.0) -> float | None:
    """Tokens at which the law reaches ``target`` for a model of ``n`` parameters; None when it never does (the
    target is at or below what infinite data would give)."""
    from tpsbench.scaling.forms import CHINCHILLA

    return (form or CHINCHILLA).tokens_to_loss(values, n, target, experts)


def _to_x(values: dict[str, float], free: Sequence[str], form: LawForm) -> np.ndarray:
    return np.array([math.log(values[k]) if k in form.log_scaled else values[k] for k in free])


def _from_x(x: np.ndarray, free: Sequence[str], fixed: dict[str, float], form: LawForm) -> dict[str, float]:
    out = dict(fixed)
    for k, v in zip(free, x, strict=True):
        out[k] = math.exp(v) if k in form.log_scaled else float(v)
    return out


@dataclass(frozen=True, slots=True)
class _Data:
    log_n: np.ndarray
    log_d: np.ndarray
    log_l: np.ndarray
    weights: np.ndarray
    experts: np.ndarray


def _data(runs: Sequence[RunPoints]) -> _Data:
    log_n = np.concatenate([np.full(len(r.tokens), math.log(r.n)) for r in runs])
    weights = np.concatenate([np.full(len(r.tokens), 1.0 / (len(r.tokens) * len(runs))) for r in runs])
    return _Data(log_n, np.log(np.concatenate([r.tokens for r in runs])),
                 np.log(np.concatenate([r.losses for r in runs])), weights,
                 np.concatenate([np.full(len(r.tokens), r.experts) for r in runs]))


def _huber(r: np.ndarray, weights: np.ndarray) -> float:
    loss = np.where(np.abs(r) <= HUBER_DELTA, 0.5 * r * r, HUBER_DELTA * (np.abs(r) - 0.5 * HUBER_DELTA))
    return float((weights * loss).sum() / HUBER_DELTA)


def _objective(x: np.ndarray, free: Sequence[str], fixed: dict[str, float], data: _Data, form: LawForm
               ) -> tuple[float, np.ndarray]:
    """The weighted Huber loss of log L and its gradient in the free coordinates (analytic for the Chinchilla
    form, central differences for the others)."""
    if form.name != "chinchilla":
        def f(y: np.ndarray) -> float:
            v = _from_x(y, free, fixed, form)
            pred = form.loss(v, np.exp(data.log_n), np.exp(data.log_d), data.experts)
            if not np.all(pred > 0):
                return 1e6
            return _huber(np.log(pred) - data.log_l, data.weights)
        base = f(x)
        grad = np.empty(len(x))
        for i in range(len(x)):
            step = 1e-6 * max(1.0, abs(x[i]))
            up, down = x.copy(), x.copy()
            up[i] += step
            down[i] -= step
            grad[i] = (f(up) - f(down)) / (2 * step)
        return base, grad
    v = _from_x(x, free, fixed, form)
    a_term = np.exp(math.log(v["A"]) - v["alpha"] * data.log_n)
    b_term = np.exp(math.log(v["B"]) - v["beta"] * data.log_d)
    pred = v["E"] + a_term + b_term
    r = np.log(pred) - data.log_l
    # In units of delta: the loss is then about the mean |residual| / delta, large enough for L-BFGS-B's
    # tolerances (at its raw scale, ~1e-5, the optimiser stops where it starts: Besiroglu et al.'s finding).
    dr = data.weights * np.clip(r, -HUBER_DELTA, HUBER_DELTA) / pred / HUBER_DELTA
    partial = {"E": dr.sum(), "A": (dr * a_term).sum(), "B": (dr * b_term).sum(),
               "alpha": -(dr * a_term * data.log_n).sum(), "beta": -(dr * b_term * data.log_d).sum()}
    return _huber(r, data.weights), np.array([partial[k] for k in free])


def _minimise(starts: Sequence[dict[str, float]], free: Sequence[str], fixed: dict[str, float], data: _Data,
              e_max: float, form: LawForm) -> dict[str, float]:
    bounds = [(form.bounds[k][0], e_max) if k == form.floor else form.bounds[k] for k in free]
    low = [-np.inf if b[0] is None else b[0] for b in bounds]
    high = [np.inf if b[1] is None else b[1] for b in bounds]
    points = [np.clip(_to_x(start, free, form), low, high) for start in starts]
    if len(points) > POLISHED:  # the grid's objective is cheap: L-BFGS-B from its best few starts only
        points = sorted(points, key=lambda x: _objective(x, free, fixed, data, form)[0])[:POLISHED]
    best = None
    for x0 in points:
        res = minimize(_objective, x0, args=(free, fixed, data, form), jac=True, method="L-BFGS-B", bounds=bounds,
                       options=TOLERANCES[form.name == "chinchilla"])
        if best is None or res.fun < best.fun:
            best = res
    assert best is not None
    return _from_x(best.x, free, fixed, form)


def held_parameters(form: LawForm, runs: Sequence[RunPoints]) -> tuple[tuple[str, ...], str | None]:
    """What the runs cannot identify, and why (None when they identify everything)."""
    sizes = len({round(r.n) for r in runs})
    held: list[str] = []
    why = []
    size_exponent, size_scale = ("alpha", "A") if form.name == "chinchilla" else ("alpha", "a")
    if sizes == 2:
        held.append(size_exponent)
        why.append(f"two model sizes identify the N term at two N only: {size_exponent} held")
    elif sizes < 2:
        held += [size_scale, size_exponent]
        why.append(f"one model size: its N term is one number, which the floor absorbs; {size_scale} and "
                   f"{size_exponent} held")
    if form.name == "granularity" and (sizes < 2 or len({r.experts for r in runs}) < 2):
        held += ["g", "gamma"]
        why.append("one granularity: g / G^gamma + a is one number at one G, which a absorbs; g and gamma held"
                   if sizes >= 2 else "g and gamma held with the N term")
    if form.name == "joint_moe":
        counts = len({r.experts for r in runs})
        if counts < 2:
            held += ["delta", "gamma", "omega", "zeta"]
            why.append("one expert count: how the law changes with E is not seen; delta, gamma, omega, zeta held")
        if counts < 4:
            held += ["E_start", "E_max"]
            why.append(f"{counts} expert count(s): the transform's E_start and E_max need at least 4; held")
    return tuple(dict.fromkeys(held)), ("; ".join(why) or None)


def fit_law(form: LawForm, runs: Sequence[RunPoints], *, published: PublishedLaw, resamples: int = 200,
            seed: int = 0, hold: Sequence[str] = (), start: dict[str, float] | None = None) -> LawFit:
    """The law fitted to ``runs``, with bootstrap intervals; ``published`` supplies held values; ``start`` (a
    neighbouring fit's values) replaces the grid of starting points."""
    if len(runs) < 2:
        raise ScalingFitError(f"{len(runs)} run: a law needs at least 2 runs (mapped with --map RUN=MODEL)")
    if sum(len(r.tokens) for r in runs) < MIN_POINTS:
        raise ScalingFitError(f"{sum(len(r.tokens) for r in runs)} points after the warm-up: a law needs at least "
                              f"{MIN_POINTS} (lower --skip-tokens, or add runs)")
    for r in runs:
        if (r.losses <= 0).any() or (r.tokens <= 0).any():
            raise ScalingFitError(f"run {r.run}: losses and tokens must be positive")
    unidentified, why = held_parameters(form, runs)
    held_names = tuple(dict.fromkeys([*unidentified, *hold]))
    fixed = {k: published.values[k] for k in held_names}
    free = [k for k in form.parameters if k not in fixed]
    e_max = float(min(r.losses.min() for r in runs))
    data = _data(runs)
    grid_keys = [k for k in form.grid if k in free]
    combos = itertools.product(*(form.grid[k] for k in grid_keys))
    base = {**published.values, **fixed}
    starts = [{**base, **dict(zip(grid_keys, combo, strict=True)), form.floor: e_max * f}
              for combo in combos for f in (0.5, 0.9)]
    starts.append({**base, form.floor: min(published.values[form.floor], e_max * 0.99)})
    if start is not None:
        starts = [{**start, **fixed, form.floor: min(start[form.floor], e_max)}]
    best = _minimise(starts, free, fixed, data, e_max, form)
    rng = np.random.default_rng(seed)
    samples = np.empty((resamples, len(form.parameters)))
    for i in range(resamples):
        picked = [runs[j] for j in rng.integers(0, len(runs), len(runs))]
        boot = [RunPoints(r.run, r.model, r.n, r.tokens[idx], r.losses[idx], r.experts)
                for r in picked for idx in [rng.integers(0, len(r.tokens), len(r.tokens))]]
        values = _minimise([best], free, fixed, _data(boot), e_max, form)
        samples[i] = [values[k] for k in form.parameters]
    coefficients = []
    for j, k in enumerate(form.parameters):
        if k in fixed:
            reason = why if k in unidentified else "held by --hold"
            coefficients.append(Coefficient(k, best[k], None, None, f"{reason} at {published.name}'s value"))
        elif resamples:
            coefficients.append(Coefficient(k, best[k], float(np.percentile(samples[:, j], 5)),
                                            float(np.percentile(samples[:, j], 95))))
        else:
            coefficients.append(Coefficient(k, best[k], None, None))
    return LawFit(form, tuple(coefficients), tuple(runs), samples, seed)
