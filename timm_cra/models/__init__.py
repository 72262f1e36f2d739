"""CRA model families. Importing this package registers every ``cra_*`` entrypoint with timm."""
from . import cifar_resnet, cra_mobilenetv2, cra_resnet
from ._builder import (HUB_ORG, WEIGHT_STATES, WEIGHTS_GATES_UNTRAINED, WEIGHTS_PENDING, WEIGHTS_UPLOAD_PENDING,
                       WeightState, WeightStatus, check_pretrained_available, create_cra_model, hub_id, weight_note,
                       weight_status, weight_status_tags)
from .retrofit import DEFAULT_GATE_BIAS, RetrofitKeyError, init_cra_gates, retrofit_cra, retrofit_state_dict
from ._factory import UnknownModelError, check_model_name, close_model_names, create_model
from ._load_errors import PretrainedWeightsError, UnknownPretrainedTagError

#: timm registry module names of this package's model files.
MODEL_MODULES = ('cra_resnet', 'cra_mobilenetv2', 'cifar_resnet')


def list_package_models():
    """Every architecture this package registers (``cra_*`` and the CIFAR baselines it compares against)."""
    import timm
    return timm.list_models(module=list(MODEL_MODULES))
