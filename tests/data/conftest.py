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
