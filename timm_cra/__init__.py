"""timm-cra: Channel Reassessment Attention (arXiv:2010.05605) models for timm.

``import timm_cra`` registers the ``cra_*`` models with timm's registry (timm has no plugin entry
points, so the import is required); then use ``timm.create_model('cra_resnet50')`` as usual.
The one exception is a process started as the read-only Hub mirror (``timm-cra-hub-mirror``,
``python -m timm_cra.hub.server``), which needs neither torch nor timm: there the names below load on first use.
"""
import importlib

from .utils.cli import starting_command, starting_light_command
from .utils.errors import TimmCraError, UsageError, catch_interrupts  # standard library only

if starting_command():  # before torch / numpy are imported: a Ctrl-C they swallow is still recorded (run_cli)
    catch_interrupts(command_process=True)

__version__ = '0.1.0'

#: public name -> the submodule defining it (imported on first access)
_EXPORTS = {
    'CraAttn': 'layers', 'cra_pool': 'layers', 'PretrainedWeightsError': 'models', 'UnknownModelError': 'models',
    'UnknownPretrainedTagError': 'models', 'create_model': 'models',
}

__all__ = [
    'CraAttn', 'PretrainedWeightsError', 'TimmCraError', 'UnknownModelError', 'UnknownPretrainedTagError', 'UsageError',
    'cra_pool', 'create_model', 'models', '__version__',
]


def __getattr__(name):
    if name == 'models':
        return importlib.import_module('.models', __name__)
    if name in _EXPORTS:
        return getattr(importlib.import_module(f'.{_EXPORTS[name]}', __name__), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
    return sorted(set(globals()) | set(__all__))


if not starting_light_command():
    from . import models  # noqa: E402,F401  registers the cra_* models with timm: what `import timm_cra` is for
