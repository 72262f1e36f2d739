"""MAC counts include CRA's kernel: one 7x7 dot product per channel per gate (49*C MACs), on every path."""
import timm
import torch

import timm_cra  # noqa: F401
from timm_cra.utils import count_macs, count_params


def test_cra_resnet50_macs_are_resnet50_plus_the_kernels():
    cra, base = timm.create_model('cra_resnet50'), timm.create_model('resnet50')
    gate_channels = 256 * 3 + 512 * 4 + 1024 * 6 + 2048 * 3  # bottleneck outputs, one gate each
    assert count_macs(cra) - count_macs(base) == 49 * gate_channels
    assert count_params(cra) - count_params(base) == 50 * gate_channels


def test_macs_counted_by_flop_counter():
    conv = torch.nn.Conv2d(2, 4, 3, padding=1, bias=False)
    # 4 * 2 * 3 * 3 multiply-adds per output pixel, 5x5 pixels; counted on a meta copy, model untouched
    assert count_macs(conv, (2, 5, 5)) == 4 * 2 * 9 * 25
    assert conv.weight.device.type == 'cpu'
