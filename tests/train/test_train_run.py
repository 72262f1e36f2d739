"""End-to-end training on a CIFAR slice: outputs, export, resume after a crash, DDP, bad input."""
import csv
import json
import logging
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import pytest
import timm
import torch
import yaml
from safetensors.torch import load_file

from timm_cra.data import DataError, UsageError
from timm_cra.train import load_checkpoint_file, train

from ..conftest import REPO_ROOT


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_cifar_run_outputs(cifar_run):
    summary, out = cifar_run
    assert summary['epochs'] == 2 and summary['optimizer_steps'] == 12 and summary['num_classes'] == 10
    rows = _rows(out / 'metrics.csv')
    assert [int(r['epoch']) for r in rows] == [0, 1]
    assert [int(r['optimizer_steps']) for r in rows] == [6, 12]
    for r in rows:
        assert 0 <= float(r['eval_top1']) <= float(r['eval_top5']) <= 100
        assert float(r['train_loss']) > 0 and float(r['train_img_s']) > 0
    assert float(rows[1]['lr']) < float(rows[0]['lr'])  # cosine schedule over 2 epochs
    assert (out / 'summary.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    recorded = json.loads((out / 'results.json').read_text())
    assert recorded['final']['eval_top1'] == pytest.approx(float(rows[-1]['eval_top1']))
    assert recorded['val_split'] == 'test'  # the split read, as the data names it (publish's card quotes it)
    assert recorded['val_images'] == 32  # --val-num-samples 32: the card says how many were scored
    assert (out / 'args.yaml').is_file()


def test_export_is_hub_format(cifar_run):
    _, out = cifar_run
    weights = load_file(out / 'model.safetensors')
    cfg = json.loads((out / 'config.json').read_text())
    assert cfg['architecture'] == 'cra_resnet18' and cfg['num_classes'] == 10
    assert cfg['label_names'][0] == 'airplane'
    assert cfg['pretrained_cfg']['input_size'] == [3, 32, 32]
    assert cfg['pretrained_cfg']['mean'] == pytest.approx([0.4914, 0.4822, 0.4465])
    model = timm.create_model(f'local-dir:{out}', pretrained=True)  # the Hub loading path, from disk
    state = model.state_dict()
    assert weights.keys() == state.keys()
    assert all(torch.equal(weights[k], state[k]) for k in weights)
    ckpt = load_checkpoint_file(str(out / 'last.pth'))
    assert ckpt['epoch'] == 2 and ckpt['num_updates'] == 12
    assert all(torch.equal(ckpt['state_dict'][k], weights[k]) for k in weights)


def test_progress_log_has_throughput_loss_lr(shipped_run_args, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger='timm_cra.train'):
        train(shipped_run_args + ['--epochs', '1', '--train-num-samples', '32', '--val-split', '',
                                '--no-plot', '--output', str(tmp_path)])
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith('Train: 0')]
    assert len(lines) == 1  # 2 steps, log interval 2
    assert 'Loss:' in lines[0] and 'LR:' in lines[0] and 'img/s' in lines[0]


def _train_and_kill(argv, env, line_pattern: str, timeout: float = 180) -> str:
    """Start the training CLI, read its log until a line matches ``line_pattern`` (at most ``timeout`` s),
    then SIGKILL it: a crash from outside, at a point the log shows. Returns the log read so far."""
    proc = subprocess.Popen([sys.executable, '-m', 'timm_cra.train'] + [str(a) for a in argv],
                            env=env, cwd=str(REPO_ROOT), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    lines: 'queue.Queue[Optional[str]]' = queue.Queue()

    def pump():
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)  # end of output: the process exited

    threading.Thread(target=pump, daemon=True).start()
    log, deadline = [], time.monotonic() + timeout
    try:
        while True:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0))
            assert line is not None, f'trainer exited before logging {line_pattern!r}:\n' + ''.join(log)[-3000:]
            log.append(line)
            if re.search(line_pattern, line):
                break
    except queue.Empty:
        pytest.fail(f'no log line {line_pattern!r} within {timeout} s:\n' + ''.join(log)[-3000:])
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, ''.join(log)[-3000:]  # killed, not finished
    return ''.join(log)


