"""The one kind of error a user sees: bad input, printed by the CLI as one line on stderr with exit code 2.

Every module raises its own subclass (an unknown name, a malformed profile or results file, a device that is
not present, ...) so that a caller can tell them apart, and the CLI catches them all through this base. The
readers here bound what a file can cost: its size is checked before it is read, and a document nested too
deeply for the parser is an error like any other."""

from __future__ import annotations

import difflib
import json
import tomllib
from pathlib import Path
from typing import Any

# Larger than any file tpsbench writes or reads (results files are kilobytes to a few MB, W&B exports tens of
# MB): a file past it is not one of them, and is refused before a byte of it is read.
MAX_INPUT_BYTES = 256 * 1024 * 1024
# A JSON or TOML object as parsed, before any check: the readers check it key by key into dataclasses.
ParsedObject = dict[str, object]


class InputError(ValueError):
    """Bad input from the user; the message says what was wrong and what to do."""


class UnknownNameError(InputError):
    """A user-supplied name that is not in a registry; the message names the closest choices."""


def closest_choices_message(kind: str, name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.4)
    hint = f"did you mean {', '.join(close)}?" if close else f"choose one of: {', '.join(sorted(choices))}"
    return f"unknown {kind} '{name}': {hint}"


def read_text(path: str | Path, error: type[InputError], what: str, encoding: str = "utf-8") -> str:
    """A text file's contents, or ``error`` in one line naming the file: unreadable, too large, or not text
    (``what`` says which file was expected)."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_INPUT_BYTES:
            raise error(f"{p}: {size / 2**20:,.0f} MiB is larger than any {what.removeprefix('a ')} "
                        f"({MAX_INPUT_BYTES >> 20} MiB at most): give {what}")
        return p.read_bytes().decode(encoding)
    except OSError as exc:
        raise error(f"{p}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise error(f"{p}: not a text file (not UTF-8): give {what}") from None


def parse_json(text: str, where: str, error: type[InputError], what: str) -> Any:
    """JSON data, or one line: not JSON, or nested deeper than the parser goes (Python's recursion limit)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{where}: not valid JSON ({exc.msg} at line {exc.lineno}): give {what}") from None
    except RecursionError:
        raise error(f"{where}: JSON nested too deeply to be {what}") from None


def parse_toml(text: str, where: str, error: type[InputError], what: str) -> dict[str, Any]:
    """TOML data, or one line: not TOML, or nested deeper than the parser goes."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{where}: not valid TOML ({exc}): give {what}") from None
    except RecursionError:
        raise error(f"{where}: TOML nested too deeply to be {what}") from None


def shown_keys(keys: list[str], limit: int = 5) -> str:
    """A few of many keys, for a message that stays one line however many there are."""
    more = len(keys) - limit
    return ", ".join(repr(k[:40]) for k in keys[:limit]) + (f" and {more:,} more" if more > 0 else "")
