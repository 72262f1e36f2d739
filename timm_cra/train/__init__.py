"""Training: timm-parts trainer, its arguments/recipes, checkpoints and metrics."""
from ..utils.extras import require_train_extra

require_train_extra(__name__)  # one line naming the install command when the [train] extra is missing

from .args import create_parser, list_recipes, load_config, parse_args
from ..utils.weights import load_checkpoint_file, load_model_weights
from .checkpoint import atomic_save
from .loop import create_optimizer, create_scheduler
from .trainer import main, train

__all__ = ['create_parser', 'parse_args', 'load_config', 'list_recipes', 'train', 'main', 'create_optimizer',
           'create_scheduler', 'atomic_save', 'load_checkpoint_file', 'load_model_weights']
