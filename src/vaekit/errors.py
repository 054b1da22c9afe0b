"""One exception type for everything a user can get wrong.

The CLI turns a `VaekitError` into a one-line message and exit status 2; anything else is a bug
and keeps its traceback.
"""


class VaekitError(Exception):
    """A problem with the user's input (a file, a flag, a config), explained in one line."""


def warn(message: str) -> None:
    """A one-line warning for the user on stderr (not Python's warnings machinery: always shown, no source line)."""
    import sys

    print(f"vaekit: warning: {message}", file=sys.stderr)
