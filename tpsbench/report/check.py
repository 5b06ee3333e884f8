"""`tpsbench check`'s table and its one-line summary (FAIL/PASS and the count of each outcome)."""

from __future__ import annotations

from tpsbench.analysis.check import CONFIDENCE, CheckReport, Outcome
from tpsbench.report.format import NA, fmt
from tpsbench.report.tables import TableData, to_markdown


def check_table(r: CheckReport) -> TableData:
    t = TableData(f"Regression check: {r.current} vs {r.baseline} (threshold {100 * r.threshold:g}%, interval = "
                  f"{100 * CONFIDENCE:.0f}% bootstrap interval of the change, ratio of medians)",
                  ["point", "metric", "baseline", "current", "change", "interval", "outcome"],
                  left={"point", "metric", "outcome"})
    for x in r.rows:
        spec = "{:,.0f}" if x.metric == "tokens_per_s" else "{:.4f}"
        change = fmt(None if x.change is None else 100 * x.change, "{:+.1f}%")
        interval = NA if x.interval is None else f"{100 * x.interval.low:+.1f}..{100 * x.interval.high:+.1f}%"
        mark = " ✗" if r.counts_as_failure(x) else (" ✓" if x.outcome is Outcome.IMPROVEMENT else "")
        t.rows.append([x.label, x.metric + (" ↑" if x.higher_is_better else " ↓"), fmt(x.baseline, spec),
                       fmt(x.current, spec), change, interval,
                       str(x.outcome) + mark + (f" ({x.detail})" if x.detail else "")])
    return t


def check_summary(r: CheckReport) -> str:
    counts = ", ".join(f"{r.count(o)} {o}" for o in Outcome if r.count(o))
    head = "FAIL" if r.failed else "PASS"
    return f"{head}: {len(r.rows)} points: {counts}"


def check_markdown(r: CheckReport) -> str:
    """The check as a markdown section (a CI job summary collects one per model)."""
    return f"### tpsbench check: {check_summary(r)}\n\n" + to_markdown(check_table(r))
