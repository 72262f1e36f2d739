""" Channel Reassessment Attention (CRA)

Paper: `Convolutional Neural Network optimization via Channel Reassessment Attention module`
    - YuTao Shen, Ying Wen, 2020 - https://arxiv.org/abs/2010.05605
Official code: https://github.com/syt2/CRA (``models/CRAResNet.py``)

CRA computes one attention weight per channel from a small *spatial* summary of that channel:

    y = x * sigmoid(DWConv_kxk(AdaptiveMaxPool_kxk(x)))

The depthwise conv has kernel size equal to the pooled size and no padding, so it reduces each
pooled k x k map to one value with a learned per-channel spatial kernel (plus bias). Unlike SE there
is no channel mixing, no reduction ratio and no norm: k*k*C + C parameters (50*C for k=7).
"""
from typing import Optional, Tuple, Type, Union

import torch
from torch import nn
import torch.nn.functional as F
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

from timm.layers import create_act_layer, to_2tuple
from timm.layers._fx import register_notrace_function

__all__ = ['CraAttn', 'cra_pool']

_POOL_TYPES = ('max', 'avg')


def _window_max_nchw(x: torch.Tensor, ph: int, pw: int) -> torch.Tensor:
    """Max over uniform ``(H/ph, W/pw)`` windows of an NCHW-contiguous tensor, forward only.

    PyTorch's NCHW max_pool2d CPU kernel is several times slower than a mean over the same data. Reducing the
    window rows first with elementwise maxima of whole strided row slices (vectorised along W), then the
    columns of the k-times smaller result, gives the same values at a fraction of the cost. Its autograd
    would split the gradient between tied maxima, unlike max_pool2d, so it is used without autograd only.
    """
    N, C, H, W = x.shape
    kh, kw = H // ph, W // pw
    rows = x.view(N, C, ph, kh, W)
    if kh == 1:
        y = rows[:, :, :, 0]  # a view of x: never written to below
    else:
        y = torch.maximum(rows[:, :, :, 0], rows[:, :, :, 1])
        for i in range(2, kh):
            torch.maximum(y, rows[:, :, :, i], out=y)
    cols = y.reshape(N, C, ph, pw, kw)
    if kw == 1:
        return cols[..., 0].contiguous()
    z = torch.maximum(cols[..., 0], cols[..., 1])
    for i in range(2, kw):
        torch.maximum(z, cols[..., i], out=z)
    return z


def _offset_dtype(span: int) -> torch.dtype:
    return torch.uint8 if span <= 256 else torch.int16 if span <= 32768 else torch.int32


def _is_channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def _window_origins(x: torch.Tensor, kh: int, kw: int) -> torch.Tensor:
    """Plane offset (h * W + w) of each window's top-left pixel, shape (H / kh, W / kw)."""
    H, W = x.shape[-2:]
    rows = torch.arange(0, H, kh, device=x.device).view(-1, 1) * W
    return rows + torch.arange(0, W, kw, device=x.device).view(1, -1)


# Small NCHW maps are pooled through a channels_last copy in training. Measured on this project's CPU at
# batch 32, 2 threads (fwd+bwd ms, copy vs direct): 1024x14x14 15.7 vs 24.4, 384x14x14 4.4 vs 8.6,
# 192x28x28 5.0 vs 9.2, but 512x28x28 39.7 vs 36.4 and 256x56x56 ~2x slower: the copy pays off up to
# 28x28 maps of about 2**18 values per sample.
_NCHW_VIA_CHANNELS_LAST_MAX_PIXELS = 28 * 28
_NCHW_VIA_CHANNELS_LAST_MAX_NUMEL = 2 ** 18


def _pool_via_channels_last(x: torch.Tensor) -> bool:
    if x.dim() != 4:
        return False
    C, H, W = x.shape[1:]
    return H * W <= _NCHW_VIA_CHANNELS_LAST_MAX_PIXELS and C * H * W <= _NCHW_VIA_CHANNELS_LAST_MAX_NUMEL


