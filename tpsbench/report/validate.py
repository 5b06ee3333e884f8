"""`tpsbench validate`: each measured point against its expected estimate and its floor, and the errors by kind
of point (in-sample and leave-one-model-out)."""

from __future__ import annotations

from collections.abc import Sequence

from tpsbench.analysis.validate import ErrorSummary, ValidatedPoint
from tpsbench.report.format import fmt, pct
from tpsbench.report.tables import TableData


def validation_table(rows: Sequence[ValidatedPoint], *, lomo: bool) -> TableData:
    cols = ["point", "measured ms", "expected ms", "error", "floor ms", "floor error", "idle (exp.)"]
    if lomo:
        cols += ["held-out ms", "held-out error"]
    cols += ["peak GB", "expected GB", "memory error"]
    t = TableData("Measured points against the expected estimate and the floor (error = estimate / measured - 1)",
                  cols, left={"point"})
    for r in rows:
        p = r.point
        cells = [p.label, f"{r.measured_s * 1e3:.3f}", f"{r.expected_s * 1e3:.3f}", pct(r.error, "{:+.0f}%"),
                 f"{r.floor_s * 1e3:.3f}", pct(r.floor_error, "{:+.0f}%"), f"{100 * r.expected_idle_fraction:.0f}%"]
        if lomo:
            cells += [fmt(None if r.lomo_expected_s is None else r.lomo_expected_s * 1e3, "{:.3f}"),
                      pct(r.lomo_error, "{:+.0f}%")]
        cells += [fmt(None if p.peak_memory_bytes is None else p.peak_memory_bytes / 1e9),
                  fmt(None if r.expected_peak_bytes is None else r.expected_peak_bytes / 1e9),
                  pct(r.memory_error, "{:+.0f}%")]
        t.add(*cells)
    return t


def summary_table(summary: Sequence[ErrorSummary], *, lomo: bool) -> TableData:
    cols = ["kind", "points", "expected median", "expected max", "floor median"]
    if lomo:
        cols += ["held-out median", "held-out max"]
    cols += ["memory max"]
    t = TableData("Absolute errors by kind of point", cols, left={"kind"})
    for s in summary:
        cells = [s.kind, str(s.points), pct(s.median_abs), pct(s.max_abs), pct(s.floor_median_abs)]
        if lomo:
            cells += [pct(s.lomo_median_abs), pct(s.lomo_max_abs)]
        cells += [pct(s.memory_max_abs)]
        t.add(*cells)
    return t
