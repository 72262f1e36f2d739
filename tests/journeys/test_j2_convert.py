"""Journey J2: the official CRA-ResNet-50 checkpoint -> ``python -m timm_cra.hub.convert_official`` -> timm.

The checkpoint is built here the way the official code (github.com/syt2/CRA, ``train.py``) saves one: a model
with the official module tree and attribute names (``basic_conv``, ``stage_<i>``, ``conv1..3`` Sequentials,
``cra.conv_cra``, ``shortcut``, ``classifier``), wrapped in DataParallel (``module.`` keys), a
``metrics.RecorderMeter`` of numpy arrays, SGD momentum state and a MultiStepLR state, saved with plain
``torch.save``. The module tree below is written from the official model definition, independently of the
converter's key rules; the converted timm model must give the same float64 logits.
"""
import os
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import timm
import timm_cra  # noqa: F401

from ..conftest import REPO_ROOT


class CRA(nn.Module):  # official: adaptive max pool to 7x7 -> depthwise 7x7 conv -> sigmoid -> scale
    def __init__(self, channels, pooling_size=7):
        super().__init__()
        self.pooling_size = pooling_size
        self.conv_cra = nn.Conv2d(channels, channels, pooling_size, groups=channels, bias=True)

    def forward(self, x):
        return x * torch.sigmoid(self.conv_cra(F.adaptive_max_pool2d(x, self.pooling_size)))


def _conv_bn(cin, cout, k, stride=1, relu=True):
    layers = [nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, *([nn.ReLU(inplace=True)] if relu else []))


class Bottleneck(nn.Module):
    def __init__(self, cin, mid, cout, stride=1):
        super().__init__()
        self.conv1 = _conv_bn(cin, mid, 1)
        self.conv2 = _conv_bn(mid, mid, 3, stride)
        self.conv3 = _conv_bn(mid, cout, 1, relu=False)
        self.cra = CRA(cout)
        self.shortcut = nn.Sequential() if cin == cout else _conv_bn(cin, cout, 1, stride, relu=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.cra(self.conv3(self.conv2(self.conv1(x)))) + self.shortcut(x))


class OfficialResNet(nn.Module):  # the official class is named `resnet`; ResNet(depth=50) builds [3, 4, 6, 3]
    def __init__(self, num_classes=1000, blocks=(3, 4, 6, 3)):
        super().__init__()
        self.basic_conv = nn.Sequential(nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(64),
                                        nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2, padding=1))
        cin = 64
        for i, (mid, n) in enumerate(zip((64, 128, 256, 512), blocks), start=1):
            stage = [Bottleneck(cin, mid, mid * 4, stride=1 if i == 1 else 2)]
            stage += [Bottleneck(mid * 4, mid, mid * 4) for _ in range(n - 1)]
            setattr(self, f'stage_{i}', nn.Sequential(*stage))
            cin = mid * 4
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(2048, num_classes)

    def forward(self, x):
        x = self.basic_conv(x)
        for i in range(1, 5):
            x = getattr(self, f'stage_{i}')(x)
        return self.classifier(self.gap(x).flatten(1))


class RecorderMeter:
    """Like the official ``metrics.RecorderMeter``: training curves in numpy float32 arrays."""

    def __init__(self, total_epoch):
        self.total_epoch = total_epoch
        self.current_epoch = 0
        self.epoch_losses = np.zeros((total_epoch, 2), dtype=np.float32) - 1
        self.epoch_accuracy = np.zeros((total_epoch, 2), dtype=np.float32)

    def update(self, idx, train_loss, train_acc, val_loss, val_acc):
        self.epoch_losses[idx] = train_loss, val_loss
        self.epoch_accuracy[idx] = train_acc, val_acc
        self.current_epoch = idx + 1


