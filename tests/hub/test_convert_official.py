"""Official CRA-ResNet-50 checkpoint -> timm: weights_only loading with a named stand-in, key mapping, logits equal
a reference forward."""
import collections
import os
import pickle
import sys
import types

import pytest
import torch
import torch.nn.functional as F

import timm
import timm_cra  # noqa: F401
from timm_cra.hub.convert_official import (
    RecorderMeter, convert_official, convert_official_state_dict, load_official_checkpoint)
from timm_cra.utils.errors import UsageError

STAGES = [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]  # (width, blocks, stride) of ResNet-50
EXPANSION = 4


def _conv(g, out_c, in_c, k, groups=1):
    return torch.randn(out_c, in_c // groups, k, k, generator=g) * (2.0 / (in_c // groups * k * k)) ** 0.5


def _bn(g, c, gamma=1.0):
    return {'weight': gamma * (1 + 0.1 * torch.randn(c, generator=g)), 'bias': 0.1 * torch.randn(c, generator=g),
            'running_mean': 0.1 * torch.randn(c, generator=g), 'running_var': 0.5 + torch.rand(c, generator=g),
            'num_batches_tracked': torch.tensor(100)}


def official_state_dict(seed=0, num_classes=1000):
    """Random CRA-ResNet-50 weights in the official key layout (DataParallel 'module.' prefix)."""
    g = torch.Generator().manual_seed(seed)
    sd = collections.OrderedDict()

    def put(prefix, tensors):
        for k, v in tensors.items():
            sd[f'module.{prefix}.{k}'] = v

    put('basic_conv.0', {'weight': _conv(g, 64, 3, 7)})
    put('basic_conv.1', _bn(g, 64))
    in_c = 64
    for i, (width, blocks, _) in enumerate(STAGES, start=1):
        out_c = width * EXPANSION
        for j in range(blocks):
            p = f'stage_{i}.{j}'
            put(f'{p}.conv1.0', {'weight': _conv(g, width, in_c, 1)})
            put(f'{p}.conv1.1', _bn(g, width))
            put(f'{p}.conv2.0', {'weight': _conv(g, width, width, 3)})
            put(f'{p}.conv2.1', _bn(g, width))
            put(f'{p}.conv3.0', {'weight': _conv(g, out_c, width, 1)})
            put(f'{p}.conv3.1', _bn(g, out_c, gamma=0.2))  # small residual branches: activations stay O(1)
            put(f'{p}.cra.conv_cra', {'weight': 0.2 * torch.randn(out_c, 1, 7, 7, generator=g),
                                      'bias': 0.1 * torch.randn(out_c, generator=g)})
            if j == 0:
                put(f'{p}.shortcut.0', {'weight': _conv(g, out_c, in_c, 1)})
                put(f'{p}.shortcut.1', _bn(g, out_c))
            in_c = out_c
    put('classifier', {'weight': 0.01 * torch.randn(num_classes, in_c, generator=g),
                       'bias': torch.zeros(num_classes)})
    return sd


def reference_forward(sd, x):
    """CRA-ResNet-50 written from the module spec with plain functional ops (eval-mode BN)."""
    w = {k[len('module.'):]: v for k, v in sd.items()}

    def bn(x, p):
        return F.batch_norm(x, w[f'{p}.running_mean'], w[f'{p}.running_var'], w[f'{p}.weight'], w[f'{p}.bias'],
                            training=False, eps=1e-5)

    x = F.relu(bn(F.conv2d(x, w['basic_conv.0.weight'], stride=2, padding=3), 'basic_conv.1'))
    x = F.max_pool2d(x, 3, stride=2, padding=1)
    for i, (_, blocks, stride) in enumerate(STAGES, start=1):
        for j in range(blocks):
            p = f'stage_{i}.{j}'
            s = stride if j == 0 else 1
            y = F.relu(bn(F.conv2d(x, w[f'{p}.conv1.0.weight']), f'{p}.conv1.1'))
            y = F.relu(bn(F.conv2d(y, w[f'{p}.conv2.0.weight'], stride=s, padding=1), f'{p}.conv2.1'))
            y = bn(F.conv2d(y, w[f'{p}.conv3.0.weight']), f'{p}.conv3.1')
            # CRA: 7x7 adaptive max pool -> per-channel weighted sum + bias -> sigmoid -> channel product
            pooled = F.adaptive_max_pool2d(y, 7)
            score = (pooled * w[f'{p}.cra.conv_cra.weight'].squeeze(1)).sum((2, 3)) + w[f'{p}.cra.conv_cra.bias']
            y = y * torch.sigmoid(score)[:, :, None, None]
            shortcut = x
            if j == 0:
                shortcut = bn(F.conv2d(x, w[f'{p}.shortcut.0.weight'], stride=s), f'{p}.shortcut.1')
            x = F.relu(y + shortcut)
    return F.linear(x.mean((2, 3)), w['classifier.weight'], w['classifier.bias'])


class _RecorderMeter:
    """Stand-in for the official metrics.RecorderMeter (training curves)."""

    def __init__(self, epochs):
        self.total_epoch = epochs
        self.epoch_losses = [[0.5, 0.6]] * epochs


@pytest.fixture
def official_checkpoint(tmp_path, monkeypatch):
    fake_metrics = types.ModuleType('metrics')
    _RecorderMeter.__module__ = 'metrics'
    _RecorderMeter.__qualname__ = 'RecorderMeter'
    fake_metrics.RecorderMeter = _RecorderMeter
    monkeypatch.setitem(sys.modules, 'metrics', fake_metrics)
    sd = official_state_dict()
    param = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([param], lr=0.1, momentum=0.9)
    param.grad = torch.ones(2)
    opt.step()
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[30, 60])
    path = tmp_path / 'cra_resnet50_best.pth.tar'
    torch.save({'epoch': 100, 'recorder': _RecorderMeter(3), 'state_dict': sd,
                'optimizer': opt.state_dict(), 'scheduler': sched.state_dict()}, path)
    monkeypatch.delitem(sys.modules, 'metrics')  # loading must not need (or import) it
    return path, sd