class _WindowMaxPool(torch.autograd.Function):
    """Exact-window max pool for training that saves each argmax as a small offset from its window's corner.

    ``max_pool2d`` keeps int64 plane offsets for backward: 8 bytes per pooled value, 2x the input's own
    bytes per pixel at 14x14 -> 7x7. The input itself is saved anyway by the gate's product (same storage),
    so keeping a 1-2 byte offset per window instead cuts CRA's extra training memory to a few percent of the
    gate's. Backward rebuilds the plane offsets and calls the pooling kernel's own backward: gradients are
    bit-identical, ties routed to the same (first) maximum, and differentiable again like max_pool2d's.
    The forward uses PyTorch's channels_last adaptive kernel (same windows and indices here) for channels_last
    inputs and for small NCHW maps; the backward kernel follows the input's layout (channels_last
    max_pool2d's backward is several times slower than the adaptive one; indices are plane offsets in both).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, kh: int, kw: int) -> torch.Tensor:
        channels_last = _is_channels_last(x)
        if channels_last or _pool_via_channels_last(x):
            # The channels_last kernel is several times faster; for small maps the transposed copy costs less.
            xc = x if channels_last else x.contiguous(memory_format=torch.channels_last)
            y, idx = F.adaptive_max_pool2d(xc, (x.shape[-2] // kh, x.shape[-1] // kw), return_indices=True)
            if not channels_last:
                y, idx = y.contiguous(), idx.contiguous()
        else:
            y, idx = F.max_pool2d(x, (kh, kw), (kh, kw), return_indices=True)
        span = (kh - 1) * x.shape[-1] + kw  # offsets from the window corner lie in [0, span)
        ctx.save_for_backward(x, idx.sub_(_window_origins(x, kh, kw)).to(_offset_dtype(span)))
        ctx.kernel = (kh, kw)
        ctx.channels_last = channels_last
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, offset = ctx.saved_tensors
        kh, kw = ctx.kernel
        fmt = torch.channels_last if ctx.channels_last else torch.contiguous_format
        idx = offset.long().add_(_window_origins(x, kh, kw)).contiguous(memory_format=fmt)
        grad = grad.contiguous(memory_format=fmt)
        if ctx.channels_last:
            grad_x = torch.ops.aten.adaptive_max_pool2d_backward(grad, x, idx)
        else:
            grad_x = torch.ops.aten.max_pool2d_with_indices_backward(
                grad, x, [kh, kw], [kh, kw], [0, 0], [1, 1], False, idx)
        return grad_x, None, None


class _MapKernel(torch.autograd.Function):
    """The CRA kernel in training: a depthwise conv whose kernel covers the whole (pooled) map, so each output
    is one per-channel dot product. Forward is the depthwise ``conv2d`` (what graph capture records too); the
    backward is written out elementwise, several times faster than the depthwise conv's backward on CPU.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias, groups=weight.shape[0])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        # (N, C, kh, kw) = grad (N, C, 1, 1) x weight (C, 1, kh, kw). channels_last: the same in explicit NHWC
        # views, which run several times faster than broadcasting over channels_last strides.
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 2, 3))
        channels_last = _is_channels_last(x)
        to_nhwc = (0, 2, 3, 1) if channels_last else (0, 1, 2, 3)
        from_nhwc = (0, 3, 1, 2) if channels_last else (0, 1, 2, 3)
        grad = grad.permute(to_nhwc)
        if ctx.needs_input_grad[0]:
            grad_x = (grad * weight.transpose(0, 1).permute(to_nhwc).contiguous()).permute(from_nhwc)
        if ctx.needs_input_grad[1]:
            grad_w = (grad * x.permute(to_nhwc)).sum(0, keepdim=True).permute(from_nhwc).transpose(0, 1)
        return grad_x, grad_w, grad_b


@torch.jit.unused
def _window_max_pool_train(x: torch.Tensor, kh: int, kw: int) -> torch.Tensor:
    return _WindowMaxPool.apply(x, kh, kw)


#: Without autograd, a channels_last pooled map goes through the depthwise conv (mkldnn) once it has more
#: than this many (sample, channel) rows; below that, and for NCHW maps of any size, the batched dot product
#: is faster (2 threads: 8-60 us vs 60-120 us per call at batch 1; NCHW at batch 32 still 1.3-2.5x).
_DOT_MAX_ROWS_CHANNELS_LAST = 2048


