"""The committed results files (in results/'s subfolders; `tpsbench run` writes new runs to results/ itself,
as the README's quick start does before the tests run)."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _is_run(path: Path) -> bool:
    doc = json.loads(path.read_text())
    return isinstance(doc, dict) and str(doc.get("schema", "")).startswith("tpsbench.results/")


COMMITTED_RUNS = sorted(p for p in (ROOT / "results").glob("*/**/*.json") if _is_run(p))
