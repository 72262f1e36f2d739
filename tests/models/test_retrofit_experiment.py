"""tools/retrofit_experiment.py: its retrofitted init is what the CIFAR gates-untrained tag loads."""
import importlib.util
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import timm
import timm_cra  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope='module')
def tool():
    spec = importlib.util.spec_from_file_location('retrofit_experiment', ROOT / 'tools' / 'retrofit_experiment.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_init_weights_equal_the_tag_loaded_from_the_same_file(tool, tmp_path, monkeypatch):
    monkeypatch.setattr(tool, 'OUTPUT', tmp_path)
    written = load_file(str(tool.write_init_weights(tool.BIASES[1])))
    tag = timm.create_model('cra_cifar_resnet20.cifar10_gates_untrained', pretrained=True,
                            pretrained_cfg_overlay=dict(file=str(tool.BASE_WEIGHTS)))
    if tool.BIASES[1] != timm_cra.models.DEFAULT_GATE_BIAS:
        timm_cra.models.init_cra_gates(tag, tool.BIASES[1])
    expected = tag.state_dict()
    assert set(written) == set(expected)
    for k, v in expected.items():
        assert torch.equal(written[k], v), k


def test_summary_matches_the_committed_records(tool):
    import json
    summary = tool.summarize()
    for row in summary['finetune']:
        if row['arm'] == 'cra_scratch_15ep':
            continue
        for seed, top1 in zip(row['seeds'], row['final_top1']):
            rec = json.loads((tool.RESULTS / f"{row['arm']}-s{seed}.json").read_text())
            assert rec['final_top1'] == top1 == rec['curve'][-1]['eval_top1']
    assert [r['arm'] for r in summary['init']][0] == 'base'


def test_gate_stats_read_the_constant_gate_of_the_retrofitted_init(tool, tmp_path, monkeypatch):
    # Zero kernel + bias b: every gate is sigmoid(b) whatever the image, and gate_stats (CraAttn's own gates,
    # read on real test images) must say exactly that.
    monkeypatch.setattr(tool, 'OUTPUT', tmp_path)
    b = tool.BIASES[0]
    stats = tool.gate_stats(tool.write_init_weights(b), num_images=4)
    expected = torch.sigmoid(torch.tensor(b)).item()
    assert stats['gate_mean'] == pytest.approx(expected, abs=1e-4) and stats['gate_std'] == 0.0
    assert stats['gate_min'] == pytest.approx(expected, abs=1e-4)
