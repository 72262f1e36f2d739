"""retrofit_cra / retrofit_state_dict: CRA gates added to timm networks, every base weight kept."""
import copy

import pytest
import torch
from torch import nn

import timm
import timm_cra  # noqa: F401  (registers cra_*)
from timm_cra.layers import CraAttn
from timm_cra.models._builder import base_arch
from timm_cra.models.retrofit import (ATTN_SLOTS, DEFAULT_GATE_BIAS, RetrofitKeyError, cra_gate_keys, retrofit_cra,
                                      retrofit_state_dict)

from .archs import SMALL_ARCHS


def reinit_bns(model: nn.Module, seed: int = 1) -> nn.Module:
    """Random BN affine + running stats: timm zero-inits each block's last BN, and then gates change nothing."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) * 0.5 + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    return model


def _base(arch: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return reinit_bns(timm.create_model(arch, **kwargs)).eval()


def _pool_size(cra_arch: str):
    return next(m for m in timm.create_model(cra_arch, device='meta').modules() if isinstance(m, CraAttn)).pool_size


@pytest.mark.parametrize('cra_arch', SMALL_ARCHS)
def test_retrofit_gives_the_cra_architecture_and_keeps_every_base_weight(cra_arch):
    base = _base(base_arch(cra_arch))
    cra_kwargs = dict(pool_size=_pool_size(cra_arch))  # the architecture's own CRA pooling (CIFAR: 4x4)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    model = retrofit_cra(copy.deepcopy(base), **cra_kwargs)
    sd = model.state_dict()
    assert set(sd) == set(timm.create_model(cra_arch, device='meta').state_dict())
    gates = cra_gate_keys(model)
    assert set(sd) - set(before) == set(gates)
    for k, v in before.items():
        assert torch.equal(sd[k], v), k
    cras = [m for m in model.modules() if isinstance(m, CraAttn)]
    assert cras and all(m.inplace for m in cras)
    for m in cras:  # kernel zero, bias b: the gate is the constant sigmoid(b)
        assert not m.conv.weight.any() and torch.all(m.conv.bias == DEFAULT_GATE_BIAS)
        k = m.pool_size[0] * m.pool_size[1]
        assert sum(p.numel() for p in m.parameters()) == (k + 1) * m.conv.out_channels


def test_logits_approach_the_base_as_the_gate_saturates():
    base = _base('resnet18')
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = base(x)
        dev = {}
        for b in (2.0, 4.0, 8.0, 30.0):  # sigmoid(30) == 1 in float32: exact pass-through
            y = retrofit_cra(copy.deepcopy(base), gate_bias=b).eval()(x)
            dev[b] = ((y - ref).norm() / ref.norm()).item()
    assert dev[30.0] < 1e-5
    assert dev[2.0] > dev[4.0] > dev[8.0] > dev[30.0]


def test_se_is_replaced_by_cra():
    for arch in ('seresnet18', 'efficientnet_b0'):
        base = timm.create_model(arch, device='meta')
        se_keys = {k for k in base.state_dict() if '.se.' in k}
        assert se_keys
        model = retrofit_cra(base)
        sd = model.state_dict()
        assert not se_keys & set(sd)
        assert {k for k in sd if '.se.' in k} == set(cra_gate_keys(model))
        slots = [m for m in model.modules() if type(m) in ATTN_SLOTS]
        assert slots and all(isinstance(m.se, CraAttn) for m in slots)


def test_model_without_attention_slots_is_refused():
    with pytest.raises(ValueError, match='no block with an attention slot'):
        retrofit_cra(nn.Sequential(nn.Conv2d(3, 8, 3)))


def test_state_dict_map_is_strict():
    model = timm.create_model('cra_resnet18', device='meta')
    sd = retrofit_state_dict(timm.create_model('resnet18', device='meta').state_dict(), model, gate_bias=3.0)
    assert set(sd) == set(model.state_dict())
    assert torch.all(sd['layer1.0.se.conv.bias'] == 3.0) and not sd['layer1.0.se.conv.weight'].any()
    with pytest.raises(RetrofitKeyError, match=r'model keys missing from the base: layer1\.0\.conv1\.weight'):
        base = timm.create_model('resnet18', device='meta').state_dict()
        del base['layer1.0.conv1.weight']
        retrofit_state_dict(base, model)
    with pytest.raises(RetrofitKeyError, match=r'unexpected base keys: layer1\.0\.se\.fc1'):
        retrofit_state_dict(timm.create_model('seresnet18', device='meta').state_dict(), model)
    with pytest.raises(RetrofitKeyError, match=r'unexpected base keys: layer1\.2\.'):  # deeper base
        retrofit_state_dict(timm.create_model('resnet34', device='meta').state_dict(), model)
