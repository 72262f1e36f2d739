"""Strict JSON out: every JSON file or line this package writes parses with any JSON reader.

Python's ``json`` writes ``NaN`` / ``Infinity`` by default, which is not JSON (``jq``, browsers and most
languages refuse it). A non-finite number is written as ``null`` with the reason beside it
(``"loss": null, "loss_note": "non-finite (nan)"``), and the dump runs with ``allow_nan=False``.
"""
import json
import math
from typing import Any

__all__ = ['finite_for_json', 'dumps']


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
