"""Checkpoint integrity: corrupt tensor bytes are detected (never silently resumed), a failed write says so in
one line and leaves the previous ``last.pth`` intact, temp files of killed writes are cleaned at the next start."""
import errno
import os
import resource
import signal
import subprocess
import sys
import zipfile

import pytest
import torch

from timm_cra.train import train
from timm_cra.train.checkpoint import CheckpointSaveError
from timm_cra.utils.errors import UsageError
from timm_cra.utils.weights import load_checkpoint_file

from ..conftest import REPO_ROOT, TINY_MODEL

SHIPPED = REPO_ROOT / 'data' / 'cifar10'
TINY_TRAIN = TINY_MODEL + ['--config', 'cifar', '--data-dir', str(SHIPPED), '--train-split', 'test',
                           '--train-num-samples', '16', '--val-split', '', '--batch-size', '8', '--no-plot']


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
    """A real 1-epoch run of the trainer (its last.pth is what the tests damage)."""
    out = tmp_path_factory.mktemp('integrity')
    train(TINY_TRAIN + ['--epochs', '1', '--output', str(out), '--experiment', 'r'])
    return out / 'r'


def _copy(run_dir, tmp_path):
    dst = tmp_path / 'r'
    dst.mkdir()
    for name in ('last.pth', 'config.json'):
        (dst / name).write_bytes((run_dir / name).read_bytes())
    return dst


def test_flipped_bytes_inside_a_tensor_are_not_resumed(run_dir, tmp_path):
    run = _copy(run_dir, tmp_path)
    path = run / 'last.pth'
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if '/data/' in i.filename), key=lambda i: i.file_size)
        with open(path, 'rb') as f:  # data offset = local header (30 bytes + name + extra) after header_offset
            f.seek(info.header_offset + 26)
            name_len, extra_len = int.from_bytes(f.read(2), 'little'), int.from_bytes(f.read(2), 'little')
    start = info.header_offset + 30 + name_len + extra_len + info.file_size // 2
    data = bytearray(path.read_bytes())
    data[start:start + 8] = bytes(b ^ 0xFF for b in data[start:start + 8])
    path.write_bytes(bytes(data))
    with pytest.raises(UsageError, match='corrupt'):
        load_checkpoint_file(str(path))
    with pytest.raises(UsageError, match='corrupt'):
        train(TINY_TRAIN + ['--epochs', '2', '--output', str(tmp_path), '--experiment', 'r', '--resume', str(path)])


def test_changed_tensor_values_fail_the_recorded_sha256(run_dir, tmp_path):
    ckpt = torch.load(run_dir / 'last.pth', weights_only=True)
    key = next(k for k, v in ckpt['optimizer']['state'][0].items() if isinstance(v, torch.Tensor))
    ckpt['optimizer']['state'][0][key].view(-1)[0] += 1e-3  # a valid file whose tensors were altered
    torch.save(ckpt, tmp_path / 'last.pth')
    with pytest.raises(UsageError, match=r"corrupt: its 'optimizer' tensors do not match the sha256"):
        load_checkpoint_file(str(tmp_path / 'last.pth'))


def test_stale_temp_files_removed_at_the_next_start(run_dir, tmp_path):
    run = _copy(run_dir, tmp_path)
    # the names killed writes leave: prefix, 8 random hex digits, suffix
    (run / '.tmp-0a1b2c3d.pth').write_bytes(b'half a checkpoint')
    (run / '.metrics.csv.0a1b2c3d.tmp').write_text('epoch,tr')  # a killed metrics.csv write
    (run / '.export-0a1b2c3d.tmp').mkdir()  # a killed export's staging folder
    (run / '.export-0a1b2c3d.tmp' / 'model.safetensors').write_bytes(b'half')
    (run / '.tmp-notours.txt').write_text('kept')
    (run / '.tmp-my.notes.pth').write_text('kept')  # the user's, not a temp name: kept
    (run / '.metrics.csv.v2.0a1b2c3d.tmp').write_text('kept')  # another target's (metrics.csv.v2) temp: kept
    summary = train(TINY_TRAIN + ['--epochs', '2', '--output', str(tmp_path), '--experiment', 'r',
                                  '--resume', str(run / 'last.pth')])
    assert summary['epochs'] == 2
    assert sorted(p.name for p in run.iterdir() if p.name.startswith('.')) == [
        '.metrics.csv.v2.0a1b2c3d.tmp', '.tmp-my.notes.pth', '.tmp-notours.txt']


