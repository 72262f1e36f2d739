"""CRA in the attention slot of timm's model families: the rows of docs/models.md's attention-slot table.

Each family is built with CRA either through timm's own constructor kwarg (``block_args=dict(attn_layer=...)``
for the ResNet family) or by :func:`timm_cra.models.retrofit.retrofit_cra` on the base model (EfficientNet
builder families, and bases that already carry SE / ECA, which CRA replaces). Each row: forward, backward with
non-zero gradients into every CRA kernel, and ``features_only``.
"""
import pytest
import torch
from torch import nn

import timm
from timm_cra import CraAttn
from timm_cra.models.retrofit import retrofit_cra

SIZE = 64

#: family -> (timm model, how CRA gets in: 'kwarg' or 'retrofit', what was in the slot before)
FAMILIES = {
    'ResNet (basic block)': ('resnet18', 'kwarg', None),
    'ResNet (bottleneck)': ('resnet26', 'kwarg', None),
    'ResNet-D': ('resnet26d', 'kwarg', None),
    'ResNeXt': ('resnext50_32x4d', 'kwarg', None),
    'SE-ResNet (SE replaced)': ('seresnet18', 'retrofit', 'SEModule'),
    'ECA-ResNet-D (ECA replaced)': ('ecaresnet26t', 'retrofit', 'EcaModule'),
    'ResNet-RS (SE replaced)': ('resnetrs50', 'retrofit', 'SEModule'),
    'MobileNetV2': ('mobilenetv2_050', 'retrofit', None),
    'MobileNetV3 (SE replaced)': ('mobilenetv3_small_050', 'retrofit', 'SqueezeExcite'),
    'EfficientNet (SE replaced)': ('efficientnet_b0', 'retrofit', 'SqueezeExcite'),
    'EfficientNetV2 (edge blocks, SE replaced)': ('efficientnetv2_rw_t', 'retrofit', 'SqueezeExcite'),
}


def _build(name: str, how: str, **kwargs) -> nn.Module:
    if how == 'kwarg':
        return timm.create_model(name, block_args=dict(attn_layer=CraAttn), **kwargs)
    return retrofit_cra(timm.create_model(name, **kwargs))


def _wake_gates(model: nn.Module) -> None:
    """Random BNs (timm zero-inits each ResNet block's last BN, which silences every gate) and random CRA
    kernels, so every gate's output reaches the loss."""
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
        elif isinstance(m, CraAttn):
            nn.init.normal_(m.conv.weight, std=0.1)


@pytest.mark.parametrize('family', list(FAMILIES))
def test_cra_in_the_attention_slot(family):
    name, how, replaced = FAMILIES[family]
    if replaced:
        assert any(type(m).__name__ == replaced for m in timm.create_model(name).modules())
    model = _build(name, how)
    gates = [m for m in model.modules() if isinstance(m, CraAttn)]
    assert gates and not any(type(m).__name__ == replaced for m in model.modules())
    _wake_gates(model)
    model.train()
    out = model(torch.randn(2, 3, SIZE, SIZE))
    out.square().mean().backward()
    assert torch.isfinite(out).all()
    for gate in gates:
        assert gate.conv.weight.grad is not None and gate.conv.weight.grad.abs().sum() > 0, family

    features = _build(name, how, features_only=True)
    assert any(isinstance(m, CraAttn) for m in features.modules())
    maps = features.eval()(torch.randn(1, 3, SIZE, SIZE))
    assert [f.shape[1] for f in maps] == features.feature_info.channels()
