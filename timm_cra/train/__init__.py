"""Training: timm-parts trainer, its arguments/recipes, checkpoints and metrics (the names below load on first
use, so that ``python -m timm_cra.train.checkpoint`` runs a module the package has not imported yet)."""
import importlib

from ..utils.extras import require_train_extra

require_train_extra(__name__)  # one line naming the install command when the [train] extra is missing

#: public name -> the module defining it
_EXPORTS = {
    'create_parser': '.args', 'parse_args': '.args', 'load_config': '.args', 'list_recipes': '.args',
    'train': '.trainer', 'main': '.trainer', 'create_optimizer': '.loop', 'create_scheduler': '.loop',
    'atomic_save': '.checkpoint', 'load_checkpoint_file': '..utils.weights', 'load_model_weights': '..utils.weights',
}

__all__ = ['create_parser', 'parse_args', 'load_config', 'list_recipes', 'train', 'main', 'create_optimizer',
           'create_scheduler', 'atomic_save', 'load_checkpoint_file', 'load_model_weights']


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
    return sorted(set(globals()) | set(__all__))
