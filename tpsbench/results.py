"""Results files: one JSON document per run, schema-versioned, rewritten atomically after every point so an
interrupted sweep keeps what it measured; and loading into pandas, one row per point."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from tpsbench.errors import InputError

SCHEMA = "tpsbench.results/1"
POINT_STATUSES = ("ok", "oom", "error")


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def default_path(results_dir: Path, gpu: str, model: str) -> Path:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return results_dir / f"{stamp}-{gpu}-{model}.json"


def finite(value: Any) -> Any:
    """The document with every NaN or infinity replaced by None: JSON has no such numbers, and an
    undefined value is unknown, not a number."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def atomic_write_json(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = finite(doc)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1, allow_nan=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class ResultsWriter:
    """Holds the run document; every :meth:`add` rewrites the file atomically."""

    def __init__(self, path: Path, *, config: dict[str, Any], machine: dict[str, Any], git_commit: str | None,
                 tool_version: str) -> None:
        self.path = path
        self.doc: dict[str, Any] = {
            "schema": SCHEMA,
            "tool": "tpsbench",
            "tool_version": tool_version,
            "created_utc": utc_now(),
            "finished_utc": None,
            "status": "running",
            "git_commit": git_commit,
            "machine": machine,
            "config": config,
            "points": [],
        }
        atomic_write_json(self.path, self.doc)

    def add(self, point: dict[str, Any]) -> None:
        if point.get("status") not in POINT_STATUSES:
            raise ValueError(f"point status must be one of {POINT_STATUSES}, got {point.get('status')!r}")
        self.doc["points"].append(point)
        atomic_write_json(self.path, self.doc)

    def finish(self, status: str) -> None:
        self.doc["status"] = status
        self.doc["finished_utc"] = utc_now()
        atomic_write_json(self.path, self.doc)


class ResultsError(InputError):
    """A file that is not a tpsbench results document."""


def load_results(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ResultsError(f"{p}: not a readable JSON results file ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise ResultsError(f"{p}: schema is {doc.get('schema') if isinstance(doc, dict) else None!r}, "
                           f"expected '{SCHEMA}'")
    return doc


def load_dataframe(path: str | Path):
    """One row per point, nested fields flattened with dots (``stats.median``, ``derived.tokens_per_s``),
    plus the run's GPU, model and git commit on every row."""
    import pandas as pd

    doc = load_results(path)
    df = pd.json_normalize(doc["points"], sep=".")
    df["run.gpu_name"] = doc["machine"].get("gpu_name")
    df["run.profile"] = doc["machine"].get("profile")
    df["run.model"] = doc["config"].get("model")
    df["run.git_commit"] = doc.get("git_commit")
    return df
