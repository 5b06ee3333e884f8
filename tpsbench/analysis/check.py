"""`tpsbench check`: a regression check of one run against a baseline run, for CI.

Per point (matched by what it measures: model, layer, implementation, mode, tokens), one metric with its
direction: a whole training step is judged by tokens/s (higher is better), a layer or stage by its median
time (lower is better). The change of the metric comes with a confidence interval: a seeded bootstrap of the
ratio of the two runs' medians over their raw samples (``scipy.stats.bootstrap``, percentile method,
two independent samples). The interval, not one repetition's spread, is what a rerun would reproduce:
the relative IQR of the committed moe_1b baselines is 14-50%, and judged against it a 14-33% regression
passed.

- **regression** / **improvement**: the whole interval lies beyond the threshold, in the bad / good direction;
- **unchanged**: the whole interval lies within the threshold;
- **within noise**: the interval straddles the threshold (more repetitions would decide).

A point that ran in the baseline but failed now (oom, error) counts as a regression, and so does one
missing now unless missing points are allowed (a run of a subset): the check cannot vouch for them. A
point timed once (``--reps 1``) has no interval and is judged by its medians alone, and says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from tpsbench.options import PointKind
from tpsbench.points import MeasuredPoint
from tpsbench.results.typed import JsonObject

DEFAULT_THRESHOLD = 0.05  # 5%: pytest-benchmark's customary --benchmark-compare-fail=median:5%
CONFIDENCE = 0.95
RESAMPLES = 2000  # percentile-interval end points move by < 0.1% of the ratio between seeds at n = 30
SEED = 0  # the same files always give the same verdict


class Outcome(StrEnum):
    REGRESSION = "regression"
    IMPROVEMENT = "improvement"
    WITHIN_NOISE = "within noise"
    UNCHANGED = "unchanged"
    FAILED = "failed"  # ok in the baseline, oom/error now
    MISSING = "missing"  # in the baseline, not measured now
    FIXED = "fixed"  # failed in the baseline, ok now
    NEW = "new"  # not in the baseline

    @property
    def fails(self) -> bool:
        return self in (Outcome.REGRESSION, Outcome.FAILED, Outcome.MISSING)


@dataclass(frozen=True, slots=True)
class Interval:
    """A confidence interval of a relative change (0.1 = +10%)."""

    low: float
    high: float
    confidence: float = CONFIDENCE

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


@dataclass(frozen=True, slots=True)
class MetricCheck:
    label: str
    metric: str  # "tokens_per_s" or "median_ms"
    higher_is_better: bool
    baseline: float | None
    current: float | None
    change: float | None  # (current - baseline) / baseline of the metric
    interval: Interval | None  # confidence interval of ``change``; None without raw samples
    outcome: Outcome
    detail: str = ""


@dataclass(slots=True)
class CheckReport:
    threshold: float
    baseline: str
    current: str
    rows: list[MetricCheck] = field(default_factory=list)
    allow_missing: bool = False  # a baseline point not measured now is reported but does not fail

    @property
    def failed(self) -> bool:
        return any(self.counts_as_failure(r) for r in self.rows)

    def counts_as_failure(self, row: MetricCheck) -> bool:
        return row.outcome.fails and not (self.allow_missing and row.outcome is Outcome.MISSING)

    def count(self, outcome: Outcome) -> int:
        return sum(r.outcome is outcome for r in self.rows)

    def to_dict(self) -> JsonObject:
        return {"threshold": self.threshold, "baseline": self.baseline, "current": self.current,
                "failed": self.failed, "allow_missing": self.allow_missing,
                "interval": {"method": "bootstrap percentile, ratio of medians", "confidence": CONFIDENCE,
                             "resamples": RESAMPLES, "seed": SEED},
                "rows": [{"point": r.label, "metric": r.metric, "higher_is_better": r.higher_is_better,
                          "baseline": r.baseline, "current": r.current, "change": r.change,
                          "change_low": None if r.interval is None else r.interval.low,
                          "change_high": None if r.interval is None else r.interval.high,
                          "outcome": str(r.outcome), "detail": r.detail} for r in self.rows]}


def _bootstrap(statistic, *, n_resamples: int, seed: int):
    """``scipy.stats.bootstrap`` with its seed under the keyword this scipy has (``rng`` since 1.15)."""
    from scipy import stats

    from tpsbench.analysis.seeded import bootstrap_seed

    return lambda data: stats.bootstrap(data, statistic, vectorized=True, paired=False, n_resamples=n_resamples,
                                        confidence_level=CONFIDENCE, method="percentile",
                                        **bootstrap_seed(seed)).confidence_interval


def _median_ratio(base: np.ndarray, cur: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.median(cur, axis=axis) / np.median(base, axis=axis)


def time_ratio_interval(base_s: Sequence[float], cur_s: Sequence[float], *, n_resamples: int = RESAMPLES,
                        seed: int = SEED) -> tuple[float, float]:
    """Confidence interval of median(current) / median(baseline) from the raw time samples."""
    if len(base_s) < 2 or len(cur_s) < 2:
        raise ValueError("a bootstrap interval needs at least two samples per run")
    ci = _bootstrap(_median_ratio, n_resamples=n_resamples, seed=seed)(
        (np.asarray(base_s, dtype=float), np.asarray(cur_s, dtype=float)))
    return float(ci.low), float(ci.high)


def change_interval(base_s: Sequence[float], cur_s: Sequence[float], *, higher_is_better: bool,
                    n_resamples: int = RESAMPLES, seed: int = SEED) -> Interval:
    """The interval of the metric's relative change: time (lower is better) changes by ratio - 1; a rate
    (tokens/s = tokens / time, higher is better) by 1 / ratio - 1, its end points swapped."""
    lo, hi = time_ratio_interval(base_s, cur_s, n_resamples=n_resamples, seed=seed)
    if higher_is_better:
        return Interval(1 / hi - 1, 1 / lo - 1)
    return Interval(lo - 1, hi - 1)


def judge(interval: Interval, higher_is_better: bool, threshold: float) -> Outcome:
    """The outcome of one metric from the interval of its relative change; ``threshold`` is relative."""
    if -threshold <= interval.low and interval.high <= threshold:
        return Outcome.UNCHANGED
    worse = (lambda c: c < -threshold) if higher_is_better else (lambda c: c > threshold)
    better = (lambda c: c > threshold) if higher_is_better else (lambda c: c < -threshold)
    if worse(interval.low) and worse(interval.high):
        return Outcome.REGRESSION
    if better(interval.low) and better(interval.high):
        return Outcome.IMPROVEMENT
    return Outcome.WITHIN_NOISE


MIN_REPETITIONS = 10  # the timer's default minimum (TimingConfig.min_reps): fewer make a coarse bootstrap


def repetitions_needed(samples_s: Sequence[float], threshold: float = DEFAULT_THRESHOLD, *,
                       n_resamples: int = RESAMPLES, seed: int = SEED) -> int:
    """Repetitions per run for the interval of a change to be at most ``threshold`` wide on each side, for
    a workload as noisy as ``samples_s``: the interval of the run against itself (two independent draws of
    the same samples) at the observed n, scaled by 1/sqrt(n) (the median's standard error). Then a change
    of twice the threshold is reported as a regression and no change is reported as one. At least
    MIN_REPETITIONS."""
    n = len(samples_s)
    lo, hi = time_ratio_interval(samples_s, samples_s, n_resamples=n_resamples, seed=seed)
    half = (hi - lo) / 2
    return max(MIN_REPETITIONS, math.ceil(n * (half / threshold) ** 2))


def _metric(e: MeasuredPoint) -> tuple[str, bool, float | None]:
    if e.key.kind is PointKind.E2E:
        return "tokens_per_s", True, e.tokens_per_s
    return "median_ms", False, e.median_s * 1e3 if e.median_s is not None else None


def _compare_point(b: MeasuredPoint, c: MeasuredPoint, threshold: float) -> MetricCheck:
    metric, up, bval = _metric(b)
    _, _, cval = _metric(c)
    if b.status != "ok":
        outcome = Outcome.FIXED if c.status == "ok" else Outcome.UNCHANGED
        return MetricCheck(b.label, metric, up, None, cval, None, None, outcome, f"baseline {b.status}, now {c.status}")
    if c.status != "ok" or cval is None or bval is None:
        return MetricCheck(b.label, metric, up, bval, None, None, None, Outcome.FAILED,
                           f"now {c.status}: {c.error or 'no measurement'}")
    change = (cval - bval) / bval
    if len(b.samples_s) < 2 or len(c.samples_s) < 2:
        point = Interval(change, change, confidence=0.0)
        return MetricCheck(b.label, metric, up, bval, cval, change, None, judge(point, up, threshold),
                           "fewer than two samples: medians only, no interval")
    interval = change_interval(b.samples_s, c.samples_s, higher_is_better=up)
    outcome = judge(interval, up, threshold)
    detail = ""
    if outcome is Outcome.WITHIN_NOISE and threshold > 0:
        noisier = max((b.samples_s, c.samples_s), key=lambda s: (max(s) - min(s)) / max(min(s), 1e-30))
        needed, have = repetitions_needed(noisier, threshold), min(len(b.samples_s), len(c.samples_s))
        if needed > have:
            detail = f"interval ±{100 * threshold:g}% needs about {needed} repetitions per run, {have} now"
        else:  # the interval is narrow enough: the change itself sits at the threshold
            detail = (f"{have} repetitions already narrow the interval to ±{100 * threshold:g}%: the change is at "
                      "the threshold; rerun both to decide")
    return MetricCheck(b.label, metric, up, bval, cval, change, interval, outcome, detail)


def check(baseline: list[MeasuredPoint], current: list[MeasuredPoint], *, threshold: float = DEFAULT_THRESHOLD,
          baseline_name: str = "baseline", current_name: str = "current", allow_missing: bool = False) -> CheckReport:
    if threshold < 0:
        raise ValueError(f"threshold {threshold} must be >= 0")
    report = CheckReport(threshold, baseline_name, current_name, allow_missing=allow_missing)
    now = {e.key: e for e in current}
    seen = set()
    for b in baseline:
        seen.add(b.key)
        c = now.get(b.key)
        if c is None:
            metric, up, bval = _metric(b)
            report.rows.append(MetricCheck(b.label, metric, up, bval, None, None, None, Outcome.MISSING,
                                           "not measured in the current run"))
            continue
        report.rows.append(_compare_point(b, c, threshold))
    for c in current:
        if c.key not in seen:
            metric, up, cval = _metric(c)
            report.rows.append(MetricCheck(c.label, metric, up, None, cval, None, None, Outcome.NEW,
                                           "not in the baseline"))
    return report