#: 3 epochs of 6 steps on the shipped CIFAR slice, logging every 2 steps; stochastic depth draws from torch's
#: global RNG, so the resumed run matches only if the checkpoint restored that stream too.
RESUME_RUN = ['--epochs', '3', '--drop-path', '0.2', '--no-plot']

#: The CIFAR recipe's fast CPU path (in-memory loader + channels_last + bfloat16 autocast) must resume bit for
#: bit too; it needs a CPU that computes bfloat16 (elsewhere ``--amp`` is ignored and the run is the fp32 one).
_FAST_CPU = ['--amp', '--channels-last']


def _needs_bf16():
    from timm_cra.utils.amp import cpu_has_bf16
    if not cpu_has_bf16():
        pytest.skip('this CPU does not compute bfloat16, so --amp trains in float32 (the fp32 case covers it)')


@pytest.fixture(scope='module', params=['fp32', pytest.param('bf16', marks=pytest.mark.slow)])
def straight_run(request, shipped_run_args, run_command, tmp_path_factory):
    """The uninterrupted run that every killed-and-resumed run must reproduce bit for bit (``.extra_args``:
    the mode's own trainer arguments, which the killed run uses too)."""
    extra = _FAST_CPU if request.param == 'bf16' else []
    if extra:
        _needs_bf16()
    out = tmp_path_factory.mktemp('straight')
    proc = run_command('timm-cra-train', shipped_run_args + RESUME_RUN + extra + ['--output', out, '--experiment', 'b'])
    assert proc.returncode == 0, proc.stderr[-2000:]
    if extra:
        assert 'AMP: autocast torch.bfloat16 on cpu' in proc.stderr, proc.stderr[-2000:]
    (out / 'extra_args.json').write_text(json.dumps(extra))
    return out / 'b'


_TIMING = ('train_img_s', 'epoch_time')  # wall-clock columns: the only ones that may differ


