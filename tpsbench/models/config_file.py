"""``--model PATH.json``: a model config the user trained with, OLMo-core's or Hugging Face's, told apart by its
keys (OLMo-core's has a ``model.block`` or a top-level ``block``; Hugging Face's a ``model_type``)."""

from __future__ import annotations

import re
from pathlib import Path

from tpsbench.errors import ParsedObject, parse_json, read_text
from tpsbench.models.hf_config import spec_from_hugging_face
from tpsbench.models.olmo_config import is_olmo_core_config, spec_from_olmo_core
from tpsbench.models.spec import ModelError, ModelSpec

WHAT = "a model config (OLMo-core's or Hugging Face's config.json)"
_NOT_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


def config_model_name(path: Path, doc: ParsedObject) -> str:
    """The name a config's model goes by: an experiment's ``run_name``, else the file's name, else (for the
    ``config.json`` of a checkpoint or model folder) the folder's; reduced to the characters a name may hold."""
    run = doc.get("run_name")
    stem = path.resolve().parent.name if path.stem == "config" else path.stem
    raw = run if isinstance(run, str) and run.strip() else stem
    name = _NOT_NAME.sub("_", raw.strip()).strip("_.-")
    return name or "config"


def read_config_file(path: Path) -> ModelSpec:
    """The model of an OLMo-core or Hugging Face config file; anything else is one line naming the file."""
    doc = parse_json(read_text(path, ModelError, WHAT), str(path), ModelError, WHAT)
    if not isinstance(doc, dict):
        raise ModelError(f"{path}: expected a JSON object: give {WHAT}")
    name = config_model_name(path, doc)
    if is_olmo_core_config(doc):
        return spec_from_olmo_core(doc, str(path), name)
    if "model_type" in doc:
        return spec_from_hugging_face(doc, str(path), name)
    raise ModelError(f"{path}: neither an OLMo-core config (no model.block or block) nor a Hugging Face config (no "
                     "model_type): give the config.json of an OLMo-core run or of a Hugging Face model")
