"""Tables and lines of the expected-time model: `validate`'s error table and summary, and the expected estimate
and memory verdict shown next to a floor by `predict`."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table

from tpsbench.analysis.validate import ErrorSummary, ValidatedPoint
from tpsbench.estimate.step import StepEstimate


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:+.0f}%"


def _abs_pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def validation_table(rows: Sequence[ValidatedPoint], *, lomo: bool) -> Table:
    t = Table(title="Measured points against the expected estimate and the floor (error = estimate / measured - 1)")
    cols = ["point", "measured ms", "expected ms", "error", "floor ms", "floor error", "idle (exp.)"]
    if lomo:
        cols += ["held-out ms", "held-out error"]
    cols += ["peak GB", "expected GB", "memory error"]
    for c in cols:
        t.add_column(c, justify="left" if c == "point" else "right")
    for r in rows:
        p = r.point
        cells = [p.label, f"{p.measured_s * 1e3:.3f}", f"{r.expected_s * 1e3:.3f}", _pct(r.error),
                 f"{r.floor_s * 1e3:.3f}", _pct(r.floor_error), f"{100 * r.expected_idle_fraction:.0f}%"]
        if lomo:
            cells += ["n/a" if r.lomo_expected_s is None else f"{r.lomo_expected_s * 1e3:.3f}", _pct(r.lomo_error)]
        cells += ["n/a" if p.peak_memory_bytes is None else f"{p.peak_memory_bytes / 1e9:.1f}",
                  "n/a" if r.expected_peak_bytes is None else f"{r.expected_peak_bytes / 1e9:.1f}",
                  _pct(r.memory_error)]
        t.add_row(*cells)
    return t


def summary_table(summary: Sequence[ErrorSummary], *, lomo: bool) -> Table:
    t = Table(title="Absolute errors by kind of point")
    cols = ["kind", "points", "expected median", "expected max", "floor median"]
    if lomo:
        cols += ["held-out median", "held-out max"]
    cols += ["memory max"]
    for c in cols:
        t.add_column(c, justify="left" if c == "kind" else "right")
    for s in summary:
        cells = [s.kind, str(s.points), _abs_pct(s.median_abs), _abs_pct(s.max_abs), _abs_pct(s.floor_median_abs)]
        if lomo:
            cells += [_abs_pct(s.lomo_median_abs), _abs_pct(s.lomo_max_abs)]
        cells += [_abs_pct(s.memory_max_abs)]
        t.add_row(*cells)
    return t


def step_estimate_lines(s: StepEstimate) -> list[str]:
    """The expected step and the memory verdict, a few lines (what `predict` prints next to the floor)."""
    lines: list[str] = []
    e = s.expected
    if e is None:
        lines.append(f"expected: n/a ({s.reason})")
    else:
        tl = e.timeline
        lines += [
            f"expected step {e.seconds * 1e3:.2f} ms = {s.tokens / e.seconds:,.0f} tokens/s (+/-"
            f"{100 * e.uncertainty:.0f}%, {'compiled' if e.compiled else 'eager'}); floor {e.floor_s * 1e3:.2f} ms = "
            f"{s.tokens / e.floor_s:,.0f} tokens/s: the floor is {100 * e.floor_s / e.seconds:.0f}% of the expected",
            f"  GPU busy {tl.gpu_busy_s * 1e3:.2f} ms, idle {tl.gpu_idle_s * 1e3:.2f} ms "
            f"({100 * tl.gpu_idle_fraction:.0f}%); host {tl.host_s * 1e3:.2f} ms for {tl.launches:,} kernel launches "
            f"and {tl.syncs} GPU->CPU syncs",
            f"  efficiencies: {e.table.basis} ({e.table.gpu})",
        ]
        lines += [f"  note: {n}" for n in e.notes]
    m = s.memory
    verdict = "fits" if s.fits else "does not fit"
    lines.append(f"memory: peak {m.peak_bytes / 1e9:.1f} GB allocated (parameters and AdamW state "
                 f"{m.parameters_and_state_bytes / 1e9:.1f}, activations {m.activations_bytes / 1e9:.1f}, loss "
                 f"{m.loss_transient_bytes / 1e9:.1f}, bf16 weight copies {m.weight_copies_bytes / 1e9:.1f}) + "
                 f"allocator reserve {m.overhead_bytes / 1e9:.1f} GB on {s.usable_bytes / 1e9:.1f} GB usable: "
                 f"{verdict} on {s.gpu}")
    return lines
