"""The CIFAR-10 weights published in hub/: load by registered tag through the (loopback) Hub, reproduce the
card's accuracy, and the README's no-argument validate command prints the card's top-1."""
import json
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

import timm

import timm_cra  # noqa: F401
from timm_cra.data import create_dataset

from ..conftest import HUB_DIR, REPO_ROOT

PUBLISHED = sorted(p.parent.name for p in HUB_DIR.glob('timm-cra/*/model.safetensors'))
CIFAR_TAGS = [n for n in PUBLISHED if n.partition('.')[2].startswith('cifar10')]  # .cifar10, .cifar10_e50
SHIPPED_TEST = REPO_ROOT / 'data' / 'cifar10'


def _card_top1(name):
    text = (HUB_DIR / 'timm-cra' / name / 'README.md').read_text()
    front = yaml.safe_load(text.split('---')[1])
    return front['model-index'][0]['results'][0]['metrics'][0]['value']


@pytest.mark.parametrize('name', CIFAR_TAGS)
def test_registered_tag_loads_from_the_hub_and_matches_card(name, hub):
    model = timm.create_model(name, pretrained=True).eval()
    published = load_file(str(HUB_DIR / 'timm-cra' / name / 'model.safetensors'))
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, published[k], rtol=0, atol=0)
    results = json.loads((REPO_ROOT / 'results' / f'{name}.json').read_text())
    assert _card_top1(name) == results['top1']
    assert model.pretrained_cfg['label_names'][0] == 'airplane'

    # Accuracy on the first 1000 shipped test images is in line with the card (10k images).
    ds = create_dataset('', str(SHIPPED_TEST), 'test', num_samples=1000)
    cfg = model.pretrained_cfg
    mean = torch.tensor(cfg['mean']).view(1, 3, 1, 1)
    std = torch.tensor(cfg['std']).view(1, 3, 1, 1)
    xs, ys = zip(*(ds[i] for i in range(len(ds))))
    x = torch.from_numpy(np.stack([np.asarray(im.convert('RGB')) for im in xs])).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        pred = model((x - mean) / std).argmax(-1)
    acc = (pred == torch.tensor(ys)).float().mean().item() * 100
    assert abs(acc - results['top1']) < 4.0, (acc, results['top1'])


@pytest.mark.parametrize('name', CIFAR_TAGS)
def test_fine_tune_from_published_weights(name, hub):
    model = timm.create_model(name, pretrained=True, num_classes=100)
    published = load_file(str(HUB_DIR / 'timm-cra' / name / 'model.safetensors'))
    assert model.fc.out_features == 100
    torch.testing.assert_close(model.conv1.weight, published['conv1.weight'], rtol=0, atol=0)


@pytest.mark.slow  # over ~15 s on 2 cores (many processes or epochs): CI step 2
@pytest.mark.parametrize('name', CIFAR_TAGS)
def test_the_cards_reproduce_command_prints_its_top1(name, tmp_path):
    """Each card says how to re-measure its number from a clone (the main job's tag: the README's no-argument
    command); run as written from the repository root, it prints the card's top-1 on the 10k shipped images."""
    notes = json.loads((REPO_ROOT / 'results' / f'{name}.json').read_text())['notes']
    command = re.search(r'Reproduce with `(python scripts/validate\.py[^`]*)`', notes).group(1)
    assert ('(no arguments)' in notes) == (name == 'cra_cifar_resnet20.cifar10')
    env = {'PATH': '/usr/bin:/bin', 'HF_HUB_OFFLINE': '1', 'HF_DATASETS_OFFLINE': '1', 'OMP_NUM_THREADS': '1',
           'HF_HOME': str(tmp_path / 'hf'), 'PYTHONPATH': str(REPO_ROOT)}
    out = subprocess.run([sys.executable] + shlex.split(command)[1:], cwd=REPO_ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout[out.stdout.index('{'):])
    assert result['count'] == 10_000 and result['skipped'] == 0
    assert result['top1'] == _card_top1(name)
