"""Argument helpers shared by the CLIs: which command is starting, checks of the train and validate flags."""
import os
import sys
from typing import List, Optional

from .errors import UsageError

__all__ = ['default_workers', 'check_model_name', 'input_files', 'starting_module', 'starting_light_command']

#: commands that import neither torch nor timm (``python -m`` module, console script): in their process
#: ``import timm_cra`` does not register the models
LIGHT_COMMANDS = ('timm_cra.hub.server', 'timm-cra-hub-mirror')


def starting_module() -> Optional[str]:
    """The module ``python -m <module>`` is starting, while it imports the packages of its target (before the
    target runs): runpy sets ``sys.argv[0]`` from ``'-m'`` to the file only once the target is found; else None."""
    argv = getattr(sys, 'orig_argv', [])
    if getattr(sys, 'argv', [])[:1] == ['-m'] and '-m' in argv[:-1]:
        return argv[argv.index('-m') + 1]
    return None


def starting_light_command() -> bool:
    """Whether this process was started as one of :data:`LIGHT_COMMANDS` (the read-only Hub mirror)."""
    argv = getattr(sys, 'argv', None) or ['']
    return starting_module() in LIGHT_COMMANDS or os.path.basename(argv[0]) in LIGHT_COMMANDS


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
