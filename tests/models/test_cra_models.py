"""The cra_* families: registry, parameter counts, CRA placement and the timm model contract."""
from collections import Counter

import pytest
import torch
from torch import nn

import timm
from timm.models._efficientnet_blocks import DepthwiseSeparableConv, InvertedResidual
from timm.models.resnet import BasicBlock, Bottleneck

import timm_cra
from timm_cra.layers import CraAttn
from timm_cra.layers.cra import KERNEL_IMPLEMENTATIONS, POOL_IMPLEMENTATIONS, Implementation
from timm_cra.models._builder import base_arch

from .archs import CRA_ARCHS, IMAGENET_ARCHS, SMALL_ARCHS

MOBILENETV2_ARCHS = timm.list_models(module='cra_mobilenetv2')


def _params(model):
    return sum(p.numel() for p in model.parameters())


def _cra_modules(model):
    return [m for m in model.modules() if isinstance(m, CraAttn)]


def test_every_cra_arch_is_named_after_its_registered_base_and_has_a_cfg():
    assert {'cra_resnet50', 'cra_mobilenetv2_050', 'cra_cifar_resnet20'} <= set(CRA_ARCHS)
    for name in CRA_ARCHS:
        assert timm.is_model(base_arch(name)), f'{name}: no base architecture {base_arch(name)!r} (cra_<base>)'
        assert timm.get_pretrained_cfg(name) is not None, f'{name} has no pretrained cfg'


@pytest.mark.parametrize('name,expected', [
    ('cra_resnet50', 26_312_232),
    ('cra_resnet101', 46_174_760),
    ('cra_resnext101_32x4d', 45_803_304),
])
def test_param_counts_equal_the_paper(name, expected):
    assert _params(timm.create_model(name, device='meta')) == expected


@pytest.mark.parametrize('name', CRA_ARCHS)
def test_cra_is_the_only_addition_to_the_base_model(name):
    model = timm.create_model(name, device='meta')
    base = timm.create_model(base_arch(name), device='meta')
    cra = _cra_modules(model)
    assert cra, f'{name} has no CRA modules'
    # a k x k depthwise kernel + bias per channel: 50 parameters per channel at the official 7x7
    assert _params(model) - _params(base) == sum((m.pool_size[0] * m.pool_size[1] + 1) * m.conv.in_channels
                                                 for m in cra)
    if name in IMAGENET_ARCHS:
        assert all(m.pool_size == (7, 7) for m in cra)


@pytest.mark.parametrize('name', CRA_ARCHS)
def test_cra_in_every_block(name):
    # ResNet blocks: after the last conv + BN; EfficientNet-builder blocks: after the depthwise conv.
    model = timm.create_model(name, device='meta')
    blocks = [m for m in model.modules()
              if isinstance(m, (BasicBlock, Bottleneck, InvertedResidual, DepthwiseSeparableConv))]
    assert blocks
    for b in blocks:
        assert isinstance(b.se, CraAttn)
        if isinstance(b, (BasicBlock, Bottleneck)):
            assert b.se.conv.in_channels == (b.bn3 if isinstance(b, Bottleneck) else b.bn2).num_features
        else:
            assert b.se.conv.in_channels == b.conv_dw.out_channels
    assert len(_cra_modules(model)) == len(blocks)


@pytest.mark.parametrize('name', MOBILENETV2_ARCHS)
def test_mobilenetv2_has_17_blocks(name):
    blocks = [m for m in timm.create_model(name, device='meta').modules()
              if isinstance(m, (InvertedResidual, DepthwiseSeparableConv))]
    assert len(blocks) == 17  # 1 depthwise-separable + 16 inverted residuals


def test_resnet_cra_sits_after_last_bn_before_residual_add():
    # A gate forced to zero removes the residual branch: the block reduces to act(shortcut(x)).
    torch.manual_seed(0)
    model = timm.create_model('cra_resnet50').eval()
    block = model.layer2[0]
    with torch.no_grad():
        block.se.conv.weight.zero_()
        block.se.conv.bias.fill_(-1e4)
        x = torch.randn(2, 256, 16, 16)
        torch.testing.assert_close(block(x), torch.relu(block.downsample(x)))


def test_mobilenetv2_cra_gates_expanded_features():
    # Gate forced to zero: the projection sees zeros, so the block outputs bn3(conv_pwl(0)) (+ skip).
    model = timm.create_model('cra_mobilenetv2_050').eval()
    block = model.blocks[2][1]  # inverted residual with skip
    assert block.has_skip
    with torch.no_grad():
        block.se.conv.weight.zero_()
        block.se.conv.bias.fill_(-1e4)
        x = torch.randn(1, block.conv_pw.in_channels, 8, 8)
        expected = block.bn3(block.conv_pwl(torch.zeros(1, block.conv_pwl.in_channels, 8, 8))) + x
        torch.testing.assert_close(block(x), expected)


@pytest.mark.parametrize('name', IMAGENET_ARCHS)
def test_default_cfg_fields(name):
    cfg = timm.get_pretrained_cfg(name).to_dict()
    assert cfg['paper_ids'] == 'arXiv:2010.05605'
    assert cfg['origin_url'] == 'https://github.com/syt2/CRA'
    assert cfg['input_size'] == (3, 224, 224)
    assert cfg['interpolation'] == 'bicubic' and cfg['crop_pct'] == 0.875


