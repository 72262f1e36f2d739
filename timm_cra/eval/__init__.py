"""Evaluation: the shared loop and the ``validate`` command's library side."""
from ..utils.extras import require_train_extra

require_train_extra(__name__)  # one line naming the install command when the [train] extra is missing

from .evaluate import evaluate
from .validate import RESULT_FIELDS, create_parser, main, validate, write_results

__all__ = ['evaluate', 'create_parser', 'validate', 'write_results', 'main', 'RESULT_FIELDS']
