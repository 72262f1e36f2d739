"""``<cra_arch>.<base_tag>_gates_untrained``: timm's base weights loaded into CRA models through the Hub path.

The real timm repos cannot be fetched here: stand-in repos with random weights in the base's exact file and key
layout (``save_for_hf`` of the base architecture, BNs re-initialised) are served by the loopback Hub.
"""
import copy
import tempfile
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
import pyarrow.parquet as pq
import torch
from PIL import Image

import timm
from timm.models import get_pretrained_cfg, save_for_hf

import timm_cra  # noqa: F401
from timm_cra import PretrainedWeightsError
from timm_cra.models import DEFAULT_GATE_BIAS, WEIGHTS_GATES_UNTRAINED, weight_status
from timm_cra.models._builder import base_arch as base_of
from timm_cra.models.retrofit import cra_gate_keys, retrofit_cra, retrofit_state_dict

from .archs import GATES_UNTRAINED_TAGS, IMAGENET_ARCHS, SMALL_GATES_UNTRAINED_ARCHS
from .test_retrofit import reinit_bns

SMALL = [(arch, base_of(arch)) for arch in SMALL_GATES_UNTRAINED_ARCHS]
EVAL_FIELDS = ('input_size', 'test_input_size', 'crop_pct', 'test_crop_pct', 'crop_mode', 'interpolation', 'mean',
               'std', 'num_classes', 'license', 'first_conv', 'classifier', 'pool_size')


def _tag(cra_arch: str) -> str:
    assert cra_arch in GATES_UNTRAINED_TAGS, f'{cra_arch} has no <base tag>_gates_untrained tag'
    return GATES_UNTRAINED_TAGS[cra_arch]


@pytest.mark.parametrize('cra_arch', IMAGENET_ARCHS)
def test_every_imagenet_cra_arch_has_a_gates_untrained_tag_of_timms_default_base_weights(cra_arch):
    name, base_name = _tag(cra_arch), base_of(cra_arch)
    cfg, base = get_pretrained_cfg(name), get_pretrained_cfg(base_name)  # timm's default weights of the base
    assert name == f'{cra_arch}.{base.tag}_gates_untrained'
    assert cfg.hf_hub_id == base.hf_hub_id == f'timm/{base_name}.{base.tag}'
    for field in EVAL_FIELDS:
        assert getattr(cfg, field) == getattr(base, field), (name, field)
    assert weight_status(cfg) == WEIGHTS_GATES_UNTRAINED and 'untrained' in cfg.description
    # the bare name keeps its own default and never loads these
    assert timm.get_pretrained_cfg(cra_arch).tag != cfg.tag


@pytest.mark.parametrize('cra_arch', sorted(GATES_UNTRAINED_TAGS))
def test_base_keys_map_onto_the_cra_arch(cra_arch):
    """Key layout of every base (timm's own definition, meta device): all mapped, only the gates added."""
    model = timm.create_model(cra_arch, device='meta')
    base = timm.create_model(base_of(cra_arch), device='meta').state_dict()
    sd = retrofit_state_dict(base, model)
    assert set(sd) == set(model.state_dict())
    assert set(sd) - set(base) == set(cra_gate_keys(model))


def _serve_base(hub, base_arch: str, seed: int = 0, arch: str = None):
    """A stand-in of timm's Hub repo of ``base_arch``'s default weights; returns the base model (eval). A repo this
    package bundles is served as published (other bytes under its unpublished name load the bundled copy)."""
    from safetensors.torch import load_file
    from timm_cra.models._weight_checks import BUNDLED_WEIGHTS
    from ..conftest import HUB_DIR
    repo_id = get_pretrained_cfg(base_arch).hf_hub_id
    if repo_id in BUNDLED_WEIGHTS and arch is None:
        hub.add_repo(repo_id, HUB_DIR / repo_id)
        base = timm.create_model(base_arch)
        base.load_state_dict(load_file(str(HUB_DIR / repo_id / 'model.safetensors')))
        return base.eval()
    torch.manual_seed(seed)
    base = reinit_bns(timm.create_model(arch or base_arch), seed).eval()
    with tempfile.TemporaryDirectory() as folder:
        save_for_hf(base, folder, safe_serialization=True)  # timm's own Hub file layout
        hub.add_repo(get_pretrained_cfg(base_arch).hf_hub_id, Path(folder))
    return base


