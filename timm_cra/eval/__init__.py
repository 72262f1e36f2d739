"""Evaluation: the shared loop and the ``validate`` command's library side."""
from .evaluate import evaluate
from .validate import RESULT_FIELDS, create_parser, main, validate, write_results

__all__ = ['evaluate', 'create_parser', 'validate', 'write_results', 'main', 'RESULT_FIELDS']
