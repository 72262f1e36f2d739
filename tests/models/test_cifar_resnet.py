"""The CIFAR ResNet family: depth, widths, attention variants, timm contract."""
import pytest
import torch

import timm
from timm.layers import EcaModule, SEModule
from timm.models.resnet import BasicBlock

import timm_cra  # noqa: F401
from timm_cra.layers import CraAttn

VARIANTS = {
    'cifar_resnet20': type(None), 'se_cifar_resnet20': SEModule, 'eca_cifar_resnet20': EcaModule,
    'cra_cifar_resnet20': CraAttn,
}


def _params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize('name,blocks', [('cifar_resnet20', 9), ('cifar_resnet56', 27), ('cra_cifar_resnet56', 27)])
def test_depth_is_6n_plus_2(name, blocks):
    model = timm.create_model(name)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len([m for m in model.modules() if isinstance(m, BasicBlock)]) == blocks
    assert len(convs) + 1 == 6 * (blocks // 3) + 2  # 3x3 convs + the fc layer


def test_resnet20_matches_the_resnet_paper_size():
    # He et al. report 0.27M params for ResNet-20; the 1x1 conv shortcuts ("option B") add 2.6k.
    assert _params(timm.create_model('cifar_resnet20')) == 272_474


@pytest.mark.parametrize('name,attn', list(VARIANTS.items()))
def test_attention_variant_in_every_block(name, attn):
    model = timm.create_model(name)
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert all(isinstance(b.se, attn) if attn is not type(None) else b.se is None for b in blocks)


def test_cra_pool_options():
    model = timm.create_model('cra_cifar_resnet20', cra_pool_size=4, cra_pool_type='avg')
    cra = [m for m in model.modules() if isinstance(m, CraAttn)]
    assert all(m.pool_size == (4, 4) and m.pool_type == 'avg' for m in cra)
    base = _params(timm.create_model('cifar_resnet20'))
    assert _params(model) - base == sum(17 * m.conv.in_channels for m in cra)


def test_forward_features_only_and_intermediates():
    model = timm.create_model('cra_cifar_resnet20').eval()
    x = torch.randn(2, 3, 32, 32)
    assert model(x).shape == (2, 10)
    assert model.forward_features(x).shape == (2, 64, 8, 8)
    final, inters = model.forward_intermediates(x)
    assert [t.shape[1:] for t in inters] == [(16, 32, 32), (16, 32, 32), (32, 16, 16), (64, 8, 8)]
    feats = timm.create_model('cra_cifar_resnet20', features_only=True, out_indices=(2, 3))(x)
    assert [f.shape[1:] for f in feats] == [(32, 16, 16), (64, 8, 8)]


def test_fine_tune_head_reset_and_grad_checkpointing():
    model = timm.create_model('cra_cifar_resnet20', num_classes=100, in_chans=1, drop_path_rate=0.1)
    x = torch.randn(2, 1, 32, 32)
    assert model(x).shape == (2, 100)
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    assert model.conv1.weight.grad is not None


def test_cifar_cfg():
    cfg = timm.get_pretrained_cfg('cra_cifar_resnet20')
    assert cfg.input_size == (3, 32, 32) and cfg.num_classes == 10 and cfg.crop_pct == 1.0
    assert cfg.mean == pytest.approx((0.4914, 0.4822, 0.4465))
