"""Journey J3: fine-tune a published CIFAR model on your own class folders, validate the run, publish it and
read the published repo with every real client.

Everything runs through the real CLIs as subprocesses: the loopback Hub server serves this repo's ``hub/`` (and
the repos the test publishes), the trainer downloads the registered ``cra_cifar_resnet20.cifar10`` weights from
it (HF_ENDPOINT), adapts the RGB first conv to 1 channel, trains a fresh 3-class head for one epoch, and the
validator reads the run's own ``model.safetensors`` / ``last.pth`` / run folder back. The second journey
fine-tunes on digit class folders ``0``..``9`` (as many classes as CIFAR-10, other names) and checks that the
published repo names its own classes in timm, the card and transformers.
"""
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO_ROOT
from tests.hub.clients import pipeline_top1, processor_top1, run_card_code, timm_top1, transformers_model

CLASSES = ('horizontal', 'vertical', 'plain')


def _stripes(kind: str, rng) -> np.ndarray:
    a = rng.integers(0, 60, (28, 28)).astype(np.uint8)
    if kind == 'horizontal':
        a[::4, :] += 180
    elif kind == 'vertical':
        a[:, ::4] += 180
    return a


@pytest.fixture
def grey_folders(tmp_path):
    """train/ and val/ with 3 classes of 28x28 greyscale PNGs (stripes: a learnable signal)."""
    rng = np.random.default_rng(0)
    for split, n in (('train', 8), ('val', 4)):
        for c in CLASSES:
            for i in range(n):
                p = tmp_path / 'data' / split / c / f'{i}.png'
                p.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(_stripes(c, rng), mode='L').save(p)
    return tmp_path / 'data'


