"""Every training test runs torch single-threaded; the fixtures they use live in ``tests/conftest.py``, plus
``shipped_run_args``: the CIFAR slice run on the repo's own ``data/cifar10`` (no ``../shared`` needed)."""
import pytest

from ..conftest import CIFAR_RUN, REPO_ROOT, TINY_MODEL

#: The CIFAR-10 test split shipped with the repository: training and validation slices both come from it.
SHIPPED_CIFAR = REPO_ROOT / 'data' / 'cifar10'


@pytest.fixture(scope='session', autouse=True)
def _single_thread(single_torch_thread):
    pass


@pytest.fixture(scope='session')
def shipped_run_args():
    """``cifar_run_args`` on the shipped split: 96 train / 32 val images, batch 16 -> 6 steps per epoch."""
    if not (SHIPPED_CIFAR / 'test-00000-of-00001.parquet').is_file():
        pytest.skip(f'the shipped CIFAR-10 split is missing from {SHIPPED_CIFAR}')
    return TINY_MODEL + CIFAR_RUN + ['--data-dir', str(SHIPPED_CIFAR), '--train-split', 'test', '--val-split', 'test']
