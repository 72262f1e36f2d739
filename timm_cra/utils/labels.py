"""Class names: the checks every place that reads or publishes them shares (data, models, publish)."""
import unicodedata
from typing import List, Optional, Sequence, Tuple

__all__ = ['name_key', 'index_by_name', 'same_names', 'numbered_classes', 'repeated_names', 'unusable_name',
           'label_name_problem']


def name_key(name) -> str:
    """A class name as compared everywhere: NFC-normalised, so ``café`` typed two ways (macOS writes file names
    decomposed, NFD) is one name, and without surrounding whitespace, which no card, log or label shows (``cat`` and
    ``cat `` were loaded as two classes)."""
    return unicodedata.normalize('NFC', str(name)).strip()


def index_by_name(names: Sequence[str], onto: Sequence[str]) -> Optional[list]:
    """The position in ``onto`` of each of ``names``, matched by :func:`name_key` ('café' from macOS, NFD, is the
    model's 'café'); None when one of ``names`` is not in ``onto``."""
    index = {name_key(c): i for i, c in enumerate(onto)}
    keys = [name_key(c) for c in names]
    return None if any(k not in index for k in keys) else [index[k] for k in keys]


def same_names(a: Sequence[str], b: Sequence[str]) -> bool:
    """Whether two class lists are the same classes in the same order, compared as :func:`name_key` does."""
    return len(a) == len(b) and all(name_key(x) == name_key(y) for x, y in zip(a, b))


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


#: The Unicode categories of the characters ``str.isprintable`` refuses, in words.
_CHARACTER_KINDS = {'Cc': 'a control character (newline, tab, escape)', 'Cf': 'an invisible format character',
                    'Zs': 'a space other than the plain space', 'Zl': 'a line separator', 'Zp': 'a paragraph separator',
                    'Co': 'a private-use character', 'Cn': 'an unassigned code point', 'Cs': 'a lone surrogate'}


def unusable_name(names: Sequence[str]) -> Optional[Tuple[str, str]]:
    """``(name, why)`` for the first class name that cannot name a class, or None: one that is empty (or only
    whitespace: a client shows an empty label), or that holds a character that is not printable text, named by its
    kind and code point (a newline or escape code would forge lines of the card, logs and clients; a no-break or
    zero-width space makes a name look like another). The one check of ``publish --label-names``, the trainer's
    class names and a ``config.json``'s names on load."""
    for name in map(str, names):
        if not name_key(name):
            return name, 'is empty'
        bad = next((c for c in name if not c.isprintable()), None)
        if bad is not None:
            kind = _CHARACTER_KINDS.get(unicodedata.category(bad), 'a character that is not printable text')
            label = unicodedata.name(bad, '')
            return name, f"holds {kind}, U+{ord(bad):04X}{' ' + label if label else ''}"
    return None


def label_name_problem(names: Sequence[str]) -> Optional[Tuple[str, str]]:
    """``(why, what it must become)`` for the first class name that no class can have, or None: bytes that were
    no UTF-8 (``os.listdir``'s surrogate escapes: a name in another encoding), else :func:`unusable_name`. The one
    check of names from data (train and validate alike) and of the names a repo is written with."""
    for name in map(str, names):
        if any('\udc80' <= c <= '\udcff' for c in name):
            shown = name.encode('utf-8', 'surrogateescape')
            return f'label name {shown!r} is not UTF-8 text (a name in another encoding)', 'UTF-8 text'
    unusable = unusable_name(names)
    return (f'label name {unusable[0]!r} {unusable[1]}', 'printable text') if unusable else None


def numbered_classes(names: Sequence[str]) -> bool:
    """Whether ``names`` are the stand-ins ``'0'..'K-1'`` of data that names no classes (plain int labels; what
    publish writes for a head without names, so that transformers answers the index as timm does)."""
    return list(names) == [str(i) for i in range(len(names))]