@pytest.fixture
def hub_endpoint(cli_env, tmp_path):
    """``python -m timm_cra.hub.server --root <tmp>/served --root hub --port 0`` as a subprocess; yields its
    endpoint URL (repos copied into ``<tmp>/served/<org>/<name>`` are served too)."""
    (tmp_path / 'served').mkdir()
    proc = subprocess.Popen([sys.executable, '-m', 'timm_cra.hub.server', '--root', str(tmp_path / 'served'), '--root',
                             'hub', '--port', '0', '--quiet'],
                            cwd=str(REPO_ROOT), env=dict(cli_env, HF_HUB_OFFLINE='0'),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        m = re.search(r'HF_ENDPOINT=(http\S+?)\)', line)
        assert m, f'server did not start: {line!r}'
        yield m.group(1)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _run(argv, env, timeout=300):
    return subprocess.run([sys.executable] + [str(a) for a in argv], cwd=str(REPO_ROOT), env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow  # a minute of subprocesses: the slow step keeps the fast suite near 10 minutes
def test_j3_finetune_greyscale_from_hub_then_validate(grey_folders, hub_endpoint, cli_env, tmp_path):
    hub_env = dict(cli_env, HF_HUB_OFFLINE='0', HF_ENDPOINT=hub_endpoint, HF_HUB_CACHE=str(tmp_path / 'hf-cache'),
                   NO_PROXY='127.0.0.1,localhost')
    out = tmp_path / 'out'
    train = _run(['-m', 'timm_cra.train', '--config', 'finetune', '--model', 'cra_cifar_resnet20.cifar10',
                  '--in-chans', '1', '--reset-head', '--data-dir', grey_folders, '--epochs', '1',
                  '--batch-size', '4', '--workers', '0', '--no-plot', '--output', out, '--experiment', 'run'],
                 hub_env)
    assert train.returncode == 0, train.stderr[-3000:]
    log = train.stderr
    assert "from hf-hub 'timm-cra/cra_cifar_resnet20.cifar10'" in log  # the registered tag, via the Hub
    assert 'Converted input conv conv1 pretrained weights from 3 to 1 channel(s)' in log
    assert 'Head re-initialised (10 -> 3 classes): fc.weight, fc.bias' in log
    run = out / 'run'
    cfg = json.loads((run / 'config.json').read_text())
    # The pretrained model's 32-px config, not the old recipe's forced 224; 1 channel, averaged mean/std.
    assert cfg['pretrained_cfg']['input_size'] == [1, 32, 32]
    assert cfg['pretrained_cfg']['mean'] == pytest.approx([(0.4914 + 0.4822 + 0.4465) / 3])
    assert cfg['model_args']['in_chans'] == 1 and cfg['num_classes'] == 3
    final = json.loads((run / 'results.json').read_text())['final']

    # Validate offline: the run's weights file, its trainer checkpoint, and the run folder as a Hub-format repo.
    for model_args in (['--model', 'cra_cifar_resnet20', '--in-chans', '1', '--num-classes', '3',
                        '--checkpoint', run / 'model.safetensors'],
                       ['--model', 'cra_cifar_resnet20', '--in-chans', '1', '--num-classes', '3',
                        '--checkpoint', run / 'last.pth'],
                       ['--model', f'local-dir:{run}', '--pretrained']):
        res_file = tmp_path / 'res.json'
        val = _run(['-m', 'timm_cra.eval', *model_args, '--data-dir', grey_folders, '--split', 'val',
                    '--workers', '0', '--no-progress', '--results-file', res_file], cli_env)
        assert val.returncode == 0, val.stderr[-3000:]
        res = json.loads(res_file.read_text())
        assert json.loads(val.stdout) == res
        assert res['count'] == 4 * len(CLASSES) and res['skipped'] == 0
        assert (res['img_size'], res['crop_pct'], res['interpolation']) == (32, 1.0, 'bilinear')
        # Same weights, same eval transform as the trainer's last evaluation.
        assert res['top1'] == pytest.approx(final['eval_top1'], abs=1e-3)
        assert res['loss'] == pytest.approx(final['eval_loss'], abs=1e-4)

    # Publish the fine-tuned run as its own repo folder: the model settings (1 channel, 3 classes) come from
    # the run, the card shows the trainer's top-1, and the folder loads back with the same weights.
    repo = tmp_path / 'repo'
    pub = _run(['-m', 'timm_cra.hub.publish', 'cra_cifar_resnet20.greyfinetune', run / 'last.pth',
                '--results', run / 'results.json', '--out', repo, '--repo-id', 'j3-org/grey-stripes'], cli_env)
    assert pub.returncode == 0, pub.stderr[-3000:]
    assert 'does not match 1 channels' not in pub.stderr  # the run's fitted 1-channel mean/std are passed on
    card = (repo / 'README.md').read_text()
    assert f"{final['eval_top1']:.2f}" in card
    commit = re.search(r"hf-hub timm-cra/cra_cifar_resnet20\.cifar10@([0-9a-f]{40})", card)
    assert commit, 'the card names the base weights: tag, Hub repo and commit'
    assert '**Input channels:** 1 (greyscale' in card
    assert '`horizontal`, `plain`, `vertical`' in card  # the class folders, sorted
    assert "`data` (folder, training split `train`)" in card and "convert('L')" in card
    config = json.loads((repo / 'config.json').read_text())
    assert config['label_names'] == sorted(CLASSES) and config['model_args'] == {'in_chans': 1}
    assert config['pretrained_cfg']['mean'] == cfg['pretrained_cfg']['mean']
    val = _run(['-m', 'timm_cra.eval', '--model', f'local-dir:{repo}', '--pretrained', '--data-dir', grey_folders,
                '--split', 'val', '--workers', '0', '--no-progress'], cli_env)
    assert val.returncode == 0, val.stderr[-3000:]
    assert json.loads(val.stdout)['top1'] == pytest.approx(final['eval_top1'], abs=1e-3)

    # transformers: its pipeline converts images to RGB, which a 1-channel model cannot take; the image
    # processor + model called with the greyscale images give timm's top-1 on every validation image.
    import timm
    images = [Image.open(p).convert('L') for p in sorted((grey_folders / 'val').glob('*/*.png'))]
    model = timm.create_model(f'local-dir:{repo}', pretrained=True)
    assert processor_top1(repo, images) == timm_top1(model, images)
    with pytest.raises(RuntimeError, match='expected input.* to have 1 channels, but got 3 channels'):
        pipeline_top1(repo, images[:1])
    # The card's code (timm and transformers, both with .convert('L')) runs against the Hub serving the repo.
    shutil.copytree(repo, tmp_path / 'served' / 'j3-org' / 'grey-stripes')
    timm_out, hf_out = run_card_code(repo, sorted((grey_folders / 'val').glob('*/*.png'))[0], hub_env)
    top1 = model.pretrained_cfg['label_names'][timm_top1(model, images[:1])[0]]
    assert timm_out.startswith(f'{top1}: ') and hf_out.strip() == top1


@pytest.fixture
def digit_folders(tmp_path):
    """train/ and val/ class folders ``0``..``9`` of 32x32 RGB PNGs of the digit drawn at random places and
    colours: as many classes as CIFAR-10, none of its names."""
    from PIL import ImageDraw, ImageFont
    rng = np.random.default_rng(0)
    font = ImageFont.load_default()
    for split, n in (('train', 4), ('val', 2)):
        for d in range(10):
            for i in range(n):
                img = Image.new('RGB', (32, 32), tuple(int(v) for v in rng.integers(0, 90, 3)))
                ImageDraw.Draw(img).text((int(rng.integers(4, 20)), int(rng.integers(2, 16))), str(d),
                                         fill=tuple(int(v) for v in rng.integers(160, 255, 3)), font=font)
                p = tmp_path / 'digits' / split / str(d) / f'{i}.png'
                p.parent.mkdir(parents=True, exist_ok=True)
                img.save(p)
    return tmp_path / 'digits'


@pytest.mark.slow  # ~80 s: a training run, a publish and five clients
def test_j3_finetune_on_other_classes_publish_and_read_with_every_client(digit_folders, hub, tmp_path):
    """Fine-tune the CIFAR-10 model on digit folders, publish, and load back: timm (local-dir:, hf-hub:), the
    card and transformers' pipeline all name the classes 0..9, never CIFAR's; pipeline top-1 == timm's."""
    import os
    import timm
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS='1')  # the loopback Hub's endpoint
    out = tmp_path / 'out'
    train = _run(['-m', 'timm_cra.train', '--config', 'finetune', '--model', 'cra_cifar_resnet20.cifar10',
                  '--reset-head', '--data-dir', digit_folders, '--epochs', '1', '--batch-size', '8', '--workers', '0',
                  '--no-plot', '--output', out, '--experiment', 'run'], env)
    assert train.returncode == 0, train.stderr[-3000:]
    run, digits = out / 'run', [str(d) for d in range(10)]
    assert json.loads((run / 'config.json').read_text())['label_names'] == digits  # recorded by the trainer

    repo, repo_id = tmp_path / 'repo', 'digits-org/cra-digits'
    pub = _run(['-m', 'timm_cra.hub.publish', 'cra_cifar_resnet20.digits', run / 'model.safetensors',
                '--results', run / 'results.json', '--out', repo, '--repo-id', repo_id], env)
    assert pub.returncode == 0, pub.stderr[-3000:]
    config = json.loads((repo / 'config.json').read_text())
    assert config['label_names'] == digits and 'model_args' not in config  # 3 channels, 10 classes: all root
    card = (repo / 'README.md').read_text()
    assert 'airplane' not in card and 'airplane' not in json.dumps(config)
    # folders named by their index are the names data without names gets: the card says the outputs are the indices
    assert '**Classes:** 10 (no class names recorded with these weights: outputs are class indices, named "0".."9"' \
        in card and 'airplane' not in card
    assert '**Initial weights:** `cra_cifar_resnet20.cifar10 (hf-hub timm-cra/cra_cifar_resnet20.cifar10@' in card
    assert f"'hf-hub:{repo_id}'" in card and "`digits` (folder, training split `train`)" in card
    final = json.loads((run / 'results.json').read_text())['final']
    assert f"| cra_cifar_resnet20.digits | {final['eval_top1']:.2f} |" in card
    images = json.loads((run / 'results.json').read_text())['val_images']  # the trainer records the images scored
    assert f'Measured by timm-cra on digits (val, {images} images)' in card  # data: the run's args.yaml beside them

    hub.add_repo(repo_id, repo)
    images = [Image.open(p).convert('RGB') for p in sorted((digit_folders / 'val').glob('*/*.png'))]
    local = timm.create_model(f'local-dir:{repo}', pretrained=True)
    remote = timm.create_model(f'hf-hub:{repo_id}', pretrained=True)
    for model in (local, remote):
        assert list(model.pretrained_cfg['label_names']) == digits
    top1 = timm_top1(local, images)
    assert timm_top1(remote, images) == top1
    assert transformers_model(repo).config.id2label == dict(enumerate(digits))
    assert pipeline_top1(repo, images) == [digits[i] for i in top1]  # every validation image
    image = sorted((digit_folders / 'val').glob('*/*.png'))[0]
    timm_out, hf_out = run_card_code(repo, image, env)
    assert timm_out.startswith(f'{digits[top1[0]]}: ') and f"'label': '{digits[top1[0]]}'" in hf_out.split('}')[0]
