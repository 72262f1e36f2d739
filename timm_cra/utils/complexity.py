"""Parameter and MAC counts, measured by running the model (not estimated from a formula)."""
from typing import Dict, Sequence

import copy

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ['count_params', 'count_macs', 'model_complexity']


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, input_size: Sequence[int] = (3, 224, 224)) -> int:
    """Multiply-accumulates of one forward pass at ``input_size`` (C, H, W), batch 1.

    Counted by torch's ``FlopCounterMode`` (convolutions and matmuls, 2 FLOPs per MAC; elementwise ops,
    pooling and activations are not counted, as in the usual GMACs convention). Runs on a ``meta`` copy of
    the model: counting needs shapes only, so no real compute and no weights are needed.
    """
    if next(model.parameters()).device.type != 'meta':
        model = copy.deepcopy(model).to('meta')
    model.eval()
    x = torch.zeros(1, *input_size, device='meta', dtype=next(model.parameters()).dtype)
    with FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() // 2


def model_complexity(model: nn.Module, input_size: Sequence[int] = (3, 224, 224)) -> Dict[str, float]:
    """``{'params': int, 'gmacs': float}`` for a model at ``input_size``."""
    return {'params': count_params(model), 'gmacs': count_macs(model, input_size) / 1e9}
