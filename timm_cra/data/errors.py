"""The error for datasets that cannot be used as given (a :class:`~timm_cra.utils.errors.UsageError`)."""
from ..utils.errors import UsageError

__all__ = ['DataError', 'split_hint']


class DataError(UsageError):
    """A dataset cannot be used as given (missing folder, wrong layout, label mismatch, ...)."""


def split_hint(flag: str = '') -> str:
    """The fix for a missing split, naming the caller's flag (``--split``, ``--val-split``, ...) when known."""
    return f'set {flag} to one of them' if flag else 'choose one of them as the split'
