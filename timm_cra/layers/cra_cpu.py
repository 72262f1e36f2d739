""" CPU kernels for Channel Reassessment Attention

Same values and gradients as the reference ops of :mod:`timm_cra.layers.cra` (``adaptive_max_pool2d``, the
depthwise conv over the pooled map), with cheaper kernels for PyTorch's CPU backend: strided maxima instead of
the NCHW max-pool kernel, argmax offsets of 1-2 bytes saved for backward instead of int64 indices, a batched
dot product for the pooled-map kernel, and channels_last detours for small NCHW maps. They are registered, with
the conditions under which each runs, in ``POOL_IMPLEMENTATIONS`` / ``KERNEL_IMPLEMENTATIONS`` of that module.

They were tuned on a 2-core x86 CPU with the benchmark's primitives and layers modes
(``tools/benchmark.py --primitives-only`` / ``--layers-only``); the measurements behind each choice are in
``results/benchmark-*-primitives*.md`` and ``results/benchmark-*-bs1-kernel.md``. They run for eager CPU tensors
only; graph capture, tracing and other devices use the reference ops.
"""
from typing import Optional

import torch
import torch.nn.functional as F

__all__ = [
    'window_max_nchw', 'WindowMaxPool', 'MapKernel', 'map_kernel_infer',
    'NCHW_VIA_CHANNELS_LAST_MAX_PIXELS', 'NCHW_VIA_CHANNELS_LAST_MAX_NUMEL', 'DOT_MAX_ROWS_CHANNELS_LAST',
]

#: Training: NCHW maps up to this many pixels and values per sample are pooled through a channels_last copy
#: (the copy costs less than the NCHW kernel there; larger maps pool directly). See the primitives results.
NCHW_VIA_CHANNELS_LAST_MAX_PIXELS = 28 * 28
NCHW_VIA_CHANNELS_LAST_MAX_NUMEL = 2 ** 18

#: Inference: a channels_last pooled map with more (sample, channel) rows than this goes through the
#: depthwise conv (mkldnn); fewer rows, and NCHW maps of any size, use the batched dot product (the
#: ``dot_product`` entry's predicate in :mod:`.cra`).
DOT_MAX_ROWS_CHANNELS_LAST = 2048


def _is_channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def _offset_dtype(span: int) -> torch.dtype:
    return torch.uint8 if span <= 256 else torch.int16 if span <= 32768 else torch.int32


def _window_origins(x: torch.Tensor, kh: int, kw: int) -> torch.Tensor:
    """Plane offset (h * W + w) of each window's top-left pixel, shape (H / kh, W / kw)."""
    H, W = x.shape[-2:]
    rows = torch.arange(0, H, kh, device=x.device).view(-1, 1) * W
    return rows + torch.arange(0, W, kw, device=x.device).view(1, -1)


def _pool_via_channels_last(x: torch.Tensor) -> bool:
    if x.dim() != 4:
        return False
    C, H, W = x.shape[1:]
    return H * W <= NCHW_VIA_CHANNELS_LAST_MAX_PIXELS and C * H * W <= NCHW_VIA_CHANNELS_LAST_MAX_NUMEL


def window_max_nchw(x: torch.Tensor, ph: int, pw: int) -> torch.Tensor:
    """Max over uniform ``(H/ph, W/pw)`` windows of an NCHW-contiguous tensor, forward only.

    Reduces the window rows with elementwise maxima of whole strided row slices (vectorised along W), then
    the columns of the smaller result: ``max_pool2d``'s values (NaN included) without its NCHW kernel. Its
    autograd would split the gradient between tied maxima, unlike max_pool2d, so use it without autograd only.
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


class WindowMaxPool(torch.autograd.Function):
    """Exact-window max pool ``(kh, kw)`` that saves each argmax as a small offset from its window's corner.

    ``max_pool2d`` keeps int64 plane offsets for backward (8 bytes per pooled value); the input is saved
    anyway by the gate's product (same storage), so a 1-2 byte offset per window cuts CRA's extra training
    memory to a small fraction of the gate's. Backward rebuilds the plane offsets and calls the pooling
    kernel's own backward: gradients bit-identical, ties routed to the same (first) maximum, and
    differentiable again like max_pool2d's. channels_last inputs and small NCHW maps use PyTorch's
    channels_last adaptive kernel (same windows and indices here); backward follows the input's layout.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, kh: int, kw: int) -> torch.Tensor:
        channels_last = _is_channels_last(x)
        if channels_last or _pool_via_channels_last(x):
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


class MapKernel(torch.autograd.Function):
    """The CRA kernel under autograd: a depthwise conv whose kernel covers the whole pooled map, so each output
    is one per-channel dot product. Forward is the depthwise ``conv2d``; backward is written out elementwise
    (in explicit NHWC views for channels_last inputs) instead of the depthwise conv's backward.
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
        # (N, C, kh, kw) = grad (N, C, 1, 1) x weight (C, 1, kh, kw)
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


def map_kernel_infer(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """The CRA kernel without autograd: one dot product per (sample, channel) of the pooled map and its kernel.

    Same values as the depthwise ``conv2d`` up to float summation order, without the conv call's fixed cost.
    A (C, N, k*k) x (C, k*k, 1) batched matmul, with the bias in the same call; FLOP counters count it like
    the conv. Weight and bias follow the input dtype, as conv2d's do under autocast.
    """
    N, C = x.shape[0], x.shape[1]
    rows = x.reshape(N, C, x.shape[2] * x.shape[3]).transpose(0, 1)
    kernels = weight.reshape(C, -1, 1).to(x.dtype)
    if bias is None:
        out = torch.bmm(rows, kernels)
    else:
        out = torch.baddbmm(bias.to(x.dtype).view(C, 1, 1), rows, kernels)
    return out.view(C, N).t().reshape(N, C, 1, 1)
