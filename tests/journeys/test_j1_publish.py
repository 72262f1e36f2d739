"""Journey J1: train -> validate the checkpoint -> publish it -> load it back with timm, each step a CLI run on
what the previous step really wrote (the repo's shipped CIFAR-10 split, a tiny CRA ResNet, one epoch)."""
import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

import timm
import timm_cra  # noqa: F401
from tests.hubserver.write_server import WritableHubServer

from ..conftest import REPO_ROOT
from ..hub.clients import pipeline_top1, run_card_code, timm_top1, transformers_model

SHIPPED = REPO_ROOT / 'data' / 'cifar10'
MODEL = 'cra_cifar_resnet20'
NAME = f'{MODEL}.j1test'


def _env(**extra):
    return {**os.environ, 'PYTHONPATH': str(REPO_ROOT), 'OMP_NUM_THREADS': '1', 'HF_HUB_OFFLINE': '1', **extra}


def _run(cmd, cwd, **env):
    proc = subprocess.run([sys.executable, *map(str, cmd)], cwd=str(cwd), env=_env(**env), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return proc


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """``python -m timm_cra.train``: 1 epoch on 64 shipped images (validated on 32): the run folder."""
    out = tmp_path_factory.mktemp('j1')
    _run(['-m', 'timm_cra.train', '--config', 'cifar', '--model', MODEL, '--data-dir', SHIPPED,
          '--train-split', 'test', '--train-num-samples', '64', '--val-split', 'test', '--val-num-samples', '32',
          '--batch-size', '16', '--epochs', '1', '--lr', '0.05', '--no-plot', '--output', out, '--experiment', 'run'],
         out)
    return out / 'run'


def _reference_logits(run, x):
    model = timm.create_model(MODEL, num_classes=10).eval()
    model.load_state_dict(torch.load(run / 'last.pth', weights_only=True)['state_dict'])
    with torch.no_grad():
        return model(x)


def _card_top1(folder):
    front = yaml.safe_load((folder / 'README.md').read_text().split('---')[1])
    return front['model-index'][0]['results'][0]['metrics'][0]['value']


def _shipped_images(n):
    import io
    import pyarrow.parquet as pq
    from PIL import Image
    rows = pq.read_table(SHIPPED / 'test-00000-of-00001.parquet').slice(0, n).to_pylist()
    key = next(k for k, v in rows[0].items() if isinstance(v, dict) and 'bytes' in v)
    return [Image.open(io.BytesIO(r[key]['bytes'])).convert('RGB') for r in rows]


@pytest.mark.slow  # over ~15 s on 2 cores (many processes or epochs): CI step 2
def test_j1_train_validate_publish_load(trained, tmp_path, hub):
    run = trained
    summary = json.loads((run / 'results.json').read_text())
    _run(['-m', 'timm_cra.eval', '--model', MODEL, '--checkpoint', run / 'last.pth',
          '--data-dir', SHIPPED, '--split', 'test', '--num-samples', '32', '--batch-size', '32', '--workers', '0',
          '--no-progress', '--results-file', tmp_path / 'val.json'], tmp_path)
    val = json.loads((tmp_path / 'val.json').read_text())
    assert val['count'] == 32 and val['top1'] == pytest.approx(summary['final']['eval_top1'], abs=1e-3)

    folder = tmp_path / 'repo'
    _run(['-m', 'timm_cra.hub.publish', NAME, run / 'last.pth', '--results', run / 'results.json', '--out', folder],
         tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ['README.md', 'config.json', 'model.safetensors']

    loaded = timm.create_model(f'local-dir:{folder}', pretrained=True).eval()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = loaded(x)
    expected = _reference_logits(run, x)
    assert expected.std() > 0.01
    torch.testing.assert_close(logits, expected, rtol=0, atol=0)
    assert _card_top1(folder) == summary['final']['eval_top1']
    assert 'measured by the timm-cra trainer' in (folder / 'README.md').read_text()

    # The class names are the run's data's (the shipped split's ClassLabel), at the root where transformers
    # reads them; transformers (model and pipeline) and timm agree on every image.
    labels = json.loads((run / 'config.json').read_text())['label_names']
    config = json.loads((folder / 'config.json').read_text())
    assert config['label_names'] == labels == list(loaded.pretrained_cfg['label_names'])
    hf = transformers_model(folder)
    with torch.no_grad():
        torch.testing.assert_close(hf(pixel_values=x).logits, expected, rtol=0, atol=0)
    images = _shipped_images(8)
    top1 = timm_top1(loaded, images)
    assert pipeline_top1(folder, images) == [labels[i] for i in top1]

    # The card's code, as written, downloads the repo from the (loopback) Hub and prints the same class.
    hub.add_repo(f'timm-cra/{NAME}', folder)
    images[0].save(tmp_path / 'img.png')
    timm_out, hf_out = run_card_code(folder, tmp_path / 'img.png')
    assert timm_out.startswith(f'{labels[top1[0]]}: ') and f"'label': '{labels[top1[0]]}'" in hf_out.split('}')[0]




@pytest.mark.slow  # over ~15 s on 2 cores (many processes or epochs): CI step 2
def test_j1_push_and_hf_hub_load(trained, tmp_path):
    run = trained
    root, cache = tmp_path / 'hub-root', tmp_path / 'hf-cache'
    root.mkdir()
    repo_id = 'j1-org/cra-cifar-resnet20-j1'
    with WritableHubServer([root], write_token='j1-secret') as server:
        hub_env = dict(HF_ENDPOINT=server.endpoint, HF_TOKEN='j1-secret', HF_HUB_OFFLINE='0',
                       HF_HUB_CACHE=str(cache), NO_PROXY='127.0.0.1,localhost')
        _run(['-m', 'timm_cra.hub.publish', NAME, run / 'last.pth', '--results', run / 'results.json',
              '--out', tmp_path / 'repo', '--repo-id', repo_id, '--push'], tmp_path, **hub_env)
        code = ('import sys, torch, timm, timm_cra\n'
                f'm = timm.create_model("hf-hub:{repo_id}", pretrained=True).eval()\n'
                'x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))\n'
                'with torch.no_grad():\n'
                '    torch.save(m(x), sys.argv[1])\n')
        _run(['-c', code, tmp_path / 'logits.pt'], tmp_path, **hub_env)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(torch.load(tmp_path / 'logits.pt', weights_only=True), _reference_logits(run, x),
                               rtol=0, atol=0)
