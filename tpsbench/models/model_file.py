"""Model files: one TOML file per model (the zoo's, shipped in ``models/``, and the user's own), read by one
validated parser that names the file and the key on any error.

    name = "my_moe"
    note = "64 experts, 1B active"            # optional, shown by `list models`
    source = "our run 2026-11 config"         # optional: where every value without its own source comes from

    [model]
    d_model = 2048
    n_layers = { value = 16, source = "config.json of run 42" }   # any value may carry its own source
    n_heads = 16
    vocab_size = 50304

    [moe]                                      # absent for a dense model, which gives ffn_hidden instead
    num_experts = 64
    top_k = 8
    expert_hidden = 1024
    type = "dropless"

    [olmo_core]                                # optional: the OLMo-core name the users know it by
    name = "olmoe_1B_7B"
    factory = "olmoe_1B_7B"                    # the TransformerConfig factory that builds exactly this model

The keys of ``[model]`` and ``[moe]``, their types and defaults are ``tpsbench.models.fields.FIELDS``.
"""

from __future__ import annotations

import re
from pathlib import Path

from tpsbench.errors import ParsedObject, parse_toml, read_text
from tpsbench.models.fields import FIELDS, Field, MoEType, Table, fields_of
from tpsbench.models.spec import ModelError, ModelSpec, MoESpec, SpecValues

WHAT = "a model file (TOML; see docs/models.md for the format)"
# A model's name becomes part of results file names and table cells: no path separators, and none of the
# characters the variant syntax uses (BASE:key=value,...).
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
TOP_KEYS = {"name": "the model's name", "note": "a short note", "source": "where the values come from",
            "model": "the [model] table", "moe": "the [moe] table", "olmo_core": "the [olmo_core] table"}
OLMO_CORE_KEYS = {"name": "OLMo-core's name for the model", "factory": "the TransformerConfig factory",
                  "factory_note": "why no factory builds it"}

Sources = dict[str, str]


def _string(where: str, key: str, raw: object) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ModelError(f"{where}: key '{key}': expected a non-empty string, got {raw!r}")
    return raw.strip()


def _unknown(where: str, table: str, given: ParsedObject, allowed: list[str]) -> None:
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ModelError(f"{where}: {table}unknown key(s) {', '.join(map(repr, unknown))}; allowed: "
                         f"{', '.join(allowed)}")


def _typed(where: str, f: Field, raw: object) -> object:
    label = f"{where}: [{f.table}] {f.key}"
    if f.kind is bool:
        ok = isinstance(raw, bool)
    elif f.kind is int:
        ok = isinstance(raw, int) and not isinstance(raw, bool)
    elif f.kind is float:
        ok = isinstance(raw, int | float) and not isinstance(raw, bool)
    else:
        ok = isinstance(raw, str) and raw in set(MoEType)
    if not ok:
        raise ModelError(f"{label} = {raw!r}: expected {f.type_name}")
    return float(raw) if f.kind is float else f.kind(raw) if f.kind is MoEType else raw


def _table(where: str, data: ParsedObject, table: Table, default_source: str | None,
           sources: Sources) -> SpecValues:
    """The values of one table by attribute name, checked for type; each value's source into ``sources``."""
    raw = data.get(str(table), {})
    if not isinstance(raw, dict):
        raise ModelError(f"{where}: key '{table}': expected a table [{table}], got {raw!r}")
    known = fields_of(table)
    _unknown(where, f"[{table}] ", raw, list(known))
    values: SpecValues = {}
    for key, item in raw.items():
        f = known[key]
        if isinstance(item, dict):
            _unknown(where, f"[{table}] {key}: ", item, ["value", "source"])
            if "value" not in item:
                raise ModelError(f"{where}: [{table}] {key}: missing 'value' (write {key} = {{ value = ..., "
                                 'source = "..." }} or just the value)')
            source = _string(where, f"{table}.{key}.source", item.get("source")) if "source" in item else None
            item = item["value"]
        else:
            source = None
        values[f.attribute] = _typed(where, f, item)
        if source or default_source:
            sources[f"{table}.{key}"] = source or default_source or ""
    for f in known.values():
        if f.required and f.attribute not in values:
            raise ModelError(f"{where}: [{table}] missing key '{f.key}' ({f.meaning}): add {f.key} = "
                             f"<{f.type_name}>")
    return values


def _moe(where: str, values: SpecValues) -> MoESpec:
    kind = values.pop("type")
    if kind is MoEType.CAPACITY and "capacity_factor" not in values:
        raise ModelError(f"{where}: [moe] type = \"capacity\" needs capacity_factor (e.g. 1.25)")
    if kind is MoEType.DROPLESS:
        if "capacity_factor" in values:
            raise ModelError(f"{where}: [moe] capacity_factor: a dropless MoE has none (remove it, or set "
                             "type = \"capacity\")")
        values["capacity_factor"] = None
    return MoESpec(**values)  # type: ignore[arg-type]


def spec_from_document(data: ParsedObject, where: str, origin: str) -> ModelSpec:
    """A model from a parsed model file; ``where`` prefixes every error."""
    _unknown(where, "", data, list(TOP_KEYS))
    name = _string(where, "name", data.get("name"))
    if not MODEL_NAME.fullmatch(name):
        raise ModelError(f"{where}: key 'name' = {name!r}: use letters, digits and _ . - (it names results files)")
    default_source = _string(where, "source", data["source"]) if "source" in data else None
    olmo = data.get("olmo_core", {})
    if not isinstance(olmo, dict):
        raise ModelError(f"{where}: key 'olmo_core': expected a table [olmo_core], got {olmo!r}")
    _unknown(where, "[olmo_core] ", olmo, list(OLMO_CORE_KEYS))
    olmo_text = {k: _string(where, f"olmo_core.{k}", v) for k, v in olmo.items()}
    if "model" not in data:
        raise ModelError(f"{where}: missing table [model] (d_model, n_layers, n_heads, vocab_size, ...)")
    sources: Sources = {}
    model = _table(where, data, Table.MODEL, default_source, sources)
    try:
        moe = _moe(where, _table(where, data, Table.MOE, default_source, sources)) if "moe" in data else None
        note = _string(where, "note", data["note"]) if "note" in data else ""
        return ModelSpec(
            name=name, olmo_name=olmo_text.get("name", ""), olmo_factory=olmo_text.get("factory"),
            olmo_factory_note=olmo_text.get("factory_note", ""), note=note, moe=moe,
            origin=origin, sources=tuple(sources.items()), **model,  # type: ignore[arg-type]
        )
    except ModelError as exc:
        message = str(exc)
        raise ModelError(message if message.startswith(where) else f"{where}: {message}") from None


def parse_model_file(path: Path, origin: str | None = None) -> ModelSpec:
    """Load and validate one model file."""
    data = parse_toml(read_text(path, ModelError, WHAT), str(path), ModelError, WHAT)
    return spec_from_document(data, str(path), origin or str(path))


def described_keys() -> list[tuple[str, str, str, str]]:
    """(table, key, type, meaning) of every key, for `list` and the docs."""
    return [(str(f.table), f.key, f.type_name, ("required: " if f.required else "") + f.meaning) for f in FIELDS]
