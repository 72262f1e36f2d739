"""The optional ``train`` extra: what training, validation and the datasets need beyond the core install.

``import timm_cra`` (models and layers) needs only torch, timm, huggingface_hub and safetensors.
``timm_cra.train``, ``timm_cra.eval`` and ``timm_cra.data`` call :func:`require_train_extra` first, so a
missing extra is one line naming the install command instead of an ImportError deep inside a run.
"""
import importlib.util
import sys

from .cli import starting_module
from .errors import UsageError

__all__ = ['TRAIN_EXTRA_MODULES', 'TRAIN_INSTALL', 'MissingExtraError', 'require_train_extra']

#: import names of the ``train`` extra's packages (datasets, pyyaml, tqdm, matplotlib)
TRAIN_EXTRA_MODULES = ('datasets', 'yaml', 'tqdm', 'matplotlib')
TRAIN_INSTALL = 'pip install "timm-cra[train]"'


class MissingExtraError(UsageError, ImportError):
    """An optional dependency is not installed; a :class:`UsageError`, so CLIs print it as one line."""


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _starting_module_cli() -> bool:
    """True while ``python -m timm_cra...`` imports the packages of its target (before ``run_cli`` exists)."""
    return (starting_module() or '').startswith('timm_cra')


def require_train_extra(package: str) -> None:
    """Raise :class:`MissingExtraError` (``python -m`` CLIs: print ``error: ...``, exit 2) when a module of
    the ``train`` extra is not installed. Cheap: finds the modules without importing them."""
    missing = [m for m in TRAIN_EXTRA_MODULES if not _installed(m)]
    if not missing:
        return
    message = f"{package} needs {', '.join(missing)}, not installed: {TRAIN_INSTALL}"
    if _starting_module_cli():
        print(f'error: {message}', file=sys.stderr)
        raise SystemExit(2)
    raise MissingExtraError(message)
