""" Channel Reassessment Attention (CRA)

Paper: `Convolutional Neural Network optimization via Channel Reassessment Attention module`
    - YuTao Shen, Ying Wen, 2020 - https://arxiv.org/abs/2010.05605
Official code: https://github.com/syt2/CRA (``models/CRAResNet.py``)

CRA computes one attention weight per channel from a small *spatial* summary of that channel:

    y = x * gate(DWConv_PxP(AdaptivePool_PxP(x)))      (official: max pooling, sigmoid gate, P = 7)

The depthwise conv has kernel size equal to the pooled size and no padding, so it reduces each pooled P x P map
to one value with a learned per-channel spatial kernel (plus bias). Unlike SE there is no channel mixing, no
reduction ratio and no norm: P*P*C + C parameters.

This module is the one statement of that formula. :class:`CraAttn` composes two primitives and its gate layer:

* :func:`cra_pool`: (a) adaptive max / avg pooling to P x P;
* :func:`cra_kernel`: (b) the per-channel P x P kernel plus bias, one value per channel (the gate layer follows).

Each primitive's reference implementation is the plain PyTorch op (``_pool_reference``, ``_kernel_reference``).
Faster ways to compute the same values and gradients are registered in :data:`POOL_IMPLEMENTATIONS` and
:data:`KERNEL_IMPLEMENTATIONS` (name -> predicate + function): a primitive runs the first one whose predicate
holds, else the reference. ``tests/layers/test_cra_implementations.py`` pins each one to the reference; removing
one is deleting its entry. :func:`use_reference` switches them off (tests, the benchmark's reference variants).
"""
from contextlib import contextmanager
from typing import Callable, Dict, FrozenSet, Iterator, NamedTuple, Optional, Tuple, Type, Union

import torch
from torch import nn
import torch.nn.functional as F
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

from timm.layers import create_act_layer, register_notrace_function, to_2tuple

from . import cra_cpu
from .cra_static import static_window_pool

__all__ = [
    'CraAttn', 'cra_pool', 'cra_kernel', 'cra_description', 'Implementation', 'POOL_IMPLEMENTATIONS',
    'KERNEL_IMPLEMENTATIONS', 'use_reference',
]


def cra_description(pool_size: Tuple[int, int], pool_type: str) -> str:
    """The formula in one sentence, for model cards (``timm_cra.hub.card``)."""
    (ph, pw) = pool_size
    return (f'CRA gates each channel with a sigmoid of a learned depthwise kernel applied to a {ph}x{pw} adaptive '
            f'{pool_type}-pool of that channel.')


# --- reference implementations ------------------------------------------------------------------------------

def _pool_reference(x: torch.Tensor, pool_size: Tuple[int, int], pool_type: str) -> torch.Tensor:
    if pool_type == 'max':
        return F.adaptive_max_pool2d(x, pool_size)
    return F.adaptive_avg_pool2d(x, pool_size)


