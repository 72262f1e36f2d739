"""Parameter and MAC counts, measured by running the model (not estimated from a formula)."""
from typing import Dict, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ['count_params', 'count_macs', 'model_complexity']


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, input_size: Sequence[int] = (3, 224, 224)) -> int:
    """Multiply-accumulates of one forward pass for a single image of ``input_size`` (C, H, W).

    Uses torch's FlopCounterMode, which counts matmul/conv FLOPs as 2 per MAC (elementwise ops, pooling
    and activations are not counted, as in the usual GMACs convention).
    """
    was_training = model.training
    model.eval()
    x = torch.zeros(1, *input_size)
    counter = FlopCounterMode(display=False)
    with counter:
        model(x)
    model.train(was_training)
    return counter.get_total_flops() // 2


def model_complexity(model: nn.Module, input_size: Sequence[int] = (3, 224, 224)) -> Dict[str, float]:
    """``{'params': int, 'gmacs': float}`` for a model at ``input_size``."""
    return {'params': count_params(model), 'gmacs': count_macs(model, input_size) / 1e9}
