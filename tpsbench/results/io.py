"""Results files on disk: written atomically after every point so an interrupted sweep keeps what it measured
(with the permissions the user's umask gives, like any file they write), read back through the schema (any
version, upgraded), and loaded into pandas, one row per point."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import IO, Any

from tpsbench.errors import InputError, parse_json, read_text
from tpsbench.provenance import git_state, imported_sources, source_hash
from tpsbench.results.schema import POINT_STATUSES, SCHEMA, ConfigRecord, Machine, Point, Provenance, RunDoc
from tpsbench.results.typed import SchemaError, from_dict, to_dict
from tpsbench.results.upgrade import upgrade


class ResultsError(InputError):
    """A file that is not a tpsbench results document."""


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def default_path(results_dir: Path, gpu: str, model: str) -> Path:
    """A timestamped file name; a variant's ':' '=' ',' become '_' (portable file names; the file records the
    model's full name)."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return results_dir / f"{stamp}-{gpu}-{re.sub(r'[^A-Za-z0-9._-]+', '_', model)}.json"


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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_json(path: Path, doc: Any) -> None:
    """Write JSON (a schema instance or plain data) to a temporary file beside ``path`` and rename it over
    ``path``: a reader sees the old or the new document, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = finite(to_dict(doc))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp creates 0600; a results file is as readable as any other
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, allow_nan=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def current_provenance() -> Provenance:
    """The code this process runs: the imported source files' hashes, and the commit if the code is clean."""
    commit, dirty = git_state()
    files = imported_sources()
    return Provenance(git_commit=commit, dirty=dirty, source_hash=source_hash(files), source_files=files)


class ResultsWriter:
    """Holds the run document; every :meth:`add` rewrites the file atomically. While it writes, it holds a lock
    beside the file (``.NAME.lock``, an flock the OS releases if the process dies), so two runs never write one
    file; an existing file is kept unless ``overwrite``."""

    def __init__(self, path: Path, *, config: ConfigRecord, machine: Machine, tool_version: str,
                 overwrite: bool = False) -> None:
        self.path = path
        check_output(path, overwrite=overwrite)
        self._lock: IO[str] | None = _lock(path)
        try:
            check_output(path, overwrite=overwrite)  # again under the lock: another run may have just made it
        except ResultsError:
            self.close()
            raise
        self.doc = RunDoc(schema=SCHEMA, tool="tpsbench", tool_version=tool_version, created_utc=utc_now(),
                          finished_utc=None, status="running", provenance=current_provenance(), machine=machine,
                          config=config, points=[])
        atomic_write_json(self.path, self.doc)

    def add(self, point: Point) -> None:
        if point.status not in POINT_STATUSES:
            raise ValueError(f"point status must be one of {POINT_STATUSES}, got {point.status!r}")
        # the provenance again: a point may have imported more of the code (the Triton kernels, say)
        self.doc = dataclasses.replace(self.doc, points=[*self.doc.points, point], provenance=current_provenance())
        atomic_write_json(self.path, self.doc)

    def finish(self, status: str) -> None:
        self.doc = dataclasses.replace(self.doc, status=status, finished_utc=utc_now())
        atomic_write_json(self.path, self.doc)
        self.close()

    def close(self) -> None:
        """Release the lock (the file stays)."""
        if self._lock is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._lock.name)
            self._lock.close()
            self._lock = None


def check_output(path: Path, *, overwrite: bool = False) -> None:
    """A results file may be written at ``path``: not a folder, and not an existing file unless ``overwrite``."""
    if path.is_dir():
        raise ResultsError(f"{path} is a folder: give a file name for the results, e.g. {path / 'run.json'}")
    if path.exists() and not overwrite:
        raise ResultsError(f"{path} exists: choose another --out, or pass --overwrite to replace it")


def _lock(path: Path) -> IO[str]:
    """An exclusive lock on ``.NAME.lock`` beside ``path``, or a one-line error if another run holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path.parent / f".{path.name}.lock", "a")  # noqa: SIM115 - held for the writer's lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ResultsError(f"another tpsbench run is writing {path}: wait for it, or choose another --out") from None
    return handle


def read_json(path: str | Path, what: str = "results", error: type[InputError] | None = None) -> Any:
    """JSON data of a file, or a one-line error naming the file: unreadable, too large, not UTF-8, not JSON."""
    kind = error or ResultsError
    return parse_json(read_text(path, kind, f"a JSON {what} file"), str(path), kind, f"a JSON {what} file")


def parse_results(data: Any, source: str) -> RunDoc:
    """A run document from JSON data of any schema version, validated field by field."""
    if not isinstance(data, dict):
        raise ResultsError(f"{source}: not a tpsbench results document (a JSON object with a 'schema' field)")
    try:
        doc = from_dict(RunDoc, upgrade(data))
    except SchemaError as exc:
        raise ResultsError(f"{source}: {exc}") from None
    for i, p in enumerate(doc.points):
        if p.status not in POINT_STATUSES:
            raise ResultsError(f"{source}: field 'points[{i}].status': expected one of {', '.join(POINT_STATUSES)}, "
                               f"found {p.status!r}")
        if p.status != "ok":
            continue
        missing = [name for name in ("stats", "derived", "raw") if getattr(p, name) is None]
        if missing:
            raise ResultsError(f"{source}: field 'points[{i}].{missing[0]}': missing (null) for a point with status ok")
        if p.raw is not None and not p.raw.samples_s:
            raise ResultsError(f"{source}: field 'points[{i}].raw.samples_s': empty for a point with status ok")
    return doc


def load_results(path: str | Path) -> RunDoc:
    return parse_results(read_json(path), str(path))


def load_dataframe(path: str | Path):
    """One row per point, nested fields flattened with dots (``stats.median``, ``derived.tokens_per_s``),
    plus the run's GPU, model and provenance on every row."""
    import pandas as pd

    doc = load_results(path)
    df = pd.json_normalize([to_dict(p) for p in doc.points], sep=".")
    df["run.gpu_name"] = doc.machine.gpu_name
    df["run.profile"] = doc.machine.profile
    df["run.model"] = doc.config.model
    df["run.git_commit"] = doc.provenance.git_commit
    df["run.source_hash"] = doc.provenance.source_hash
    return df
