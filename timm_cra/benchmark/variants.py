"""Attention variants compared in the benchmark, all placed where CRA sits in a CRA model.

Swapping modules of one CRA model (rather than building seresnet50 etc. by name) keeps everything but the
gate identical, so ratios isolate the gate's cost; for ResNets the SE swap is exactly timm's seresnet.
"""
from functools import partial
from typing import Callable, Dict, Optional, Tuple

import torch
from torch import nn

from timm.layers import EcaModule, SEModule

from ..layers import CraAttn
from ..layers.cra import use_reference

__all__ = ['NaiveCraAttn', 'ConvKernelCraAttn', 'MeanGate', 'ATTENTION_VARIANTS', 'INFERENCE_ONLY_VARIANTS',
           'swap_attention']


class NaiveCraAttn(CraAttn):
    """:class:`CraAttn` on the reference ops, as every other device runs it: the same module with its registered
    implementations switched off (``timm_cra.layers.use_reference``), so gate_layer, pool_type and the rest are
    honoured and ``load_state_dict`` works both ways. Subclasses switch off only those named in ``disabled``."""
    disabled: Tuple[str, ...] = ()  # empty: every registered implementation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with use_reference(*self.disabled):
            return super().forward(x)


class ConvKernelCraAttn(NaiveCraAttn):
    """:class:`CraAttn` whose pooled-map kernel runs as the depthwise ``conv2d`` without autograd too (the
    inference path before the dot-product kernel): isolates that one choice. Training is CraAttn's own."""
    disabled = ('dot_product',)


class MeanGate(nn.Module):
    """``x * sigmoid(mean_hw(x))``: no parameters, the floor of any gate that pools and multiplies in two
    passes over the activation."""

    def __init__(self, channels: int, **_):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x.mean((2, 3), keepdim=True).sigmoid()


#: label -> factory(channels) or None for "no attention" (the base model)
ATTENTION_VARIANTS: Dict[str, Optional[Callable[[int], nn.Module]]] = {
    'base': None,
    'cra': partial(CraAttn, inplace=True),  # as the model families build it
    'cra_outofplace': CraAttn,  # the same without in-place gating: splits the gain between pool and product
    'cra_convkernel': partial(ConvKernelCraAttn, inplace=True),  # 'cra' with the inference kernel as conv2d
    'cra_naive': NaiveCraAttn,  # 'cra_outofplace' with the reference ops (every other device's path)
    'cra_reference': partial(NaiveCraAttn, inplace=True),  # 'cra' with the reference ops: what the fast paths gain
    'se': SEModule,
    'eca': EcaModule,
    'gate_floor': MeanGate,
}

#: variants that differ from another one only without autograd; training them would time the same code twice
INFERENCE_ONLY_VARIANTS = ('cra_outofplace', 'cra_convkernel', 'cra_reference')


def swap_attention(model: nn.Module, factory: Optional[Callable[[int], nn.Module]]) -> nn.Module:
    """Replace every :class:`CraAttn` in ``model`` (in place) by ``factory(channels)``, or by Identity."""
    targets = [(parent, name, child) for parent in model.modules()
               for name, child in parent.named_children() if isinstance(child, CraAttn)]
    for parent, name, child in targets:
        new = nn.Identity() if factory is None else factory(child.conv.in_channels)
        if isinstance(new, CraAttn):
            new.load_state_dict(child.state_dict())
        setattr(parent, name, new)
    return model
