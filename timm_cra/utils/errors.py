"""The error class for bad user input (data, config, checkpoints, arguments).

CLIs catch :class:`UsageError` at their boundary and print its message -- one line naming the fix --
instead of a traceback. Bugs keep raising ordinary exceptions (and tracebacks).
"""

import sys
from typing import Any, Callable, Optional, Sequence

__all__ = ['UsageError', 'run_cli']


class UsageError(Exception):
    """Bad input from the user: the message says what is wrong and how to fix it."""


def run_cli(main: Callable[[Optional[Sequence[str]]], Any], argv: Optional[Sequence[str]] = None) -> None:
    """Run a CLI ``main(argv)``; bad input (:class:`UsageError`) exits with status 2 and one line, no traceback."""
    try:
        main(argv)
    except UsageError as e:
        print(f'error: {e}', file=sys.stderr)
        sys.exit(2)
