"""Loss against tokens, L(D) = E + B * D^(-beta), fitted robustly after warm-up, with a seeded bootstrap interval;
and the tokens a model needs to reach a target loss, observed and from the fit (`worth`).

The fit: ``scipy.optimize.least_squares`` with a Huber loss on the residuals of L (so spikes weigh little),
parameters (E, log B, beta) bounded to E in [0, the lowest loss seen], beta in (0, 2]. The interval: a
``scipy.stats.bootstrap`` (percentile, paired over the (tokens, loss) points, seeded) of each parameter and of
the tokens to the target. A target at or below E is unreachable by the fit: said so, never a number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tpsbench.analysis.seeded import bootstrap_seed

WARMUP_FRACTION = 0.1  # the first 10% of the tokens (learning-rate warm-up, the initial drop) are left out
SEED = 0
RESAMPLES = 200
CONFIDENCE = 0.90
MIN_POINTS = 5


@dataclass(frozen=True, slots=True)
class Interval:
    low: float
    high: float


@dataclass(frozen=True, slots=True)
class LossFit:
    e: float  # irreducible loss
    b: float
    beta: float
    rms_residual: float  # of the fitted points, in loss units
    points: int
    last_tokens: float
    last_loss: float  # smoothed
    e_interval: Interval | None
    beta_interval: Interval | None
    target: float | None = None  # the target loss the bootstrap's tokens-to-target samples are for
    # D* of each bootstrap resample (inf where the resample's E is at or above the target): the ratios of
    # two models' tokens and hours take their intervals from these
    tokens_samples: tuple[float, ...] = ()

    @property
    def tokens_interval(self) -> Interval | None:
        """The bootstrap interval of the tokens to ``target`` (``high`` is inf where the target is unreachable
        in the upper tail of the resamples)."""
        return quantile_interval(np.array(self.tokens_samples)) if self.tokens_samples else None

    def loss_at(self, tokens: float) -> float:
        return self.e + self.b * tokens ** (-self.beta)

    @property
    def plateau_gap(self) -> float:
        """How far the run's last (smoothed) loss is above E: near 0 means it has reached its plateau."""
        return self.last_loss - self.e


def quantile_interval(samples: np.ndarray) -> Interval | None:
    """The central CONFIDENCE interval of bootstrap samples, by the inverted CDF (no interpolation: a sample
    that is inf, an unreachable target, stays inf instead of turning the bound into nan); None if any is nan."""
    if len(samples) == 0 or np.isnan(samples).any():
        return None
    tail = (1.0 - CONFIDENCE) / 2
    lo, hi = np.quantile(samples, [tail, 1.0 - tail], method="inverted_cdf")
    return Interval(float(lo), float(hi))


def smooth(losses: np.ndarray, window: int = 9) -> np.ndarray:
    """A centred running median (robust to spikes) of odd ``window``, shorter at the ends."""
    half = window // 2
    return np.array([np.median(losses[max(0, i - half): i + half + 1]) for i in range(len(losses))])


def _fit(tokens: np.ndarray, losses: np.ndarray) -> tuple[float, float, float, float]:
    from scipy.optimize import least_squares  # imported when a fit runs: scipy takes about a second to import

    lo = float(np.min(losses))
    scale = float(np.median(tokens))
    x = tokens / scale  # fit in units of the median tokens: B stays of order the loss

    def resid(p: np.ndarray) -> np.ndarray:
        e, log_b, beta = p
        return e + np.exp(log_b) * x ** (-beta) - losses

    p0 = np.array([max(0.0, lo - 0.5 * (float(np.max(losses)) - lo) - 1e-3), 0.0, 0.3])
    p0[0] = min(p0[0], lo * 0.999)
    sol = least_squares(resid, p0, bounds=([0.0, -20.0, 1e-3], [lo, 20.0, 2.0]), loss="huber",
                        f_scale=max(1e-3, float(np.std(losses)) * 0.1))
    e, log_b, beta = sol.x
    b = math.exp(log_b) * scale ** beta  # back to raw tokens: B * (D/scale)^-beta = (B scale^beta) D^-beta
    rms = float(np.sqrt(np.mean(resid(sol.x) ** 2)))
    return float(e), float(b), float(beta), rms


def fit_loss_curve(tokens: np.ndarray, losses: np.ndarray, *, warmup_fraction: float = WARMUP_FRACTION,
                   bootstrap: bool = True, target: float | None = None, seed: int = SEED) -> LossFit:
    """L(D) fitted to the points after warm-up (``tokens`` cumulative, increasing); with ``bootstrap``, intervals
    of E and beta and, given a ``target``, bootstrap samples of the tokens to reach it."""
    tokens, losses = np.asarray(tokens, float), np.asarray(losses, float)
    keep = tokens >= tokens[0] + warmup_fraction * (tokens[-1] - tokens[0])
    keep &= tokens > 0
    t, y = tokens[keep], losses[keep]
    if len(t) < MIN_POINTS:
        raise ValueError(f"{len(t)} points after warm-up: at least {MIN_POINTS} are needed for a fit")
    e, b, beta, rms = _fit(t, y)
    e_iv = beta_iv = None
    samples: tuple[float, ...] = ()
    if bootstrap:
        def stat(tt: np.ndarray, yy: np.ndarray) -> np.ndarray:
            order = np.argsort(tt)
            fe, fb, fbeta, _ = _fit(tt[order], yy[order])
            d = math.inf if target is None or target <= fe else (fb / (target - fe)) ** (1.0 / fbeta)
            return np.array([fe, fbeta, d])

        from scipy import stats

        with np.errstate(invalid="ignore"):  # scipy's standard error of a distribution holding inf (unreachable)
            res = stats.bootstrap((t, y), stat, paired=True, vectorized=False, n_resamples=RESAMPLES,
                                  confidence_level=CONFIDENCE, method="percentile", **bootstrap_seed(seed))
        dist = np.asarray(res.bootstrap_distribution)
        e_iv, beta_iv = quantile_interval(dist[0]), quantile_interval(dist[1])
        if target is not None:
            samples = tuple(float(x) for x in dist[2])
    return LossFit(e, b, beta, rms, len(t), float(tokens[-1]), float(smooth(losses)[-1]), e_iv, beta_iv,
                   target, samples)


def tokens_to_target(fit: LossFit, target: float) -> float | None:
    """D* = (B / (L - E))^(1/beta); None when the target is at or below the fitted floor E (unreachable)."""
    if target <= fit.e:
        return None
    return (fit.b / (target - fit.e)) ** (1.0 / fit.beta)


def observed_tokens_to_target(tokens: np.ndarray, losses: np.ndarray, target: float) -> float | None:
    """The first tokens at which the smoothed loss reaches the target, or None if it never does."""
    s = smooth(np.asarray(losses, float))
    hit = np.nonzero(s <= target)[0]
    return None if len(hit) == 0 else float(np.asarray(tokens, float)[hit[0]])
