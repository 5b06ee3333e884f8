"""Loss curves as users have them (the input of `tpsbench worth`): a Weights & Biases "Export CSV" of a
line panel, or a long CSV.

* **W&B wide**: one column group per run, ``<run> - <metric>`` (e.g. ``train/CE loss``), its step either in a
  shared ``Step`` column or in ``<run> - Step``; W&B's ``__MIN`` / ``__MAX`` band columns are ignored; an optional
  ``<run> - throughput/total petaflops`` (cumulative), ``<run> - tokens`` and ``<run> - optim/LR (group 0)`` (the
  learning rate, as OLMo-core logs it) are kept; runs of different lengths leave cells empty.
* **long**: columns ``run, step, loss`` and optionally ``tokens``, ``petaflops``, ``lr``.

Runs continued under a second name are joined by :func:`join_runs` (by step; where two segments hold the same
step, the later segment's value is kept: a resumed run re-logs the steps it repeats).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tpsbench.errors import InputError, read_text

DEFAULT_METRIC = "train/CE loss"
LONG_COLUMNS = ("run", "step", "loss")
PETAFLOPS_METRIC = "throughput/total petaflops"
LR_METRIC = "optim/LR (group 0)"
Point = tuple[int, float, float | None, float | None, float | None]  # step, loss, tokens, petaflops, lr


class LossCsvError(InputError):
    """A loss CSV that cannot be read; the message names the file, the row or column, and what to change."""


@dataclass(frozen=True, slots=True)
class LossRun:
    """One run's curve, ordered by step."""

    name: str
    steps: tuple[int, ...]
    losses: tuple[float, ...]
    tokens: tuple[float, ...] | None = None  # cumulative tokens at each step, when the file has them
    petaflops: tuple[float, ...] | None = None  # cumulative PFLOP at each step, when the file has them
    lr: tuple[float, ...] | None = None  # the learning rate at each step, when the file has it

    def __len__(self) -> int:
        return len(self.steps)


def _number(text: str, where: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text.replace("_", ""))
    except ValueError:
        raise LossCsvError(f"{where}: '{text}' is not a number; every loss, step and tokens cell must be numeric "
                           "or empty") from None
    if not math.isfinite(value):
        return None  # W&B writes NaN for a diverged or missing value: no point there
    return value


def read_losses(path: str | Path, *, metric: str = DEFAULT_METRIC) -> list[LossRun]:
    """Every run of a W&B wide export or a long CSV, in the order the file names them."""
    p = Path(path)
    text = read_text(p, LossCsvError, "a loss CSV (a W&B line-panel export, or columns run, step, loss)",
                     encoding="utf-8-sig")
    try:
        rows = list(csv.reader(text.splitlines()))
    except csv.Error as exc:
        raise LossCsvError(f"{p}: not a readable CSV ({exc})") from None
    if not rows or not any(h.strip() for h in rows[0]):
        raise LossCsvError(f"{p}: empty file; expected a header (W&B export, or run, step, loss)")
    header = [h.strip() for h in rows[0]]
    lower = [h.lower() for h in header]
    if all(c in lower for c in LONG_COLUMNS):
        return _read_long(p, lower, rows[1:])
    return _read_wide(p, header, rows[1:], metric)


def _read_long(p: Path, header: list[str], rows: list[list[str]]) -> list[LossRun]:
    col = {name: header.index(name) for name in (*LONG_COLUMNS, "tokens", "petaflops", "lr") if name in header}
    data: dict[str, list[Point]] = {}
    for i, row in enumerate(rows, start=2):
        if not any(c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise LossCsvError(f"{p}:{i}: {len(row)} fields, the header has {len(header)}")
        run = row[col["run"]].strip()
        step = _number(row[col["step"]], f"{p}:{i} column step")
        loss = _number(row[col["loss"]], f"{p}:{i} column loss")
        if not run or step is None or loss is None:
            continue
        tok = _number(row[col["tokens"]], f"{p}:{i} column tokens") if "tokens" in col else None
        pf = _number(row[col["petaflops"]], f"{p}:{i} column petaflops") if "petaflops" in col else None
        lr = _number(row[col["lr"]], f"{p}:{i} column lr") if "lr" in col else None
        data.setdefault(run, []).append((int(step), loss, tok, pf, lr))
    if not data:
        raise LossCsvError(f"{p}: no rows with a run, a step and a loss")
    return [_run(name, pts) for name, pts in data.items()]


def _read_wide(p: Path, header: list[str], rows: list[list[str]], metric: str) -> list[LossRun]:
    shared_step = next((i for i, h in enumerate(header) if h.lower() in ("step", "_step")), None)
    runs: dict[str, dict[str, int]] = {}
    for i, h in enumerate(header):
        if " - " not in h or h.endswith(("__MIN", "__MAX")):
            continue
        run, _, col = h.rpartition(" - ")
        runs.setdefault(run.strip(), {})[col.strip()] = i
    losses = {run: cols for run, cols in runs.items() if metric in cols}
    if not losses:
        found = sorted({c for cols in runs.values() for c in cols})
        raise LossCsvError(f"{p}: no '<run> - {metric}' column (columns per run: {', '.join(found) or 'none'}); "
                           f"pass --metric with one of them, or use a long CSV with columns run, step, loss")
    out = []
    for run, cols in losses.items():
        step_col = cols.get("Step", cols.get("step", cols.get("_step", shared_step)))
        if step_col is None:
            raise LossCsvError(f"{p}: run '{run}' has no step column ('Step' or '{run} - Step')")
        pts = []
        for i, row in enumerate(rows, start=2):
            cell = row[cols[metric]] if cols[metric] < len(row) else ""
            loss = _number(cell, f"{p}:{i} column '{run} - {metric}'")
            step = _number(row[step_col] if step_col < len(row) else "", f"{p}:{i} column {header[step_col]!r}")
            if loss is None or step is None:
                continue
            tok, pf, lr = (_number(row[cols[c]], f"{p}:{i} column '{run} - {c}'")
                           if c in cols and cols[c] < len(row) else None
                           for c in ("tokens", PETAFLOPS_METRIC, LR_METRIC))
            pts.append((int(step), loss, tok, pf, lr))
        if pts:
            out.append(_run(run, pts))
    if not out:
        raise LossCsvError(f"{p}: the '{metric}' columns hold no numbers")
    return out


def _run(name: str, pts: Sequence[Point]) -> LossRun:
    by_step: dict[int, Point] = {}
    for pt in pts:
        by_step[pt[0]] = pt
    steps = sorted(by_step)

    def column(k: int) -> tuple[float, ...] | None:
        values = [by_step[s][k] for s in steps]
        return tuple(float(v) for v in values) if all(v is not None for v in values) else None  # type: ignore[arg-type]

    return LossRun(name, tuple(steps), tuple(by_step[s][1] for s in steps), column(2), column(3), column(4))


def join_runs(name: str, segments: Sequence[LossRun]) -> LossRun:
    """Segments of one training run (continued under other names) as one curve, by step; a step two segments
    both hold takes the later segment's value."""
    pts: list[Point] = []
    for seg in sorted((s for s in segments if len(s)), key=lambda s: s.steps[0]):
        for i, step in enumerate(seg.steps):
            pts.append((step, seg.losses[i], None if seg.tokens is None else seg.tokens[i],
                        None if seg.petaflops is None else seg.petaflops[i], None if seg.lr is None else seg.lr[i]))
    return _run(name, pts)
