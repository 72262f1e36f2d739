"""Argument helpers shared by the train and validate CLIs."""
import os
from typing import List

from .errors import UsageError

__all__ = ['default_workers', 'check_model_name', 'input_files', 'check_positive']


def default_workers(cap: int = 4) -> int:
    """Data-loader processes: ``cap``, but never more than the CPUs this process may run on."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(0, min(cap, cpus))


def check_model_name(name: str) -> None:
    """Refuse an unregistered ``--model`` before any data is read, naming the closest registered names."""
    from ..models import UnknownModelError, check_model_name as check
    try:
        check(name)
    except UnknownModelError as e:
        raise UsageError(f"Unknown --model '{name}'. {e.hint}") from e


def input_files(model_name: str, checkpoint: str = '') -> List[str]:
    """The files a validate / export command reads its model from (``--checkpoint``, a ``local-dir:`` folder's
    config and weights): no output of that command may be one of them."""
    files = [checkpoint] if checkpoint else []
    if model_name.startswith('local-dir:'):
        folder = model_name[len('local-dir:'):]
        files += [os.path.join(folder, name) for name in ('config.json', 'model.safetensors', 'pytorch_model.bin')]
    return files


def check_positive(args, *names: str) -> None:
    """Refuse a zero or negative count among the ``names`` of ``args`` (``batch_size``; None means unset): torch's
    loader would fail later with a traceback, or never yield a batch."""
    for name in names:
        value = getattr(args, name)
        if value is not None and not value > 0:
            raise UsageError(f"--{name.replace('_', '-')} must be a positive integer, not {value}.")
