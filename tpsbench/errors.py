"""The one kind of error a user sees: bad input, printed by the CLI as one line on stderr with exit code 2.

Every module raises its own subclass (an unknown name, a malformed profile or results file, a device that is
not present, ...) so that a caller can tell them apart, and the CLI catches them all through this base."""


class InputError(ValueError):
    """Bad input from the user; the message says what was wrong and what to do."""
