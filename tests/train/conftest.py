"""Fixtures for the data/train tests: the shared read-only data (../shared/data) and tiny synthetic sets.

``TIMM_CRA_SHARED_DATA`` overrides the location; tests needing it skip with the reason when absent.
"""
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[2]

os.environ.setdefault('HF_DATASETS_OFFLINE', '1')
os.environ.setdefault('HF_HUB_OFFLINE', '1')


def _shared_data() -> Path:
    return Path(os.environ.get('TIMM_CRA_SHARED_DATA', REPO_ROOT.parent / 'shared' / 'data')).resolve()


@pytest.fixture(scope='session')
def shared_data() -> Path:
    path = _shared_data()
    if not path.is_dir():
        pytest.skip(f'shared data not found at {path} (set TIMM_CRA_SHARED_DATA or place it at ../shared/data)')
    return path


@pytest.fixture(scope='session')
def cifar_parquet(shared_data) -> Path:
    path = shared_data / 'cifar10'
    if not (path / 'train-00000-of-00001.parquet').is_file():
        pytest.skip(f'CIFAR-10 parquet not found in {path}')
    return path


@pytest.fixture(scope='session')
def imagenet_sample(shared_data) -> Path:
    path = shared_data / 'imagenet_val_sample'
    if not path.is_dir():
        pytest.skip(f'ImageNet sample not found at {path}')
    return path


@pytest.fixture
def make_image():
    """``make_image(path, color, size)``: write a solid-colour image (format from the suffix)."""
    def _make(path: Path, color=(128, 64, 32), size=(32, 32)) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((size[1], size[0], 3), color, dtype=np.uint8)).save(path)
        return path
    return _make


@pytest.fixture
def class_folder(tmp_path) -> Path:
    """``train/`` and ``val/`` with 3 plain classes of tiny random images (fine-tuning layout)."""
    rng = np.random.default_rng(0)
    for split, n in (('train', 6), ('val', 2)):
        for c in ('cat', 'dog', 'emu'):
            for i in range(n):
                p = tmp_path / split / c / f'{i}.png'
                p.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(p)
    return tmp_path


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
