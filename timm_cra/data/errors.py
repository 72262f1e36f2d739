"""The error class for bad user input (data, config, checkpoints).

CLIs catch :class:`UsageError` at their boundary and print its message -- one line naming the fix --
instead of a traceback. Bugs keep raising ordinary exceptions (and tracebacks).
"""

__all__ = ['UsageError', 'DataError']


class UsageError(Exception):
    """Bad input from the user: the message says what is wrong and how to fix it."""


class DataError(UsageError):
    """A dataset cannot be used as given (missing folder, wrong layout, label mismatch, ...)."""
