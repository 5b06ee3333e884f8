"""`predict --vs`: two models' expected steps side by side, per op group, and what their gap is made of."""

from __future__ import annotations

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
