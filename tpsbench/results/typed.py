"""Dataclasses to and from JSON, validated against their type hints, with errors that name the field.

Each schema class is a frozen dataclass whose fields carry ``metadata={"unit": ..., "doc": ...}`` (through
:func:`fld`); :func:`from_dict` checks every value against the field's annotation (``int``, ``float``, ``str``,
``bool``, ``X | None``, ``list[X]``, ``dict[str, X]``, nested schema classes) and raises :class:`SchemaError`
naming the dotted field and what was found; :func:`to_dict` writes every field, ``None`` as null. A missing
key is an error unless the field has a default (fields added after version 1 of the schema have one).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import MISSING, Field, dataclass, field, fields
from enum import Enum
from functools import cache
from typing import Any, TypeVar, Union, get_args, get_origin

from tpsbench.errors import InputError, shown_keys

T = TypeVar("T")

# What a JSON document holds: the type of every document tpsbench prints with --json or reads before it is typed
JsonValue = Union[None, bool, int, float, str, list["JsonValue"], dict[str, "JsonValue"]]  # noqa: UP007
JsonObject = dict[str, JsonValue]


class SchemaError(InputError):
    """A document that does not follow the schema; the message names the field and what was found."""


def fld(doc: str, unit: str = "", default: Any = MISSING, default_factory: Any = MISSING) -> Any:
    """A schema field with its meaning and unit (for results/SCHEMA.md)."""
    meta = {"doc": doc, "unit": unit}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=meta)
    if default is not MISSING:
        return field(default=default, metadata=meta)
    return field(metadata=meta)


def schema(cls: type[T]) -> type[T]:
    """The decorator of a schema class: a frozen, slotted, keyword-only dataclass."""
    return dataclass(frozen=True, slots=True, kw_only=True)(cls)


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def type_name(tp: Any) -> str:
    """A readable name of an annotation: ``float | None``, ``list[int]``, ``Stats``."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in get_args(tp))
    if origin is list:
        return f"list[{type_name(get_args(tp)[0])}]"
    if origin is dict:
        k, v = get_args(tp)
        return f"dict[{type_name(k)}, {type_name(v)}]"
    if tp is type(None):
        return "null"
    if isinstance(tp, type) and issubclass(tp, Enum):
        return " | ".join(f'"{m.value}"' for m in tp)
    return getattr(tp, "__name__", str(tp))


def _fail(tp: Any, value: Any, where: str) -> SchemaError:
    return SchemaError(f"field '{where}': expected {type_name(tp)}, found {_show(value)}")


def _convert_union(tp: Any, value: Any, where: str) -> Any:
    options = get_args(tp)
    if value is None and type(None) in options:
        return None
    real = [o for o in options if o is not type(None)]
    if len(real) == 1:  # X | None with a value: X's own error names the innermost field
        return _convert(real[0], value, where)
    for option in real:
        try:
            return _convert(option, value, where)
        except SchemaError:
            continue
    raise _fail(tp, value, where)


def _convert_scalar(tp: Any, value: Any, where: str) -> Any:
    if isinstance(tp, type) and issubclass(tp, Enum):
        try:
            return tp(value)
        except (ValueError, TypeError):
            raise SchemaError(f"field '{where}': expected one of {type_name(tp)}, found {_show(value)}") from None
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise SchemaError(f"field '{where}': expected a finite number, found {_show(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SchemaError(f"field '{where}': expected a whole number, found {_show(value)}")
        return value
    if tp in (str, bool):
        if not isinstance(value, tp):
            raise SchemaError(f"field '{where}': expected {tp.__name__}, found {_show(value)}")
        return value
    raise TypeError(f"schema type {tp!r} of '{where}' is not supported")  # a bug in a schema class, not input


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return _convert_union(tp, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise _fail(tp, value, where)
        (item,) = get_args(tp)
        return [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _fail(tp, value, where)
        _, item = get_args(tp)
        return {str(k): _convert(item, v, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if tp is Any or tp is object:
        return value
    return _convert_scalar(tp, value, where)


def from_dict(cls: type[T], data: Any, where: str = "") -> T:
    """An instance of the schema class ``cls`` from JSON data, every field checked."""
    if not isinstance(data, dict):
        raise SchemaError(f"field '{where or cls.__name__}': expected an object ({cls.__name__}), found {_show(data)}")
    hints = _hints(cls)
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise SchemaError(f"field '{where or cls.__name__}': unknown key(s) {shown_keys(unknown)} (a newer schema?)")
    values = {}
    for f in fields(cls):  # type: ignore[arg-type]
        path = f"{where}.{f.name}" if where else f.name
        if f.name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                raise SchemaError(f"field '{path}': missing")
            continue
        values[f.name] = _convert(hints[f.name], data[f.name], path)
    return cls(**values)


def to_dict(obj: Any) -> Any:
    """JSON data of a schema instance (recursively); NaN and infinities become null (JSON has none)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def schema_fields(cls: type) -> list[tuple[Field, Any]]:
    """The fields of a schema class with their resolved annotations (for results/SCHEMA.md)."""
    hints = _hints(cls)
    return [(f, hints[f.name]) for f in fields(cls)]
