"""Strict JSON out, and the one reader of JSON from user paths.

Out: every JSON file or line this package writes parses with any JSON reader. Python's ``json`` writes ``NaN`` /
``Infinity`` by default, which is not JSON (``jq``, browsers and most languages refuse it). A non-finite number is
written as ``null`` with the reason beside it (``"loss": null, "loss_note": "non-finite (nan)"``), and the dump runs
with ``allow_nan=False``.

In: :func:`loads` parses text from a stranger's file (``config.json``, eval results, a run's files) and
:func:`read_json` reads such a file; every failure is one line: a document nested deeper than the parser's
recursion allows (``[[[[...]]]]``, 100k deep) is a ``RecursionError`` in ``json.loads``, and an integer past
Python's digit limit comes with advice to raise the limit, not to fix the file; a key given twice (``json`` keeps
the last silently) is refused naming it.
"""
import json
import math
import os
from typing import Any, Dict, List, Tuple, Union

from .errors import UsageError
from .io import read_capped

__all__ = ['finite_for_json', 'dumps', 'loads', 'read_text', 'read_json', 'is_count', 'is_number']


def is_count(value: Any) -> bool:
    """A value read from a record is a count: a non-negative int (JSON ``true`` is not one)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def is_number(value: Any, finite: bool = True) -> bool:
    """A value read from a record is a number (not a bool); ``finite``: and not NaN or infinite."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and (not finite or math.isfinite(value)))


def _note(value: float) -> str:
    return f"non-finite ({'nan' if math.isnan(value) else 'inf' if value > 0 else '-inf'})"


def finite_for_json(obj: Any) -> Any:
    """A copy of ``obj`` (dicts, lists, tuples, scalars) with non-finite floats replaced by ``None``; in a dict,
    ``<key>_note`` says what the value was."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            out[key] = finite_for_json(value)
            if isinstance(value, float) and not math.isfinite(value):
                out[f'{key}_note'] = _note(value)
        return out
    if isinstance(obj, (list, tuple)):
        return [finite_for_json(v) for v in obj]
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`finite_for_json` ``(obj)`` with ``allow_nan=False``."""
    return json.dumps(finite_for_json(obj), allow_nan=False, **kwargs)


def _unique_keys(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    """An object whose keys are all different: ``json`` keeps the last of a repeated key silently (``...,
    "num_classes": 5}`` overriding the first), as plain YAML does; the train config reader refuses it too."""
    out: Dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key '{key}' is given twice: keep one")
        out[key] = value
    return out


def loads(text: Union[str, bytes]) -> Any:
    """``json.loads(text)``; every way the text is not usable JSON is a ``ValueError`` with a short reason (a
    ``json.JSONDecodeError`` as it is; a document nested too deep, a ``RecursionError`` in the parser, too; an
    object giving a key twice)."""
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise ValueError('nested too deeply for a JSON reader (arrays / objects inside each other thousands of '
                         'levels deep)') from None
    except json.JSONDecodeError:
        raise
    except ValueError as e:  # an integer past int()'s digit limit: not Python's advice to raise that limit
        raise ValueError(str(e).split(';')[0]) from None


#: The largest JSON file read (safetensors caps its JSON header at 100 MB; a config.json with 200000 class names
#: is a few MB), and of the other small text files read from user paths (publish's ``--label-names`` file, a run's
#: ``args.yaml``).
MAX_JSON_BYTES = 64 * 2**20


def read_text(path: Union[str, os.PathLike], what: str = 'file', bom: bool = False) -> str:
    """The UTF-8 text of the regular file ``path``, of at most :data:`MAX_JSON_BYTES` (never blocking on a FIFO:
    :func:`~.io.read_capped`); past it one :class:`UsageError` line, not UTF-8 a ``UnicodeDecodeError``. ``bom``: a
    leading UTF-8 byte-order mark (Windows editors write one) is skipped, as ``utf-8-sig`` does; files that timm and
    transformers read too (``config.json``, which they refuse with one) keep the default."""
    raw = read_capped(path, what, MAX_JSON_BYTES, 'any config, results or class-names file')
    return raw.decode('utf-8-sig' if bom else 'utf-8')


def read_json(path: Union[str, os.PathLike], what: str = 'file', bom: bool = False) -> Any:
    """The JSON document in ``path``, read by :func:`read_text` (``bom`` as there) and parsed by :func:`loads`; else a
    one-line :class:`UsageError` naming ``what``, the path and why (callers add the fix that fits the file)."""
    try:
        return loads(read_text(path, what, bom))
    except UnicodeDecodeError as e:
        reason = f'not UTF-8 text: byte {e.start} is {e.object[e.start:e.start + 1]!r}'
    except ValueError as e:
        reason = str(e)
    raise UsageError(f'{what} {os.fspath(path)} is not valid JSON ({reason})')
