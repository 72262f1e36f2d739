"""CRA model families. Importing this package registers every ``cra_*`` entrypoint with timm."""
from . import cifar_resnet, cra_mobilenetv2, cra_resnet
from ._builder import (HUB_ORG, HUB_UPLOAD_PENDING, PENDING_WEIGHTS, check_pretrained_available, create_cra_model,
                       hub_id)
from ._factory import UnknownModelError, check_model_name, close_model_names, create_model
from ._load_errors import PretrainedWeightsError, UnknownPretrainedTagError

#: timm registry module names of this package's model files.
MODEL_MODULES = ('cra_resnet', 'cra_mobilenetv2', 'cifar_resnet')


def list_package_models():
    """Every architecture this package registers (``cra_*`` and the CIFAR baselines it compares against)."""
    import timm
    return timm.list_models(module=list(MODEL_MODULES))
