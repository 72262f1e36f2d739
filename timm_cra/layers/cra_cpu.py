""" CPU kernels for Channel Reassessment Attention

Same values and gradients as the reference ops of :mod:`timm_cra.layers.cra` (``adaptive_max_pool2d``, the
depthwise conv over the pooled map), with cheaper kernels for PyTorch's CPU backend: for NCHW inference, strided
maxima instead of the NCHW max-pool kernel and a batched dot product for the pooled-map kernel; for channels_last
training, argmax offsets of 1-2 bytes saved for backward instead of int64 indices and an elementwise backward of
the pooled-map kernel. They are registered, with the conditions under which each runs, in
``POOL_IMPLEMENTATIONS`` / ``KERNEL_IMPLEMENTATIONS`` of that module: only where two idle runs of the whole
model both measured them faster than the reference ops (``docs/benchmarks.md``, "Fast paths: which stay").
They run for eager CPU tensors only; graph capture, tracing and other devices use the reference ops.
"""
from typing import Optional

import torch
import torch.nn.functional as F

__all__ = ['window_max_nchw', 'WindowMaxPool', 'MapKernel', 'map_kernel_infer', 'is_channels_last']


def is_channels_last(x: torch.Tensor) -> bool:
    """A 4-D tensor laid out channels_last and not also NCHW-contiguous (the training kernels' inputs)."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def _offset_dtype(span: int) -> torch.dtype:
    return torch.uint8 if span <= 256 else torch.int16 if span <= 32768 else torch.int32


def _window_origins(x: torch.Tensor, kh: int, kw: int) -> torch.Tensor:
    """Plane offset (h * W + w) of each window's top-left pixel, shape (H / kh, W / kw)."""
    H, W = x.shape[-2:]
    rows = torch.arange(0, H, kh, device=x.device).view(-1, 1) * W
    return rows + torch.arange(0, W, kw, device=x.device).view(1, -1)


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
    """Exact-window max pool ``(kh, kw)`` of a channels_last tensor that saves each argmax as a small offset from
    its window's corner.

    ``adaptive_max_pool2d`` keeps int64 plane offsets for backward (8 bytes per pooled value); the input is saved
    anyway by the gate's product (same storage), so a 1-2 byte offset per window cuts CRA's extra training
    memory to a small fraction of the gate's. Forward is PyTorch's channels_last adaptive kernel (same windows
    and indices here); backward rebuilds the plane offsets and calls that kernel's own backward: gradients
    bit-identical, ties routed to the same (first) maximum, and differentiable again like the reference's.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, kh: int, kw: int) -> torch.Tensor:
        y, idx = F.adaptive_max_pool2d(x, (x.shape[-2] // kh, x.shape[-1] // kw), return_indices=True)
        span = (kh - 1) * x.shape[-1] + kw  # offsets from the window corner lie in [0, span)
        ctx.save_for_backward(x, idx.sub_(_window_origins(x, kh, kw)).to(_offset_dtype(span)))
        ctx.kernel = (kh, kw)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, offset = ctx.saved_tensors
        kh, kw = ctx.kernel
        idx = offset.long().add_(_window_origins(x, kh, kw)).contiguous(memory_format=torch.channels_last)
        grad = grad.contiguous(memory_format=torch.channels_last)
        return torch.ops.aten.adaptive_max_pool2d_backward(grad, x, idx), None, None


class MapKernel(torch.autograd.Function):
    """The CRA kernel under autograd, for a channels_last pooled map: a depthwise conv whose kernel covers the whole
    map, so each output is one per-channel dot product. Forward is the depthwise ``conv2d``; backward is written
    out elementwise in explicit NHWC views instead of the depthwise conv's backward.
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
        to_nhwc, from_nhwc = (0, 2, 3, 1), (0, 3, 1, 2)
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
