"""Interleaved timing of model / layer variants in one process.

Every round times each variant once, in turn, so drifts of the machine (other load, clocks, caches) hit all
variants alike; ratios to the base variant are taken per statistic (min and median over rounds).
"""
import dataclasses
import platform
import statistics
import time
from contextlib import nullcontext
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

import timm

from ..layers.cra_cpu import MapKernel, WindowMaxPool, map_kernel_infer, window_max_nchw
from ..utils.complexity import count_macs
from .variants import ATTENTION_VARIANTS, INFERENCE_ONLY_VARIANTS, swap_attention

__all__ = ['BenchResult', 'benchmark_models', 'benchmark_layers', 'benchmark_primitives', 'saved_activation_bytes',
           'cpu_description']


@dataclasses.dataclass
class BenchResult:
    name: str          # model or layer shape
    variant: str       # 'base', 'cra', ...
    mode: str          # 'infer' | 'train'
    setting: str       # e.g. 'eager', 'channels_last', 'compile'
    batch_size: int
    min_s: float       # per step
    median_s: float
    img_per_s: float   # from min_s
    ratio_min: float = float('nan')     # to the reference variant of the same (name, mode, setting, batch)
    ratio_median: float = float('nan')
    params: int = 0
    macs: int = 0       # multiply-accumulates per image (convs and matmuls), batch 1
    saved_mb: float = float('nan')      # activations saved for backward in one training forward


#: /proc/cpuinfo flags that pick different PyTorch CPU kernels, in the order they are reported.
_ISA_FLAGS = (('avx2', 'AVX2'), ('avx512f', 'AVX-512'), ('avx512_bf16', 'AVX512-BF16'), ('amx_tile', 'AMX'))


def cpu_description(cpuinfo: str = '/proc/cpuinfo') -> str:
    """The CPU model and the vector extensions that decide which kernels run, e.g. ``'AMD EPYC (AVX2)'``.

    Ratios measured on different CPUs are not comparable (bf16 and max-pool kernels differ most), so every
    benchmark file records this. Falls back to ``platform`` where /proc/cpuinfo is absent.
    """
    model, flags = '', set()
    try:
        with open(cpuinfo) as f:
            for line in f:
                key, _, value = line.partition(':')
                key = key.strip()
                if key == 'model name' and not model:
                    model = value.strip()
                elif key == 'flags':
                    flags = set(value.split())
                    break
    except OSError:
        pass
    model = model or platform.processor() or platform.machine()
    isa = [name for flag, name in _ISA_FLAGS if flag in flags]
    return f"{model} ({', '.join(isa)})" if isa else model


