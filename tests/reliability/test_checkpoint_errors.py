"""``validate --checkpoint`` on broken or unfit weight files: one line naming the problem, exit 2, no traceback."""
import struct

import pytest
import torch
from safetensors.torch import save_file

import timm
import timm_cra  # noqa: F401
from timm_cra.eval.validate import main as validate_main
from timm_cra.utils.errors import run_cli

from ..conftest import REPO_ROOT

SHIPPED = REPO_ROOT / 'data' / 'cifar10'
MODEL = 'cra_cifar_resnet20'


def _validate(capsys, checkpoint, *extra):
    argv = ['--model', MODEL, '--checkpoint', str(checkpoint), '--data-dir', str(SHIPPED), '--split', 'test',
            '--num-samples', '8', '--batch-size', '8', '--workers', '0', '--no-progress', *extra]
    with pytest.raises(SystemExit) as e:
        run_cli(validate_main, argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and err.startswith('error: '), err
    return err


@pytest.fixture(scope='module')
def weights(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('w')
    model = timm.create_model(MODEL)
    save_file(model.state_dict(), str(tmp / 'model.safetensors'))
    return tmp / 'model.safetensors', model.state_dict()


@pytest.mark.parametrize('damage', ['truncated', 'random', 'empty', 'huge_header'])
def test_broken_safetensors(weights, tmp_path, capsys, damage):
    good = weights[0].read_bytes()
    data = {'truncated': good[:len(good) // 2], 'random': torch.randint(0, 256, (4096,), dtype=torch.uint8,
            generator=torch.Generator().manual_seed(0)).numpy().tobytes(), 'empty': b'',
            'huge_header': struct.pack('<Q', 1 << 60) + b'{}'}[damage]
    path = tmp_path / 'model.safetensors'
    path.write_bytes(data)
    err = _validate(capsys, path)
    assert 'not a valid safetensors file' in err and str(path) in err


def test_directory_is_named_as_such(tmp_path, capsys):
    err = _validate(capsys, tmp_path)
    assert 'is a directory' in err and 'does not exist' not in err


def test_missing_file(tmp_path, capsys):
    assert 'does not exist' in _validate(capsys, tmp_path / 'nope.pth')


@pytest.mark.parametrize('suffix', ['.pth', '.safetensors'])
def test_state_dict_mismatch_names_the_keys(weights, tmp_path, capsys, suffix):
    state = dict(weights[1])
    del state['conv1.weight']
    state['extra.weight'] = torch.zeros(1)
    path = tmp_path / f'w{suffix}'
    torch.save(state, path) if suffix == '.pth' else save_file(state, str(path))
    err = _validate(capsys, path, '--num-classes', '5')  # checkpoint has 10 classes
    assert 'missing keys: conv1.weight' in err and 'unexpected keys: extra.weight' in err
    assert 'size mismatch: fc.weight (10, 64) vs model (5, 64)' in err and '--num-classes' in err


def test_integer_tensors_for_float_params_refused(weights, tmp_path, capsys):
    state = {k: (v.to(torch.int8) if k == 'fc.weight' else v) for k, v in weights[1].items()}
    save_file(state, str(tmp_path / 'q.safetensors'))
    err = _validate(capsys, tmp_path / 'q.safetensors')
    assert 'integer tensors for float parameters: fc.weight (torch.int8)' in err


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_precision_is_upcast(weights, tmp_path, dtype):
    from timm_cra.utils.weights import load_model_weights
    state = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in weights[1].items()}
    save_file(state, str(tmp_path / 'h.safetensors'))
    model = timm.create_model(MODEL)
    load_model_weights(model, str(tmp_path / 'h.safetensors'))
    assert model.fc.weight.dtype == torch.float32
    assert torch.equal(model.fc.weight, state['fc.weight'].float())


def test_use_ema_without_ema_weights_is_refused(weights, tmp_path, capsys):
    """--use-ema on a checkpoint without EMA weights scored the plain weights, said nowhere (exit 0)."""
    from timm_cra.utils.weights import load_model_weights
    plain = {k: v.clone() for k, v in weights[1].items()}
    torch.save({'state_dict': plain, 'epoch': 1}, tmp_path / 'last.pth')
    for path in (tmp_path / 'last.pth', weights[0]):
        err = _validate(capsys, path, '--use-ema')
        assert f"--use-ema: '{path}' holds no EMA weights ('state_dict_ema'" in err and 'drop --use-ema' in err, err
    ema = {k: (v + 1 if v.is_floating_point() else v) for k, v in plain.items()}
    torch.save({'state_dict': plain, 'state_dict_ema': ema, 'epoch': 1}, tmp_path / 'ema.pth')
    model = timm.create_model(MODEL)
    load_model_weights(model, str(tmp_path / 'ema.pth'), use_ema=True)
    assert torch.equal(model.fc.weight, ema['fc.weight'])


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_use_ema_without_a_checkpoint_is_refused(run_command, tmp_path):
    """--use-ema without --checkpoint was ignored: validate scored the model's own weights and said nowhere (exit 0).
    validate and export refuse it alike, before any work."""
    validate = ['--data-dir', SHIPPED, '--split', 'test', '--num-samples', '8', '--workers', '0', '--no-progress',
                '--results-file', tmp_path / 'r.json']
    for command, argv in (('timm-cra-validate', validate), ('timm-cra-export', ['-o', tmp_path / 'm.onnx'])):
        r = run_command(command, ['--model', MODEL, '--use-ema', *argv])
        last = (r.stderr.strip().splitlines() or [''])[-1]
        assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr[-2000:]
        assert last.startswith('error: --use-ema takes the EMA weights of a --checkpoint, and none is given') \
            and 'drop --use-ema' in last, last
    assert not any(tmp_path.iterdir())


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_validate_results_name_the_checkpoint_scored(weights, run_command, tmp_path):
    """validate --checkpoint X wrote only "pretrained": false, as for random weights: the results name the file and
    its sha256 (the bytes scored), and which of its weights."""
    import hashlib
    import json
    data = ['--data-dir', SHIPPED, '--split', 'test', '--num-samples', '8', '--workers', '0', '--no-progress']
    r = run_command('timm-cra-validate', ['--model', MODEL, '--checkpoint', weights[0], *data,
                                          '--results-file', tmp_path / 'r.json'])
    assert r.returncode == 0, r.stderr[-2000:]
    results = json.loads((tmp_path / 'r.json').read_text())
    assert results['checkpoint'] == str(weights[0]) and results['checkpoint_weights'] == 'state_dict'
    assert results['checkpoint_sha256'] == hashlib.sha256(weights[0].read_bytes()).hexdigest()
    assert results['pretrained'] is False  # the checkpoint replaced every tensor; no pretrained weights were scored
    r = run_command('timm-cra-validate', ['--model', MODEL, *data, '--results-file', tmp_path / 'n.json'])
    assert r.returncode == 0 and 'checkpoint' not in json.loads((tmp_path / 'n.json').read_text()), r.stderr[-2000:]