@pytest.mark.timeout(300)
@pytest.mark.parametrize('kill_at', [
    r'Train: 1 \[\s*2/6',  # mid-epoch: epoch 0 checkpointed, epoch 1 two steps in
    pytest.param(r'Eval: 1 ', marks=pytest.mark.slow),  # epoch 1 evaluated: around its metrics.csv / last.pth writes
])
@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_kill_and_resume_is_bit_identical(shipped_run_args, straight_run, cli_env, run_command, tmp_path, kill_at):
    extra = json.loads((straight_run.parent / 'extra_args.json').read_text())
    argv = shipped_run_args + RESUME_RUN + extra + ['--output', tmp_path, '--experiment', 'a']
    _train_and_kill(argv, cli_env, kill_at)
    run = tmp_path / 'a'
    ckpt = load_checkpoint_file(str(run / 'last.pth'))  # intact, whenever the kill landed
    assert ckpt['epoch'] in (1, 2) and ckpt['num_updates'] == 6 * ckpt['epoch']
    assert not (run / 'model.safetensors').exists() and not (run / 'results.json').exists()

    resumed = run_command('timm-cra-train', argv + ['--resume', run / 'last.pth'])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"Resumed '{run / 'last.pth'}': {ckpt['epoch']} epochs" in resumed.stderr
    summary = json.loads((run / 'results.json').read_text())
    assert summary['optimizer_steps'] == 18 and summary['epochs'] == 3
    assert not [p.name for p in run.iterdir() if p.name.startswith('.')]  # no temp file of the killed write

    # Bit-identical to the uninterrupted run: weights, optimizer state, every metric but wall-clock ones.
    ref = straight_run
    wa, wb = load_file(run / 'model.safetensors'), load_file(ref / 'model.safetensors')
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert load_checkpoint_file(str(run / 'last.pth'))['sha256'] == load_checkpoint_file(str(ref / 'last.pth'))['sha256']
    assert summary['rank_state_sha256'] == json.loads((ref / 'results.json').read_text())['rank_state_sha256']
    rows, ref_rows = _rows(run / 'metrics.csv'), _rows(ref / 'metrics.csv')
    assert [int(r['optimizer_steps']) for r in rows] == [6, 12, 18]
    strip = lambda rs: [{k: v for k, v in r.items() if k not in _TIMING} for r in rs]  # noqa: E731
    assert strip(rows) == strip(ref_rows)


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_a_finished_run_continued_with_more_epochs_follows_the_new_schedule(shipped_run_args, straight_run,
                                                                            run_command, tmp_path):
    """``--epochs 5 --resume`` of a finished 3-epoch run (what the refusal of fewer epochs advises): the schedule is
    the one ``--epochs 5`` builds, only the progress comes from the checkpoint. Loading the saved scheduler state put
    back its ``t_initial`` of 3, and epochs 3-4 trained at lr 0.0 with exit 0. Resumed without ``--experiment``, the
    run's ``args.yaml`` names the folder it continued in."""
    import shutil
    from timm_cra.train import create_scheduler, parse_args
    extra = json.loads((straight_run.parent / 'extra_args.json').read_text())
    run = Path(shutil.copytree(straight_run, tmp_path / 'run'))
    argv = shipped_run_args + RESUME_RUN + extra + ['--epochs', '5', '--resume', run / 'last.pth']
    proc = run_command('timm-cra-train', argv)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = _rows(run / 'metrics.csv')
    assert [int(r['optimizer_steps']) for r in rows] == [6, 12, 18, 24, 30]
    assert rows[:3] == _rows(straight_run / 'metrics.csv')  # the finished epochs are kept as they were
    args = parse_args([str(a) for a in argv])  # the new run's schedule, from timm's own scheduler
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=args.lr)
    scheduler, num_epochs = create_scheduler(optimizer, args, updates_per_epoch=6)
    assert num_epochs == 5
    for row in rows[3:]:
        scheduler.step(int(row['epoch']))
        assert float(row['lr']) > 0 and float(row['lr']) == pytest.approx(optimizer.param_groups[0]['lr'])
    assert json.loads((run / 'results.json').read_text())['epochs'] == 5
    # args.yaml records where the run wrote (it said output: ./output/train, experiment: '')
    recorded = yaml.safe_load((run / 'args.yaml').read_text())
    assert (recorded['output'], recorded['experiment']) == (str(tmp_path), 'run')


def test_results_digest_is_the_checkpoint_digest(straight_run):
    """``rank_state_sha256`` is the checkpoint's ``sha256['state_dict']`` of the same (final) weights."""
    summary = json.loads((straight_run / 'results.json').read_text())
    ckpt = load_checkpoint_file(str(straight_run / 'last.pth'))
    assert summary['rank_state_sha256'] == [ckpt['sha256']['state_dict']]


