"""CraAttn against a plain reference formula, its device dispatch (CPU kernels / reference ops), and its timm
constructor interfaces. Every registered implementation against the reference ops: test_cra_implementations.py."""
import contextlib
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from timm.layers import create_attn

from timm_cra.layers import CraAttn, cra_pool
from timm_cra.layers.cra import KERNEL_IMPLEMENTATIONS, POOL_IMPLEMENTATIONS, Implementation, cra_kernel, use_reference
from timm_cra.layers.cra_cpu import map_kernel_infer


def reference_pool(x, size, pool_type):
    """Adaptive pooling written out bin by bin (PyTorch's bin rule: floor(i*H/s) .. ceil((i+1)*H/s))."""
    H, W = x.shape[-2:]
    sh, sw = size
    rows = []
    for i in range(sh):
        h0, h1 = (i * H) // sh, math.ceil((i + 1) * H / sh)
        cols = []
        for j in range(sw):
            w0, w1 = (j * W) // sw, math.ceil((j + 1) * W / sw)
            win = x[:, :, h0:h1, w0:w1].flatten(2)
            cols.append(win.amax(-1) if pool_type == 'max' else win.mean(-1))
        rows.append(torch.stack(cols, -1))
    return torch.stack(rows, -2)


def reference_cra(x, weight, bias, size=(7, 7), pool_type='max'):
    """pool -> per-channel weighted sum of the pooled map + bias -> sigmoid -> channel-wise product."""
    pooled = reference_pool(x, size, pool_type)                       # N, C, sh, sw
    logit = (pooled * weight[:, 0].unsqueeze(0)).sum((-2, -1)) + bias  # N, C
    return x * torch.sigmoid(logit)[:, :, None, None]


# 56/28/14/7: ResNet stages at 224; 3x5: smaller than the pooled size; 10x13, 17x17: not divisible by 7.
SIZES = [(56, 56), (28, 28), (14, 14), (7, 7), (3, 5), (10, 13), (17, 17)]


@pytest.mark.parametrize('fast_paths', [True, False])
@pytest.mark.parametrize('pool_type', ['max', 'avg'])
@pytest.mark.parametrize('hw', SIZES)
def test_cra_matches_reference_forward_backward(hw, pool_type, fast_paths):
    with contextlib.nullcontext() if fast_paths else use_reference():
        _check_against_reference_formula(hw, pool_type)


def _check_against_reference_formula(hw, pool_type):
    torch.manual_seed(0)
    C = 12
    m = CraAttn(C, pool_type=pool_type).double()
    with torch.no_grad():
        m.conv.bias.normal_()
    x = torch.randn(2, C, *hw, dtype=torch.double, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    w_ref = m.conv.weight.detach().clone().requires_grad_(True)
    b_ref = m.conv.bias.detach().clone().requires_grad_(True)

    y = m(x)
    y_ref = reference_cra(x_ref, w_ref, b_ref, pool_type=pool_type)
    torch.testing.assert_close(y, y_ref)

    g = torch.randn_like(y)
    y.backward(g)
    y_ref.backward(g)
    torch.testing.assert_close(x.grad, x_ref.grad)
    torch.testing.assert_close(m.conv.weight.grad, w_ref.grad)
    torch.testing.assert_close(m.conv.bias.grad, b_ref.grad)


def test_cra_channel_gates_are_what_forward_scales_by():
    # The gates callers read (tools/retrofit_experiment.py's gate statistics) are the forward's own.
    torch.manual_seed(0)
    m = CraAttn(12, inplace=True).eval()
    x = torch.randn(2, 12, 14, 14)
    with torch.no_grad():
        gates = m.channel_gates(x)
        logit = (reference_pool(x, (7, 7), 'max') * m.conv.weight[:, 0]).sum((-2, -1)) + m.conv.bias
        torch.testing.assert_close(gates, torch.sigmoid(logit)[:, :, None, None])
        torch.testing.assert_close(m(x.clone()), x * gates, rtol=0, atol=0)


@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('hw', [(112, 112), (56, 56), (28, 28), (14, 14), (10, 13)])
def test_cra_max_pool_ties_route_gradient_like_adaptive_pool(hw, channels_last):
    # After ReLU6 (MobileNetV2) many window maxima tie at 0 or 6: the fast exact-window path must pick
    # the same element as adaptive_max_pool2d does, or gradients would differ from the official op.
    # channels_last: the training kernel, with 1- and 2-byte offsets; NCHW: the reference op.
    torch.manual_seed(0)
    x = F.relu6(torch.randn(2, 8, *hw) * 4)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x1 = x.clone().requires_grad_(True)
    x2 = x.clone().requires_grad_(True)
    g = torch.randn(2, 8, 7, 7)
    cra_pool(x1, (7, 7), 'max').backward(g)
    F.adaptive_max_pool2d(x2, 7).backward(g)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=0, atol=0)


