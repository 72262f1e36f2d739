"""CRA-ResNet and CRA-ResNeXt

Channel Reassessment Attention (https://arxiv.org/abs/2010.05605) in every residual block of timm's
``ResNet``, at the place timm puts block attention (``attn_layer``): after the last conv + BN, before
drop-path, the shortcut add and the final activation -- where the official code puts it.

Built on timm's own ``ResNet`` class, so every timm feature (features_only, forward_intermediates,
gradient checkpointing, drop_path, global_pool, in_chans/num_classes adaptation) comes with it.
"""
from functools import partial
from typing import Any, Dict

from timm.models import build_model_with_cfg, register_model
from timm.models.resnet import BasicBlock, Bottleneck, ResNet

from ..layers import CraAttn
from ._builder import (WEIGHTS_PENDING, create_cra_model, default_cfgs_marked, hub_id, imagenet_1k_labels,
                       imagenet_cfg, weight_status_cfg)

__all__ = []  # models are reached through timm.create_model


def _build_resnet(variant: str, pretrained: bool = False, **kwargs) -> ResNet:
    return build_model_with_cfg(ResNet, variant, pretrained, **kwargs)


def _create_cra_resnet(variant: str, pretrained: bool = False, **kwargs) -> ResNet:
    return create_cra_model(_build_resnet, variant, pretrained, **kwargs)


def _cfg(url: str = '', **kwargs) -> Dict[str, Any]:
    return imagenet_cfg(url, **{'first_conv': 'conv1', 'classifier': 'fc', **kwargs})


_PAPER_PENDING_NOTE = (
    'The official checkpoint is on Google Drive (linked from https://github.com/syt2/CRA): download it, convert '
    'it with `python -m timm_cra.hub.convert_official <checkpoint> --out <folder>` and load '
    "timm.create_model('local-dir:<folder>', pretrained=True) (or serve it through a mirror via HF_ENDPOINT).")

# One row per architecture (``cra_<timm resnet>``). The tag marked '*' is each architecture's default
# (``pretrained=True`` on the bare name); ``base_weights`` adds each one's ``<base tag>_gates_untrained`` tag, which
# loads only when asked for by name.
default_cfgs = default_cfgs_marked({
    'cra_resnet18.untrained*': _cfg(),
    'cra_resnet34.untrained*': _cfg(),
    # Official CRA-ResNet-50 (syt2/CRA) converted from the authors' checkpoint. The official repository has
    # no licence file, so the licence of these weights is unknown.
    'cra_resnet50.paper_in1k*': _cfg(hf_hub_id=hub_id('cra_resnet50.paper_in1k'), license='unknown',
                                    **imagenet_1k_labels(),
                                    **weight_status_cfg(WEIGHTS_PENDING, _PAPER_PENDING_NOTE)),
    'cra_resnet50.untrained': _cfg(),
    'cra_resnet101.untrained*': _cfg(),
    'cra_resnet152.untrained*': _cfg(),
    'cra_resnet50d.untrained*': _cfg(first_conv='conv1.0'),
    'cra_resnext50_32x4d.untrained*': _cfg(),
    'cra_resnext101_32x4d.untrained*': _cfg(),
    'cra_resnext101_32x8d.untrained*': _cfg(),
}, base_weights=True)


def _cra_args(block, layers, **kwargs) -> Dict[str, Any]:
    return dict(block=block, layers=layers, block_args=dict(attn_layer=partial(CraAttn, inplace=True)), **kwargs)


@register_model
def cra_resnet18(pretrained: bool = False, **kwargs) -> ResNet:
    """CRA-ResNet-18."""
    model_args = _cra_args(BasicBlock, (2, 2, 2, 2))
    return _create_cra_resnet('cra_resnet18', pretrained, **dict(model_args, **kwargs))


@register_model
def cra_resnet34(pretrained: bool = False, **kwargs) -> ResNet:
    """CRA-ResNet-34."""
    model_args = _cra_args(BasicBlock, (3, 4, 6, 3))
    return _create_cra_resnet('cra_resnet34', pretrained, **dict(model_args, **kwargs))


@register_model
def cra_resnet50(pretrained: bool = False, **kwargs) -> ResNet:
    """CRA-ResNet-50 (paper: 26,312,232 params, 22.77% top-1 error on ImageNet)."""
    model_args = _cra_args(Bottleneck, (3, 4, 6, 3))
    return _create_cra_resnet('cra_resnet50', pretrained, **dict(model_args, **kwargs))


@register_model
def cra_resnet101(pretrained: bool = False, **kwargs) -> ResNet:
    """CRA-ResNet-101 (paper: 46,174,760 params, 21.60% top-1 error on ImageNet)."""
    model_args = _cra_args(Bottleneck, (3, 4, 23, 3))
    return _create_cra_resnet('cra_resnet101', pretrained, **dict(model_args, **kwargs))


@register_model
def cra_resnet152(pretrained: bool = False, **kwargs) -> ResNet:
    """CRA-ResNet-152."""
    model_args = _cra_args(Bottleneck, (3, 8, 36, 3))
    return _create_cra_resnet('cra_resnet152', pretrained, **dict(model_args, **kwargs))


@register_model
def cra_resnet50d(pretrained: bool = False, **kwargs) -> ResNet:
    """CRA-ResNet-50-D: deep 3x3 stem, average-pool downsample in the shortcut."""
    model_args = _cra_args(Bottleneck, (3, 4, 6, 3), stem_width=32, stem_type='deep', avg_down=True)
    return _create_cra_resnet('cra_resnet50d', pretrained, **dict(model_args, **kwargs))


@register_model
def cra_resnext50_32x4d(pretrained: bool = False, **kwargs) -> ResNet:
    """CRA-ResNeXt-50 32x4d."""
    model_args = _cra_args(Bottleneck, (3, 4, 6, 3), cardinality=32, base_width=4)
    return _create_cra_resnet('cra_resnext50_32x4d', pretrained, **dict(model_args, **kwargs))


@register_model
def cra_resnext101_32x4d(pretrained: bool = False, **kwargs) -> ResNet:
    """CRA-ResNeXt-101 32x4d (paper: 45,803,304 params, 20.71% top-1 error on ImageNet)."""
    model_args = _cra_args(Bottleneck, (3, 4, 23, 3), cardinality=32, base_width=4)
    return _create_cra_resnet('cra_resnext101_32x4d', pretrained, **dict(model_args, **kwargs))


@register_model
def cra_resnext101_32x8d(pretrained: bool = False, **kwargs) -> ResNet:
    """CRA-ResNeXt-101 32x8d."""
    model_args = _cra_args(Bottleneck, (3, 4, 23, 3), cardinality=32, base_width=8)
    return _create_cra_resnet('cra_resnext101_32x8d', pretrained, **dict(model_args, **kwargs))
