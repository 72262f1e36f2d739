"""--amp's dtype: one choice for the trainer and validation, bfloat16 on CPU only where the CPU has it."""
import logging

import pytest
import torch

from timm_cra.utils import amp

CPU, CUDA = torch.device('cpu'), torch.device('cuda')


@pytest.mark.parametrize('has_bf16,requested,expected', [
    (True, 'bfloat16', torch.bfloat16),
    (True, 'float16', torch.bfloat16),  # CPU autocast: bfloat16 or nothing
    (False, 'bfloat16', None),
    (False, 'float16', None),
])
def test_cpu_amp_follows_the_cpu(monkeypatch, caplog, has_bf16, requested, expected):
    monkeypatch.setattr(amp, 'cpu_has_bf16', lambda: has_bf16)
    with caplog.at_level(logging.INFO, logger=amp.__name__):
        assert amp.amp_dtype_for(True, requested, CPU) == expected
    assert ('no bfloat16 arithmetic' in caplog.text) == (not has_bf16)  # the choice is logged either way
    assert 'AMP:' in caplog.text


def test_no_amp_and_gpu_choices(monkeypatch):
    monkeypatch.setattr(amp, 'cpu_has_bf16', lambda: True)
    assert amp.amp_dtype_for(False, 'bfloat16', CPU) is None
    assert amp.amp_dtype_for(True, 'float16', CUDA) == torch.float16
    assert amp.amp_dtype_for(True, 'bfloat16', CUDA) == torch.bfloat16


def test_trainer_amp_on_a_cpu_without_bf16_is_float32(monkeypatch):
    import types
    from timm_cra.train.loop import create_amp
    monkeypatch.setattr(amp, 'cpu_has_bf16', lambda: False)
    dtype, scaler, autocast = create_amp(types.SimpleNamespace(amp=True, amp_dtype='bfloat16'), CPU)
    assert dtype is None and scaler is None
    with autocast():
        assert not torch.is_autocast_enabled('cpu')
