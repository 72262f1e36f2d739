"""The error class for bad user input (data, config, checkpoints, arguments).

CLIs catch :class:`UsageError` at their boundary and print its message -- one line naming the fix --
instead of a traceback. Bugs keep raising ordinary exceptions (and tracebacks).
"""

import os
import sys
from typing import Any, Callable, Optional, Sequence

__all__ = ['UsageError', 'run_cli', 'printable']


class UsageError(Exception):
    """Bad input from the user: the message says what is wrong and how to fix it."""


def printable(text) -> str:
    """``text`` (a message, name or path) with its unprintable characters escaped as ``repr`` writes them (``\\n``,
    ``\\x1b``): a file name holding a newline or an ANSI escape code can neither forge a log / error line nor
    drive the terminal. Printable text, any script, is unchanged."""
    text = os.fspath(text) if isinstance(text, os.PathLike) else str(text)
    return text if text.isprintable() else ''.join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def run_cli(main: Callable[[Optional[Sequence[str]]], Any], argv: Optional[Sequence[str]] = None) -> None:
    """Run a CLI ``main(argv)``; bad input (:class:`UsageError`) exits with status 2 and one line, no traceback."""
    try:
        main(argv)
    except UsageError as e:
        print(f'error: {printable(e)}', file=sys.stderr)  # one line, even naming a hostile file
        sys.exit(2)
