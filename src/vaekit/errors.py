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

    print(f"vaekit: warning: {path_text(message)}", file=sys.stderr)


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


def escaping(error: UnicodeEncodeError) -> tuple[str, int]:
    """A codec error handler for the terminal: a byte of a file name that is not UTF-8 (which Python holds as a lone
    surrogate) as \\xNN, anything else the stream cannot encode as a backslash escape."""
    bad = error.object[error.start:error.end]
    return "".join(f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF else
                   c.encode("ascii", "backslashreplace").decode("ascii") for c in bad), error.end
