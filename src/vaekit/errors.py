"""One exception type for everything a user can get wrong, and the words a message is made of.

The CLI turns a `VaekitError` into a one-line message and exit status 2; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

from typing import Any


class VaekitError(Exception):
    """A problem with the user's input (a file, a flag, a config), explained in one line."""


def warn(message: str) -> None:
    """A one-line warning for the user on stderr (not Python's warnings machinery: always shown, no source line)."""
    import sys

    print(f"vaekit: warning: {message}", file=sys.stderr)


def short(value: Any, limit: int = 60) -> str:
    """repr(value), cut to `limit` characters: error messages never echo a huge input."""
    text = repr(value) if not isinstance(value, (list, dict)) or len(value) < 50 else f"<{type(value).__name__} " \
        f"of {len(value)} items>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def printable(name: str, limit: int = 30) -> str:
    """A name read from a file, safe to print: cut to `limit` characters, control characters (escape codes) out."""
    return "".join(c for c in str(name)[:limit] if c.isprintable())


def path_text(path) -> str:
    """A file's path as text to report (CSV, pages, JSON): bytes of a name that are not UTF-8, which Linux allows,
    as \\xNN escapes."""
    import os

    return os.fsencode(path).decode("utf-8", "backslashreplace")
