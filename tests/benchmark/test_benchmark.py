"""The benchmark's variants are what they claim to be, and the runner produces complete results."""
import dataclasses
import json
import math
import weakref

import pytest
import torch
import torch.nn.functional as F
import timm

import timm_cra  # noqa: F401
from timm_cra.benchmark import (
    ATTENTION_VARIANTS, ConvKernelCraAttn, NaiveCraAttn, benchmark_layers, benchmark_models, benchmark_primitives, cpu_description,
    saved_activation_bytes, swap_attention)
from timm_cra.benchmark.report import load_run, markdown_summary
from timm_cra.layers import CraAttn
from timm_cra.layers.cra import KERNEL_IMPLEMENTATIONS, POOL_IMPLEMENTATIONS, Implementation


def _params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize('pool_type,gate_layer', [('max', 'sigmoid'), ('avg', 'hard_sigmoid')])
def test_naive_cra_is_numerically_the_layer(pool_type, gate_layer, monkeypatch):
    # The same module with every registered implementation off: its options honoured, no fast path run.
    ran = []
    for table in (POOL_IMPLEMENTATIONS, KERNEL_IMPLEMENTATIONS):
        for name, impl in list(table.items()):
            monkeypatch.setitem(table, name, Implementation(impl.applies, lambda *a, _n=name: ran.append(_n)))
    torch.manual_seed(0)
    fast = CraAttn(16, pool_type=pool_type, gate_layer=gate_layer)
    naive = NaiveCraAttn(16, pool_type=pool_type, gate_layer=gate_layer)
    naive.load_state_dict(fast.state_dict())
    for hw in [(28, 28), (10, 13), (5, 5)]:
        x = torch.randn(2, 16, *hw)
        pooled = F.adaptive_max_pool2d(x, 7) if pool_type == 'max' else F.adaptive_avg_pool2d(x, 7)
        torch.testing.assert_close(naive(x), x * fast.gate(fast.conv(pooled)), rtol=0, atol=0)
    assert ran == []


def test_conv_kernel_cra_is_numerically_the_layer():
    torch.manual_seed(0)
    fast = CraAttn(16)
    conv_kernel = ConvKernelCraAttn(16)
    conv_kernel.load_state_dict(fast.state_dict())
    x = torch.randn(2, 16, 14, 14)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), conv_kernel(x), rtol=1e-6, atol=1e-6)
        # ... and is exactly the pre-dot-product inference path: pool, conv2d, sigmoid, product
        expected = x * torch.sigmoid(fast.conv(F.adaptive_max_pool2d(x, 7)))
        torch.testing.assert_close(conv_kernel(x.clone()), expected, rtol=0, atol=0)


def test_swaps_reproduce_timm_models():
    se = swap_attention(timm.create_model('cra_resnet50', device='meta'), ATTENTION_VARIANTS['se'])
    assert _params(se) == _params(timm.create_model('seresnet50', device='meta'))
    base = swap_attention(timm.create_model('cra_resnet50', device='meta'), None)
    assert _params(base) == _params(timm.create_model('resnet50', device='meta'))
    mnv2 = swap_attention(timm.create_model('cra_mobilenetv2_100', device='meta'), None)
    assert _params(mnv2) == _params(timm.create_model('mobilenetv2_100', device='meta'))


def test_saved_activation_bytes_grows_with_batch():
    m = timm.create_model('cra_resnet18', num_classes=4)
    small = saved_activation_bytes(m, torch.randn(1, 3, 64, 64))
    big = saved_activation_bytes(m, torch.randn(4, 3, 64, 64))
    assert 0 < small < big


def test_saved_activation_bytes_releases_the_graph():
    # Regression: packing saved outputs as themselves made grad_fn <-> tensor cycles that kept every
    # activation alive (a bs-32 ResNet-50 benchmark ran out of memory).
    outputs = []
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    m[1].register_forward_hook(lambda mod, inp, out: outputs.append(weakref.ref(out)))
    assert saved_activation_bytes(m, torch.randn(2, 3, 16, 16)) > 0
    assert outputs and outputs[0]() is None