def test_cra_float32_channels_last_matches_contiguous():
    torch.manual_seed(0)
    m = CraAttn(32)
    x = torch.randn(4, 32, 28, 28)
    y = m(x)
    y_cl = m(x.to(memory_format=torch.channels_last))
    assert y_cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y_cl, y)


def test_cra_pool_size_option_sets_kernel_and_params():
    m = CraAttn(16, pool_size=4)
    assert m.conv.kernel_size == (4, 4)
    assert sum(p.numel() for p in m.parameters()) == 16 * 17
    assert m(torch.randn(1, 16, 8, 8)).shape == (1, 16, 8, 8)


def test_cra_gate_layer_option():
    torch.manual_seed(0)
    m = CraAttn(4, gate_layer='hard_sigmoid')
    x = torch.randn(2, 4, 14, 14)
    torch.testing.assert_close(m(x), x * F.hardsigmoid(m.conv(F.adaptive_max_pool2d(x, 7))))


def test_cra_rejects_bad_arguments():
    with pytest.raises(ValueError, match='pool_type'):
        CraAttn(8, pool_type='median')
    with pytest.raises(ValueError, match='pool_size'):
        CraAttn(8, pool_size=0)


def test_cra_accepts_timm_attention_call_signatures():
    # ResNet blocks: create_attn(attn_layer, channels); EfficientNet builder: probe, then ratio + act.
    assert isinstance(create_attn(CraAttn, 64), CraAttn)
    CraAttn(8, rd_ratio=1.0)  # the builder's probe must not raise TypeError
    m = CraAttn(96, rd_ratio=0.25 / 6, act_layer=nn.ReLU6, device='cpu', dtype=torch.float32)
    assert m.conv.weight.shape == (96, 1, 7, 7)


@pytest.mark.parametrize('hw', [(56, 56), (28, 28), (14, 14), (14, 28), (7, 14)])
@pytest.mark.parametrize('relu6', [False, True])
def test_cra_pool_inference_path_equals_max_pool(hw, relu6):
    # No-autograd NCHW fast path: values bit-identical to max_pool2d / adaptive_max_pool2d, NaN propagated.
    torch.manual_seed(0)
    x = torch.randn(2, 6, *hw)
    if relu6:
        x = F.relu6(x * 4)
    x[0, 0, 3, 5] = float('nan')
    with torch.inference_mode():
        fast = cra_pool(x, (7, 7), 'max')
    ref = F.adaptive_max_pool2d(x, 7)
    torch.testing.assert_close(fast, ref, rtol=0, atol=0, equal_nan=True)
    assert torch.isnan(fast[0, 0]).any()
    with torch.no_grad():
        torch.testing.assert_close(cra_pool(x, (7, 7), 'max'), ref, rtol=0, atol=0, equal_nan=True)
    assert x.isnan().sum() == 1  # input untouched


