"""A nested config (a parsed JSON object) read key by key: every read names its dotted path in errors, and when a
table is done every key that was not read is either known to leave counts unchanged or refused, so that a field
tpsbench cannot represent is never dropped without a word."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from typing import TypeVar

from tpsbench.errors import ParsedObject
from tpsbench.models.spec import ModelError

T = TypeVar("T")
MISSING = object()


@contextmanager
def errors_at(where: str) -> Iterator[None]:
    """Every ModelError raised inside names ``where`` first (a spec's own checks do not know the file)."""
    try:
        yield
    except ModelError as exc:
        message = str(exc)
        if message.startswith(where):
            raise
        raise ModelError(f"{where}: {message}") from None


def has_json_type(value: object, kind: type) -> bool:
    """A JSON value of the Python type asked for: an int is a float too, a bool is never a number."""
    if kind is float or kind is int:
        return isinstance(value, int | float if kind is float else int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _is_unset(value: object) -> bool:
    """A value that switches nothing on: null, false, zero, empty."""
    return value is None or value is False or value == 0 or value == [] or value == {} or value == ""


class ConfigTable:
    """One object of the config at ``path`` (dotted, "" for the root)."""

    def __init__(self, where: str, path: str, data: ParsedObject, ignorable: Collection[str]) -> None:
        self.where, self.path, self.data, self.ignorable = where, path, data, ignorable
        self._read: set[str] = set()

    def key_path(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str, message: str) -> ModelError:
        return ModelError(f"{self.where}: {self.key_path(key)}: {message}")

    def raw(self, key: str, default: object = MISSING) -> object:
        self._read.add(key)
        if key not in self.data or (self.data[key] is None and default is not MISSING):
            if default is MISSING:
                raise self.error(key, "missing")
            return default
        return self.data[key]

    def value(self, key: str, kind: type[T], default: object = MISSING) -> T:
        """A value of one JSON type (an int for a float is fine; a bool is never a number)."""
        value = self.raw(key, default)
        if value is default and default is not MISSING:
            return value  # type: ignore[return-value]
        if not has_json_type(value, kind):
            raise self.error(key, f"expected {kind.__name__}, got {value!r}")
        return float(value) if kind is float else value  # type: ignore[return-value]

    def choice(self, key: str, allowed: Collection[str], default: str | object = MISSING) -> str:
        value = self.value(key, str, default)
        if value not in allowed:
            raise self.error(key, f"{value!r} is not modelled; tpsbench reads {', '.join(map(repr, allowed))}")
        return value

    def must_be(self, key: str, expected: object, why: str) -> None:
        """A key whose only representable value is ``expected`` (absent reads as OLMo-core's default)."""
        value = self.raw(key, None)
        if value != expected:
            raise self.error(key, f"{value!r}: {why}")

    def table(self, key: str, *, required: bool = False) -> ConfigTable | None:
        value = self.raw(key, None)
        if value is None:
            if required:
                raise self.error(key, "missing")
            return None
        if not isinstance(value, dict):
            raise self.error(key, f"expected an object, got {value!r}")
        return ConfigTable(self.where, self.key_path(key), value, self.ignorable)

    def finish(self) -> None:
        """Refuse every key not read that switches something on and is not known to leave counts unchanged."""
        for key, value in self.data.items():
            if key in self._read or key in self.ignorable or _is_unset(value):
                continue
            raise self.error(key, f"{value!r} is not modelled by tpsbench (docs/models.md lists the fields it "
                                  "reads); remove it or measure this model another way")


def read_table(table: ConfigTable | None, read: Callable[[ConfigTable], T]) -> T | None:
    """``read`` applied to a table that is there, then ``finish``; None for an absent one."""
    if table is None:
        return None
    out = read(table)
    table.finish()
    return out
