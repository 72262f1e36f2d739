"""scripts/publish.py: checkpoint + results -> repo folder (dry run); --push without a token fails clearly."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import timm
import timm_cra  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / 'scripts'))
import publish  # noqa: E402


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    torch.manual_seed(0)
    tmp = tmp_path_factory.mktemp('ckpt')
    model = timm.create_model('cra_mobilenetv2_050', num_classes=5)
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    ckpt = tmp / 'model_best.pth.tar'
    torch.save({'epoch': 3, 'arch': 'cra_mobilenetv2_050', 'state_dict': model.state_dict(),
                'state_dict_ema': ema, 'optimizer': {}, 'version': 2}, ckpt)
    results = tmp / 'results.json'
    results.write_text(json.dumps({'model': 'cra_mobilenetv2_050', 'top1': 61.25, 'top5': 90.5,
                                   'dataset': 'cifar10', 'split': 'test', 'img_size': 224}))
    return ckpt, results, model.state_dict(), ema


def test_dry_run_writes_loadable_folder(trained, tmp_path, capsys):
    ckpt, results, _, ema = trained
    out = tmp_path / 'repo'
    publish.main(['cra_mobilenetv2_050.test_c5', str(ckpt), '--results', str(results), '--num-classes', '5',
                  '--out', str(out)])
    assert 'Dry run: not pushed' in capsys.readouterr().out
    loaded = timm.create_model(f'local-dir:{out}', pretrained=True)
    for k, v in ema.items():  # EMA weights preferred, as timm's trainer evaluates them
        assert torch.equal(loaded.state_dict()[k], v), k
    assert 'value: 61.25' in (out / 'README.md').read_text()
    assert not list(out.glob('*.bin')) and not list(out.glob('*.pth*'))  # safetensors only


def test_no_ema_and_safetensors_input(trained, tmp_path):
    ckpt, _, plain, _ = trained
    out = tmp_path / 'repo'
    publish.main(['cra_mobilenetv2_050.test_c5', str(ckpt), '--num-classes', '5', '--no-ema', '--out', str(out)])
    st = tmp_path / 'w.safetensors'
    save_file(dict(plain), str(st))
    publish.main(['cra_mobilenetv2_050.test_c5', str(st), '--num-classes', '5', '--out', str(out), '--overwrite'])
    loaded = timm.create_model(f'local-dir:{out}', pretrained=True)
    for k, v in plain.items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_wrong_architecture_is_named(trained, tmp_path):
    ckpt, *_ = trained
    with pytest.raises(SystemExit, match=r'does not fit cra_mobilenetv2_050.*--num-classes'):
        publish.main(['cra_mobilenetv2_050.x', str(ckpt), '--out', str(tmp_path / 'r')])  # 1000 vs 5 classes
    assert not (tmp_path / 'r').exists()


def test_push_without_token_fails_before_network(trained, tmp_path, monkeypatch):
    from huggingface_hub import constants
    ckpt, *_ = trained
    monkeypatch.delenv('HF_TOKEN', raising=False)
    monkeypatch.setattr(constants, 'HF_TOKEN_PATH', str(tmp_path / 'no-token'))
    monkeypatch.setattr(constants, 'HF_STORED_TOKENS_PATH', str(tmp_path / 'no-tokens'))
    with pytest.raises(SystemExit, match=r'hf auth login.*HF_TOKEN'):
        publish.main(['cra_mobilenetv2_050.test_c5', str(ckpt), '--num-classes', '5', '--out', str(tmp_path / 'r'),
                      '--push'])
    assert (tmp_path / 'r' / 'model.safetensors').is_file()  # the dry-run part still happened


def test_cli_runs_as_script(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / 'scripts' / 'publish.py'), '--help'],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and '--push' in proc.stdout
