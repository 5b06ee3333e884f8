"""The one number formatter: every value a table or a line shows goes through :func:`fmt`, so an unknown value
(None, NaN, an infinity nobody explained) reads "n/a" everywhere and never as a made-up number.

A leaf module (it imports nothing of tpsbench): the analyses' evidence texts use it too."""

from __future__ import annotations

import math

NA = "n/a"


def fmt(x: float | int | None, spec: str = "{:.1f}", *, infinite: str | None = None) -> str:
    """``spec.format(x)``, or "n/a" for an unknown value; an infinity reads ``infinite`` where the caller knows
    what it means ("unreachable"), else "n/a"."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return NA
    if isinstance(x, float) and math.isinf(x):
        return infinite if infinite is not None else NA
    return spec.format(x)


def pct(x: float | None, spec: str = "{:.0f}%") -> str:
    """A fraction as a percentage (0.25 -> "25%"), or "n/a"."""
    return fmt(None if x is None else 100 * x, spec)
