"""User-facing errors.

A `UserError` is a mistake in the user's input (config, data, paths). The CLI prints its
message on one line and exits with status 2, without a traceback. Everything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A mistake in user input: printed as one line, exit status 2."""


def suggest(name: str, valid: Iterable[str]) -> str:
    """Return ' (did you mean 'x'?)' for the closest valid name, or ' (valid: a, b, ...)'."""
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    if close:
        return f" (did you mean '{close[0]}'?)"
    return f" (valid: {', '.join(valid)})"


def one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's message on one line, at most `limit` characters (its type if it has none)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
