"""CRA-MobileNetV2

Channel Reassessment Attention (https://arxiv.org/abs/2010.05605) in every block of timm's MobileNetV2,
at the place timm's EfficientNet builder puts channel attention: after the depthwise conv + BN + act of
each inverted residual (and of the first depthwise-separable block), before the 1x1 projection. The paper
gives no MobileNetV2 placement; this one gates the widest (expanded) features, as SE does in
MobileNetV3 / EfficientNet, and costs 50 parameters per expanded channel.

The network is timm's MobileNetV2 arch definition with an ``_se`` token on every block (the builder only
inserts ``se_layer`` where a block has one); CRA ignores the ratio the token carries.
"""
from functools import partial
from typing import Any, Dict

from torch import nn

from timm.models import register_model
from timm.models._efficientnet_builder import decode_arch_def, resolve_act_layer, resolve_bn_args, round_channels
from timm.models.efficientnet import EfficientNet, _create_effnet

from ..layers import CraAttn
from ._builder import create_cra_model, default_cfgs_marked, imagenet_cfg

__all__ = []  # models are reached through timm.create_model

# timm's MobileNetV2 stages (efficientnet._gen_mobilenet_v2) with an attention token on every block.
# The ratio value is a placeholder the builder needs to insert se_layer; CRA has no reduction ratio.
_MOBILENETV2_CRA_ARCH = [
    ['ds_r1_k3_s1_c16_se0.25'],
    ['ir_r2_k3_s2_e6_c24_se0.25'],
    ['ir_r3_k3_s2_e6_c32_se0.25'],
    ['ir_r4_k3_s2_e6_c64_se0.25'],
    ['ir_r3_k3_s1_e6_c96_se0.25'],
    ['ir_r3_k3_s2_e6_c160_se0.25'],
    ['ir_r1_k3_s1_e6_c320_se0.25'],
]


def _gen_cra_mobilenet_v2(variant: str, channel_multiplier: float = 1.0, pretrained: bool = False, **kwargs):
    round_chs_fn = partial(round_channels, multiplier=channel_multiplier)
    model_kwargs = dict(
        block_args=decode_arch_def(_MOBILENETV2_CRA_ARCH),
        num_features=max(1280, round_chs_fn(1280)),
        stem_size=32,
        round_chs_fn=round_chs_fn,
        se_layer=partial(CraAttn, inplace=True),
        norm_layer=kwargs.pop('norm_layer', None) or partial(nn.BatchNorm2d, **resolve_bn_args(kwargs)),
        act_layer=resolve_act_layer(kwargs, 'relu6'),
        **kwargs,
    )
    return create_cra_model(_create_effnet, variant, pretrained, **model_kwargs)


def _cfg(url: str = '', **kwargs) -> Dict[str, Any]:
    return imagenet_cfg(url, **{'first_conv': 'conv_stem', 'classifier': 'classifier', **kwargs})


# One row per architecture (``cra_<timm mobilenetv2>``). The tag marked '*' is the default for pretrained=True on
# the bare name; ``base_weights`` adds each one's ``<base tag>_gates_untrained`` tag (loaded only by name).
default_cfgs = default_cfgs_marked({
    'cra_mobilenetv2_050.untrained*': _cfg(),
    'cra_mobilenetv2_100.untrained*': _cfg(),
    'cra_mobilenetv2_140.untrained*': _cfg(),
}, base_weights=True)


@register_model
def cra_mobilenetv2_050(pretrained: bool = False, **kwargs) -> EfficientNet:
    """CRA-MobileNetV2 with 0.5 channel multiplier."""
    return _gen_cra_mobilenet_v2('cra_mobilenetv2_050', 0.5, pretrained=pretrained, **kwargs)


@register_model
def cra_mobilenetv2_100(pretrained: bool = False, **kwargs) -> EfficientNet:
    """CRA-MobileNetV2 with 1.0 channel multiplier."""
    return _gen_cra_mobilenet_v2('cra_mobilenetv2_100', 1.0, pretrained=pretrained, **kwargs)


@register_model
def cra_mobilenetv2_140(pretrained: bool = False, **kwargs) -> EfficientNet:
    """CRA-MobileNetV2 with 1.4 channel multiplier."""
    return _gen_cra_mobilenet_v2('cra_mobilenetv2_140', 1.4, pretrained=pretrained, **kwargs)
