"""`predict --vs`: two models' expected steps side by side, per op group, and what their gap is made of; for a
measured pair (`explain`, `compare`), the measured steps beside them and what the expected model leaves out."""

from __future__ import annotations

from tpsbench.analysis.measured_gap import MeasuredGap
from tpsbench.estimate.attribution import Gap
from tpsbench.report.format import pct
from tpsbench.report.tables import TableData

NAMED = 3  # the groups outside the FFN layer named in the summary line


def _signed_ms(seconds: float) -> str:
    return "0.00" if abs(seconds) < 5e-6 else f"{seconds * 1e3:+.2f}"  # no "-0.00" for a group that did not move


def gap_table(g: Gap, title: str) -> TableData:
    a, b = g.a.model, g.b.model
    t = TableData(title, ["op group", f"{a} ms", f"{b} ms", "gap ms", "share of gap"], left={"op group"})
    for r in g.rows:
        share = r.gap_s / g.gap_s if g.gap_s and abs(r.gap_s) >= 5e-6 else 0.0 if g.gap_s else None
        t.add(str(r.group), f"{r.a_s * 1e3:.2f}", f"{r.b_s * 1e3:.2f}", _signed_ms(r.gap_s), pct(share, "{:.0f}%"))
    t.add("expected step", f"{g.a.total_s * 1e3:.2f}", f"{g.b.total_s * 1e3:.2f}", f"{g.gap_s * 1e3:+.2f}",
          "100%" if g.gap_s else "n/a")
    return t


def gap_lines(g: Gap) -> list[str]:
    a, b = g.a.model, g.b.model
    ratio = g.b.total_s / g.a.total_s
    others = sorted((r for r in g.rows if not r.group.is_ffn_layer and abs(r.gap_s) > 0), key=lambda r: -abs(r.gap_s))
    named = ", ".join(f"{r.group} {r.gap_s * 1e3:+.2f} ms" for r in others[:NAMED])

    def part(seconds: float) -> str:
        return f"{seconds * 1e3:+.2f} ms" + (f" ({100 * seconds / g.gap_s:.0f}%)" if g.gap_s else "")

    return [f"expected: {b}'s step is {g.gap_s * 1e3:+.2f} ms against {a}'s ({ratio:.2f}x): the FFN layer "
            f"{part(g.ffn_layer_s())}, everything else that differs {part(g.other_s())}"
            + (f" ({named})" if named else "")]


def measured_gap_table(m: MeasuredGap) -> TableData:
    g = m.expected
    t = gap_table(g, f"{g.b.model} ({m.impl}) against {g.a.model} on {m.gpu}, measured at {m.tokens:,} "
                     "tokens/microbatch: expected ms per op group (per microbatch; optimizer split by parameters)")
    t.add("measured step", f"{m.a_measured_s * 1e3:.2f}", f"{m.b_measured_s * 1e3:.2f}",
          f"{m.measured_gap_s * 1e3:+.2f}", "")
    share = m.unaccounted_s / m.measured_gap_s if m.measured_gap_s else None
    t.add("not accounted for by the expected model", "", "", _signed_ms(m.unaccounted_s),
          pct(share, "{:.0f}% of measured") if share is not None else "n/a")
    return t


def measured_gap_lines(m: MeasuredGap) -> list[str]:
    g = m.expected
    a, b = g.a.model, g.b.model
    return [f"measured on {m.gpu}: {b} ({m.impl})'s step is {m.measured_gap_s * 1e3:+.2f} ms against {a}'s per "
            f"{m.tokens:,}-token microbatch ({m.b_measured_s / m.a_measured_s:.2f}x); the expected model accounts for "
            f"{g.gap_s * 1e3:+.2f} ms of it (FFN layer {g.ffn_layer_s() * 1e3:+.2f}, everything else that differs "
            f"{g.other_s() * 1e3:+.2f}) and not for {m.unaccounted_s * 1e3:+.2f} ms"]
