"""One table data path: a view is built once as :class:`TableData` (title, columns, rows of strings) and laid
out by a renderer, the terminal's (rich, fitted to the width: cells wrap, a value too wide for its column
folds onto the next line instead of being cut) or markdown's. Also the width itself: the terminal's own (or
``COLUMNS``), 100 columns when the output is piped."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

PIPED_WIDTH = 100


@dataclass(slots=True)
class TableData:
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    left: set[str] = field(default_factory=set)  # left-aligned columns (the rest are numbers)

    def add(self, *cells: str) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"{self.title}: a row of {len(cells)} cells for {len(self.columns)} columns")
        self.rows.append(list(cells))


def output_width() -> int:
    """``COLUMNS`` when it is set to a width, else the terminal's width, else (a pipe, a file) 100."""
    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        columns = 0
    if columns > 0:
        return columns
    if sys.stdout.isatty():
        try:
            return os.get_terminal_size(sys.stdout.fileno()).columns
        except OSError:
            pass
    return PIPED_WIDTH


def to_rich(td: TableData) -> Table:
    from rich.table import Table

    t = Table(title=td.title)
    for c in td.columns:
        t.add_column(c, justify="left" if c in td.left else "right", overflow="fold")
    for r in td.rows:
        t.add_row(*r)
    return t


def to_markdown(td: TableData) -> str:
    def cell(s: str) -> str:
        return s.replace("|", "\\|")

    lines = [f"**{td.title}**", "", "| " + " | ".join(td.columns) + " |",
             "|" + "|".join(":---" if c in td.left else "---:" for c in td.columns) + "|"]
    lines += ["| " + " | ".join(cell(x) for x in r) + " |" for r in td.rows]
    return "\n".join(lines) + "\n"


def show(console: Console, items: Iterable[TableData | str]) -> None:
    """Tables and lines of prose in order; prose wraps at the console's width (no markup: brackets are text)."""
    for item in items:
        if isinstance(item, TableData):
            console.print(to_rich(item))
        else:
            console.print(item, highlight=False, markup=False)
