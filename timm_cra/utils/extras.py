"""The optional ``train`` extra: what training, validation and the datasets need beyond the core install.

``import timm_cra`` (models and layers) needs only torch, timm, huggingface_hub and safetensors.
``timm_cra.train``, ``timm_cra.eval`` and ``timm_cra.data`` call :func:`require_train_extra` first, so a
missing extra is one line naming the install command instead of an ImportError deep inside a run. A command
(``timm-cra-train``, ``python -m timm_cra.eval``, ...) checks once its arguments are parsed instead: its
``--help`` needs no extra (none of the extra's modules is imported before a run needs it).
"""
import contextlib
import importlib
import importlib.util
from typing import Iterator, Optional, Sequence

from .cli import starting_module
from .errors import UsageError, run_cli

__all__ = ['TRAIN_EXTRA_MODULES', 'TRAIN_INSTALL', 'MissingExtraError', 'require_train_extra', 'command_starting',
           'run_command']

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


#: depth of :func:`command_starting` blocks under way
_commands_starting = 0


@contextlib.contextmanager
def command_starting() -> Iterator[None]:
    """Around a console script's import of its command's module (``timm_cra.cli``): the package checks are left to
    the command, which calls :func:`require_train_extra` once its arguments are parsed."""
    global _commands_starting
    _commands_starting += 1
    try:
        yield
    finally:
        _commands_starting -= 1


def _command_starting() -> bool:
    """True while a command's modules are imported: ``python -m timm_cra...`` importing the packages of its
    target, or a console script in :func:`command_starting`."""
    return _commands_starting > 0 or (starting_module() or '').startswith('timm_cra')


def require_train_extra(package: str) -> None:
    """Raise :class:`MissingExtraError` when a module of the ``train`` extra is not installed, naming ``package``
    (a module, or the command that needs it). Cheap: finds the modules without importing them. Does nothing
    while a command is starting (:func:`_command_starting`): the command calls it after parsing its arguments."""
    missing = [m for m in TRAIN_EXTRA_MODULES if not _installed(m)]
    if not missing or _command_starting():
        return
    raise MissingExtraError(f"{package} needs {', '.join(missing)}, not installed: {TRAIN_INSTALL}")


def run_command(module: str, argv: Optional[Sequence[str]] = None) -> None:
    """Run the ``main(argv)`` of the command module ``module`` under :func:`~timm_cra.utils.errors.run_cli`,
    importing it only then, in :func:`command_starting`: the one runner of the console scripts
    (``timm_cra.cli``) and of ``python -m timm_cra.train`` / ``.eval`` / ``.export``, so both spellings behave
    alike (``--help`` without the extra, one ``error:`` line, Ctrl-C during the imports too)."""
    def main(args):
        with command_starting():
            command = importlib.import_module(module)
        return command.main(args)
    run_cli(main, argv)
