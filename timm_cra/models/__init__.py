"""CRA model families. Importing this package registers every ``cra_*`` entrypoint with timm."""
from . import cifar_resnet, cra_mobilenetv2, cra_resnet
from ._builder import HUB_ORG, PENDING_WEIGHTS, check_pretrained_available, create_cra_model, hub_id
from ._load_errors import PretrainedWeightsError
