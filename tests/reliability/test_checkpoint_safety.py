"""No code runs from checkpoint files: every CLI that reads a ``.pth`` refuses a ``__reduce__`` payload with one
line (exit 2) and the payload's side effect never happens; trainer checkpoints load with plain
``torch.load(weights_only=True)``; older / foreign checkpoints load through named, inert stand-ins only."""
import argparse
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

import timm
import timm_cra  # noqa: F401
from timm_cra.train.checkpoint import get_rng_state, set_rng_state, upgrade_checkpoint
from timm_cra.utils.errors import UsageError
from timm_cra.utils.weights import load_checkpoint_file, load_model_weights

from ..conftest import REPO_ROOT, TINY_MODEL

SHIPPED = REPO_ROOT / 'data' / 'cifar10'  # the CIFAR-10 test split shipped with the repo
TINY_TRAIN = TINY_MODEL + ['--config', 'cifar', '--data-dir', str(SHIPPED), '--train-split', 'test',
                           '--train-num-samples', '16', '--val-split', '', '--batch-size', '8', '--no-plot']


class _Payload:
    """What a malicious checkpoint does: make unpickling call ``os.system``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


@pytest.fixture
def evil(tmp_path):
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil.pth'
    model = timm.create_model('cra_resnet18', layers=(1, 1, 1, 1), num_classes=10)
    torch.save({'state_dict': model.state_dict(), 'optimizer': {}, 'epoch': 1, 'x': _Payload(marker)}, path)
    return path, marker


def _cli(args, tmp_path, module):
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS='1', HF_HUB_OFFLINE='1')
    cmd = [sys.executable, '-m', module] + [str(a) for a in args]
    return subprocess.run(cmd, env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=180)


@pytest.mark.parametrize('how', ['validate', 'resume', 'initial', 'publish', 'convert'])
@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_malicious_pickle_refused_by_every_cli(evil, tmp_path, how):
    path, marker = evil
    out = tmp_path / 'out'
    if how == 'validate':
        proc = _cli(TINY_MODEL + ['--num-classes', '10', '--checkpoint', path, '--data-dir', SHIPPED, '--split', 'test',
                                  '--num-samples', '8', '--workers', '0'], tmp_path, module='timm_cra.eval')
    elif how in ('resume', 'initial'):
        flag = '--resume' if how == 'resume' else '--initial-checkpoint'
        proc = _cli(TINY_TRAIN + ['--epochs', '1', '--output', out, flag, path], tmp_path, module='timm_cra.train')
    elif how == 'publish':
        proc = _cli(['cra_resnet18.x', path, '--out', out], tmp_path, module='timm_cra.hub.publish')
    else:
        proc = _cli([path, '--out', out], tmp_path, module='timm_cra.hub.convert_official')
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith('error: ')]
    assert len(errors) == 1 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == errors[0]  # one line, at the end (logging may precede it)
    assert 'refused' in errors[0] and 'system' in errors[0], errors[0]
    assert not marker.exists()


def test_trainer_checkpoint_loads_with_plain_weights_only(tmp_path):
    from timm_cra.train import train
    train(TINY_TRAIN + ['--epochs', '1', '--output', str(tmp_path), '--experiment', 'r'])
    ckpt = torch.load(tmp_path / 'r' / 'last.pth', weights_only=True)  # no allowlist needed at all
    assert ckpt['version'] == 2 and ckpt['epoch'] == 1
    assert ckpt['args']['model_kwargs'] == {'layers': (1, 1, 1, 1)}
    assert set(ckpt['sha256']) == {'state_dict', 'optimizer'}
    assert isinstance(ckpt['rng']['numpy']['key'], torch.Tensor)


def test_rng_state_round_trip_continues_every_stream():
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    np.random.standard_normal()  # leaves a cached gaussian in numpy's legacy state
    state = get_rng_state()
    expected = (torch.rand(3), np.random.rand(3), np.random.standard_normal(), [random.random() for _ in range(3)])
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    set_rng_state(state)
    got = (torch.rand(3), np.random.rand(3), np.random.standard_normal(), [random.random() for _ in range(3)])
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])
    assert got[2] == expected[2] and got[3] == expected[3]


def _version1(src, dst):
    """A last.pth as the version-1 trainer wrote it: numpy's own RNG state tuple (an ndarray), no sha256."""
    ckpt = torch.load(src, weights_only=True)
    ckpt.pop('sha256')
    np.random.seed(5)
    ckpt.update(version=1, rng=dict(torch=torch.get_rng_state(), numpy=np.random.get_state(), python=random.getstate()))
    torch.save(ckpt, dst)


