"""torchvision Faster R-CNN / RetinaNet with a timm (CRA-)ResNet FPN backbone.

torchvision's detection builders take torchvision ResNets only. These builders put any timm ResNet-family model
(``cra_resnet50``, ``cra_resnext50_32x4d``, plain ``resnet50`` for a baseline, ...) under torchvision's FPN,
taking C2..C5 from timm's ``features_only`` model, and give the same options as
``torchvision.models.detection.fasterrcnn_resnet50_fpn``: frozen BatchNorm, ``trainable_layers`` (0..5, counted
from the last stage; 5 also trains the stem) and torchvision's defaults for both when weights are / are not given.

Backbone weights come from the model name (``pretrained=True`` with ``<arch>.<tag>``, ``local-dir:<folder>`` or
``hf-hub:<repo>``, through :func:`timm_cra.create_model`) or from a file (``weights=``: ``model.safetensors``, a
state dict, a trainer / timm checkpoint, read by :func:`timm_cra.utils.weights.read_weights`). A classifier
checkpoint's head keys are dropped; every other key must fit the backbone.

Example::

    from timm_cra.detection import create_fasterrcnn
    model = create_fasterrcnn('cra_resnet50', weights='output/run/model.safetensors', num_classes=21)
"""
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from timm.layers import freeze_batch_norm_2d
from torch import nn
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, FeaturePyramidNetwork, LastLevelMaxPool, \
    LastLevelP6P7

__all__ = [
    'TimmFpnBackbone', 'create_fasterrcnn', 'create_fpn_backbone', 'create_retinanet', 'freeze_layers',
    'mean_average_precision',
]

_STAGES = (1, 2, 3, 4)  # timm ResNet feature indices of C2..C5 (0 is the stem's stride-2 output)


def _stage_names(model: nn.Module) -> List[str]:
    """Module names of the four stages (``layer1``..``layer4`` for timm ResNets), from timm's feature info."""
    return list(model.feature_info.module_name())


def freeze_layers(model: nn.Module, trainable_layers: int) -> None:
    """Freeze all but the last ``trainable_layers`` stages of a timm ``features_only`` ResNet, as torchvision's
    ``_resnet_fpn_extractor``: 0 freezes everything, 4 trains the four stages, 5 also trains the stem."""
    if not 0 <= trainable_layers <= 5:
        raise ValueError(f'trainable_layers must be in 0..5 (5 trains the whole backbone), got {trainable_layers}.')
    stages = _stage_names(model)
    train = stages[::-1][:min(trainable_layers, 4)]
    for name, p in model.named_parameters():
        if trainable_layers == 5:
            continue
        if not any(name == s or name.startswith(s + '.') for s in train):
            p.requires_grad_(False)


class TimmFpnBackbone(nn.Module):
    """timm ``features_only`` model + torchvision ``FeaturePyramidNetwork``; ``out_channels`` as the detectors
    expect. Returns torchvision's ``OrderedDict`` of pyramid levels (``'0'``.. plus the extra block's)."""

    def __init__(self, body: nn.Module, returned_layers: Sequence[int], out_channels: int = 256,
                 extra_blocks: Optional[ExtraFPNBlock] = None):
        super().__init__()
        self.body = body
        self.returned = [_STAGES.index(i) for i in returned_layers]
        channels = body.feature_info.channels()
        self.fpn = FeaturePyramidNetwork(
            in_channels_list=[channels[i] for i in self.returned], out_channels=out_channels,
            extra_blocks=LastLevelMaxPool() if extra_blocks is None else extra_blocks)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        feats = self.body(x)
        return self.fpn(OrderedDict((str(k), feats[i]) for k, i in enumerate(self.returned)))


def _head_keys(state: Dict[str, torch.Tensor], own: Sequence[str], classifier: Any) -> List[str]:
    prefixes = [classifier] if isinstance(classifier, str) else list(classifier or ())
    return [k for k in state if k not in own and any(k == p or k.startswith(p + '.') for p in prefixes)]


def _load_backbone_file(body: nn.Module, path: str, classifier: Any) -> None:
    from .utils.weights import load_state_checked, read_weights
    state, _ = read_weights(path)
    own = body.state_dict()
    head = set(_head_keys(state, own, classifier))
    load_state_checked(body, {k: v for k, v in state.items() if k not in head}, path,
                       hint='the file must hold weights of the backbone architecture named (a classifier head is '
                            'dropped); check the model name and its model kwargs')