@torch.jit.unused
def _map_kernel_infer(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """The CRA kernel without autograd: one dot product per (sample, channel) of the pooled map and its kernel.

    Same values as the depthwise ``conv2d`` up to float summation order, without the conv call's fixed cost,
    which dominates at small batch. A (C, N, k*k) x (C, k*k, 1) batched matmul: one call with the bias, and
    counted by FLOP counters like the conv it replaces. Weight and bias follow the input dtype, as conv2d's
    do under autocast.
    """
    N, C = x.shape[0], x.shape[1]
    if not x.is_contiguous() and N * C > _DOT_MAX_ROWS_CHANNELS_LAST:
        return F.conv2d(x, weight, bias, groups=C)
    rows = x.reshape(N, C, x.shape[2] * x.shape[3]).transpose(0, 1)
    kernels = weight.reshape(C, -1, 1).to(x.dtype)
    if bias is None:
        out = torch.bmm(rows, kernels)
    else:
        out = torch.baddbmm(bias.to(x.dtype).view(C, 1, 1), rows, kernels)
    return out.view(C, N).t().reshape(N, C, 1, 1)


@torch.jit.unused
def _map_kernel_train(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    return _MapKernel.apply(x, weight, bias)


def _is_tracing() -> bool:
    # Graph capture (fx, compile, export, TorchScript) records the plain ops: inductor fuses them, and the
    # graphs stay free of custom autograd Functions.
    if torch.jit.is_scripting():
        return True
    return _is_tracing_python()


@torch.jit.unused
def _is_tracing_python() -> bool:
    return is_fx_symbolic_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting()


@register_notrace_function  # shape-dependent dispatch; keep it a single leaf node for torch.fx
def cra_pool(x: torch.Tensor, pool_size: Tuple[int, int], pool_type: str = 'max') -> torch.Tensor:
    """Adaptive max/avg pool of an NCHW tensor to ``pool_size``.

    Numerically identical to ``F.adaptive_{max,avg}_pool2d``, gradients included. When the input size is
    an exact multiple of the pooled size (every ResNet stage at 224x224), the bins are uniform windows and
    cheaper kernels give the same result: strided pooling (no per-bin index math); for max pooling of
    NCHW-contiguous inputs without autograd, :func:`_window_max_nchw`; with autograd, :class:`_WindowMaxPool`
    (same gradients, 1-2 byte argmax offsets saved instead of int64 indices).
    """
    H, W = x.shape[-2:]
    ph, pw = pool_size
    if H == ph and W == pw:
        return x
    if H % ph == 0 and W % pw == 0:
        if pool_type == 'max':
            needs_grad = torch.is_grad_enabled() and x.requires_grad
            if not needs_grad and x.dim() == 4 and x.is_contiguous():
                return _window_max_nchw(x, ph, pw)
            if needs_grad and not _is_tracing():
                return _window_max_pool_train(x, H // ph, W // pw)
            k = (H // ph, W // pw)
            return F.max_pool2d(x, kernel_size=k, stride=k)
        k = (H // ph, W // pw)
        return F.avg_pool2d(x, kernel_size=k, stride=k)
    if pool_type == 'max':
        return F.adaptive_max_pool2d(x, pool_size)
    return F.adaptive_avg_pool2d(x, pool_size)


class CraAttn(nn.Module):
    """Channel Reassessment Attention module.

    Default arguments reproduce the official module exactly: adaptive max pooling to 7x7, a depthwise
    7x7 convolution with bias (no padding, so 7x7 -> 1x1), sigmoid gate, channel-wise product.

    Inputs smaller than the pooled size work as in the official code: adaptive pooling repeats input
    pixels into the larger grid.

    The constructor accepts the call signatures of both places timm builds attention layers:
    ``attn_layer(channels)`` in ResNet blocks and ``se_layer(chs, rd_ratio=..., act_layer=...)`` in the
    EfficientNet / MobileNet builder. CRA has no reduction bottleneck and no hidden activation, so
    ``rd_ratio`` and ``act_layer`` are accepted for that interface and have no effect.

    Args:
        channels: Number of input (and output) channels.
        pool_size: Spatial size the input is pooled to; also the depthwise kernel size (default 7).
        pool_type: 'max' (official) or 'avg'.
        gate_layer: Gating non-linearity (default 'sigmoid').
        bias: Use a bias in the depthwise conv (official: True).
        inplace: Without autograd (``torch.no_grad`` / ``inference_mode``), scale the input in place and
            return it. Saves allocating and page-faulting an activation-sized output, the largest cost of the
            gate at inference on CPU. Only for inputs nothing else reads afterwards (the model families set it:
            the input is always a fresh BN output). Under autograd the product is never in place.
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
        if pool_type not in _POOL_TYPES:
            raise ValueError(f"CraAttn: pool_type must be one of {_POOL_TYPES}, got {pool_type!r}.")
        self.pool_size = to_2tuple(pool_size)
        if min(self.pool_size) < 1:
            raise ValueError(f"CraAttn: pool_size must be >= 1, got {pool_size!r}.")
        self.pool_type = pool_type
        # Depthwise conv whose kernel covers the whole pooled map: one spatial kernel per channel.
        self.conv = nn.Conv2d(
            channels, channels, kernel_size=self.pool_size, groups=channels, bias=bias, **dd)
        self.gate = create_act_layer(gate_layer)
        self.inplace = inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_cra = cra_pool(x, self.pool_size, self.pool_type)
        if _is_tracing() or x_cra.dim() != 4:  # graph capture, unbatched (C, H, W) input: the plain conv
            x_cra = self.conv(x_cra)
        elif torch.is_grad_enabled():
            x_cra = _map_kernel_train(x_cra, self.conv.weight, self.conv.bias)
        else:
            x_cra = _map_kernel_infer(x_cra, self.conv.weight, self.conv.bias)
        x_cra = self.gate(x_cra)
        if self.inplace and not torch.is_grad_enabled():
            return x.mul_(x_cra)
        return x * x_cra

    def extra_repr(self) -> str:
        s = f'pool_size={self.pool_size}, pool_type={self.pool_type!r}'
        return s + ', inplace=True' if self.inplace else s
