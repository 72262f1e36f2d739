"""The error for datasets that cannot be used as given (a :class:`~timm_cra.utils.errors.UsageError`)."""
import math
import numbers
from typing import Any, Iterable, Optional, Sequence, Tuple

from ..utils.errors import UsageError
from ..utils.labels import index_by_name, label_name_problem, repeated_names

__all__ = ['DataError', 'RENAME_IN_DATA', 'split_hint', 'first_non_integer', 'check_class_names', 'classes_absent_from_training',
           'index_by_name']


class DataError(UsageError):
    """A dataset cannot be used as given (missing folder, wrong layout, label mismatch, ...)."""


#: Where a user renames a class whose name no class can have (the names come from the data).
RENAME_IN_DATA = 'rename that class in the data (its class folder, or the ClassLabel names / batches.meta)'


def check_class_names(names: Sequence[Any], source: str, fix: str) -> None:
    """Refuse class names the data gives twice (:func:`~timm_cra.utils.labels.repeated_names`, after NFC
    normalisation, surrounding whitespace aside), naming ``source`` and ``fix`` (what to change there): a repeated
    name loses a class wherever names map to ids (the published config, transformers); and a name no class can have
    (:func:`~timm_cra.utils.labels.label_name_problem`: empty, a control character, not UTF-8), which the trainer
    could not export and validate would record in its results."""
    problem = label_name_problem(names)
    if problem:
        raise DataError(f"{problem[0]}: {RENAME_IN_DATA} to {problem[1]} (a class of '{source}').")
    twice = repeated_names(names)
    if twice:
        raise DataError(f"The class names of '{source}' give {', '.join(map(repr, twice[:5]))} more than once "
                        f"(compared after Unicode NFC normalisation, "
                        f"surrounding whitespace aside): {fix}, so that each class has its own name.")


def classes_absent_from_training(what: str, unknown: Sequence[str]) -> DataError:
    """The refusal of a val split naming classes the training split lacks (the model never trained on them)."""
    return DataError(f"{what} has classes absent from the training split: {', '.join(map(repr, unknown[:5]))}"
                     f"{' ...' if len(unknown) > 5 else ''}: give the validation split the training split's classes "
                     f"(or a subset of them).")


def split_hint(flag: str = '') -> str:
    """The fix for a missing split, naming the caller's flag (``--split``, ``--val-split``, ...) when known."""
    return f'set {flag} to one of them' if flag else 'choose one of them as the split'


#: Labels are held as int64: a value outside it (a uint64 of 2**64 - 1, 1e19) is no class index and would overflow.
_INT64_RANGE = (-2 ** 63, 2 ** 63 - 1)


def first_non_integer(values: Iterable[Any]) -> Optional[Tuple[int, Any]]:
    """``(index, value)`` of the first label that is not a whole number (a string, NaN, 0.7, a bool) or is outside
    int64 (``2**64 - 1``, ``1e19``, ``-1e19``), or None: ``int()`` would fail on a string or NaN and silently truncate
    0.7 to class 0, the int64 conversion overflows (an ``OverflowError`` traceback). Whole floats (``1.0``, what a
    parquet float column holds) count as integers; negative ones in range are left to the label range check."""
    low, high = _INT64_RANGE
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            return i, v
        if not isinstance(v, numbers.Integral) and not (math.isfinite(v) and float(v).is_integer()):
            return i, v
        if not low <= v <= high:
            return i, v
    return None
