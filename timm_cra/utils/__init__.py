from .complexity import count_macs, count_params, model_complexity
from .errors import TimmCraError, UsageError, run_cli
from .weights import load_checkpoint_file, load_model_weights

__all__ = ['count_macs', 'count_params', 'model_complexity', 'TimmCraError', 'UsageError', 'run_cli',
           'load_checkpoint_file', 'load_model_weights']
