"""The law a command plans or predicts with, from wherever it comes: a law file, a published table, or a fit just
made; each with the range its runs covered (sizes, tokens, expert counts or granularities) and the FLOP
convention most of them logged, so that every command flags extrapolation the same way."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tpsbench.errors import InputError
from tpsbench.scaling.forms import PUBLISHED, PUBLISHED_NOTE, LawForm
from tpsbench.scaling.plan import Law


class UnknownLawError(InputError):
    """A --published name that is not a published law; one line naming them."""


def law_from_runs(form: LawForm, values: dict[str, float], samples: np.ndarray, source: str,
                  runs: Sequence[dict[str, object]]) -> Law:
    """A fitted law with the range its runs (their law-file records) covered."""
    sizes = [float(r["n"]) for r in runs if isinstance(r.get("n"), int | float)]
    last = [float(r["last_tokens"]) for r in runs if isinstance(r.get("last_tokens"), int | float)]
    logged = [str(r["flop_convention"]) for r in runs if isinstance(r.get("flop_convention"), str)]
    counts = [float(r["experts"]) for r in runs if isinstance(r.get("experts"), int | float)]
    return Law(form, values, samples, source, (min(sizes), max(sizes)) if sizes else None,
               max(last) if last else None, max(set(logged), key=logged.count) if logged else "6N",
               (min(counts), max(counts)) if counts else None)


def load_law(path: str) -> Law:
    """A law file written by `scaling fit`."""
    from tpsbench.scaling.law_file import read_law

    form, coefficients, samples, runs = read_law(path)
    return law_from_runs(form, {c.name: c.value for c in coefficients}, np.asarray(samples), f"fitted law {path}",
                         runs)


def published_law(name: str) -> Law:
    """A published law by name (no resamples: it has no interval of its own)."""
    if name not in PUBLISHED:
        raise UnknownLawError(f"--published '{name}' is not one of {', '.join(PUBLISHED)}")
    form, published = PUBLISHED[name]
    return Law(form, dict(published.values), np.empty((0, len(form.parameters))),
               f"{published.citation}; {PUBLISHED_NOTE}", None, None, experts=published.experts)