@pytest.mark.slow  # a minute of subprocesses: the slow step keeps the fast suite near 10 minutes
@pytest.mark.timeout(300)
def test_ddp_two_cpu_processes_stay_in_sync(shipped_run_args, run_command, tmp_path):
    import sys
    proc = run_command(
        'timm-cra-train', shipped_run_args + ['--epochs', '1', '--no-plot', '--output', str(tmp_path), '--experiment',
                                              'ddp', '--device', 'cpu'],
        prefix=[sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2'], timeout=240)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert 'DDP: 2 processes, backend gloo' in proc.stdout + proc.stderr
    summary = json.loads((tmp_path / 'ddp' / 'results.json').read_text())
    assert summary['world_size'] == 2
    assert summary['optimizer_steps'] == 3  # 96 images / 2 ranks / batch 16
    sha = summary['rank_state_sha256']
    assert len(sha) == 2 and sha[0] == sha[1]  # each rank hashed its own weights + BN buffers
    assert len(_rows(tmp_path / 'ddp' / 'metrics.csv')) == 1  # rank 0 only writes


@pytest.mark.slow  # two torchrun ranks, twice: about a minute of subprocesses
@pytest.mark.timeout(420)
def test_ddp_a_refusal_on_one_or_both_ranks_ends_the_job_at_once(shipped_run_args, tmp_path):
    """The per-rank refusals under torchrun. Rank 0 alone refuses a run folder another process is writing (the
    lock is rank 0's: rank 1 goes on to the first collective, where it would wait for the 30-minute timeout unless
    the job ends); both ranks refuse a --resume that is not a training checkpoint. Each time the job ends well
    within the timeout with a non-zero status; each rank that refused wrote one ``error:`` line and no rank a
    traceback (torchrun's own report of the failed job aside: it is not a rank's output)."""
    import os
    from safetensors.torch import save_file
    from timm_cra.utils.io import locked_folder
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), HF_HUB_OFFLINE='1', HF_DATASETS_OFFLINE='1',
               OMP_NUM_THREADS='1')
    save_file({'x': torch.zeros(2)}, str(tmp_path / 'weights.safetensors'))

    def torchrun(name, *extra):
        logs = tmp_path / f'logs-{name}'
        start = time.monotonic()
        proc = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
                               '--log-dir', str(logs), '--redirects', '3', '-m', 'timm_cra.train', *shipped_run_args,
                               '--epochs', '1', '--no-plot', '--device', 'cpu', '--output', str(tmp_path / 'o'),
                               '--experiment', name, *extra], env=env, capture_output=True, text=True, timeout=300)
        elapsed = time.monotonic() - start
        ranks = {int(p.parent.name): p.read_text() for p in logs.glob('**/attempt_*/*/stderr.log')}
        assert proc.returncode != 0 and sorted(ranks) == [0, 1], (proc.stderr[-3000:], ranks)
        return elapsed, ranks

    with locked_folder(str(tmp_path / 'o' / 'busy')):
        elapsed, ranks = torchrun('busy')
    errors = [line for line in ranks[0].splitlines() if line.startswith('error: ')]
    assert errors == [line for line in ranks[0].strip().splitlines()[-1:]], ranks[0][-2000:]
    assert errors[0].startswith(f"error: another process (pid {os.getpid()}) is writing {tmp_path / 'o' / 'busy'}")
    assert 'error: ' not in ranks[1] and 'Traceback' not in ranks[1], ranks[1][-2000:]  # ended by torchrun
    assert 'Traceback' not in ranks[0] and elapsed < 240, elapsed

    elapsed, ranks = torchrun('resume', '--resume', str(tmp_path / 'weights.safetensors'))
    for rank, text in ranks.items():
        lines = text.strip().splitlines()
        assert 'Traceback' not in text and [line for line in lines if line.startswith('error: ')] == lines[-1:], \
            (rank, text[-2000:])
        assert "is not a training checkpoint of this trainer" in lines[-1], (rank, lines[-1])
    assert elapsed < 240 and not (tmp_path / 'o' / 'resume' / 'last.pth').exists(), elapsed


def test_folder_dataset_with_corrupt_image_mixup_ema(class_folder, tiny_model_args, tmp_path):
    (class_folder / 'train' / 'dog' / '0.png').write_bytes(b'\x89PNG truncated')  # 18 files: 3 full batches
    summary = train(tiny_model_args + [
        '--data-dir', str(class_folder), '--dataset', 'folder', '--val-split', 'val', '--img-size', '32',
        '--batch-size', '6', '--epochs', '1', '--workers', '0', '--mixup', '0.2', '--cutmix', '1.0',
        '--smoothing', '0.1', '--aa', 'rand-m5-mstd0.5', '--model-ema', '--model-ema-decay', '0.9',
        '--no-plot', '--output', str(tmp_path), '--experiment', 'f'])
    final = summary['final']
    assert summary['num_classes'] == 3 and summary['optimizer_steps'] == 3
    assert final['train_skipped'] == 1 and final['eval_skipped'] == 0
    assert 0 <= final['ema_eval_top1'] <= 100
    assert (tmp_path / 'f' / 'model_ema.safetensors').is_file()


