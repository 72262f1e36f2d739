"""Fixtures for the training tests: a tiny CRA model, single-threaded runs, CLI runner, a CIFAR slice run."""
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


#: A CRA-ResNet with one block per stage: the CRA code paths of cra_resnet18 at a fraction of the cost.
TINY_MODEL = ['--model', 'cra_resnet18', '--model-kwargs', 'layers=(1,1,1,1)']


@pytest.fixture(scope='session', autouse=True)
def _single_thread():
    """In-process training runs single-threaded too (see ``cli_env``); restored afterwards."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope='session')
def tiny_model_args():
    return list(TINY_MODEL)


@pytest.fixture(scope='session')
def cli_env():
    # One intra-op thread: on shared, busy cores OpenMP spin-waiting makes 2 threads ~10x slower than 1.
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), HF_DATASETS_OFFLINE='1', HF_HUB_OFFLINE='1',
               PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    return env


@pytest.fixture(scope='session')
def run_script(cli_env):
    """``run_script('train.py', [...])`` -> CompletedProcess (text, both streams captured)."""
    import subprocess
    import sys

    def _run(script, argv, timeout=120, prefix=None):
        cmd = (prefix or [sys.executable]) + [str(REPO_ROOT / 'scripts' / script)] + [str(a) for a in argv]
        return subprocess.run(cmd, env=cli_env, cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=timeout)
    return _run


#: CIFAR slice run shared by several tests: 96 train / 32 val images, batch 16 -> 6 steps per epoch.
CIFAR_RUN = ['--config', 'cifar', '--train-num-samples', '96', '--val-num-samples', '32', '--batch-size', '16',
             '--log-interval', '2', '--lr', '0.05']


@pytest.fixture(scope='session')
def cifar_run_args(cifar_parquet):
    return TINY_MODEL + CIFAR_RUN + ['--data-dir', str(cifar_parquet)]


@pytest.fixture(scope='session')
def cifar_run(cifar_run_args, tmp_path_factory):
    """One in-process 2-epoch CIFAR training run: (summary, output dir)."""
    from timm_cra.train import train
    out = tmp_path_factory.mktemp('cifar_run')
    summary = train(cifar_run_args + ['--epochs', '2', '--output', str(out), '--experiment', 'run'])
    return summary, out / 'run'
