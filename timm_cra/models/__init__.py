"""CRA model families. Importing this package registers every ``cra_*`` entrypoint with timm."""
from . import cifar_resnet, cra_mobilenetv2, cra_resnet
from ._builder import (HUB_ORG, WEIGHT_STATES, WEIGHTS_GATES_UNTRAINED, WEIGHTS_PENDING, WEIGHTS_UPLOAD_PENDING,
                       WeightState, WeightStatus, check_pretrained_available, create_cra_model, hub_id, weight_note,
                       weight_status, weight_status_tags)
from .retrofit import DEFAULT_GATE_BIAS, RetrofitKeyError, init_cra_gates, retrofit_cra, retrofit_state_dict
from ._factory import UnknownModelError, check_model_name, close_model_names, create_model
from ._load_errors import PretrainedWeightsError, UnknownPretrainedTagError


def list_package_models(pretrained: bool = False):
    """Every architecture a module of this package registers (``cra_*`` and the CIFAR baselines it compares
    against), read from timm's registry: the entrypoint's module is under ``timm_cra.models``. With
    ``pretrained=True``, their ``<arch>.<tag>`` names with weights (as ``timm.list_models(pretrained=True)``)."""
    import timm
    from timm.models import model_entrypoint
    archs = [name for name in timm.list_models() if model_entrypoint(name).__module__.startswith(f'{__name__}.')]
    return timm.list_models(archs, pretrained=True) if pretrained else archs
