"""Reading older results files: one function that brings a version 1 or 2 document to version 3, a step at a time.

Version 1 (every file written before 2026-12) differs from 2 in three places: ``git_commit`` at the top level (on
GPU machines it named the session's starting commit, not always the code that ran), ``config.calibration`` a
path instead of the calibration's ceilings, and config blocks of 16 keys in files written before counters, GPU
idle time, calibrated ceilings and ``--layers`` existed (those runs had none of them: the missing keys read as
off, ``spec`` and all layers). Version 2 differs from 3 in one: ``config.model_spec``, the whole model, is absent;
those versions could run only zoo models, so it is the zoo's model of the file's name. Nothing measured is changed.
"""

from __future__ import annotations

from tpsbench.models import zoo_models
from tpsbench.results.model_record import model_record
from tpsbench.results.schema import SCHEMA, SCHEMA_V1, SCHEMA_V2
from tpsbench.results.typed import JsonObject, SchemaError, to_dict


def _v1_to_v2(data: JsonObject) -> JsonObject:
    out = {k: v for k, v in data.items() if k != "git_commit"}
    out["schema"] = SCHEMA_V2
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


def _v2_to_v3(data: JsonObject) -> JsonObject:
    out = dict(data)
    out["schema"] = SCHEMA
    config = data.get("config")
    if isinstance(config, dict) and "model_spec" not in config:  # a malformed config fails on its own fields
        name = config.get("model")
        zoo = zoo_models()
        if not isinstance(name, str) or name not in zoo:
            raise SchemaError(f"field 'config.model': a {SCHEMA_V2} file names a zoo model; found {name!r} "
                              f"(zoo: {', '.join(sorted(zoo))})")
        out["config"] = {**config, "model_spec": to_dict(model_record(zoo[name]))}
    return out


def upgrade(data: JsonObject) -> JsonObject:
    """A version 3 document (JSON data) from a version 1, 2 or 3 one; other schemas raise SchemaError."""
    version = data.get("schema")
    if version == SCHEMA:
        return data
    if version not in (SCHEMA_V1, SCHEMA_V2):
        raise SchemaError(f"schema is {version!r}, expected '{SCHEMA}' (or '{SCHEMA_V2}', '{SCHEMA_V1}')")
    return _v2_to_v3(_v1_to_v2(data) if version == SCHEMA_V1 else data)
