"""`tpsbench check`: a regression check of one run against a baseline run, for CI.

Per point (matched by what it measures: model, layer, implementation, mode, tokens), one metric with its
direction: a whole training step is judged by tokens/s (higher is better), a layer or stage by its median
time (lower is better). A change is a regression or an improvement only when it is larger than the
threshold *and* larger than the noise of the repeated samples, taken as the larger of the two runs'
relative interquartile ranges: the IQR is the spread a single repetition shows, so a median that moved
less than that is not a change a rerun would confirm.
A point that ran in the baseline but failed now (oom, error) counts as a regression, and so does one
missing now unless missing points are allowed (a run of a subset): the check cannot vouch for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from tpsbench.analysis.points import Entry

DEFAULT_THRESHOLD = 0.05  # 5%: pytest-benchmark's customary --benchmark-compare-fail=median:5%


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
class MetricCheck:
    label: str
    metric: str  # "tokens_per_s" or "median_ms"
    higher_is_better: bool
    baseline: float | None
    current: float | None
    change: float | None  # (current - baseline) / baseline
    noise: float | None  # relative IQR, the larger of the two runs
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
        return any(r.outcome.fails and not (self.allow_missing and r.outcome is Outcome.MISSING) for r in self.rows)

    def count(self, outcome: Outcome) -> int:
        return sum(r.outcome is outcome for r in self.rows)

    def to_dict(self) -> dict[str, object]:
        return {"threshold": self.threshold, "baseline": self.baseline, "current": self.current,
                "failed": self.failed, "allow_missing": self.allow_missing,
                "rows": [{"point": r.label, "metric": r.metric, "higher_is_better": r.higher_is_better,
                          "baseline": r.baseline, "current": r.current, "change": r.change, "noise": r.noise,
                          "outcome": str(r.outcome), "detail": r.detail} for r in self.rows]}


def _metric(e: Entry) -> tuple[str, bool, float | None]:
    if e.kind == "e2e":
        return "tokens_per_s", True, e.tokens_per_s
    return "median_ms", False, e.median_s * 1e3 if e.median_s is not None else None


def judge(base: float, cur: float, higher_is_better: bool, noise: float, threshold: float) -> Outcome:
    """The outcome of one metric; ``noise`` and ``threshold`` are relative."""
    change = (cur - base) / base
    if abs(change) <= threshold:
        return Outcome.UNCHANGED
    if abs(change) <= noise:
        return Outcome.WITHIN_NOISE
    better = change > 0 if higher_is_better else change < 0
    return Outcome.IMPROVEMENT if better else Outcome.REGRESSION


def check(baseline: list[Entry], current: list[Entry], *, threshold: float = DEFAULT_THRESHOLD,
          baseline_name: str = "baseline", current_name: str = "current", allow_missing: bool = False) -> CheckReport:
    if threshold < 0:
        raise ValueError(f"threshold {threshold} must be >= 0")
    report = CheckReport(threshold, baseline_name, current_name, allow_missing=allow_missing)
    now = {e.key: e for e in current}
    seen = set()
    for b in baseline:
        metric, up, bval = _metric(b)
        c = now.get(b.key)
        seen.add(b.key)
        if c is None:
            report.rows.append(MetricCheck(b.label, metric, up, bval, None, None, None, Outcome.MISSING,
                                           "not measured in the current run"))
            continue
        _, _, cval = _metric(c)
        if b.status != "ok":
            outcome = Outcome.FIXED if c.status == "ok" else Outcome.UNCHANGED
            report.rows.append(MetricCheck(b.label, metric, up, None, cval, None, None, outcome,
                                           f"baseline {b.status}, now {c.status}"))
            continue
        if c.status != "ok" or cval is None or bval is None:
            report.rows.append(MetricCheck(b.label, metric, up, bval, None, None, None, Outcome.FAILED,
                                           f"now {c.status}: {c.error or 'no measurement'}"))
            continue
        noise = max(b.iqr_rel or 0.0, c.iqr_rel or 0.0)
        outcome = judge(bval, cval, up, noise, threshold)
        report.rows.append(MetricCheck(b.label, metric, up, bval, cval, (cval - bval) / bval, noise, outcome))
    for c in current:
        if c.key not in seen:
            metric, up, cval = _metric(c)
            report.rows.append(MetricCheck(c.label, metric, up, None, cval, None, None, Outcome.NEW,
                                           "not in the baseline"))
    return report