def test_cra_layer_inference_equals_training_forward():
    # Inference reduces the pooled map with dot products, training with conv2d: equal up to summation order.
    torch.manual_seed(0)
    m = CraAttn(8)
    x = torch.randn(2, 8, 28, 28)
    y_grad = m(x.requires_grad_(True))
    with torch.inference_mode():
        y_inf = m(x.detach())
    torch.testing.assert_close(y_inf, y_grad.detach(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('bias', [True, False])
@pytest.mark.parametrize('shape,channels_last', [
    ((1, 96, 7, 7), False), ((32, 64, 7, 7), False),  # NCHW: the dot-product path
    ((1, 256, 7, 7), True), ((32, 256, 7, 7), True),  # channels_last: the reference conv
    ((0, 16, 7, 7), False),  # empty batch
])
def test_cra_inference_kernel_matches_depthwise_conv(shape, channels_last, bias):
    torch.manual_seed(0)
    m = CraAttn(shape[-3], bias=bias)
    x = torch.randn(*shape)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        out = cra_kernel(x, m.conv.weight, m.conv.bias)
        ref = m.conv(x)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_cra_inference_kernel_under_bf16_autocast():
    # Under CPU autocast conv2d runs in bf16 with a bf16 copy of the weight; the dot-product path must match.
    torch.manual_seed(0)
    m = CraAttn(32).eval()
    x = torch.randn(2, 32, 14, 14)
    with torch.inference_mode(), torch.autocast('cpu', dtype=torch.bfloat16):
        pooled = cra_pool(x.bfloat16(), (7, 7), 'max')
        out = map_kernel_infer(pooled, m.conv.weight, m.conv.bias)
        ref = m.conv(pooled)
        y = m(x.bfloat16())
    assert out.dtype == ref.dtype == y.dtype == torch.bfloat16
    torch.testing.assert_close(out, ref, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize('hw', [(28, 28), (7, 7), (10, 13)])
def test_cra_inplace_gates_input_without_autograd(hw):
    torch.manual_seed(0)
    m = CraAttn(8, inplace=True)
    x = torch.randn(2, 8, *hw)
    with torch.no_grad():
        expected = reference_cra(x, m.conv.weight, m.conv.bias)
    xi = x.clone()
    with torch.inference_mode():
        y = m(xi)
    assert y.data_ptr() == xi.data_ptr()  # no activation-sized allocation
    torch.testing.assert_close(y, expected, rtol=1e-6, atol=1e-6)
    # bit-identical to the out-of-place module
    out_of_place = CraAttn(8)
    out_of_place.load_state_dict(m.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(y, out_of_place(x), rtol=0, atol=0)


def test_cra_inplace_is_out_of_place_under_autograd():
    torch.manual_seed(0)
    m = CraAttn(8, inplace=True)
    ref = CraAttn(8)
    ref.load_state_dict(m.state_dict())
    x = torch.randn(2, 8, 14, 14)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya, yb = m(xa), ref(xb)
    torch.testing.assert_close(xa.detach(), x, rtol=0, atol=0)  # input untouched
    g = torch.randn_like(ya)
    ya.backward(g)
    yb.backward(g)
    torch.testing.assert_close(ya, yb, rtol=0, atol=0)
    torch.testing.assert_close(xa.grad, xb.grad, rtol=0, atol=0)
    torch.testing.assert_close(m.conv.weight.grad, ref.conv.weight.grad, rtol=0, atol=0)
    assert 'inplace=True' in repr(m) and 'inplace' not in repr(ref)


def _saved_tensors(fn):
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = fn()
    return out, saved


def test_cra_channels_last_training_saves_small_argmax_offsets_not_int64():
    # Under autograd the channels_last exact-window max pool keeps uint8 offsets from each window's corner; the input it
    # saves is the same storage the product saves. Gradients stay those of max_pool2d (see the reference tests above).
    torch.manual_seed(0)
    m = CraAttn(16)
    x = torch.randn(2, 16, 14, 14).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    y, saved = _saved_tensors(lambda: m(x))
    assert not any(t.dtype == torch.int64 for t in saved)
    offsets = [t for t in saved if t.dtype == torch.uint8]
    assert len(offsets) == 1 and offsets[0].shape == (2, 16, 7, 7) and int(offsets[0].max()) <= 14 + 1
    extra = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in saved
             if t.untyped_storage().data_ptr() != x.untyped_storage().data_ptr()}
    # pooled map (fp32, for the conv's weight grad) + offsets + weight + gate: well below the input's size
    assert sum(extra.values()) < 0.5 * x.numel() * 4
    g = torch.randn_like(y)
    y.backward(g)
    ref = CraAttn(16)
    ref.load_state_dict(m.state_dict())
    xr = x.detach().clone().requires_grad_(True)
    (xr * torch.sigmoid(ref.conv(F.adaptive_max_pool2d(xr, 7)))).backward(g)
    torch.testing.assert_close(x.grad, xr.grad, rtol=0, atol=0)


def test_cra_training_pool_double_backward_matches_max_pool():
    torch.manual_seed(0)
    m = CraAttn(4)
    ref = CraAttn(4)
    ref.load_state_dict(m.state_dict())
    x = torch.randn(2, 4, 14, 14)
    v = torch.randn(2, 4, 14, 14)

    def second_order(layer, forward):
        xi = x.clone().requires_grad_(True)
        (gx,) = torch.autograd.grad(forward(layer, xi).square().sum(), xi, create_graph=True)
        return torch.autograd.grad((gx * v).sum(), layer.conv.weight)[0]

    ours = second_order(m, lambda layer, xi: layer(xi))
    theirs = second_order(ref, lambda layer, xi: xi * torch.sigmoid(layer.conv(F.adaptive_max_pool2d(xi, 7))))
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('bias', [True, False])
@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('hw', [(7, 7), (14, 14)])
def test_cra_training_kernel_grads_equal_depthwise_conv(hw, channels_last, bias):
    # In training the 7x7 kernel's backward is written out elementwise; it must give conv2d's gradients
    # (forward is conv2d itself) and keep the input's memory format for the gradient.
    torch.manual_seed(0)
    m = CraAttn(16, bias=bias)
    ref = CraAttn(16, bias=bias)
    ref.load_state_dict(m.state_dict())
    x = torch.randn(3, 16, *hw)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya = m(xa)
    yb = xb * torch.sigmoid(ref.conv(F.adaptive_max_pool2d(xb, 7)))
    torch.testing.assert_close(ya, yb, rtol=0, atol=0)
    g = torch.randn_like(ya)
    ya.backward(g)
    yb.backward(g)
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(m.conv.weight.grad, ref.conv.weight.grad, rtol=1e-5, atol=1e-6)
    if bias:
        torch.testing.assert_close(m.conv.bias.grad, ref.conv.bias.grad, rtol=1e-5, atol=1e-6)
    assert xa.grad.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def test_cra_training_pool_unbatched_and_empty_inputs():
    # 3-D (C, H, W) and empty batches take the plain kernels; results equal adaptive_max_pool2d.
    x = F.relu6(torch.randn(8, 14, 14) * 4).requires_grad_(True)
    xr = x.detach().clone().requires_grad_(True)
    g = torch.randn(8, 7, 7)
    cra_pool(x, (7, 7), 'max').backward(g)
    F.adaptive_max_pool2d(xr, 7).backward(g)
    torch.testing.assert_close(x.grad, xr.grad, rtol=0, atol=0)
    empty = torch.randn(0, 4, 14, 14, requires_grad=True)
    assert cra_pool(empty, (7, 7), 'max').shape == (0, 4, 7, 7)


def test_cra_module_unbatched_input_train_and_inference():
    # (C, H, W) inputs work like conv2d's unbatched mode, with and without autograd.
    torch.manual_seed(0)
    m = CraAttn(8)
    x = torch.randn(8, 14, 14)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    y = m(xa)
    with torch.inference_mode():
        y_inf = m(x)
    ref = xb * torch.sigmoid(m.conv(F.adaptive_max_pool2d(xb, 7)))
    torch.testing.assert_close(y, ref, rtol=0, atol=0)
    y.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=0, atol=0)
    torch.testing.assert_close(y_inf, ref.detach(), rtol=1e-6, atol=1e-6)


# Device dispatch: the CPU kernels run for eager CPU tensors only, the reference ops everywhere else.

def _spy_cpu_kernels(monkeypatch):
    calls = []
    for table in (POOL_IMPLEMENTATIONS, KERNEL_IMPLEMENTATIONS):
        for name, impl in list(table.items()):
            monkeypatch.setitem(table, name, Implementation(
                impl.applies, lambda *a, _real=impl.run, _name=name: calls.append(_name) or _real(*a)))
    return calls


@pytest.mark.parametrize('grad', [True, False])
def test_cra_meta_device_takes_the_reference_ops(grad, monkeypatch):
    calls = _spy_cpu_kernels(monkeypatch)
    m = CraAttn(16, device='meta')
    x = torch.empty(2, 16, 28, 28, device='meta', requires_grad=grad)
    with torch.set_grad_enabled(grad):
        y = m(x)
        pooled = cra_pool(x, (7, 7), 'max')
    assert y.device.type == 'meta' and y.shape == x.shape and pooled.shape == (2, 16, 7, 7)
    assert calls == []


@pytest.mark.parametrize('grad,channels_last,expected', [
    # Where two idle benchmark runs measured them faster (docs/benchmarks.md): NCHW inference, channels_last training.
    (False, False, ['window_max_nchw', 'dot_product']), (True, True, ['window_max_autograd', 'dot_product_autograd']),
    (True, False, []), (False, True, []),
])
def test_cra_cpu_takes_the_cpu_kernels_unless_switched_off(grad, channels_last, expected, monkeypatch):
    calls = _spy_cpu_kernels(monkeypatch)
    m = CraAttn(16)
    x = torch.randn(2, 16, 28, 28)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(grad)
    with torch.set_grad_enabled(grad):
        m(x)
    assert calls == expected
    with use_reference(), torch.set_grad_enabled(grad):
        m(x)
    assert calls == expected  # no further calls


def test_cra_unbatched_input_takes_the_reference_ops(monkeypatch):
    calls = _spy_cpu_kernels(monkeypatch)
    CraAttn(8)(torch.randn(8, 14, 14))
    assert calls == []
