"""Reading older results files: one function that brings a version 1 document to version 2.

Version 1 (every file written before 2026-12) differs in three places: ``git_commit`` at the top level (on
GPU machines it named the session's starting commit, not always the code that ran), ``config.calibration``
a path instead of the calibration's ceilings, and config blocks of 16 keys in files written before counters,
GPU idle time, calibrated ceilings and ``--layers`` existed (those runs had none of them: the missing keys
read as off, ``spec`` and all layers). Nothing measured is changed.
"""

from __future__ import annotations

from tpsbench.results.schema import SCHEMA, SCHEMA_V1
from tpsbench.results.typed import JsonObject, SchemaError


def upgrade(data: JsonObject) -> JsonObject:
    """A version 2 document (JSON data) from a version 1 or 2 one; other schemas raise SchemaError."""
    version = data.get("schema")
    if version == SCHEMA:
        return data
    if version != SCHEMA_V1:
        raise SchemaError(f"schema is {version!r}, expected '{SCHEMA}' (or '{SCHEMA_V1}')")
    out = {k: v for k, v in data.items() if k != "git_commit"}
    out["schema"] = SCHEMA
    recorded = data.get("git_commit")
    out["provenance"] = {"git_commit": None, "dirty": None, "source_hash": None, "source_files": {},
                         "v1_git_commit": recorded if isinstance(recorded, str) else None}
    config = data.get("config")
    if isinstance(config, dict):
        config = dict(config)
        if isinstance(config.get("calibration"), str):
            config["calibration"] = {"path": config["calibration"]}
        out["config"] = config
    return out