def test_disk_full_during_save_is_one_line_and_keeps_previous(run_dir, tmp_path, monkeypatch):
    from timm_cra.train import checkpoint
    run = _copy(run_dir, tmp_path)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint.torch, 'save', full)
    with pytest.raises(CheckpointSaveError) as e:
        train(TINY_TRAIN + ['--epochs', '2', '--output', str(tmp_path), '--experiment', 'r',
                            '--resume', str(run / 'last.pth')])
    msg = str(e.value)
    assert '\n' not in msg and 'No space left on device' in msg and str(run / 'last.pth') in msg
    assert 'previous' in msg and 'intact' in msg
    monkeypatch.undo()
    assert load_checkpoint_file(str(run / 'last.pth'))['epoch'] == 1
    assert sorted(p.name for p in run.glob('.tmp-*')) == []


def _limit_file_size():
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))  # 1 MiB: metrics/args fit, a checkpoint not
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG instead of killing


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_file_size_limit_cli_reports_one_line(run_dir, tmp_path):
    run = _copy(run_dir, tmp_path)
    before = (run / 'last.pth').read_bytes()
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS='1', HF_HUB_OFFLINE='1')
    proc = subprocess.run(
        [sys.executable, '-m', 'timm_cra.train'] + TINY_TRAIN
        + ['--epochs', '2', '--output', str(tmp_path), '--experiment', 'r', '--resume', str(run / 'last.pth')],
        env=env, capture_output=True, text=True, timeout=180, preexec_fn=_limit_file_size)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert 'Traceback' not in proc.stderr
    assert last.startswith('error: Saving the checkpoint failed') and 'File too large' in last, last
    assert 'intact' in last
    assert (run / 'last.pth').read_bytes() == before
    assert load_checkpoint_file(str(run / 'last.pth'))['epoch'] == 1
    assert not list(run.glob('.tmp-*'))


def _tampered(run_dir, tmp_path, **fields):
    """The run's real last.pth with plain fields (outside its sha256 record) rewritten, as an editor would."""
    tmp_path.mkdir(exist_ok=True)
    run = _copy(run_dir, tmp_path)
    ckpt = torch.load(run / 'last.pth', weights_only=True)
    ckpt.update(fields)
    torch.save(ckpt, run / 'last.pth')
    return run / 'last.pth'


@pytest.mark.parametrize('fields, expected', [
    (dict(epoch=-3), "its 'epoch' (-3) and 'num_updates' (2) must be counts"),
    (dict(epoch=10 ** 12), "its 'epoch' 1000000000000 does not match its history of 1 epochs"),
    (dict(epoch=1.0), "its 'epoch' (1.0) and 'num_updates' (2) must be counts"),
    (dict(num_updates=7), "its 'num_updates' 7 does not match its history's 2"),
    (dict(history='x'), "its 'history' is not a list of per-epoch rows"),
])
def test_tampered_progress_counters_are_not_resumed(run_dir, tmp_path, fields, expected):
    """epoch=-3 resumed with negative learning rates and exit 0; epoch=10**12 as a run of that many epochs."""
    path = _tampered(run_dir, tmp_path, **fields)
    with pytest.raises(UsageError) as e:
        train(TINY_TRAIN + ['--epochs', '2', '--output', str(tmp_path), '--experiment', 'r', '--resume', str(path)])
    assert expected in str(e.value) and 'edited or damaged' in str(e.value) and '\n' not in str(e.value)


def test_a_base_rate_edited_in_the_plain_args_is_not_resumed(run_dir, tmp_path):
    """last.pth's args.lr edited to 0.1 and --lr 0.1 given: resumed (rc 0) on the saved 0.05 schedule while
    args.yaml recorded 0.1. The rate is checked against the optimizer groups' initial_lr, which the schedule uses."""
    ckpt = torch.load(run_dir / 'last.pth', weights_only=True)
    base = ckpt['optimizer']['param_groups'][0]['initial_lr']
    path = _tampered(run_dir, tmp_path, args=dict(ckpt['args'], lr=base * 2))
    with pytest.raises(UsageError) as e:
        train(TINY_TRAIN + ['--epochs', '2', '--output', str(tmp_path), '--experiment', 'r', '--resume', str(path),
                            '--lr', str(base * 2)])
    assert f"initial_lr={base!r}, not the run's --lr {base * 2!r}" in str(e.value) and 'edited or damaged' in \
        str(e.value), e.value


