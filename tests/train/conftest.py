"""Every training test runs torch single-threaded; the fixtures they use live in ``tests/conftest.py``."""
import pytest


@pytest.fixture(scope='session', autouse=True)
def _single_thread(single_torch_thread):
    pass