def saved_activation_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes autograd keeps for backward in one training forward (each storage counted once).

    The deterministic part of training memory that an attention layer changes; parameters, gradients and
    optimizer state come on top and are the same for every gate but the parameter difference.
    """
    seen = {}

    def pack(t):
        try:
            key = t.untyped_storage().data_ptr()
            seen[key] = max(seen.get(key, 0), t.untyped_storage().nbytes())
        except (RuntimeError, NotImplementedError):
            pass
        # Not ``t`` itself: a saved output packed as itself would reference its own grad_fn, a cycle that
        # keeps the whole graph (every activation) alive after the forward is dropped.
        return t.detach()

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
    del out
    return sum(seen.values())


def _time_rounds(fns: Dict[str, Callable[[], None]], rounds: int, warmup: int) -> Dict[str, List[float]]:
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return times


def _results(name, mode, setting, batch_size, times, extra=None, ref='base') -> List[BenchResult]:
    out = []
    for variant, ts in times.items():
        mn, md = min(ts), statistics.median(ts)
        out.append(BenchResult(name, variant, mode, setting, batch_size, mn, md, batch_size / mn,
                               **(extra or {}).get(variant, {})))
    base = next((r for r in out if r.variant == ref), None)
    if base is not None:
        for r in out:
            r.ratio_min = r.min_s / base.min_s
            r.ratio_median = r.median_s / base.median_s
    return out


def _step_fn(model, x, mode, autocast_dtype):
    amp = torch.autocast('cpu', dtype=autocast_dtype) if autocast_dtype else nullcontext()
    if mode == 'infer':
        def fn():
            with torch.inference_mode(), amp:
                model(x)
        return fn
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def fn():
        with amp:
            loss = model(x).float().logsumexp(-1).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return fn


def benchmark_models(
        model_name: str,
        variants: Sequence[str] = tuple(ATTENTION_VARIANTS),
        batch_sizes: Sequence[int] = (1, 32),
        modes: Sequence[str] = ('infer', 'train'),
        settings: Sequence[str] = ('eager', 'channels_last'),
        img_size: int = 224,
        rounds: int = 5,
        warmup: int = 2,
        autocast_dtype: Optional[torch.dtype] = None,
        train_batch_size: int = 32,
        log: Callable[[str], None] = print,
) -> List[BenchResult]:
    """Time a CRA model against the same network with each other gate swapped in (see ``variants.py``).

    ``settings``: 'eager' (NCHW), 'channels_last', 'compile' (torch.compile, inductor, NCHW).
    Training is timed at ``train_batch_size`` only.
    """
    results = []
    torch.manual_seed(0)
    ref = timm.create_model(model_name)
    models = {}
    for v in variants:
        m = timm.create_model(model_name)
        m.load_state_dict(ref.state_dict())
        models[v] = swap_attention(m, ATTENTION_VARIANTS[v])
    extra = {}
    x_mem = torch.randn(train_batch_size, 3, img_size, img_size)
    for v, m in models.items():
        extra[v] = dict(params=sum(p.numel() for p in m.parameters()),
                        macs=count_macs(m, (3, img_size, img_size)),
                        saved_mb=saved_activation_bytes(m, x_mem) / 2 ** 20)
    for setting in settings:
        for mode in modes:
            for bs in ([train_batch_size] if mode == 'train' else batch_sizes):
                x = torch.randn(bs, 3, img_size, img_size)
                fns = {}
                for v, m in models.items():
                    if mode == 'train' and v in INFERENCE_ONLY_VARIANTS:
                        continue
                    m = m.train() if mode == 'train' else m.eval()
                    xi = x
                    if setting == 'channels_last':
                        m = m.to(memory_format=torch.channels_last)
                        xi = x.contiguous(memory_format=torch.channels_last)
                    elif setting == 'compile':
                        m = torch.compile(m)
                    else:
                        m = m.to(memory_format=torch.contiguous_format)
                    fns[v] = _step_fn(m, xi, mode, autocast_dtype)
                log(f'{model_name} {setting} {mode} bs={bs}: {rounds} interleaved rounds x {len(fns)} variants')
                results += _results(model_name, mode, setting, bs, _time_rounds(fns, rounds, warmup), extra)
    return results


def benchmark_layers(
        shapes: Sequence[Sequence[int]],
        variants: Sequence[str] = tuple(v for v in ATTENTION_VARIANTS if v != 'base'),
        modes: Sequence[str] = ('infer', 'train'),
        settings: Sequence[str] = ('eager', 'channels_last'),
        rounds: int = 7,
        warmup: int = 2,
        log: Callable[[str], None] = print,
) -> List[BenchResult]:
    """Time the gate layers alone on ``(N, C, H, W)`` activations; ratios are to the naive CRA."""
    results = []
    for shape in shapes:
        N, C, H, W = shape
        for setting in settings:
            fmt = torch.channels_last if setting == 'channels_last' else torch.contiguous_format
            x = torch.randn(N, C, H, W).contiguous(memory_format=fmt)
            for mode in modes:
                fns = {}
                for v in variants:
                    if mode == 'train' and v in INFERENCE_ONLY_VARIANTS:
                        continue
                    factory = ATTENTION_VARIANTS[v]
                    layer = nn.Identity() if factory is None else factory(C)
                    if mode == 'infer':
                        # Own copy: in-place gates rescale their input on every call (a few dozen calls: no
                        # denormals), which must not leak into the other variants' input.
                        def fn(layer=layer, xi=x.clone()):
                            with torch.inference_mode():
                                layer(xi)
                    else:
                        xg = x.detach().clone().requires_grad_(True)
                        grad = torch.ones_like(x)

                        def fn(layer=layer, xg=xg, grad=grad):
                            y = layer(xg)
                            if y.requires_grad:
                                y.backward(grad)
                    fns[v] = fn
                name = f'{C}x{H}x{W}'
                log(f'layer {name} N={N} {setting} {mode}')
                results += _results(name, mode, setting, N, _time_rounds(fns, rounds, warmup), ref='cra_naive')
    return results


def _primitive_fns(x: torch.Tensor) -> Dict[str, Callable[[], None]]:
    """The operations behind CraAttn's choices, on one (N, C, H, W) activation with H, W multiples of 7."""
    N, C, H, W = x.shape
    k = H // 7
    x_cl = x.contiguous(memory_format=torch.channels_last)
    x_mut = x.clone()  # rescaled by every in-place call (a few dozen calls: no denormals)
    gate = torch.rand(N, C, 1, 1)
    x_grad = x_cl.clone().requires_grad_(True)  # the training kernels are channels_last only
    g_pool = torch.randn(N, C, 7, 7).contiguous(memory_format=torch.channels_last)
    x7 = torch.randn(N, C, 7, 7).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    w7 = torch.randn(C, 1, 7, 7, requires_grad=True)
    b7 = torch.zeros(C, requires_grad=True)
    g7 = torch.randn(N, C, 1, 1)
    p7 = torch.randn(N, C, 7, 7)
    w7_inf, b7_inf = torch.randn(C, 1, 7, 7), torch.randn(C)

    def infer(fn):
        def run():
            with torch.no_grad():
                fn()
        return run

    return {
        'mean (SE squeeze)': infer(lambda: x.mean((2, 3), keepdim=True)),
        'max_pool2d NCHW': infer(lambda: F.max_pool2d(x, k, k)),
        'adaptive_max_pool2d NCHW (reference)': infer(lambda: F.adaptive_max_pool2d(x, 7)),
        'strided window max NCHW': infer(lambda: window_max_nchw(x, 7, 7)),
        'x * gate': infer(lambda: x * gate),
        'x.mul_(gate)': infer(lambda: x_mut.mul_(gate)),
        'adaptive_max_pool2d channels_last fwd+bwd (reference)':
            lambda: F.adaptive_max_pool2d(x_grad, 7).backward(g_pool),
        'CRA training pool channels_last fwd+bwd': lambda: WindowMaxPool.apply(x_grad, k, k).backward(g_pool),
        '7x7 depthwise conv on 7x7 NCHW': infer(lambda: F.conv2d(p7, w7_inf, b7_inf, groups=C)),
        'CRA 7x7 kernel NCHW': infer(lambda: map_kernel_infer(p7, w7_inf, b7_inf)),
        '7x7 depthwise conv on 7x7 channels_last fwd+bwd': lambda: F.conv2d(x7, w7, b7, groups=C).backward(g7),
        'CRA 7x7 kernel channels_last fwd+bwd': lambda: MapKernel.apply(x7, w7, b7).backward(g7),
    }


def benchmark_primitives(
        shapes: Sequence[Sequence[int]],
        rounds: int = 7,
        warmup: int = 2,
        log: Callable[[str], None] = print,
) -> List[BenchResult]:
    """Time the single operations CraAttn chooses between (ms per call); ratios are to the SE squeeze (mean)."""
    results = []
    for shape in shapes:
        N, C, H, W = shape
        name = f'{C}x{H}x{W}'
        log(f'primitives {name} N={N}')
        times = _time_rounds(_primitive_fns(torch.randn(N, C, H, W)), rounds, warmup)
        results += _results(name, 'op', 'primitive', N, times, ref='mean (SE squeeze)')
    return results