@pytest.mark.slow  # over ~15 s on 2 cores (many processes or epochs): CI step 2
def test_runner_and_report_smoke(tmp_path):
    lines = []
    res = benchmark_models('cra_resnet18', variants=['base', 'cra', 'se'], batch_sizes=[1], modes=['infer', 'train'],
                           settings=['eager', 'channels_last'], img_size=32, rounds=2, warmup=1,
                           train_batch_size=2, log=lines.append)
    assert len(res) == 2 * 2 * 3 and lines
    assert all(r.ratio_min > 0 and r.params > 0 and r.macs > 0 and r.saved_mb > 0 for r in res)
    assert all(r.ratio_min == 1.0 for r in res if r.variant == 'base')
    layers = benchmark_layers([(2, 8, 14, 14)], variants=['cra', 'cra_naive'], rounds=2, warmup=1, log=lines.append)
    assert len(layers) == 2 * 2 * 2 and all(r.ratio_min == 1.0 for r in layers if r.variant == 'cra_naive')
    md = markdown_summary(res + layers, dict(date='d', device='cpu', torch='t', rounds=2))
    assert '| cra_resnet18 | eager | infer | 1 |' in md and '| 8x14x14 | channels_last | train | 2 |' in md
    assert not any(math.isnan(r.ratio_median) for r in res)
    # the JSON the script writes reads back (tools/benchmark_table.py renders the docs' tables from it)
    meta = dict(date='d', device='cpu', torch='t', rounds=2, bf16=False)
    path = tmp_path / 'run.json'
    path.write_text(json.dumps(dict(meta=meta, results=[dataclasses.asdict(r) for r in res + layers])))
    loaded_meta, loaded = load_run(path)
    assert loaded_meta == meta and loaded[:len(res)] == res  # layer rows carry NaN memory: compare names
    assert [r.name for r in loaded[len(res):]] == [r.name for r in layers]


def test_primitives_table():
    res = benchmark_primitives([(2, 4, 14, 14), (1, 4, 14, 14)], rounds=2, warmup=1, log=lambda _: None)
    ops = {r.variant for r in res}
    assert {'mean (SE squeeze)', 'strided window max NCHW', 'x.mul_(gate)', 'CRA training pool channels_last fwd+bwd',
            'CRA 7x7 kernel NCHW'} <= ops
    assert all(r.min_s > 0 and r.setting == 'primitive' for r in res)
    md = markdown_summary(res, dict(date='d', device='cpu', torch='t', rounds=2))
    assert '| operation | 4x14x14 (N=2) | 4x14x14 (N=1) |' in md  # one column per shape and batch size
    mean = [r for r in res if r.variant == 'mean (SE squeeze)']
    assert f'| mean (SE squeeze) | {mean[0].min_s * 1e3:.2f} (1.0) | {mean[1].min_s * 1e3:.2f} (1.0) |' in md and '| CRA 7x7 kernel channels_last fwd+bwd |' in md


def test_cpu_description(tmp_path):
    info = tmp_path / 'cpuinfo'
    info.write_text('processor\t: 0\nmodel name\t: Some CPU 9000\nflags\t\t: fpu sse avx2 avx512f amx_tile\n'
                    'processor\t: 1\nmodel name\t: Some CPU 9000\nflags\t\t: fpu sse avx2 avx512f amx_tile\n')
    assert cpu_description(str(info)) == 'Some CPU 9000 (AVX2, AVX-512, AMX)'
    info.write_text('model name\t: Old CPU\nflags\t\t: fpu sse\n')
    assert cpu_description(str(info)) == 'Old CPU'
    assert cpu_description(str(tmp_path / 'missing'))  # falls back to the platform's name
