"""Progress bars for long work, shown only on a terminal (logs and pipes get the plain lines)."""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm


def bar(iterable: Any = None, *, disable: bool = False, **kwargs: Any) -> tqdm:
    """A tqdm bar that cleans up after itself and stays silent when stderr is not a terminal."""
    return tqdm(iterable, disable=disable or not sys.stderr.isatty(), leave=False, dynamic_ncols=True, **kwargs)


def say(message: str) -> None:
    """Print a line without breaking a bar that is being drawn."""
    tqdm.write(message)
