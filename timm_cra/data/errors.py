"""The error for datasets that cannot be used as given (a :class:`~timm_cra.utils.errors.UsageError`)."""
from ..utils.errors import UsageError

__all__ = ['DataError']


class DataError(UsageError):
    """A dataset cannot be used as given (missing folder, wrong layout, label mismatch, ...)."""