def create_fpn_backbone(
        model_name: str,
        pretrained: bool = False,
        weights: Optional[str] = None,
        trainable_layers: Optional[int] = None,
        frozen_bn: Optional[bool] = None,
        returned_layers: Optional[Sequence[int]] = None,
        extra_blocks: Optional[ExtraFPNBlock] = None,
        out_channels: int = 256,
        **model_kwargs: Any,
) -> TimmFpnBackbone:
    """A timm ResNet-family model (``features_only``) under torchvision's FPN.

    Args:
        model_name: timm name (``cra_resnet50``, ``resnet50``, ``cra_resnet50.<tag>``, ``local-dir:<folder>``,
            ``hf-hub:<repo>``).
        pretrained: load the weights the name refers to (its tag, folder or Hub repo).
        weights: a weights file instead (``.safetensors``, state dict, trainer / timm checkpoint); a classifier
            head in it is dropped, every other key must fit.
        trainable_layers: stages left trainable, counted from the last (0..5, 5 also trains the stem). Default,
            as torchvision: 3 with weights, 5 without.
        frozen_bn: replace BatchNorm by ``FrozenBatchNorm2d`` (after loading weights). Default, as torchvision:
            frozen with weights, trainable BatchNorm without.
        returned_layers: stages fed to the FPN (1..4 for C2..C5), default all.
        extra_blocks: torchvision FPN extra block, default ``LastLevelMaxPool`` (the ``'pool'`` level).
        out_channels: FPN channels (torchvision uses 256).
        **model_kwargs: passed to the timm model (e.g. ``cra_pool_size``, ``drop_path_rate``).
    """
    from .models import create_model
    if pretrained and weights is not None:
        raise ValueError('Give pretrained=True (weights named by model_name) or weights=<file>, not both.')
    has_weights = pretrained or weights is not None
    trainable_layers = (3 if has_weights else 5) if trainable_layers is None else trainable_layers
    frozen_bn = has_weights if frozen_bn is None else frozen_bn
    returned_layers = list(_STAGES if returned_layers is None else returned_layers)
    if not returned_layers or any(i not in _STAGES for i in returned_layers):
        raise ValueError(f'returned_layers must be a non-empty subset of {list(_STAGES)}, got {returned_layers}.')
    if not 0 <= trainable_layers <= 5:
        raise ValueError(f'trainable_layers must be in 0..5 (5 trains the whole backbone), got {trainable_layers}.')
    body = create_model(model_name, pretrained=pretrained, features_only=True, out_indices=_STAGES, **model_kwargs)
    if weights is not None:
        cfg = getattr(body, 'pretrained_cfg', None) or {}
        _load_backbone_file(body, weights, cfg.get('classifier', 'fc'))
    if frozen_bn:
        body = freeze_batch_norm_2d(body)  # converts BN children in place; returns a new module only for a bare BN
    freeze_layers(body, trainable_layers)
    return TimmFpnBackbone(body, returned_layers, out_channels, extra_blocks)


def _split(kwargs: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    keys = ('pretrained', 'weights', 'trainable_layers', 'frozen_bn', 'returned_layers', 'out_channels')
    backbone = {k: kwargs.pop(k) for k in keys if k in kwargs}
    backbone.update(kwargs.pop('model_kwargs', None) or {})
    return backbone, kwargs


def create_fasterrcnn(model_name: str = 'cra_resnet50', num_classes: int = 91, min_size: int = 800,
                      max_size: int = 1333, **kwargs: Any):
    """torchvision ``FasterRCNN`` on :func:`create_fpn_backbone` (C2..C5 + max-pool level, as
    ``fasterrcnn_resnet50_fpn``).

    ``pretrained``, ``weights``, ``trainable_layers``, ``frozen_bn``, ``returned_layers``, ``out_channels`` and
    ``model_kwargs`` (a dict for the timm model) go to the backbone; everything else (``rpn_anchor_generator``,
    ``box_detections_per_img``, ...) to ``FasterRCNN``. ``num_classes`` includes the background.
    """
    from torchvision.models.detection import FasterRCNN
    backbone_args, det_args = _split(kwargs)
    backbone = create_fpn_backbone(model_name, **backbone_args)
    return FasterRCNN(backbone, num_classes=num_classes, min_size=min_size, max_size=max_size, **det_args)


def create_retinanet(model_name: str = 'cra_resnet50', num_classes: int = 91, min_size: int = 800,
                     max_size: int = 1333, **kwargs: Any):
    """torchvision ``RetinaNet`` on :func:`create_fpn_backbone` with C3..C5 + P6/P7 computed from P5, as
    ``retinanet_resnet50_fpn``. Arguments as :func:`create_fasterrcnn`."""
    from torchvision.models.detection import RetinaNet
    backbone_args, det_args = _split(kwargs)
    out_channels = backbone_args.setdefault('out_channels', 256)
    backbone_args.setdefault('returned_layers', [2, 3, 4])
    backbone = create_fpn_backbone(model_name, extra_blocks=LastLevelP6P7(out_channels, out_channels),
                                   **backbone_args)
    return RetinaNet(backbone, num_classes=num_classes, min_size=min_size, max_size=max_size, **det_args)


def mean_average_precision(iou_thresholds: Sequence[float] = (0.5,), **kwargs: Any):
    """torchmetrics ``MeanAveragePrecision`` at ``iou_thresholds`` (default: mAP@0.5, reported as ``map`` and
    ``map_50``); ``update(preds, targets)`` takes the detectors' eval outputs and training targets."""
    try:
        from torchmetrics.detection import MeanAveragePrecision
        return MeanAveragePrecision(iou_thresholds=list(iou_thresholds), **kwargs)
    except ImportError as e:
        raise ImportError(f"mAP needs torchmetrics and pycocotools ({e}): pip install 'timm-cra[detection]'") from e
