"""The one kind of error a user sees: bad input, printed by the CLI as one line on stderr with exit code 2.

Every module raises its own subclass (an unknown name, a malformed profile or results file, a device that is
not present, ...) so that a caller can tell them apart, and the CLI catches them all through this base."""

from pathlib import Path


class InputError(ValueError):
    """Bad input from the user; the message says what was wrong and what to do."""


def read_text(path: str | Path, error: type[InputError], what: str, encoding: str = "utf-8") -> str:
    """A text file's contents, or ``error`` in one line naming the file: unreadable, or not text (``what`` says
    which file was expected)."""
    p = Path(path)
    try:
        return p.read_bytes().decode(encoding)
    except OSError as exc:
        raise error(f"{p}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise error(f"{p}: not a text file (not UTF-8): give {what}") from None
