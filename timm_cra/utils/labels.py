"""Class names: the checks every place that reads or publishes them shares (data, models, publish)."""
import unicodedata
from typing import List, Sequence

__all__ = ['name_key', 'numbered_classes', 'repeated_names', 'unprintable_names']


def name_key(name) -> str:
    """A class name as compared everywhere: NFC-normalised, so ``café`` typed two ways (macOS writes file names
    decomposed, NFD) is one name, and without surrounding whitespace, which no card, log or label shows (``cat`` and
    ``cat `` were loaded as two classes)."""
    return unicodedata.normalize('NFC', str(name)).strip()


def repeated_names(names: Sequence[str]) -> List[str]:
    """Class names given more than once, compared as :func:`name_key` does (``café`` typed two ways, ``cat`` and
    ``cat `` look the same): transformers maps names to class ids, so a repeated name loses a class. The one check
    of names from data (:func:`timm_cra.data.create_dataset`), of a ``config.json``'s or a weights header's names on
    load and of ``publish --label-names``."""
    seen: dict = {}
    for n in names:
        key = name_key(n)
        seen[key] = seen.get(key, 0) + 1
    return sorted(k for k, count in seen.items() if count > 1)


def unprintable_names(names: Sequence[str]) -> List[str]:
    """Class names holding a control character (newline, tab, escape): one would forge lines of the card, logs and
    clients. The one check of ``publish --label-names`` and of a ``config.json``'s names on load."""
    return [str(n) for n in names if not str(n).isprintable()]


def numbered_classes(names: Sequence[str]) -> bool:
    """Whether ``names`` are the stand-ins ``'0'..'K-1'`` of data that names no classes (plain int labels; what
    publish writes for a head without names, so that transformers answers the index as timm does)."""
    return list(names) == [str(i) for i in range(len(names))]
