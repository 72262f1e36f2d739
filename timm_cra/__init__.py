"""timm-cra: Channel Reassessment Attention (arXiv:2010.05605) models for timm.

``import timm_cra`` registers the ``cra_*`` models with timm's registry (timm has no plugin entry
points, so the import is required); then use ``timm.create_model('cra_resnet50')`` as usual.
"""
from .layers import CraAttn, cra_pool
from . import models
from .models import PretrainedWeightsError, UnknownModelError, UnknownPretrainedTagError, create_model
from .utils.errors import TimmCraError, UsageError

__version__ = '0.1.0'

__all__ = [
    'CraAttn', 'PretrainedWeightsError', 'TimmCraError', 'UnknownModelError', 'UnknownPretrainedTagError', 'UsageError',
    'cra_pool', 'create_model', 'models', '__version__',
]
