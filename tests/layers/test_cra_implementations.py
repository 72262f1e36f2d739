"""Every registered implementation of CRA's two primitives (``timm_cra.layers.cra``) against the reference.

Each implementation runs alone (every other one switched off, so its predicate and function are tested on their
own), inside the full module, over pool types, gate layers, sizes 7 divides and does not (and a map smaller than
the pooled size), batch 1 and 3, NCHW and channels_last, with and without autograd: output, input gradient and
parameter gradients equal the reference ops' (float64). Inputs are small integers, so max pooling has many tied
maxima, which every implementation must route like ``adaptive_max_pool2d``. Each implementation must apply in at
least one of these cases, so a registered entry is never left untested.
"""
import contextlib
import functools
import itertools

import pytest
import torch

from timm_cra.layers import CraAttn
from timm_cra.layers.cra import KERNEL_IMPLEMENTATIONS, POOL_IMPLEMENTATIONS, Implementation, use_reference

REGISTERED = {**POOL_IMPLEMENTATIONS, **KERNEL_IMPLEMENTATIONS}
C = 4
SIZES = [(7, 7), (14, 14), (8, 8), (10, 10), (32, 32), (5, 5), (14, 21)]
GATES_BATCHES = list(itertools.product(['sigmoid', 'hard_sigmoid'], [1, 3]))


def _cases():
    """Every pool type, size, layout and autograd mode; gate layer and batch size rotate so that each layout and
    mode meets each of their combinations."""
    for i, (pool_type, hw, channels_last, grad) in enumerate(
            itertools.product(['max', 'avg'], SIZES, [False, True], [True, False])):
        gate, batch = GATES_BATCHES[(i + i // 4) % 4]
        yield pool_type, gate, hw, batch, channels_last, grad


CASES = list(_cases())


def _case_id(case):
    pool_type, gate, hw, batch, channels_last, grad = case
    layout, mode = 'cl' if channels_last else 'nchw', 'train' if grad else 'infer'
    return f'{pool_type}-{gate}-{hw[0]}x{hw[1]}-n{batch}-{layout}-{mode}'


def _run(case, in_size=None, ties=True):
    """Forward (and backward under autograd) of one CraAttn in float64: (output, x.grad, weight.grad, bias.grad)."""
    pool_type, gate, hw, batch, channels_last, grad = case
    gen = torch.Generator().manual_seed(0)
    m = CraAttn(C, pool_type=pool_type, gate_layer=gate).double()
    with torch.no_grad():
        m.conv.weight.copy_(torch.randn(m.conv.weight.shape, generator=gen, dtype=torch.double) * 0.3)
        m.conv.bias.copy_(torch.randn(C, generator=gen, dtype=torch.double))
    m.in_size = in_size
    x = torch.randint(-3, 4, (batch, C) + hw, generator=gen).double()  # small integers: tied maxima
    if not ties:
        x += torch.rand(x.shape, generator=gen, dtype=torch.double) * 0.1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(grad)
    with torch.set_grad_enabled(grad):
        y = m(x)
    if not grad:
        return y, None, None, None
    y.backward(torch.randn(y.shape, generator=gen, dtype=torch.double))
    return y.detach(), x.grad, m.conv.weight.grad, m.conv.bias.grad


@functools.lru_cache(maxsize=None)
def _reference(case, ties=True):
    with use_reference():
        return _run(case, ties=ties)


def _spy(monkeypatch):
    """Record the name of every registered implementation that runs."""
    calls = []
    for table in (POOL_IMPLEMENTATIONS, KERNEL_IMPLEMENTATIONS):
        for name, impl in list(table.items()):
            run = functools.partial(lambda real, n, *a: calls.append(n) or real(*a), impl.run, name)
            monkeypatch.setitem(table, name, Implementation(impl.applies, run))
    return calls


@pytest.mark.parametrize('name', sorted(REGISTERED) + ['all registered'])
def test_implementation_equals_reference(name, monkeypatch):
    calls = _spy(monkeypatch)
    others = [n for n in REGISTERED if n != name] if name in REGISTERED else []
    in_size = name == 'static_windows'  # that implementation applies where the caller fixes the input size
    # ... and is for export (inference): amax over overlapping windows splits a tie's gradient, where
    # adaptive_max_pool2d routes it to the first maximum. Its gradients are compared on inputs without ties.
    ties = name != 'static_windows'
    applied = []
    for case in CASES:
        del calls[:]
        with use_reference(*others) if others else contextlib.nullcontext():
            out = _run(case, in_size=case[2] if in_size else None, ties=ties)
        if name in REGISTERED and name not in calls:
            continue
        applied.append(_case_id(case))
        for got, want, what in zip(out, _reference(case, ties), ('output', 'input grad', 'weight grad', 'bias grad')):
            if want is None:
                assert got is None
                continue
            torch.testing.assert_close(got, want, msg=lambda m: f'{name}, {_case_id(case)}, {what}: {m}')
    assert applied, f'{name} applied in none of the cases: add a case where its predicate holds'


@pytest.mark.parametrize('name', sorted(REGISTERED))
def test_implementation_gradcheck(name, monkeypatch):
    # Numerical against analytical gradients of the module with this implementation alone (random inputs: no
    # ties), input and parameters; implementations that only run without autograd have nothing to check.
    calls = _spy(monkeypatch)
    others = [n for n in REGISTERED if n != name]
    for hw, pool_type, channels_last in itertools.product([(14, 14), (7, 7), (10, 10)], ['max', 'avg'], [False, True]):
        gen = torch.Generator().manual_seed(0)
        m = CraAttn(2, pool_type=pool_type).double()
        if name == 'static_windows':
            m.in_size = hw
        x = torch.randn((1, 2) + hw, generator=gen, dtype=torch.double)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x.requires_grad_(True)
        del calls[:]
        with use_reference(*others):
            m(x)
            if name not in calls:
                continue
            w = m.conv.weight.detach().clone().requires_grad_(True)
            b = m.conv.bias.detach().clone().requires_grad_(True)
            assert torch.autograd.gradcheck(lambda x, w, b: _functional(m, x, w, b), (x, w, b), fast_mode=True)
        return
    # It ran on no input that needs grad: right only for the entries without a backward (never chosen then).
    assert name in _NO_AUTOGRAD, f'{name} ran under autograd in none of the cases: add one where its predicate holds'


#: Entries whose predicate requires no autograd (they have no backward of their own).
_NO_AUTOGRAD = {'dot_product', 'window_max_nchw'}


def _functional(m, x, w, b):
    """``m(x)`` with weight ``w`` and bias ``b`` as differentiable inputs."""
    return torch.func.functional_call(m, {'conv.weight': w, 'conv.bias': b}, (x,))


def test_use_reference_rejects_unknown_names():
    with pytest.raises(ValueError, match='no registered implementation'):
        with use_reference('no_such_kernel'):
            pass