def test_weights_only_load_keeps_tensors_and_neutralises_the_recorder(official_checkpoint):
    path, sd = official_checkpoint
    with pytest.raises(pickle.UnpicklingError, match='metrics.RecorderMeter'):  # torch's loader, no allowlist
        torch.load(path, weights_only=True)
    ckpt = load_official_checkpoint(path)
    assert ckpt['epoch'] == 100
    assert type(ckpt['recorder']) is RecorderMeter and ckpt['recorder'].total_epoch == 3  # inert data holder
    assert 'metrics' not in sys.modules
    assert list(ckpt['state_dict']) == list(sd)
    assert all(torch.equal(ckpt['state_dict'][k], v) for k, v in sd.items())


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / 'pwned'

    class Exploit:
        def __reduce__(self):
            return os.system, (f'touch {marker}',)

    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'recorder': Exploit()}, path)
    with pytest.raises(UsageError, match='refused: it needs `posix.system`'):
        load_official_checkpoint(path)
    assert not marker.exists()


def test_mapping_and_logits_match_reference(official_checkpoint, tmp_path):
    path, sd = official_checkpoint
    out = convert_official(path, tmp_path / 'repo')
    assert sorted(os.listdir(out)) == ['README.md', 'config.json', 'model.safetensors']

    model = timm.create_model(f'local-dir:{out}', pretrained=True).eval()
    assert model.pretrained_cfg['tag'] == 'paper_in1k'
    state = model.state_dict()
    expected_pairs = {
        'conv1.weight': 'basic_conv.0.weight', 'bn1.running_var': 'basic_conv.1.running_var',
        'layer1.0.conv1.weight': 'stage_1.0.conv1.0.weight', 'layer3.5.bn2.bias': 'stage_3.5.conv2.1.bias',
        'layer2.0.downsample.0.weight': 'stage_2.0.shortcut.0.weight',
        'layer4.0.downsample.1.running_mean': 'stage_4.0.shortcut.1.running_mean',
        'layer4.2.se.conv.weight': 'stage_4.2.cra.conv_cra.weight', 'layer1.1.se.conv.bias': 'stage_1.1.cra.conv_cra.bias',
        'fc.weight': 'classifier.weight',
    }
    for target, source in expected_pairs.items():
        assert torch.equal(state[target], sd[f'module.{source}']), target
    assert len(state) == len(sd)  # one-to-one: every source tensor used once

    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits, expected = model(x), reference_forward(sd, x)
    assert expected.std() > 0.1  # a meaningful comparison, not two vectors of ~0
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)


def test_leftover_and_missing_keys_are_listed():
    sd = official_state_dict()
    sd['module.extra.weight'] = torch.zeros(1)
    del sd['module.stage_2.1.cra.conv_cra.bias']
    model = timm.create_model('cra_resnet50', device='meta')
    with pytest.raises(ValueError, match=r"not consumed \(1\): \['module.extra.weight'\].*not filled \(1\): "
                                         r"\['layer2.1.se.conv.bias'\]"):
        convert_official_state_dict({'state_dict': sd}, model.state_dict().keys())


def test_convert_refuses_an_out_holding_its_checkpoint_before_any_work(official_checkpoint, tmp_path, capsys):
    """`--out <the checkpoint's folder> --overwrite` replaced that folder, deleting the downloaded checkpoint
    (rc 0); without the flag the message advised --overwrite. Now publish's check (hub.repo.check_repo_output):
    one line, the checkpoint kept, no advice to overwrite."""
    from timm_cra.hub.convert_official import main as convert_main
    from timm_cra.utils.errors import run_cli
    path, _ = official_checkpoint
    before = path.read_bytes()
    for flags in ([], ['--overwrite']):
        with pytest.raises(SystemExit) as e:
            run_cli(convert_main, [str(path), '--out', str(tmp_path)] + flags)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count('\n') == 1, err
        assert f'--out {tmp_path} holds the checkpoint {path}' in err and '--overwrite' not in err
    assert path.read_bytes() == before and os.listdir(tmp_path) == [path.name]


def test_convert_never_takes_results_from_the_current_folder(official_checkpoint, tmp_path, monkeypatch, capsys):
    """`--results` defaulted to `results/cra_resnet50.paper_in1k.json` relative to the current folder: a stray file
    of that name (top-1 error 1.0, "measured") put 99.00% on the card, rc 0, without a word. Only a named file is
    quoted, and the command says which (or that the card has none)."""
    import json
    from timm_cra.hub.convert_official import main as convert_main
    path, _ = official_checkpoint
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'results').mkdir()
    stray = tmp_path / 'results' / 'cra_resnet50.paper_in1k.json'
    stray.write_text(json.dumps({'model': 'cra_resnet50.paper_in1k', 'dataset': 'imagenet-1k', 'split': 'validation',
                                 'top1_err': 1.0, 'top5_err': 0.1, 'source': 'measured', 'notes': 'STRAY'}))
    convert_main([str(path), '--out', 'plain'])
    assert 'no accuracy numbers: pass --results FILE' in capsys.readouterr().out
    assert '99.00' not in (tmp_path / 'plain' / 'README.md').read_text()
    convert_main([str(path), '--out', 'quoted', '--results', str(stray)])
    assert f'quotes the results in {stray}' in capsys.readouterr().out
    assert '99.00' in (tmp_path / 'quoted' / 'README.md').read_text()