def test_version1_checkpoint_resumes_and_upgrades(tmp_path):
    from timm_cra.train import train
    train(TINY_TRAIN + ['--epochs', '1', '--output', str(tmp_path), '--experiment', 'r'])
    run = tmp_path / 'r'
    _version1(run / 'last.pth', run / 'last.pth')
    with pytest.raises(Exception):  # it does need numpy globals: plain weights_only refuses it
        torch.load(run / 'last.pth', weights_only=True)
    assert isinstance(load_checkpoint_file(str(run / 'last.pth'))['rng']['numpy'][1], np.ndarray)

    upgraded = upgrade_checkpoint(str(run / 'last.pth'), str(tmp_path / 'v2.pth'))
    assert torch.load(tmp_path / 'v2.pth', weights_only=True)['version'] == 2 == upgraded['version']

    summary = train(TINY_TRAIN + ['--epochs', '2', '--output', str(tmp_path), '--experiment', 'r',
                                  '--resume', str(run / 'last.pth')])
    assert summary['epochs'] == 2


def test_numpy_object_arrays_are_refused(tmp_path):
    path = tmp_path / 'obj.pth'
    torch.save({'state_dict': {}, 'a': np.array([{'k': 1}], dtype=object)}, path)
    with pytest.raises(UsageError, match='refused'):
        load_checkpoint_file(str(path))


def test_timm_train_py_checkpoint_with_namespace_args(tmp_path):
    model = timm.create_model('cra_resnet18', layers=(1, 1, 1, 1), num_classes=4)
    path = tmp_path / 'model_best.pth.tar'
    args = argparse.Namespace(model='cra_resnet18', num_classes=4, model_kwargs={'layers': (1, 1, 1, 1)}, lr=0.1)
    torch.save(dict(epoch=3, arch='cra_resnet18', state_dict=model.state_dict(), optimizer={}, version=2, args=args,
                    metric=12.5), path)
    with pytest.raises(Exception, match='argparse.Namespace'):
        torch.load(path, weights_only=True)
    ckpt = load_checkpoint_file(str(path))
    assert ckpt['args'] == {'model': 'cra_resnet18', 'num_classes': 4, 'model_kwargs': {'layers': (1, 1, 1, 1)},
                            'lr': 0.1}
    fresh = timm.create_model('cra_resnet18', layers=(1, 1, 1, 1), num_classes=4)
    load_model_weights(fresh, str(path))
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize('wrapper', ['', 'module.'])
def test_checkpoint_of_a_compiled_model_loads(tmp_path, wrapper):
    """A state dict saved from a ``torch.compile``'d model (keys under ``_orig_mod.``; DDP around it adds
    ``module.``) loads into the plain model."""
    model = timm.create_model('cra_resnet18', layers=(1, 1, 1, 1), num_classes=4)
    compiled = torch.compile(model)  # wrapping only: nothing is compiled until it is called
    state = {wrapper + k: v for k, v in compiled.state_dict().items()}
    assert all(k.startswith(wrapper + '_orig_mod.') for k in state)
    path = tmp_path / 'compiled.pth'
    torch.save({'epoch': 1, 'state_dict': state}, path)
    fresh = timm.create_model('cra_resnet18', layers=(1, 1, 1, 1), num_classes=4)
    load_model_weights(fresh, str(path))
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in model.state_dict().items())