def test_label_count_mismatch(shipped_run_args, tmp_path):
    with pytest.raises(DataError, match='10 classes but the model head has 5.*--num-classes 10'):
        train(shipped_run_args + ['--num-classes', '5', '--output', str(tmp_path)])


def test_batch_larger_than_data(shipped_run_args, tmp_path):
    with pytest.raises(DataError, match='fewer than one batch.*--batch-size'):
        train(shipped_run_args + ['--train-num-samples', '8', '--output', str(tmp_path)])


def test_cli_errors_are_one_line(run_command, tmp_path, tiny_model_args):
    proc = run_command('timm-cra-train', tiny_model_args + ['--data-dir', tmp_path / 'missing', '--output', tmp_path])
    assert proc.returncode == 2
    assert 'Traceback' not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith('error: Dataset folder')
    assert '--data-dir' in proc.stderr


def test_resume_rejects_non_checkpoint(straight_run, shipped_run_args, tmp_path):
    with pytest.raises(UsageError, match='could not be read|not a training checkpoint'):
        train(shipped_run_args + ['--resume', str(straight_run / 'model.safetensors'), '--output', str(tmp_path)])


def test_step_schedule_amp_channels_last(shipped_run_args, tmp_path):
    summary = train(shipped_run_args + [
        '--train-num-samples', '32', '--epochs', '3', '--sched', 'step', '--decay-epochs', '1',
        '--decay-rate', '0.1', '--lr', '0.05', '--amp', '--channels-last', '--no-plot', '--output', str(tmp_path),
        '--experiment', 'm'])
    rows = _rows(tmp_path / 'm' / 'metrics.csv')
    assert [float(r['lr']) for r in rows] == pytest.approx([0.05, 0.005, 0.0005])
    assert summary['optimizer_steps'] == 6 and 0 <= summary['final']['eval_top1'] <= 100


# --- Fine-tuning: greyscale data, pretrained sources, head reset, initial checkpoint ---
from tests.conftest import HUB_DIR  # noqa: E402

CIFAR_REPO = HUB_DIR / 'timm-cra' / 'cra_cifar_resnet20.cifar10'


@pytest.fixture
def grey_folder(tmp_path):
    """train/ and val/ with 3 classes of 28x28 greyscale PNGs ('L' mode files)."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    for split, n in (('train', 4), ('val', 2)):
        for c in range(3):
            for i in range(n):
                a = rng.integers(0, 60, (28, 28)).astype(np.uint8)
                a[c::3, :] += 150
                p = tmp_path / 'grey' / split / f'c{c}' / f'{i}.png'
                p.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(a, mode='L').save(p)
    return tmp_path / 'grey'


@pytest.mark.parametrize('channels', [['--model-kwargs', 'in_chans=1'], ['--in-chans', '1']])
@pytest.mark.parametrize('in_memory', [False, True])
def test_greyscale_folder_trains_with_one_input_channel(grey_folder, tmp_path, channels, in_memory):
    """``--model-kwargs in_chans=1`` used to crash at the first batch (RGB images into a 1-channel stem)."""
    summary = train(['--model', 'cra_cifar_resnet20', *channels, '--data-dir', str(grey_folder), '--dataset',
                     'folder', '--val-split', 'val', '--batch-size', '4', '--epochs', '1', '--workers', '0',
                     '--no-plot', '--output', str(tmp_path), '--experiment', 'run']
                    + (['--in-memory'] if in_memory else []))
    assert summary['optimizer_steps'] == 3 and summary['final']['eval_skipped'] == 0
    cfg = json.loads((tmp_path / 'run' / 'config.json').read_text())
    assert cfg['pretrained_cfg']['input_size'] == [1, 32, 32] and len(cfg['pretrained_cfg']['std']) == 1
    assert load_file(tmp_path / 'run' / 'model.safetensors')['conv1.weight'].shape[1] == 1


def _pretrained():
    return load_file(CIFAR_REPO / 'model.safetensors')


def _assert_adapted_backbone(model, ref):
    """timm's adapt_input_conv for 1 channel: the RGB filters summed; every other backbone tensor unchanged."""
    state = model.state_dict()
    assert torch.allclose(state['conv1.weight'], ref['conv1.weight'].sum(dim=1, keepdim=True))
    assert all(torch.equal(state[k], ref[k]) for k in ref if k not in ('conv1.weight', 'fc.weight', 'fc.bias'))