@pytest.mark.parametrize('version, expected', [
    (99, "records checkpoint version 99, written by a newer timm-cra than this one (which reads versions 1 to 2)"),
    ('2', "records checkpoint version '2', not one this trainer writes (1 to 2), so it was edited or damaged"),
    (True, "records checkpoint version True, not one this trainer writes"),
])
def test_a_checkpoint_version_this_trainer_does_not_read_is_not_resumed(run_dir, tmp_path, version, expected):
    """A last.pth recording version 99 (a later trainer's format) resumed without a word, as if it were this one's."""
    path = _tampered(run_dir, tmp_path, version=version)
    with pytest.raises(UsageError) as e:
        train(TINY_TRAIN + ['--epochs', '2', '--output', str(tmp_path), '--experiment', 'r', '--resume', str(path)])
    assert expected in str(e.value) and '\n' not in str(e.value), e.value


@pytest.mark.parametrize('edit, expected', [
    (lambda c: dict(rng='x'), "its 'rng' entry cannot be restored (TypeError"),
    (lambda c: dict(rng=dict(c['rng'], torch=torch.zeros(7, dtype=torch.uint8))), "its 'rng' entry cannot be restored"),
    (lambda c: dict(rng=dict(c['rng'], torch=[1, 2])), "its 'rng' entry cannot be restored (TypeError"),
    (lambda c: dict(rng=dict(c['rng'], python=(3, (1, 2), None))), "its 'rng' entry cannot be restored (ValueError"),
    (lambda c: dict(rng=dict(c['rng'], numpy=dict(c['rng']['numpy'], key='k'))), "its 'rng' entry cannot be restored"),
    (lambda c: dict(history=[dict(c['history'][0], train_loss='low')]),
     "its history row 0 has train_loss='low' (the trainer records numbers)"),
])
def test_tampered_rng_or_history_values_are_not_resumed(run_dir, tmp_path, edit, expected):
    """A bogus ``rng`` entry (wrong type or shape) was a traceback once data and model were set up; a string in a
    ``history`` row a TypeError at the end of the run (best_top1, metrics): plain data outside the sha256 record."""
    path = _tampered(run_dir, tmp_path, **edit(torch.load(run_dir / 'last.pth', weights_only=True)))
    state = torch.get_rng_state()
    with pytest.raises(UsageError) as e:
        train(TINY_TRAIN + ['--epochs', '2', '--output', str(tmp_path), '--experiment', 'r', '--resume', str(path)])
    assert expected in str(e.value) and 'edited or damaged' in str(e.value) and '\n' not in str(e.value), e.value
    assert not (tmp_path / 'r' / 'metrics.csv').exists()
    assert torch.equal(torch.get_rng_state(), state)  # the trial restore put this process's streams back


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_tampered_epoch_through_the_cli_and_fewer_epochs_than_done(run_dir, tmp_path):
    path = _tampered(run_dir, tmp_path, epoch=-3)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS='1', HF_HUB_OFFLINE='1')
    proc = subprocess.run([sys.executable, '-m', 'timm_cra.train'] + TINY_TRAIN + [
        '--epochs', '2', '--output', str(tmp_path), '--experiment', 'r', '--resume', str(path)],
        env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: Cannot --resume '{path}': its 'epoch' (-3)")
    assert not (path.parent / 'metrics.csv').exists()
    ckpt = torch.load(path, weights_only=True)  # counters that agree: 2 epochs done, resumed with --epochs 1
    history = [dict(ckpt['history'][0], epoch=i, optimizer_steps=2 * (i + 1)) for i in range(2)]
    path = _tampered(run_dir, tmp_path / 'two', epoch=2, num_updates=4, history=history)
    with pytest.raises(UsageError, match=r"with --epochs 1: it has already done 2 epochs. Pass --epochs 2 or more"):
        train(TINY_TRAIN + ['--epochs', '1', '--output', str(tmp_path), '--resume', str(path)])


@pytest.mark.parametrize('edit, expected', [
    ('epoch', "its 'epoch' (-3) and 'num_updates' (2) must be counts"),
    ('nan', "its weights hold NaN/Inf values: state_dict.conv1.weight ("),
    ('inf-ema', "its weights hold NaN/Inf values: state_dict_ema.fc.bias ("),
])
@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_upgrade_refuses_what_resume_refuses_and_nonfinite_weights(run_dir, tmp_path, edit, expected):
    """`timm-cra-checkpoint upgrade` re-signed a last.pth with epoch=-3 or NaN weights with fresh sha256 digests
    (rc 0): it now refuses it in one line with the checks --resume and the weight loaders use, writing nothing."""
    from timm_cra.utils.weights import checkpoint_digests
    ckpt = torch.load(run_dir / 'last.pth', weights_only=True)
    if edit == 'epoch':
        path = _tampered(run_dir, tmp_path, epoch=-3)
    else:  # as a diverged run writes them: non-finite weights under a matching sha256 record
        weights = {k: v.clone() for k, v in ckpt['state_dict'].items()}
        key = 'conv1.weight' if edit == 'nan' else 'fc.bias'
        weights[key].view(-1)[0] = float('nan') if edit == 'nan' else float('inf')
        ckpt['state_dict' if edit == 'nan' else 'state_dict_ema'] = weights
        path = _tampered(run_dir, tmp_path, **{k: ckpt[k] for k in ('state_dict', 'state_dict_ema')},
                         sha256=checkpoint_digests(ckpt))
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS='1', HF_HUB_OFFLINE='1')
    cli = [sys.executable, '-c', 'from timm_cra.cli import checkpoint; checkpoint()']  # the timm-cra-checkpoint script
    proc = subprocess.run(cli + ['upgrade', str(path), str(tmp_path / 'up.pth')], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count('\n') == 1, proc.stderr[-2000:]
    assert proc.stderr.startswith(f"error: Cannot upgrade '{path}': {expected}"), proc.stderr
    assert not (tmp_path / 'up.pth').exists()
    intact = subprocess.run(cli + ['upgrade', str(run_dir / 'last.pth'), str(tmp_path / 'ok.pth')], env=env,
                            capture_output=True, text=True, timeout=120)
    assert intact.returncode == 0 and (tmp_path / 'ok.pth').is_file(), intact.stderr[-2000:]


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_upgrade_output_problems_are_worded_for_upgrade_and_a_current_file_is_left_as_it_is(run_dir, tmp_path):
    """`upgrade last.pth OUT` onto a FIFO or folder gave the trainer's advice (*start the run again*); into a missing
    folder it created that folder; `upgrade a.pth a.pth` of a current file rewrote it with a new file sha256. Now:
    one line before any work (as validate and export: *create it or fix the path*), and *already current*, the
    file byte-identical."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS='1', HF_HUB_OFFLINE='1')
    cli = [sys.executable, '-c', 'from timm_cra.cli import checkpoint; checkpoint()']  # the timm-cra-checkpoint script
    os.mkfifo(tmp_path / 'pipe.pth')
    (tmp_path / 'folder.pth').mkdir()
    for out, says in [(tmp_path / 'pipe.pth', 'is a FIFO, not a file'), (tmp_path / 'folder.pth', 'is a folder'),
                      (tmp_path / 'nod' / 'x.pth', f"its folder {tmp_path / 'nod'} does not exist; create it or fix")]:
        proc = subprocess.run(cli + ['upgrade', str(run_dir / 'last.pth'), str(out)], env=env, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 2 and proc.stderr.count('\n') == 1, proc.stderr[-2000:]
        assert proc.stderr.startswith(f'error: OUT {out} ') and says in proc.stderr, proc.stderr
        assert 'run again' not in proc.stderr and '--resume' not in proc.stderr
    assert sorted(os.listdir(tmp_path)) == ['folder.pth', 'pipe.pth'] and not os.listdir(tmp_path / 'folder.pth')
    current = _copy(run_dir, tmp_path) / 'last.pth'
    before = current.read_bytes()
    proc = subprocess.run(cli + ['upgrade', str(current), str(current)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and 'is already checkpoint version 2 with sha256 digests: left unchanged' \
        in proc.stdout, proc.stdout + proc.stderr[-2000:]
    assert current.read_bytes() == before and sorted(os.listdir(current.parent)) == ['config.json', 'last.pth']


@pytest.mark.parametrize('group, expected', [
    (dict(momentum=float('nan')), "its optimizer group 0 has momentum=nan (must be finite and >= 0)"),
    (dict(lr=float('inf')), "its optimizer group 0 has lr=inf (must be finite and >= 0)"),
    (dict(lr=-0.5), "its optimizer group 0 has lr=-0.5 (must be finite and >= 0)"),
    (dict(weight_decay=1e6), "its optimizer group 0 has weight_decay=1000000.0, not the run's "),
    (dict(momentum=0.5), "its optimizer group 0 has momentum=0.5, not the run's 0.9"),
])
def test_tampered_optimizer_param_groups_are_not_resumed(run_dir, tmp_path, group, expected):
    """momentum=NaN / weight_decay=1e6 in last.pth (plain floats outside the sha256) resumed and trained to NaN,
    exit 0: optimizer.load_state_dict puts the saved group values back over the args."""
    ckpt = torch.load(run_dir / 'last.pth', weights_only=True)
    groups = [dict(g) for g in ckpt['optimizer']['param_groups']]
    groups[0].update(group)
    path = _tampered(run_dir, tmp_path, optimizer=dict(ckpt['optimizer'], param_groups=groups))
    with pytest.raises(UsageError) as e:
        train(TINY_TRAIN + ['--epochs', '2', '--output', str(tmp_path), '--experiment', 'r', '--resume', str(path)])
    assert expected in str(e.value) and 'edited or damaged' in str(e.value) and '\n' not in str(e.value)
    assert '--initial-checkpoint' in str(e.value) and not (tmp_path / 'r' / 'metrics.csv').exists()


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_a_non_finite_training_loss_stops_the_run(tmp_path):
    """--lr 1e6 trained to a NaN loss and ended with 'Done', an exported model and exit 0."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS='1', HF_HUB_OFFLINE='1')
    proc = subprocess.run([sys.executable, '-m', 'timm_cra.train', '--model', 'cra_cifar_resnet20', '--config', 'cifar',
                           '--data-dir', str(SHIPPED), '--train-split', 'test', '--train-num-samples', '16',
                           '--val-split', '', '--batch-size', '8', '--no-plot', '--epochs', '3', '--lr', '1e6',
                           '--warmup-epochs', '0', '--output', str(tmp_path), '--experiment', 'r'],
                          env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith('error: The training loss became nan in epoch 1, so the run stopped') and '--lr' in last
    ckpt = load_checkpoint_file(str(tmp_path / 'r' / 'last.pth'))
    assert ckpt['epoch'] == 1 and all(torch.isfinite(v).all() for v in ckpt['state_dict'].values())
    assert not (tmp_path / 'r' / 'model.safetensors').exists()


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_an_expanded_tensor_view_is_refused_before_any_copy(tmp_path, capsys):
    """A 1.7 KB .pth holding torch.zeros(1).expand(2**40) (stride 0) with a sha256 record: verifying the record made
    it contiguous first (an allocator traceback; at 2**28 elements a 2.8 GB peak before the refusal)."""
    from timm_cra.eval.validate import main as validate_main
    from timm_cra.utils.errors import run_cli
    bomb = tmp_path / 'bomb.pth'
    torch.save({'state_dict': {'conv1.weight': torch.zeros(1).expand(2 ** 40)}, 'sha256': {'state_dict': '0' * 64}},
               bomb)
    assert bomb.stat().st_size < 4096
    expected = (f"'{bomb}' is damaged: tensor 'state_dict/conv1.weight' of shape (1099511627776,) claims "
                f"1099511627776 elements but its storage holds 1 (an expanded or overlapping view)")
    with pytest.raises(SystemExit) as e:
        run_cli(validate_main, TINY_MODEL + ['--checkpoint', str(bomb), '--data-dir', str(SHIPPED), '--split', 'test',
                                             '--num-samples', '8', '--workers', '0', '--no-progress'])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and expected in err, err
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS='1', HF_HUB_OFFLINE='1')
    proc = subprocess.run([sys.executable, '-m', 'timm_cra.train'] + TINY_TRAIN + [
        '--epochs', '1', '--output', str(tmp_path), '--experiment', 'r', '--resume', str(bomb)],
        env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith('error: ') and expected in last, last
    overlapping = torch.arange(6.).as_strided((3, 4), (1, 1))  # 12 elements over 6: also refused
    torch.save({'w': overlapping}, tmp_path / 'views.pth')
    with pytest.raises(UsageError, match=r"tensor 'w' of shape \(3, 4\) claims 12 elements but its storage holds 6"):
        load_checkpoint_file(str(tmp_path / 'views.pth'))
    torch.save({'sparse': torch.eye(2).to_sparse()}, tmp_path / 'sparse.pth')
    with pytest.raises(UsageError, match=r"tensor 'sparse' is sparse_coo \(only dense tensors are read\)"):
        load_checkpoint_file(str(tmp_path / 'sparse.pth'))