def _official_model(seed=0):
    torch.manual_seed(seed)
    model = OfficialResNet()
    g = torch.Generator().manual_seed(seed + 1)
    for name, m in model.named_modules():
        if isinstance(m, nn.BatchNorm2d):  # random statistics so every BN (and so every CRA gate) matters
            c = m.num_features
            gamma = 0.2 if name.endswith('conv3.1') else 1.0  # small residual branches keep activations O(1)
            m.weight.data = gamma * (1 + 0.1 * torch.randn(c, generator=g))
            m.bias.data = 0.1 * torch.randn(c, generator=g)
            m.running_mean = 0.1 * torch.randn(c, generator=g)
            m.running_var = 0.5 + torch.rand(c, generator=g)
        elif isinstance(m, CRA):
            m.conv_cra.weight.data = 0.2 * torch.randn(m.conv_cra.weight.shape, generator=g)
            m.conv_cra.bias.data = 0.1 * torch.randn(m.conv_cra.bias.shape, generator=g)
    model.classifier.weight.data *= 0.1
    return model


@pytest.fixture(scope='module')
def official(tmp_path_factory):
    """(path of the official-style checkpoint, the official model)."""
    model = _official_model()
    parallel = nn.DataParallel(model)  # the official train.py wraps in DataParallel: keys get 'module.'
    optimizer = torch.optim.SGD(parallel.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[30, 60, 90], gamma=0.1)
    parallel.train()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    saved_bn = {k: v.clone() for k, v in model.state_dict().items() if 'running' in k or 'num_batches' in k}
    F.cross_entropy(parallel(x), torch.tensor([1, 2])).backward()
    optimizer.step()  # momentum buffers in the optimizer state
    scheduler.step()
    model.load_state_dict({**model.state_dict(), **saved_bn})  # keep the random eval statistics
    fake_metrics = types.ModuleType('metrics')
    RecorderMeter.__module__ = 'metrics'
    fake_metrics.RecorderMeter = RecorderMeter
    recorder = RecorderMeter(100)
    recorder.update(0, 6.2, 1.5, 5.9, 2.1)
    path = tmp_path_factory.mktemp('official') / 'cra_resnet50_best.pth.tar'
    sys.modules['metrics'] = fake_metrics
    try:
        torch.save({'epoch': 1, 'recorder': recorder, 'state_dict': parallel.state_dict(),
                    'optimizer': optimizer.state_dict(), 'scheduler': scheduler.state_dict()}, path)
    finally:
        del sys.modules['metrics']
    return path, model.eval()


def _cli(args, cwd):
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS='1', HF_HUB_OFFLINE='1')
    return subprocess.run([sys.executable, '-m', 'timm_cra.hub.convert_official', *map(str, args)], cwd=str(cwd),
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_j2_convert_official_checkpoint_logits_match(official, tmp_path):
    path, model = official
    needed = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    assert 'metrics.RecorderMeter' in needed and any(g.endswith('multiarray._reconstruct') for g in needed)
    with pytest.raises(Exception, match='metrics.RecorderMeter'):  # torch's loader without the stand-in
        torch.load(path, weights_only=True)
    out = tmp_path / 'cra_resnet50.paper_in1k'
    proc = _cli([path, '--out', out], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'metrics' not in sys.modules

    converted = timm.create_model(f'local-dir:{out}', pretrained=True).eval().double()
    reference = model.double()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    with torch.no_grad():
        expected, got = reference(x), converted(x)
    assert expected.std() > 0.1  # logits that carry signal, not a vector of ~0
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)

    # ImageNet-1k class names (timm's WordNet ids, with descriptions) at the config's root: transformers reads
    # the converted folder with the same labels and logits.
    from tests.hub.clients import transformers_model
    from timm.data import ImageNetInfo
    assert list(converted.pretrained_cfg['label_names']) == ImageNetInfo().label_names()
    hf = transformers_model(out)
    assert hf.config.id2label[0] == 'n01440764' and hf.config.num_labels == 1000
    with torch.no_grad():
        torch.testing.assert_close(hf(pixel_values=x.float()).logits.double(), expected, rtol=1e-4, atol=1e-4)

    # The gates matter: zeroing the CRA biases changes the logits (so the comparison covers them).
    with torch.no_grad():
        for m in reference.modules():
            if isinstance(m, CRA):
                m.conv_cra.bias.zero_()
        assert not torch.allclose(reference(x), expected, rtol=1e-6, atol=1e-6)
