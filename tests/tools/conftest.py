"""tests/tools: the repository tooling in tools/ (imported as ``tools.<name>`` from the repository root);
training runs single-threaded like tests/train."""
import sys
from pathlib import Path

import pytest

REPO_ROOT = str(Path(__file__).resolve().parents[2])
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)


@pytest.fixture(scope='session', autouse=True)
def _single_thread(single_torch_thread):
    pass