@pytest.mark.parametrize('name', CRA_ARCHS)
def test_every_tag_names_real_first_conv_and_classifier(name):
    model = timm.create_model(name, device='meta')
    names = dict(model.named_modules())
    for tag, cfg in timm.models.get_arch_pretrained_cfgs(name).items():
        assert isinstance(names.get(cfg.first_conv), nn.Conv2d), (tag, cfg.first_conv)
        assert isinstance(names.get(cfg.classifier), nn.Linear), (tag, cfg.classifier)
        assert cfg.num_classes == model.num_classes, tag


def test_pretrained_without_weights_raises_clear_error():
    with pytest.raises(RuntimeError, match=r"no pretrained weights exist for 'cra_resnet18.*pretrained=False"):
        timm.create_model('cra_resnet18', pretrained=True)


def test_pretrained_from_local_file(tmp_path):
    from safetensors.torch import save_file
    src = timm.create_model('cra_resnet18', num_classes=10)
    path = tmp_path / 'model.safetensors'
    save_file(src.state_dict(), str(path))
    model = timm.create_model(
        'cra_resnet18', pretrained=True, num_classes=10, pretrained_cfg_overlay=dict(file=str(path), num_classes=10))
    for k, v in src.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v, rtol=0, atol=0)


def test_cra_on_any_timm_resnet_by_composition():
    from timm_cra import CraAttn as ExportedCra
    model = timm.create_model('resnet50d', block_args=dict(attn_layer=ExportedCra), device='meta')
    base = timm.create_model('resnet50d', device='meta')
    cra = _cra_modules(model)
    assert len(cra) == 16
    assert _params(model) - _params(base) == sum(50 * m.conv.in_channels for m in cra)


@pytest.mark.parametrize('name', SMALL_ARCHS)
def test_features_only_and_out_indices(name):
    model = timm.create_model(name, features_only=True, out_indices=(1, 3))
    feats = model(torch.randn(1, 3, 64, 64))
    assert len(feats) == 2
    assert [f.shape[1] for f in feats] == model.feature_info.channels()
    assert [64 // f.shape[-1] for f in feats] == model.feature_info.reduction()


@pytest.mark.parametrize('name', SMALL_ARCHS)
def test_forward_intermediates(name):
    model = timm.create_model(name).eval()
    x = torch.randn(1, 3, 64, 64)
    final, inters = model.forward_intermediates(x, indices=2)
    assert len(inters) == 2
    torch.testing.assert_close(final, model.forward_features(x))


@pytest.mark.parametrize('name', SMALL_ARCHS)
def test_head_reset_in_chans_drop_path_global_pool(name):
    model = timm.create_model(name, num_classes=7, in_chans=1, drop_path_rate=0.1, global_pool='max')
    assert model(torch.randn(2, 1, 64, 64)).shape == (2, 7)
    assert any(type(m).__name__ == 'DropPath' for m in model.modules())
    model.reset_classifier(3)
    assert model(torch.randn(2, 1, 64, 64)).shape == (2, 3)
    model.reset_classifier(0)
    assert model(torch.randn(2, 1, 64, 64)).shape == (2, model.num_features)


@pytest.mark.parametrize('name', SMALL_ARCHS)
def test_grad_checkpointing_gives_same_gradients(name):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=5).train()
    x = torch.randn(2, 3, 64, 64)

    def grads():
        model.zero_grad()
        torch.manual_seed(1)
        model(x).square().sum().backward()
        return {k: p.grad.clone() for k, p in model.named_parameters()}

    plain = grads()
    model.set_grad_checkpointing(True)
    ckpt = grads()
    for k in plain:
        torch.testing.assert_close(ckpt[k], plain[k], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('name', SMALL_ARCHS)
def test_channels_last_model_matches(name):
    torch.manual_seed(0)
    model = timm.create_model(name).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        y = model(x)
        model_cl = model.to(memory_format=torch.channels_last)
        y_cl = model_cl(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(y_cl, y, rtol=1e-4, atol=1e-4)


def test_import_registers_models():
    assert timm.is_model('cra_resnet50')


@pytest.mark.parametrize('name', SMALL_ARCHS)
def test_families_gate_in_place_at_inference_with_identical_outputs(name):
    # The families build CraAttn(inplace=True): inference must equal the autograd forward (up to the 7x7
    # kernel's summation order: a batched matmul at inference, conv2d under autograd).
    torch.manual_seed(0)
    model = timm.create_model(name).eval()
    assert all(m.inplace for m in _cra_modules(model))
    x = torch.randn(2, 3, 64, 64)
    y_grad = model(x)
    with torch.inference_mode():
        y_inf = model(x)
    torch.testing.assert_close(y_inf, y_grad.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('channels_last', [False, True])
def test_training_step_runs_the_fast_paths_for_channels_last_only(channels_last, monkeypatch):
    # The CPU training kernels stay only where two idle benchmark runs measured them faster (docs/benchmarks.md,
    # "Fast paths: which stay"): every CRA layer of a channels_last training step runs them, an NCHW step none.
    calls = []
    for table in (POOL_IMPLEMENTATIONS, KERNEL_IMPLEMENTATIONS):
        for name, impl in list(table.items()):
            monkeypatch.setitem(table, name, Implementation(
                impl.applies, lambda *a, _run=impl.run, _name=name: calls.append(_name) or _run(*a)))
    model = timm.create_model('cra_cifar_resnet20').train()
    x = torch.randn(2, 3, 32, 32)
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    model(x).logsumexp(1).sum().backward()
    layers = len(_cra_modules(model))
    assert Counter(calls) == (Counter(window_max_autograd=layers, dot_product_autograd=layers) if channels_last
                              else Counter())
