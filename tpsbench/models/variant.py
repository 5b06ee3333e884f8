"""What-if variants without a file: ``BASE:key=value,key=value``, e.g. ``moe_1b:experts=64,top_k=8`` or
``dense_1b:layers=24``. BASE is anything ``--model`` takes (a name, a .toml or a config.json); the keys are a
model file's (``tpsbench.models.fields``) or their short forms (``ALIASES``). Every count is the spec's own, so
it follows; the variant is named by its base's name and the keys it changed, in the keys' order, so that one
what-if has one name in every table and results file whichever way it was typed.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from tpsbench.models.fields import FIELDS, Field, MoEType, Table
from tpsbench.models.spec import ModelError, ModelSpec, SpecValues

if TYPE_CHECKING:
    from collections.abc import Callable

ALIASES = {"layers": "n_layers", "heads": "n_heads", "kv_heads": "n_kv_heads", "experts": "num_experts",
           "vocab": "vocab_size", "width": "d_model"}
_BY_KEY = {f.key: f for f in FIELDS}
_SYNTAX = "BASE:key=value,... (e.g. moe_1b:experts=64,top_k=8)"


def is_variant(text: str) -> bool:
    """A ``--model`` value that overrides keys: a ':' followed by key=value pairs."""
    base, sep, overrides = text.rpartition(":")
    return bool(sep and base and "=" in overrides)


def _value(f: Field, raw: str, text: str) -> object:
    value = raw.strip()
    try:
        if f.kind is bool:
            if value.lower() not in ("true", "false"):
                raise ValueError
            return value.lower() == "true"
        if f.kind is MoEType:
            return MoEType(value)
        number = float(value) if f.kind is float else int(value)
    except ValueError:
        raise ModelError(f"model variant '{text}': {f.key}={value}: expected {f.type_name}") from None
    return number


def _overrides(text: str, overrides: str) -> dict[Field, object]:
    out: dict[Field, object] = {}
    for pair in overrides.split(","):
        key, sep, raw = pair.partition("=")
        key = ALIASES.get(key.strip(), key.strip())
        if not sep or key not in _BY_KEY:
            known = ", ".join([*_BY_KEY, *ALIASES])
            raise ModelError(f"model variant '{text}': '{pair.strip()}' is not key=value with a known key; write "
                             f"{_SYNTAX} with keys from: {known}")
        out[_BY_KEY[key]] = _value(_BY_KEY[key], raw, text)
    return out


def _moe_type(spec_moe: object, kind: MoEType, changes: SpecValues, text: str) -> None:
    """``type`` sets the capacity factor: dropless has none, capacity needs one (given, or the base's)."""
    if kind is MoEType.DROPLESS:
        if "capacity_factor" in changes:
            raise ModelError(f"model variant '{text}': a dropless MoE has no capacity_factor")
        changes["capacity_factor"] = None
    elif "capacity_factor" not in changes and getattr(spec_moe, "capacity_factor", None) is None:
        raise ModelError(f"model variant '{text}': type=capacity needs capacity_factor=... (e.g. 1.25)")


def variant_spec(text: str, lookup: Callable[[str], ModelSpec]) -> ModelSpec:
    """The model ``BASE:key=value,...`` describes; ``lookup`` finds BASE."""
    base_text, _, overrides = text.strip().rpartition(":")
    base = lookup(base_text)
    changes = _overrides(text, overrides)
    model = {f.attribute: v for f, v in changes.items() if f.table is Table.MODEL}
    moe = {f.attribute: v for f, v in changes.items() if f.table is Table.MOE and f.key != "type"}
    if (moe or any(f.key == "type" for f in changes)) and base.moe is None:
        raise ModelError(f"model variant '{text}': {base.name} is dense; expert keys need an MoE base (or write a "
                         "model file: docs/models.md)")
    if "ffn_hidden" in model and base.moe is not None:
        raise ModelError(f"model variant '{text}': {base.name} is an MoE; its FFN is set by expert_hidden")
    kind = next((v for f, v in changes.items() if f.key == "type"), None)
    if kind is not None:
        _moe_type(base.moe, kind, moe, text)  # type: ignore[arg-type]
    elif "capacity_factor" in moe and base.moe is not None and base.moe.capacity_factor is None:
        raise ModelError(f"model variant '{text}': {base.name} is dropless; add type=capacity to give a factor")
    ordered = sorted(changes, key=FIELDS.index)
    name = base.name + ":" + ",".join(f"{f.key}={_shown(changes[f])}" for f in ordered)
    changed = {f"{f.table}.{f.key}" for f in ordered}
    sources = tuple((k, v) for k, v in base.sources if k not in changed)
    sources += tuple((f"{f.table}.{f.key}", f"variant '{text}'") for f in ordered)
    try:
        return replace(base, name=name, olmo_name="", olmo_factory=None, olmo_factory_note="",
                       moe=replace(base.moe, **moe) if moe else base.moe,  # type: ignore[arg-type]
                       origin=f"variant of {base.name} ({base.origin})", sources=sources, **model)
    except (ModelError, TypeError) as exc:
        raise ModelError(f"model variant '{text}': {exc}") from None


def _shown(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
