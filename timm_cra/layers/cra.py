""" Channel Reassessment Attention (CRA)

Paper: `Convolutional Neural Network optimization via Channel Reassessment Attention module`
    - YuTao Shen, Ying Wen, 2020 - https://arxiv.org/abs/2010.05605
Official code: https://github.com/syt2/CRA (``models/CRAResNet.py``)

CRA computes one attention weight per channel from a small *spatial* summary of that channel:

    y = x * sigmoid(DWConv_kxk(AdaptiveMaxPool_kxk(x)))

The depthwise conv has kernel size equal to the pooled size and no padding, so it reduces each pooled
k x k map to one value with a learned per-channel spatial kernel (plus bias). Unlike SE there is no channel
mixing, no reduction ratio and no norm: k*k*C + C parameters.

Eager CPU tensors run the same math through the kernels of :mod:`.cra_cpu`; everything else (other
devices, torch.fx / TorchScript / torch.compile / torch.export) runs the reference ops written here.
"""
from typing import Optional, Tuple, Type, Union

import torch
from torch import nn
import torch.nn.functional as F
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

from timm.layers import create_act_layer, register_notrace_function, to_2tuple

from . import cra_cpu

__all__ = ['CraAttn', 'cra_pool', 'use_cpu_kernels']

#: Set to False to run the reference ops on CPU too (like ``torch.backends.cudnn.enabled``): for
#: comparing the two paths in tests and benchmarks.
CPU_KERNELS = True


def use_cpu_kernels(x: torch.Tensor) -> bool:
    """Whether ``x`` takes the :mod:`.cra_cpu` kernels: an eager (not captured) 4-D CPU tensor."""
    if torch.jit.is_scripting():
        return False
    return _eager_cpu(x)


@torch.jit.unused
def _eager_cpu(x: torch.Tensor) -> bool:
    # Graph capture is checked first: a torch.fx Proxy has no concrete device.
    if is_fx_symbolic_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return False
    return CPU_KERNELS and x.device.type == 'cpu' and x.dim() == 4


@register_notrace_function  # device-dependent dispatch: a single leaf node for torch.fx
def cra_pool(x: torch.Tensor, pool_size: Tuple[int, int], pool_type: str = 'max') -> torch.Tensor:
    """``F.adaptive_{max,avg}_pool2d(x, pool_size)``, values and gradients (CPU kernels on CPU)."""
    if use_cpu_kernels(x):
        return cra_cpu.cra_pool_cpu(x, pool_size, pool_type)
    if pool_type == 'max':
        return F.adaptive_max_pool2d(x, pool_size)
    return F.adaptive_avg_pool2d(x, pool_size)


class CraAttn(nn.Module):
    """Channel Reassessment Attention module.

    Defaults reproduce the official module: adaptive max pooling to 7x7, a depthwise 7x7 conv with bias
    (7x7 -> 1x1), sigmoid gate, channel-wise product. Inputs smaller than the pooled size work as in the
    official code (adaptive pooling repeats pixels). Accepts both ways timm builds attention layers:
    ``attn_layer(channels)`` (ResNet) and ``se_layer(chs, rd_ratio=..., act_layer=...)`` (EfficientNet /
    MobileNet builder); CRA has no bottleneck, so ``rd_ratio`` and ``act_layer`` have no effect.

    Args:
        channels: Number of input (and output) channels.
        pool_size: Spatial size the input is pooled to; also the depthwise kernel size (default 7).
        pool_type: 'max' (official) or 'avg'.
        gate_layer: Gating non-linearity (default 'sigmoid').
        bias: Use a bias in the depthwise conv (official: True).
        inplace: Without autograd, scale the input in place and return it (saves an activation-sized
            output). Only for inputs nothing else reads afterwards; under autograd never in place.
        rd_ratio: Ignored; accepted for timm's SE-layer interface.
        act_layer: Ignored; accepted for timm's SE-layer interface.
    """

    def __init__(
            self,
            channels: int,
            pool_size: Union[int, Tuple[int, int]] = 7,
            pool_type: str = 'max',
            gate_layer: Union[str, Type[nn.Module]] = 'sigmoid',
            bias: bool = True,
            inplace: bool = False,
            rd_ratio: Optional[float] = None,
            act_layer: Optional[Type[nn.Module]] = None,
            device=None,
            dtype=None,
    ):
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        if pool_type not in ('max', 'avg'):
            raise ValueError(f"CraAttn: pool_type must be 'max' or 'avg', got {pool_type!r}.")
        self.pool_size = to_2tuple(pool_size)
        if min(self.pool_size) < 1:
            raise ValueError(f"CraAttn: pool_size must be >= 1, got {pool_size!r}.")
        self.pool_type = pool_type
        self.conv = nn.Conv2d(channels, channels, kernel_size=self.pool_size, groups=channels, bias=bias, **dd)
        self.gate = create_act_layer(gate_layer)
        self.inplace = inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_cra = cra_pool(x, self.pool_size, self.pool_type)
        if use_cpu_kernels(x_cra):
            x_cra = cra_cpu.map_kernel_cpu(x_cra, self.conv.weight, self.conv.bias)
        else:
            x_cra = self.conv(x_cra)
        x_cra = self.gate(x_cra)
        if self.inplace and not torch.is_grad_enabled():
            return x.mul_(x_cra)
        return x * x_cra

    def extra_repr(self) -> str:
        s = f'pool_size={self.pool_size}, pool_type={self.pool_type!r}'
        return s + ', inplace=True' if self.inplace else s
