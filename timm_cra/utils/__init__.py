"""Weight-file readers, CLI helpers, measured params / MACs (the names below load on first use: the error
class and CLI helpers import no torch)."""
import importlib

#: public name -> the submodule defining it
_EXPORTS = {
    'count_macs': 'complexity', 'count_params': 'complexity', 'model_complexity': 'complexity',
    'TimmCraError': 'errors', 'UsageError': 'errors', 'run_cli': 'errors', 'load_checkpoint_file': 'weights', 'load_model_weights': 'weights',
}

__all__ = ['count_macs', 'count_params', 'model_complexity', 'TimmCraError', 'UsageError', 'run_cli', 'load_checkpoint_file',
           'load_model_weights']


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f'.{_EXPORTS[name]}', __name__), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
    return sorted(set(globals()) | set(__all__))
