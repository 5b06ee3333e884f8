"""A fitted law as a TOML file: the form, each coefficient with its 90% interval (or why it is held), the runs and
points it was fitted to, and the bootstrap resamples (so that a prediction from the file has its interval)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from tpsbench.errors import InputError, parse_toml, read_text
from tpsbench.scaling.fit import Coefficient
from tpsbench.scaling.forms import FORMS, LawForm

WHAT = "a law file written by `tpsbench scaling fit`"


class LawFileError(InputError):
    """A law file that cannot be read; one line naming the file and the key."""


def _num(x: float | None) -> str:
    return "nan" if x is None else repr(float(x))


def write_law(path: str | Path, form: LawForm, coefficients: tuple[Coefficient, ...], runs: list[dict[str, object]],
              samples: np.ndarray, seed: int) -> None:
    rows = ", ".join("[" + ", ".join(repr(float(x)) for x in s) + "]" for s in samples)
    # top-level keys before any table (TOML puts a key after a table header inside that table)
    lines = ["# written by `tpsbench scaling fit`", f'form = "{form.name}"', f'equation = "{form.equation}"',
             f'parameters = "{form.counts}"', f"seed = {seed}",
             f"bootstrap = [{rows}]  # resamples x ({', '.join(form.parameters)})", ""]
    for c in coefficients:
        lines += [f"[coefficients.{c.name}]", f"value = {_num(c.value)}"]
        if c.held is not None:
            lines.append(f'held = "{c.held}"')
        else:
            lines += [f"low = {_num(c.low)}", f"high = {_num(c.high)}"]
        lines.append("")
    for r in runs:
        lines += ["[[runs]]", *(f"{k} = {_toml_value(v)}" for k, v in r.items()), ""]
    Path(path).write_text("\n".join(lines) + "\n")


def _toml_value(v: object) -> str:
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(v)


def read_law(path: str | Path) -> tuple[LawForm, tuple[Coefficient, ...], np.ndarray, list[dict[str, object]]]:
    p = Path(path)
    doc = parse_toml(read_text(p, LawFileError, WHAT), str(p), LawFileError, WHAT)
    form = FORMS.get(str(doc.get("form")))
    if form is None:
        raise LawFileError(f"{p}: form '{doc.get('form')}' is not one of {', '.join(FORMS)}; write the file with "
                           "`tpsbench scaling fit`")
    table = doc.get("coefficients")
    if not isinstance(table, dict):
        raise LawFileError(f"{p}: no [coefficients] table; write the file with `tpsbench scaling fit`")
    coefficients = []
    for name in form.parameters:
        entry = table.get(name)
        value = entry.get("value") if isinstance(entry, dict) else None
        if not isinstance(value, int | float) or not math.isfinite(value):
            raise LawFileError(f"{p}: coefficients.{name}.value is missing or not a finite number")
        held = entry.get("held") if isinstance(entry, dict) else None
        low, high = (entry.get(k) if isinstance(entry, dict) else None for k in ("low", "high"))
        coefficients.append(Coefficient(name, float(value), _finite(low), _finite(high),
                                        held if isinstance(held, str) else None))
    raw = doc.get("bootstrap", [])
    try:
        samples = np.array(raw, dtype=float).reshape(-1, len(form.parameters))
    except (TypeError, ValueError):
        raise LawFileError(f"{p}: bootstrap must be rows of {len(form.parameters)} numbers "
                           f"({', '.join(form.parameters)})") from None
    runs = doc.get("runs", [])
    return form, tuple(coefficients), samples, [r for r in runs if isinstance(r, dict)]


def _finite(x: object) -> float | None:
    return float(x) if isinstance(x, int | float) and math.isfinite(x) else None
