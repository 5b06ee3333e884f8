"""Measurements that cannot all be right: a layer's forward-and-backward faster than its backward alone (or its
forward alone) means some of their repetitions ran on a busy machine. Such points are flagged, not reported as
results."""

from __future__ import annotations

from collections import defaultdict

from tpsbench.results.schema import Point, RunDoc

INCONSISTENT = "inconsistent"  # the status such a point gets when analyses read it
TOLERANCE = 0.9  # fwd_bwd may undercut a part by timing noise; below 0.9x the part, the measurement is wrong


def inconsistent_points(doc: RunDoc) -> dict[int, str]:
    """Index in ``doc.points`` -> why, for every layer point (fwd, bwd and fwd_bwd of one layer) whose medians
    contradict each other."""
    groups: dict[tuple[object, ...], dict[str, tuple[int, Point]]] = defaultdict(dict)
    for i, p in enumerate(doc.points):
        if p.kind == "micro" and p.status == "ok" and p.stats and p.mode in ("fwd", "bwd", "fwd_bwd"):
            groups[(p.layer, p.impl, p.tokens, p.routing)][p.mode] = (i, p)
    out: dict[int, str] = {}
    for modes in groups.values():
        if "fwd_bwd" not in modes:
            continue
        both = modes["fwd_bwd"][1].stats
        for part in ("bwd", "fwd"):
            stats = modes[part][1].stats if part in modes else None
            if both is not None and stats is not None and both.median < TOLERANCE * stats.median:
                why = f"fwd_bwd {both.median * 1e3:.3f} ms < {TOLERANCE}x {part} {stats.median * 1e3:.3f} ms"
                for i, _ in modes.values():
                    out.setdefault(i, why)
                break
    return out