@pytest.mark.parametrize('cra_arch,base_arch', SMALL)
def test_tag_loads_the_base_weights_from_the_hub(hub, cra_arch, base_arch):
    base = _serve_base(hub, base_arch)
    model = timm.create_model(_tag(cra_arch), pretrained=True).eval()
    sd, base_sd = model.state_dict(), base.state_dict()
    for k, v in base_sd.items():
        assert torch.equal(sd[k], v), k
    for k, v in cra_gate_keys(model).items():
        assert (not v.any()) if k.endswith('.weight') else torch.all(v == DEFAULT_GATE_BIAS), k
    # Same network as retrofitting the base model in memory; close to the base, not equal (sigmoid gate).
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        y, ref = model(x), base(x)
        assert torch.allclose(y, retrofit_cra(copy.deepcopy(base)).eval()(x), atol=1e-5)
        assert torch.nn.functional.cosine_similarity(y.flatten(), ref.flatten(), 0) > 0.99
        assert not torch.allclose(y, ref)
    # cached: loads again offline
    hub.set_offline(True)
    again = timm.create_model(_tag(cra_arch), pretrained=True)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in sd.items())


def test_num_classes_in_chans_features_only_on_top(hub):
    cra_arch, base_arch = 'cra_resnet18', 'resnet18'
    base = _serve_base(hub, base_arch)
    name, base_sd = _tag(cra_arch), base.state_dict()

    model = timm.create_model(name, pretrained=True, num_classes=10)
    assert model.fc.weight.shape == (10, 512)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in base_sd.items() if not k.startswith('fc.'))

    model = timm.create_model(name, pretrained=True, in_chans=1)
    assert torch.allclose(model.conv1.weight, base_sd['conv1.weight'].sum(dim=1, keepdim=True))

    feats = timm.create_model(name, pretrained=True, features_only=True).eval()
    base_feats = timm.create_model(base_arch, features_only=True).eval()
    base_feats.load_state_dict({k: v for k, v in base_sd.items() if not k.startswith('fc.')})
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out, ref = feats(x), base_feats(x)
    assert [o.shape for o in out] == [r.shape for r in ref]
    assert torch.equal(out[0], ref[0])  # the stem has no gate

    # timm builds EfficientNet features without the head (conv_head, bn2, classifier): those base keys are left out
    _serve_base(hub, 'mobilenetv2_050')
    mbv2 = timm.create_model(_tag('cra_mobilenetv2_050'), pretrained=True, features_only=True)
    assert len(mbv2.feature_info.channels()) == 5 and cra_gate_keys(mbv2)


def test_wrong_or_missing_base_repo_is_one_clear_error(hub):
    # a repo holding another architecture's weights: named keys, not a silent partial load
    _serve_base(hub, 'resnet18', arch='resnet34')
    with pytest.raises(PretrainedWeightsError, match=r"cra_resnet18\.a1_in1k_gates_untrained.*unexpected base keys"):
        timm.create_model(_tag('cra_resnet18'), pretrained=True)
    with pytest.raises(PretrainedWeightsError, match=r"'timm/resnet34\.a1_in1k' at http://127\.0\.0\.1.* does not exist"):
        timm.create_model(_tag('cra_resnet34'), pretrained=True)


def test_cifar_tag_with_the_published_base_weights(hub):
    """Real trained weights (hub/timm-cra/cifar_resnet20.cifar10, served by the loopback Hub) on real images."""
    root = Path(__file__).resolve().parents[2]
    table = pq.read_table(root / 'data' / 'cifar10' / 'test-00000-of-00001.parquet').slice(0, 200).to_pydict()
    mean, std = torch.tensor((0.4914, 0.4822, 0.4465)), torch.tensor((0.2470, 0.2435, 0.2616))
    x = torch.stack([torch.from_numpy(np.array(Image.open(BytesIO(r['bytes'])).convert('RGB'))).permute(2, 0, 1)
                     for r in table['img']]).float().div(255)
    x = (x - mean[:, None, None]) / std[:, None, None]
    labels = torch.tensor(table['label'])

    model = timm.create_model('cra_cifar_resnet20.cifar10_gates_untrained', pretrained=True).eval()
    base = timm.create_model('cifar_resnet20.cifar10', pretrained=True).eval()
    assert model.pretrained_cfg.get('notes') is None  # the status is the registry's, not the built model's
    with torch.no_grad():
        pred, base_pred = model(x).argmax(1), base(x).argmax(1)
    agree = (pred == base_pred).float().mean().item()
    assert agree > 0.9, agree
    assert abs((pred == labels).float().mean().item() - (base_pred == labels).float().mean().item()) <= 0.05
