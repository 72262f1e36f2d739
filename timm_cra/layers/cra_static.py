""" Adaptive pooling with static windows, for exporters that trace shapes

A registered implementation of CRA's pool (:func:`timm_cra.layers.cra.cra_pool`) for callers that know the
input's spatial size as Python ints (``timm_cra.export``: one probe pass per layer). ``torch.onnx`` has no rule for
adaptive max pooling whose output size does not divide the input (CRA pools 9x9 -> 7x7 at 288 px), and the
TorchScript tracer sees a traced input's sizes as tensors, so the windows are computed here from the given size.
"""
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = ['adaptive_windows', 'static_window_pool']


def adaptive_windows(size: int, out: int) -> List[Tuple[int, int]]:
    """``[start, end)`` of each of PyTorch's adaptive pooling bins along one axis of ``size`` -> ``out``."""
    return [((i * size) // out, -((-(i + 1) * size) // out)) for i in range(out)]


def _pool_axis(x: torch.Tensor, dim: int, windows: Sequence[Tuple[int, int]], pool_type: str) -> torch.Tensor:
    reduce = torch.amax if pool_type == 'max' else torch.mean
    return torch.cat([reduce(x[:, :, s:e] if dim == 2 else x[:, :, :, s:e], dim=dim, keepdim=True)
                      for s, e in windows], dim=dim)


def static_window_pool(
        x: torch.Tensor, in_size: Tuple[int, int], pool_size: Tuple[int, int], pool_type: str = 'max') -> torch.Tensor:
    """``F.adaptive_{max,avg}_pool2d(x, pool_size)`` of an NCHW ``x`` of spatial size ``in_size``, in plain ops.

    ``in_size`` is a Python constant, so every window is a static slice whatever the exporter traces (the
    TorchScript tracer would otherwise record the window arithmetic on the traced shape, with C-style
    division). Uniform bins (the size divides) are one strided pool; otherwise rows then columns are reduced
    per bin (max and mean over a rectangle are separable): bit-exact for max, equal up to float rounding for mean.
    """
    (H, W), (ph, pw) = in_size, pool_size
    if (H, W) == (ph, pw):
        return x
    if H % ph == 0 and W % pw == 0:
        k = (H // ph, W // pw)
        return F.max_pool2d(x, k, k) if pool_type == 'max' else F.avg_pool2d(x, k, k)
    if H != ph:
        x = _pool_axis(x, 2, adaptive_windows(H, ph), pool_type)
    if W != pw:
        x = _pool_axis(x, 3, adaptive_windows(W, pw), pool_type)
    return x