def _kernel_reference(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    return F.conv2d(x, weight, bias, groups=weight.shape[0])


# --- registered implementations -----------------------------------------------------------------------------

class Implementation(NamedTuple):
    """A registered implementation of a primitive. ``applies`` and ``run`` take the primitive's arguments; where
    ``applies`` holds, ``run`` gives the reference's values and gradients. Each predicate is complete on its own
    (it does not rely on an earlier entry having declined), so any entry can be switched off or deleted."""
    applies: Callable[..., bool]
    run: Callable[..., torch.Tensor]


def _eager_cpu(x: torch.Tensor) -> bool:
    """An eager (not captured or traced) 4-D CPU tensor: where the :mod:`.cra_cpu` kernels were tuned."""
    # Graph capture is checked first: a torch.fx Proxy has no concrete device.
    if is_fx_symbolic_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return False
    return not torch.jit.is_tracing() and x.device.type == 'cpu' and x.dim() == 4


def _uniform_cpu(x: torch.Tensor, pool_size: Tuple[int, int], pool_type: str, kind: str) -> bool:
    """Eager CPU ``kind`` pooling whose bins are uniform windows (the size divides: every ResNet stage at 224)."""
    return (pool_type == kind and _eager_cpu(x) and x.shape[-2] % pool_size[0] == 0
            and x.shape[-1] % pool_size[1] == 0)


def _window(x: torch.Tensor, pool_size: Tuple[int, int]) -> Tuple[int, int]:
    return x.shape[-2] // pool_size[0], x.shape[-1] // pool_size[1]


def _needs_grad(x: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and x.requires_grad


#: Implementations of :func:`cra_pool`, tried in this order; arguments ``(x, pool_size, pool_type, in_size)``.
#: An entry stays only where two idle benchmark runs both showed it more than 3% faster than the reference
#: (docs/benchmarks.md, "Fast paths: which stay").
POOL_IMPLEMENTATIONS: Dict[str, Implementation] = {
    # Export (timm_cra.export): windows from the caller's static input size, in ops every exporter supports.
    # Values exact; gradients too, except that amax over overlapping windows splits a tie between the tied
    # maxima (adaptive_max_pool2d routes it to the first): fine for export, not for training.
    'static_windows': Implementation(
        lambda x, size, kind, in_size: in_size is not None,
        lambda x, size, kind, in_size: static_window_pool(x, in_size, size, kind)),
    # Training, channels_last: argmax saved as 1-2 byte offsets instead of int64 indices (NCHW: the reference).
    'window_max_autograd': Implementation(
        lambda x, size, kind, in_size: (_uniform_cpu(x, size, kind, 'max') and _needs_grad(x)
                                        and cra_cpu.is_channels_last(x)),
        lambda x, size, kind, in_size: cra_cpu.WindowMaxPool.apply(x, *_window(x, size))),
    # Inference, NCHW: strided maxima instead of the NCHW max-pool kernel.
    'window_max_nchw': Implementation(
        lambda x, size, kind, in_size: _uniform_cpu(x, size, kind, 'max') and not _needs_grad(x) and x.is_contiguous(),
        lambda x, size, kind, in_size: cra_cpu.window_max_nchw(x, size[0], size[1])),
}

#: Implementations of :func:`cra_kernel`, tried in this order; arguments ``(x, weight, bias)``.
KERNEL_IMPLEMENTATIONS: Dict[str, Implementation] = {
    # Training, channels_last pooled maps: conv2d forward, backward written out elementwise (NCHW: the reference).
    'dot_product_autograd': Implementation(
        lambda x, weight, bias: _eager_cpu(x) and torch.is_grad_enabled() and cra_cpu.is_channels_last(x),
        cra_cpu.MapKernel.apply),
    # Inference, NCHW: one batched dot product per channel instead of the depthwise conv.
    'dot_product': Implementation(
        lambda x, weight, bias: _eager_cpu(x) and not torch.is_grad_enabled() and x.is_contiguous(),
        cra_cpu.map_kernel_infer),
}

_disabled: FrozenSet[str] = frozenset()


@contextmanager
def use_reference(*names: str) -> Iterator[None]:
    """Inside the block, the named registered implementations (all of them when none is named) are skipped: the
    primitives run the next applicable one, or the reference. For tests and the benchmark; not thread-safe."""
    global _disabled
    known = set(POOL_IMPLEMENTATIONS) | set(KERNEL_IMPLEMENTATIONS)
    unknown = sorted(set(names) - known)
    if unknown:
        raise ValueError(f"use_reference: no registered implementation named {unknown}; known: {sorted(known)}.")
    previous = _disabled
    _disabled = previous | frozenset(names or known)
    try:
        yield
    finally:
        _disabled = previous


def _first_applicable(table: Dict[str, Implementation], *args) -> Optional[torch.Tensor]:
    for name, impl in table.items():
        if name not in _disabled and impl.applies(*args):
            return impl.run(*args)
    return None


@torch.jit.unused
def _registered_pool(x: torch.Tensor, pool_size: Tuple[int, int], pool_type: str,
                     in_size: Optional[Tuple[int, int]]) -> Optional[torch.Tensor]:
    return _first_applicable(POOL_IMPLEMENTATIONS, x, pool_size, pool_type, in_size)


@torch.jit.unused
def _registered_kernel(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return _first_applicable(KERNEL_IMPLEMENTATIONS, x, weight, bias)


# --- the primitives -----------------------------------------------------------------------------------------
# Each is one leaf node for torch.fx (the dispatch looks at devices and sizes, which a Proxy does not have);
# TorchScript compiles the reference only.

@register_notrace_function
def cra_pool(
        x: torch.Tensor,
        pool_size: Tuple[int, int],
        pool_type: str = 'max',
        in_size: Optional[Tuple[int, int]] = None,
) -> torch.Tensor:
    """(a) ``F.adaptive_{max,avg}_pool2d(x, pool_size)``, values and gradients. ``in_size``: ``x``'s spatial size
    as Python ints where the caller fixes it (export), else None."""
    if not torch.jit.is_scripting():
        out = _registered_pool(x, pool_size, pool_type, in_size)
        if out is not None:
            return out
    return _pool_reference(x, pool_size, pool_type)


@register_notrace_function
def cra_kernel(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """(b) ``F.conv2d(x, weight, bias, groups=C)`` for a pooled map as large as the per-channel kernel: one value
    per channel, (N, C, 1, 1)."""
    if not torch.jit.is_scripting():
        out = _registered_kernel(x, weight, bias)
        if out is not None:
            return out
    return _kernel_reference(x, weight, bias)


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
        # The input's spatial size where it is fixed (timm_cra.export sets it: tracers see sizes as tensors).
        self.in_size: Optional[Tuple[int, int]] = None

    def channel_gates(self, x: torch.Tensor) -> torch.Tensor:
        """The per-channel gates, (N, C, 1, 1), that :meth:`forward` scales ``x`` by: ``gate(kernel(pool(x)))``."""
        pooled = cra_pool(x, self.pool_size, self.pool_type, self.in_size)
        return self.gate(cra_kernel(pooled, self.conv.weight, self.conv.bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.channel_gates(x)
        if self.inplace and not torch.is_grad_enabled():
            return x.mul_(gate)
        return x * gate

    @torch.jit.unused
    def constant_gate_state(self, bias: float) -> Dict[str, torch.Tensor]:
        """State dict (CPU) that makes the gate the constant ``gate(bias)`` for every input: zero kernel, this bias.
        How a gate inserted into a trained network starts (``timm_cra.models.retrofit``)."""
        return {k: torch.zeros_like(v, device='cpu') if k == 'conv.weight' else torch.full_like(v, bias, device='cpu')
                for k, v in self.state_dict().items()}

    def extra_repr(self) -> str:
        s = f'pool_size={self.pool_size}, pool_type={self.pool_type!r}'
        return s + ', inplace=True' if self.inplace else s