@pytest.mark.parametrize('source', ['local-dir', 'overlay-file', 'hf-hub', 'tag'])
def test_pretrained_rgb_weights_adapt_to_one_channel(source, hub):
    from timm_cra.train.model import create_train_model
    from timm_cra.train import parse_args
    model_name = {'local-dir': f'local-dir:{CIFAR_REPO}', 'hf-hub': 'hf-hub:timm-cra/cra_cifar_resnet20.cifar10',
                  'overlay-file': 'cra_cifar_resnet20.cifar10', 'tag': 'cra_cifar_resnet20.cifar10'}[source]
    if source == 'overlay-file':
        hub.set_offline(True)  # the file is the source: no Hub involved
        model = timm.create_model(model_name, pretrained=True, in_chans=1, num_classes=3,
                                  pretrained_cfg_overlay=dict(file=str(CIFAR_REPO / 'model.safetensors')))
    else:  # the trainer's path; 'hf-hub' and 'tag' download from the loopback Hub
        model = create_train_model(parse_args(['--model', model_name, '--pretrained', '--in-chans', '1']), 3)
    assert model.conv1.in_channels == 1 and model.num_classes == 3
    _assert_adapted_backbone(model, _pretrained())


@pytest.mark.parametrize('reset', [True, False])
def test_reset_head_with_equal_class_count(reset, caplog):
    from timm_cra.train.model import create_train_model
    from timm_cra.train import parse_args
    args = parse_args(['--config', 'finetune', '--model', f'local-dir:{CIFAR_REPO}',
                       '--reset-head' if reset else '--no-reset-head'])
    with caplog.at_level(logging.INFO, logger='timm_cra.train'):
        model = create_train_model(args, 10)
    ref, state = _pretrained(), model.state_dict()
    assert all(torch.equal(state[k], ref[k]) for k in ref if not k.startswith('fc.'))
    assert torch.equal(state['fc.weight'], ref['fc.weight']) is not reset
    assert ('Head re-initialised (--reset-head): fc.weight, fc.bias' in caplog.text) is reset
    assert f"Weights: pretrained local-dir:{CIFAR_REPO} from local-dir" in caplog.text


@pytest.mark.parametrize('reset', [True, False])
def test_initial_checkpoint_wins_over_pretrained_without_hub(reset, tmp_path, monkeypatch, caplog):
    """With an initial checkpoint the recipe's ``pretrained: true`` must not reach the Hub (offline, no cache)."""
    from huggingface_hub import constants
    from timm_cra.train.model import create_train_model
    from timm_cra.train import parse_args
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)
    monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(tmp_path / 'empty-cache'))
    ckpt = CIFAR_REPO / 'model.safetensors'
    args = parse_args(['--config', 'finetune', '--model', 'cra_cifar_resnet20.cifar10', '--in-chans', '1',
                       '--initial-checkpoint', str(ckpt)] + ([] if reset else ['--no-reset-head']))
    with caplog.at_level(logging.INFO, logger='timm_cra.train'):
        model = create_train_model(args, 10)
    _assert_adapted_backbone(model, _pretrained())
    assert torch.equal(model.state_dict()['fc.weight'], _pretrained()['fc.weight']) is not reset
    assert (f"Weights: '{ckpt}'; head re-initialised: fc.weight, fc.bias" in caplog.text) is reset
    assert not (tmp_path / 'empty-cache').exists()
    if not reset:  # a head for other classes needs --reset-head
        with pytest.raises(UsageError, match='does not fit 3 classes: pass --reset-head'):
            create_train_model(args, 3)
