"""Atomic checkpoint writes."""
import os

import pytest
import torch

from timm_cra.train import atomic_save


class _Boom:
    def __reduce__(self):
        raise RuntimeError('serialisation failed half-way')


def test_atomic_save_replaces_and_survives_failed_write(tmp_path):
    path = tmp_path / 'last.pth'
    atomic_save({'v': 1}, str(path))
    atomic_save({'v': 2}, str(path))
    assert torch.load(path)['v'] == 2
    with pytest.raises(RuntimeError, match='half-way'):
        atomic_save({'v': 3, 'x': _Boom()}, str(path))
    assert torch.load(path)['v'] == 2  # the previous checkpoint is intact
    assert os.listdir(tmp_path) == ['last.pth']  # no temp file left behind
