"""Every writer writes only what it owns: an output path that is a FIFO, a device node, a folder (for a file) or a
file (for a folder) is refused in one line before any work and left as it was; a place that cannot be written
(under a regular file: true for root too) is one line, exit 2; a killed publish's staging folder is removed at
the next publish; outputs get the mode ``open`` gives (0o644 under umask 022)."""
import json
import os
import shutil
import stat
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from timm_cra.eval.validate import main as validate_main
from timm_cra.export.cli import main as export_main
from timm_cra.hub.publish import main as publish_main
from timm_cra.train import main as train_main
from timm_cra.utils.errors import run_cli

from ..conftest import sigint_as_a_shell_leaves_it

CLI_TIMEOUT = 240


def _cli(module, argv, cli_env, cwd):
    return subprocess.run([sys.executable, '-m', module] + [str(a) for a in argv], env=cli_env, cwd=str(cwd),
                          capture_output=True, text=True, timeout=CLI_TIMEOUT, umask=0o022)


def _refused(main, argv, capsys) -> str:
    """Run a CLI ``main`` as its ``__main__`` does; assert exit 2 with one line; return that line."""
    with pytest.raises(SystemExit) as e:
        run_cli(main, [str(a) for a in argv])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith('error: ') and err.count('\n') == 1, err
    return err


def _char_device(path):
    """A character device node like /dev/null, made in a test folder (never under /dev)."""
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        pytest.skip('creating a device node needs root (CAP_MKNOD)')
    return path


@pytest.mark.slow  # over ~15 s on 2 cores (many processes or epochs): CI step 2
def test_export_to_a_fifo_or_device_is_refused_and_a_file_gets_0644(tmp_path, cli_env):
    os.mkfifo(tmp_path / 'pipe.onnx')
    r = _cli('timm_cra.export', ['-m', 'cra_cifar_resnet20', '-o', tmp_path / 'pipe.onnx', '--no-verify'],
             cli_env, tmp_path)
    assert r.returncode == 2 and r.stderr.count('\n') == 1, r.stderr
    assert 'pipe.onnx is a FIFO, not a file' in r.stderr
    assert stat.S_ISFIFO(os.lstat(tmp_path / 'pipe.onnx').st_mode)
    r = _cli('timm_cra.export', ['-m', 'cra_cifar_resnet20', '-o', tmp_path / 'm.onnx', '--no-verify'],
             cli_env, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert os.stat(tmp_path / 'm.onnx').st_mode & 0o777 == 0o644  # was 0600 (a mkstemp name renamed)
    assert sorted(os.listdir(tmp_path)) == ['m.onnx', 'pipe.onnx']  # no temp file left


def test_export_refuses_device_folder_and_unwritable_place(tmp_path, capsys):
    (tmp_path / 'folder.onnx').mkdir()
    (tmp_path / 'file.txt').write_text('x')
    for out, says in [(tmp_path / 'folder.onnx', 'is a folder, not a file'),
                      (tmp_path / 'file.txt' / 'm.onnx', 'file.txt is a regular file, not a folder')]:
        assert says in _refused(export_main, ['-m', 'cra_cifar_resnet20', '-o', out, '--no-verify'], capsys)
    assert (tmp_path / 'file.txt').read_text() == 'x' and (tmp_path / 'folder.onnx').is_dir()
    run = tmp_path / 'runs' / 'y'  # `-o runs/y/last.pth` replaced the checkpoint with ONNX: a name not ending .onnx
    run.mkdir(parents=True)
    (run / 'last.pth').write_bytes(b'checkpoint')
    for out, held in ((run / 'last.pth', ' (an existing file, which the export would replace)'), (run / 'm', '')):
        assert _refused(export_main, ['-m', 'cra_cifar_resnet20', '-o', out, '--no-verify'], capsys) == (
            f'error: --output {out}{held} is not named .onnx: give the ONNX file a name of its own ending in .onnx '
            f'(e.g. model.onnx).\n')
    assert os.listdir(run) == ['last.pth'] and (run / 'last.pth').read_bytes() == b'checkpoint'
    dev = _char_device(tmp_path / 'null')
    assert 'is a character device, not a file' in _refused(
        export_main, ['-m', 'cra_cifar_resnet20', '-o', dev, '--no-verify'], capsys)
    assert stat.S_ISCHR(os.lstat(dev).st_mode)  # the node is still a device, not a regular file


def test_validate_result_paths_are_checked_before_any_work(tmp_path, capsys):
    os.mkfifo(tmp_path / 'pipe.json')
    (tmp_path / 'dir.json').mkdir()
    (tmp_path / 'file.txt').write_text('x')
    base = ['--model', 'cra_cifar_resnet20', '--data-dir', tmp_path / 'no-such-data']  # never reached
    for flag, out, says in [('--results-file', tmp_path / 'pipe.json', 'is a FIFO, not a file'),
                            ('--results-file', tmp_path / 'dir.json', 'is a folder, not a file'),
                            ('--results-csv', tmp_path / 'pipe.json', 'is a FIFO, not a file'),
                            ('--results-file', tmp_path / 'file.txt' / 'r.json', 'is a regular file, not a folder')]:
        assert f'error: {flag} {out} ' in _refused(validate_main, base + [flag, out], capsys)
        assert says in _refused(validate_main, base + [flag, out], capsys)
    assert stat.S_ISFIFO(os.lstat(tmp_path / 'pipe.json').st_mode)
    dev = _char_device(tmp_path / 'null')
    assert 'is a character device' in _refused(validate_main, base + ['--results-file', dev], capsys)
    assert stat.S_ISCHR(os.lstat(dev).st_mode)


def test_missing_output_folders_are_refused_alike_by_validate_and_export(tmp_path, capsys):
    """``validate --results-file`` / ``--results-csv`` created a typo'd folder (and wrote into it) where export
    refused it: one rule (``check_output_file(new_folders=False)``), before any work; nothing is created."""
    base = ['--model', 'cra_cifar_resnet20', '--data-dir', tmp_path / 'no-such-data']  # never reached
    for main, argv, out in [(validate_main, base + ['--results-file'], tmp_path / 'typo' / 'r.json'),
                            (validate_main, base + ['--results-csv'], tmp_path / 'typo' / 'r.csv'),
                            (export_main, ['-m', 'cra_cifar_resnet20', '--no-verify', '-o'],
                             tmp_path / 'typo' / 'm.onnx')]:
        err = _refused(main, argv + [out], capsys)
        assert f"{out} cannot be written: its folder {tmp_path / 'typo'} does not exist; create it or fix the path" \
            in err, err
    assert os.listdir(tmp_path) == []


def test_an_output_that_is_the_commands_own_input_is_refused(tmp_path, capsys):
    """``--results-file`` / ``--results-csv`` / export ``-o`` naming the checkpoint (or a ``local-dir:`` model's
    weights) would replace the weights being read: refused before any work, the input byte-identical."""
    weights = tmp_path / 'w.safetensors'
    save_file({'x': torch.zeros(2)}, str(weights))
    before = weights.read_bytes()
    repo = tmp_path / 'repo'
    repo.mkdir()
    (repo / 'config.json').write_text('{}')
    checkpoint = ['--model', 'cra_cifar_resnet20', '--checkpoint', weights]
    for main, argv in [(validate_main, checkpoint + ['--data-dir', tmp_path / 'none', '--results-file', weights]),
                       (validate_main, checkpoint + ['--data-dir', tmp_path / 'none', '--results-csv', weights]),
                       (export_main, checkpoint + ['-o', weights, '--no-verify']),
                       (export_main, ['--model', f'local-dir:{repo}', '-o', repo / 'config.json', '--no-verify'])]:
        assert 'writing it would destroy that input' in _refused(main, argv, capsys)
    assert weights.read_bytes() == before and (repo / 'config.json').read_text() == '{}'


def _files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob('*')) if p.is_file()}


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_outputs_inside_the_data_folder_or_one_path_for_both_results_are_refused(class_folder, tmp_path,
                                                                                   run_command, capsys):
    """``validate --results-file data/val/cat/0.png`` replaced one of its own images; ``train --output`` inside
    ``--data-dir`` put the run folder into the data; ``--results-file v.json --results-csv v.json`` wrote the JSON,
    then refused the CSV (two hard links of one file: the line named one path twice, now both). Each is refused
    in one line before any work, the data byte-identical and nothing written;
    the validation with its results beside the data succeeds."""
    before = _files(class_folder)
    image = class_folder / 'val' / 'cat' / '0.png'
    validate = ['--model', 'cra_cifar_resnet20', '--data-dir', class_folder, '--split', 'val', '--img-size', '32',
                '--num-classes', '3', '--workers', '0', '--no-progress']
    train = ['--model', 'cra_cifar_resnet20', '--data-dir', class_folder, '--dataset', 'folder', '--val-split', 'val',
             '--img-size', '32', '--batch-size', '6', '--epochs', '1', '--workers', '0', '--no-plot']
    inside = f'is inside the input folder {class_folder}: writing there would change the data'
    for command, argv, says in [
            ('timm-cra-validate', validate + ['--results-file', image], f'error: --results-file {image} {inside}'),
            ('timm-cra-train', train + ['--output', class_folder, '--experiment', 'r'],
             f"error: run folder (--output/--experiment) {class_folder / 'r'} {inside}"),
            ('timm-cra-validate', validate + ['--results-file', tmp_path / 'v.json', '--results-csv',
                                              tmp_path / 'v.json'],
             f"error: --results-file and --results-csv are both {tmp_path / 'v.json'}: ")]:
        r = run_command(command, argv)
        assert r.returncode == 2 and r.stderr.count('\n') == 1 and r.stderr.startswith(says), r.stderr[-2000:]
    assert inside in _refused(validate_main, validate + ['--results-csv', class_folder / 'val.csv'], capsys)
    assert inside in _refused(train_main, train + ['--output', class_folder / 'train' / 'runs'], capsys)
    o1, o2 = tmp_path / 'o1.json', tmp_path / 'o2.json'  # hard links of one file: the line names both paths
    o1.write_text('{}')
    os.link(o1, o2)
    assert _refused(validate_main, validate + ['--results-file', o1, '--results-csv', o2], capsys).startswith(
        f'error: --results-file and --results-csv are one file ({o1} and {o2}): ')
    assert o1.read_text() == '{}'
    o1.unlink()
    o2.unlink()
    assert _files(class_folder) == before and sorted(os.listdir(tmp_path)) == ['data']
    r = run_command('timm-cra-validate', validate + ['--results-file', tmp_path / 'v.json', '--results-csv',
                                                     tmp_path / 'v.csv'])
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path / 'v.json').read_text())['count'] == 6
    assert (tmp_path / 'v.csv').read_text().startswith('model,top1')
    assert _files(class_folder) == before


def test_train_output_that_is_a_file_or_under_one_is_refused(tmp_path, capsys):
    (tmp_path / 'file.txt').write_text('x')
    base = ['--model', 'cra_cifar_resnet20', '--data-dir', tmp_path / 'no-such-data', '--epochs', '1']
    assert 'is a regular file, not a folder' in _refused(
        train_main, base + ['--output', tmp_path / 'file.txt' / 'runs', '--experiment', 'r'], capsys)
    assert 'it is a regular file, not a folder' in _refused(
        train_main, base + ['--output', tmp_path, '--experiment', 'file.txt'], capsys)
    assert (tmp_path / 'file.txt').read_text() == 'x'


def test_train_experiment_that_is_not_one_folder_name_is_refused(tmp_path, capsys):
    """``--experiment ../../escaped`` or an absolute path wrote outside --output."""
    base = ['--model', 'cra_cifar_resnet20', '--data-dir', tmp_path / 'no-such-data', '--epochs', '1',
            '--output', tmp_path / 'o' / 'runs']
    for name in ('../../escaped', str(tmp_path / 'abs'), '..', 'a/b'):
        assert f"--experiment {name!r} must be one folder name" in _refused(
            train_main, base + ['--experiment', name], capsys)
    assert os.listdir(tmp_path) == []


def test_train_run_folder_linked_out_of_output_or_dangling_is_refused(tmp_path, capsys):
    """``--experiment exp`` where ``<output>/exp`` is a symlink to a folder outside --output: the run wrote its
    files there (rc 0). A dangling link as the run folder or as --output: *File exists* / *No such file or
    directory*, both with *choose a writable place with free space*. Each is now one line naming the link."""
    out, elsewhere = tmp_path / 'runs', tmp_path / 'elsewhere'
    out.mkdir()
    elsewhere.mkdir()
    (out / 'exp').symlink_to(elsewhere)
    (out / 'gone').symlink_to(tmp_path / 'nothing')
    (out / 'gone-inside').symlink_to(out / 'nothing')
    (tmp_path / 'runs-link').symlink_to(tmp_path / 'no-runs')
    base = ['--model', 'cra_cifar_resnet20', '--data-dir', tmp_path / 'no-such-data', '--epochs', '1']
    err = _refused(train_main, base + ['--output', out, '--experiment', 'exp'], capsys)
    assert f"'{out / 'exp'}' is a symlink to {elsewhere}, outside --output {out}: the run would write its files " \
           f"there" in err and f'(--output {tmp_path} --experiment elsewhere)' in err, err
    assert os.listdir(elsewhere) == []
    err = _refused(train_main, base + ['--output', out, '--experiment', 'gone'], capsys)
    assert f"'{out / 'gone'}' is a symlink to {tmp_path / 'nothing'}, outside --output" in err, err
    for output, experiment, link, target in ((out, 'gone-inside', out / 'gone-inside', out / 'nothing'),
                                             (tmp_path / 'runs-link', 'e', tmp_path / 'runs-link',
                                              tmp_path / 'no-runs')):
        err = _refused(train_main, base + ['--output', output, '--experiment', experiment], capsys)
        assert f'{link} is a dangling symlink (to {target}): point it at a folder or remove it' in err, err
        assert 'File exists' not in err and 'free space' not in err, err
    assert sorted(os.listdir(tmp_path)) == ['elsewhere', 'runs', 'runs-link']
    assert sorted(os.listdir(out)) == ['exp', 'gone', 'gone-inside']
    # a link to a folder inside --output is the run folder: past these checks (here to the missing data)
    (out / 'real').mkdir()
    (out / 'alias').symlink_to(out / 'real')
    err = _refused(train_main, base + ['--output', out, '--experiment', 'alias'], capsys)
    assert 'no-such-data' in err and 'symlink' not in err, err


def test_an_over_long_experiment_name_is_refused_before_anything_is_created(tmp_path, capsys):
    """A 300-byte ``--experiment`` failed (ENAMETOOLONG) after creating ``--output``, which was left behind empty."""
    base = ['--model', 'cra_cifar_resnet20', '--data-dir', tmp_path / 'no-such-data', '--epochs', '1',
            '--output', tmp_path / 'o' / 'runs']
    err = _refused(train_main, base + ['--experiment', 'é' * 150], capsys)
    assert "is 300 bytes, over the 255-byte limit of a file or folder name; choose a shorter name" in err, err
    assert os.listdir(tmp_path) == []


@pytest.fixture(scope='module')
def weights(tmp_path_factory):
    import timm
    import timm_cra  # noqa: F401
    path = tmp_path_factory.mktemp('w') / 'w.safetensors'
    torch.manual_seed(0)
    save_file(timm.create_model('cra_cifar_resnet20').state_dict(), str(path))
    return path


def test_publish_out_onto_a_file_or_under_one_is_refused(weights, tmp_path, capsys):
    (tmp_path / 'file.txt').write_text('x')
    argv = ['cra_cifar_resnet20.test_out', weights, '--overwrite', '--out']
    assert 'it is a regular file, not a folder' in _refused(publish_main, argv + [tmp_path / 'file.txt'], capsys)
    assert 'file.txt is a regular file, not a folder' in _refused(
        publish_main, argv + [tmp_path / 'file.txt' / 'repo'], capsys)
    assert (tmp_path / 'file.txt').read_text() == 'x' and sorted(os.listdir(tmp_path)) == ['file.txt']


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_publish_overwrite_of_a_symlinked_out_replaces_the_link(weights, tmp_path, cli_env):
    """--out a symlink to a folder, with --overwrite: the new repo takes the link's place (exit 0, nothing left
    half-done); the folder the link pointed at is left as it was."""
    target = tmp_path / 'target'
    target.mkdir()
    (target / 'keep.txt').write_text('kept')
    (tmp_path / 'out').symlink_to(target, target_is_directory=True)
    proc = _cli('timm_cra.hub.publish', ['cra_cifar_resnet20.test_out', weights, '--out', tmp_path / 'out',
                                         '--overwrite'], cli_env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / 'out'
    assert not out.is_symlink() and sorted(os.listdir(out)) == ['README.md', 'config.json', 'model.safetensors']
    assert sorted(os.listdir(tmp_path)) == ['out', 'target'] and os.listdir(target) == ['keep.txt']


def test_a_results_file_that_is_a_symlink_is_written_through(tmp_path, capsys, cifar10_test):
    """``--results-file`` / ``--results-csv`` symlinks to regular files: written through, as a shell's ``>`` does
    (the link stays, the file it points at is replaced atomically; the link used to be replaced by a regular file);
    a dangling link is refused in one line (the write would create its target, wherever that is)."""
    (tmp_path / 'runs').mkdir()
    (tmp_path / 'runs' / 'r1.json').write_text('{}')
    (tmp_path / 'latest.json').symlink_to(tmp_path / 'runs' / 'r1.json')
    (tmp_path / 'all.csv').symlink_to(tmp_path / 'runs' / 'all.csv')  # dangling until the file exists
    data = ['--data-dir', cifar10_test, '--split', 'test', '--num-samples', '8', '--img-size', '32', '--num-classes',
            '10', '--workers', '0', '--no-progress', '--model', 'cra_cifar_resnet20']
    err = _refused(validate_main, data + ['--results-csv', tmp_path / 'all.csv'], capsys)
    assert f"{tmp_path / 'all.csv'} is a dangling symlink (to {tmp_path / 'runs' / 'all.csv'}): point it at a file" \
        in err, err
    (tmp_path / 'runs' / 'all.csv').write_text('')
    run_cli(validate_main, [str(a) for a in data + ['--results-file', tmp_path / 'latest.json', '--results-csv',
                                                    tmp_path / 'all.csv']])
    capsys.readouterr()
    for link, target in [('latest.json', 'r1.json'), ('all.csv', 'all.csv')]:
        assert (tmp_path / link).is_symlink() and os.readlink(tmp_path / link) == str(tmp_path / 'runs' / target)
    assert '"top1"' in (tmp_path / 'runs' / 'r1.json').read_text()
    assert (tmp_path / 'runs' / 'all.csv').read_text().startswith('model,top1')
    assert sorted(os.listdir(tmp_path)) == ['all.csv', 'latest.json', 'runs']  # no temp file left anywhere
    assert sorted(os.listdir(tmp_path / 'runs')) == ['all.csv', 'r1.json']


def test_killed_publish_staging_is_removed_by_the_next(weights, tmp_path):
    # What a publish killed mid-write leaves (atomic_folder's names): its staging folder and, killed after the
    # new folder moved in, the set-aside previous version. Neither is visible to the Hub server or timm (hidden),
    # but they hold ~100 MB each. (Killed before the new folder moved in, the set-aside copy is put back
    # instead: utils/test_io.py::test_a_write_killed_mid_swap_never_loses_the_previous_folder.)
    for name in ('repo', '.repo.1a2b3c4d.tmp', '.repo.5e6f7a8b.old'):
        (tmp_path / name).mkdir()
        (tmp_path / name / 'model.safetensors').write_bytes(b'\0' * 1024)
    (tmp_path / '.other.tmp').mkdir()  # not ours: kept
    old = os.umask(0o022)
    try:
        publish_main(['cra_cifar_resnet20.test_out', str(weights), '--out', str(tmp_path / 'repo'), '--overwrite'])
    finally:
        os.umask(old)
    assert sorted(os.listdir(tmp_path)) == ['.other.tmp', 'repo']
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / 'repo').iterdir()}
    assert modes and set(modes.values()) == {0o644}, modes



_APPEND_ROWS = """
import sys
from timm_cra.eval.validate import write_results
for i in range(int(sys.argv[3])):
    write_results(dict(model=f'{sys.argv[2]}-{i}', top1=1.0), '', sys.argv[1])
"""


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_concurrent_results_csv_appends_keep_every_row(tmp_path, cli_env):
    """Two processes appending to one --results-csv at once: every row is there, once, and one header
    (without the folder lock, each rewrite could drop rows the other had just added)."""
    csv_path, n = tmp_path / 'results.csv', 80
    procs = [subprocess.Popen([sys.executable, '-c', _APPEND_ROWS, str(csv_path), name, str(n)], env=cli_env,
                              stderr=subprocess.PIPE, text=True) for name in ('a', 'b')]
    for p in procs:
        assert p.wait(timeout=CLI_TIMEOUT) == 0, p.stderr.read()[-2000:]
    lines = csv_path.read_text().splitlines()
    assert lines[0].startswith('model,top1,') and sum(line.startswith('model,') for line in lines) == 1
    assert sorted(line.split(',')[0] for line in lines[1:]) == sorted(f'{x}-{i}' for x in 'ab' for i in range(n))
    assert [p.name for p in tmp_path.iterdir()] == ['results.csv']  # no lock or temp file left behind


def test_results_csv_in_a_training_run_folder_is_refused_in_bounded_time(tmp_path, capsys, class_folder,
                                                                          monkeypatch):
    """`validate --results-csv <run folder>/val.csv` while that run trains waited silently until the training
    ended (the trainer holds its run folder's lock for the whole run). The append now waits only a bounded time
    (long enough for another validate's append, as the lock is released within it), then is one line naming the
    holder's pid and the fix; nothing is written. The lock here is held with the trainer's own call."""
    import threading
    import time

    from timm_cra.eval.validate import write_results
    from timm_cra.utils.io import locked_folder
    monkeypatch.setattr(sys.modules['timm_cra.eval.validate'], 'RESULTS_CSV_LOCK_WAIT_S', 1.0)
    run = tmp_path / 'run'
    argv = ['--data-dir', class_folder, '--split', 'val', '--img-size', '32', '--num-classes', '3', '--workers', '0',
            '--no-progress', '--model', 'cra_cifar_resnet20', '--results-csv', run / 'val.csv']
    with locked_folder(str(run), wait=False):  # as timm_cra.train.trainer holds its run folder
        start = time.monotonic()
        err = _refused(validate_main, argv, capsys)
        assert time.monotonic() - start < 30
    assert err == (f'error: another process (pid {os.getpid()}) is writing {run}: a running training holds its run '
                   f'folder until it ends; write the CSV elsewhere.\n')
    assert os.listdir(run) == []
    # A holder that lets go within the wait (another validate's append) is waited for: the row is written.
    held = locked_folder(str(run), wait=False)
    held.__enter__()
    threading.Timer(0.3, held.__exit__, (None, None, None)).start()
    write_results(dict(model='m', top1=1.0), '', str(run / 'val.csv'))
    assert (run / 'val.csv').read_text().splitlines()[1].startswith('m,1.0,') and os.listdir(run) == ['val.csv']


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_results_csv_in_a_held_folder_is_refused_before_the_evaluation(tmp_path, run_command):
    """The lock on the --results-csv folder was first tried after the evaluation: a user waited for a whole
    evaluation, then was refused. It is tried before any work: here the data folder does not even exist, and the
    refusal (after the bounded wait) is the lock's, not the data's."""
    import time

    from timm_cra.utils.io import locked_folder
    run = tmp_path / 'run'
    with locked_folder(str(run), wait=False):  # as timm_cra.train.trainer holds its run folder
        start = time.monotonic()
        proc = run_command('timm-cra-validate', ['--model', 'cra_cifar_resnet20', '--data-dir', tmp_path / 'missing',
                                                 '--workers', '0', '--results-csv', run / 'val.csv'])
        waited = time.monotonic() - start
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == (
        f'error: another process (pid {os.getpid()}) is writing {run}: a running training holds its run folder until '
        f'it ends; write the CSV elsewhere.'), proc.stderr[-2000:]
    assert waited < CLI_TIMEOUT and os.listdir(run) == []


def _fill(disk):
    fd = os.open(disk / 'filler', os.O_WRONLY | os.O_CREAT)
    try:
        with pytest.raises(OSError, match='No space left'):
            while True:
                os.write(fd, b'\0' * 4096)
    finally:
        os.close(fd)


def _one_line(r) -> str:
    assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith('error: '), r.stderr[-3000:]
    return last


_TINY_RUN = ['--model', 'cra_cifar_resnet20', '--train-split', 'test', '--val-split', 'test', '--train-num-samples',
             '16', '--val-num-samples', '8', '--batch-size', '8', '--epochs', '1', '--workers', '0', '--no-plot',
             '--experiment', 'r']


@pytest.mark.slow  # over ~15 s on 2 cores (many processes or epochs): CI step 2
def test_full_disk_is_one_line_for_results_onnx_and_weights(small_disk, cli_env, tmp_path, capsys, cifar10_test):
    """ENOSPC while an output's bytes are written (results JSON / CSV, ONNX export, the trainer's
    model.safetensors) is one line naming the path and the OS reason, exit 2, nothing half-written; it was a
    traceback. At the end of training the line says the run is saved and that --resume finishes the export (it
    said only "choose a writable place"), which it then does."""
    full = small_disk('full', '64k')
    _fill(full)
    data = ['--data-dir', cifar10_test, '--split', 'test', '--num-samples', '8', '--img-size', '32',
            '--num-classes', '10', '--workers', '0', '--no-progress', '--model', 'cra_cifar_resnet20']
    r = _cli('timm_cra.eval', data + ['--results-file', full / 'r.json'], cli_env, tmp_path)
    assert _one_line(r) == (f'error: cannot write output {full / "r.json"}: No space left on device; choose a '
                            f'writable place with free space.')
    assert 'No space left on device' in _refused(validate_main, data + ['--results-csv', full / 'r.csv'], capsys)
    assert 'No space left on device' in _refused(
        export_main, ['-m', 'cra_cifar_resnet20', '-o', full / 'm.onnx', '--no-verify'], capsys)
    assert sorted(os.listdir(full)) == ['filler']  # no result, no temp file
    # Room for args.yaml, metrics.csv and last.pth (2.3 MB), not for model.safetensors (1.1 MB) after it.
    room = small_disk('room', '3000k')
    r = _cli('timm_cra.train', _TINY_RUN + ['--data-dir', cifar10_test, '--output', room], cli_env, tmp_path)
    last = room / 'r' / 'last.pth'  # the end of training: the line says the run is saved and how to finish it
    assert _one_line(r) == (f'error: cannot write output {room / "r" / "model.safetensors"}: No space left on '
                            f'device; the training is saved in {last}: make room there, then --resume {last} '
                            f'finishes the export without training again.')
    assert 'model.safetensors' not in os.listdir(room / 'r') and last.is_file()
    subprocess.run(['mount', '-o', 'remount,size=6000k', str(room)], check=True)  # room made, as the line says
    r = _cli('timm_cra.train', ['--resume', last, '--data-dir', cifar10_test, *_TINY_RUN[:-2]], cli_env, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert {'model.safetensors', 'config.json', 'results.json'} <= set(os.listdir(room / 'r'))


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_full_disk_before_the_first_checkpoint_does_not_advise_resume(small_disk, cli_env, tmp_path, cifar10_test):
    """A trainer whose first last.pth does not fit: one line saying no checkpoint exists, and it no longer
    advises --resume of that missing file."""
    disk = small_disk('small', '1m')
    (disk / 'r').mkdir()  # a folder the run did not create keeps what it wrote (one it created goes with it)
    r = _cli('timm_cra.train', _TINY_RUN + ['--data-dir', cifar10_test, '--output', disk], cli_env, tmp_path)
    last = _one_line(r)
    assert last.startswith('error: Saving the checkpoint failed') and 'No space left on device' in last, last
    assert 'no earlier checkpoint exists' in last and '--resume' not in last and 'start the run again' in last
    assert not (disk / 'r' / 'last.pth').exists() and not list((disk / 'r').glob('.tmp-*'))
    # Run again as told: it used to dead-end on "pass --resume .../last.pth" (no such file); it names --overwrite.
    r = _cli('timm_cra.train', _TINY_RUN + ['--data-dir', cifar10_test, '--output', disk], cli_env, tmp_path)
    last = _one_line(r)
    assert 'holds an earlier run that wrote no checkpoint' in last and 'pass --overwrite to start it again' in last
    assert '--resume' not in last, last


def test_publish_onto_a_full_disk_is_one_line_and_leaves_nothing(small_disk, weights, capsys):
    """safetensors' SafetensorError (os error 28) while publish writes its staging folder was a traceback: one line
    naming the folder and the OS reason, exit 2, no staging folder left."""
    full = small_disk('full', '64k')
    _fill(full)
    err = _refused(publish_main, ['cra_cifar_resnet20.t', weights, '--out', full / 'repo'], capsys)
    assert err == (f'error: cannot write output folder {full / "repo"}: No space left on device; choose a writable '
                   f'place with free space.\n')
    assert sorted(os.listdir(full)) == ['filler']


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_a_255_byte_export_name_with_a_newline_is_written_and_shown_escaped(tmp_path, cli_env):
    """`export -o <255-byte name>.onnx` failed on its 269-byte temp name (ENAMETOOLONG); a newline in the name
    was printed raw in the 'wrote ...' line. The file is written, nothing else is left, the line shows `\\n`."""
    name = 'a\nb' + 'x' * (255 - len('a\nb.onnx')) + '.onnx'
    assert len(name.encode()) == 255
    r = _cli('timm_cra.export', ['-m', 'cra_cifar_resnet20', '-o', tmp_path / name, '--no-verify'], cli_env, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count('\n') == 1 and r.stdout.startswith(f'wrote {tmp_path}/a\\nbxxx'), r.stdout
    assert os.listdir(tmp_path) == [name] and (tmp_path / name).stat().st_size > 0


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_a_second_run_on_a_run_folder_in_use_is_refused_and_writes_nothing(class_folder, tmp_path, cli_env):
    """Two trainers on one --output/--experiment: the second is refused at once (the run folder's lock is held by
    the first for its whole run) instead of both passing the 'folder holds a run' check and one run being lost.
    The lock is held here by this process, as a running trainer holds it; once released, the same command runs."""
    from timm_cra.utils.io import locked_folder
    run = tmp_path / 'o' / 'race'
    argv = ['--model', 'cra_cifar_resnet20', '--epochs', '1', '--batch-size', '8', '--img-size', '32', '-j', '0',
            '--data-dir', class_folder, '--dataset', 'folder', '--output', tmp_path / 'o', '--experiment', 'race']
    with locked_folder(str(run)):
        r = _cli('timm_cra.train', argv + ['--seed', '2'], cli_env, tmp_path)
        assert r.returncode == 2 and r.stderr.count('\n') == 1, r.stderr
        assert r.stderr.startswith(f'error: another process (pid {os.getpid()}) is writing {run}: '), r.stderr
        assert '--experiment' in r.stderr and os.listdir(run) == []
    r = _cli('timm_cra.train', argv + ['--seed', '1'], cli_env, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (run / 'last.pth').is_file() and (run / 'model.safetensors').is_file()


def test_publish_never_replaces_an_org_folder_or_the_current_one(weights, tmp_path, capsys, monkeypatch):
    """`--out hub/me --overwrite` (the repo name forgotten) deleted repos a, b and NOTES.txt, rc 0; `--out .` and
    `--out sub/..` built everything, then failed on the rename ("Device or resource busy"), leaving `sub/`. Now
    each is one line before any work, naming the folder and what it holds, and nothing is touched."""
    org = tmp_path / 'hub' / 'me'
    for repo in ('a', 'b'):
        publish_main(['cra_cifar_resnet20.test_out', str(weights), '--out', str(org / repo)])
    (org / 'NOTES.txt').write_text('notes')
    before = {p: p.read_bytes() for p in org.rglob('*') if p.is_file()}
    for flags in ([], ['--overwrite']):
        err = _refused(publish_main, ['cra_cifar_resnet20.test_out', weights, '--out', org] + flags, capsys)
        assert f'--out {org} is not a model repo folder (holds NOTES.txt, a, b; folders a, b)' in err
        assert '--overwrite' not in err
    assert {p: p.read_bytes() for p in org.rglob('*') if p.is_file()} == before
    publish_main(['cra_cifar_resnet20.test_out', str(weights), '--out', str(org / 'a'), '--overwrite'])  # a repo
    work = tmp_path / 'work'
    work.mkdir()
    monkeypatch.chdir(work)
    for out in ('.', 'sub/..', '..'):
        err = _refused(publish_main, ['cra_cifar_resnet20.test_out', weights, '--out', out, '--overwrite'], capsys)
        assert f'--out {out} is the current folder or holds it' in err
    assert os.listdir(work) == [] and sorted(os.listdir(tmp_path)) == ['hub', 'work']


def test_publish_overwrite_keeps_hidden_files_that_are_not_the_repos(weights, tmp_path, capsys):
    """Hidden entries were ignored when deciding whether --out is a repo folder: `--overwrite` onto a folder
    holding only `.env` and `.data/` (so "empty"), or a repo holding `.experiments/`, deleted them, rc 0. Only a
    clone's `.git`/`.gitattributes` and `hf download`'s `.cache/huggingface` belong to a repo; anything else is
    refused in one line, untouched."""
    hidden = tmp_path / 'hidden'
    (hidden / '.data').mkdir(parents=True)
    (hidden / '.data' / 'train.csv').write_text('precious')
    (hidden / '.env').write_text('TOKEN=1')
    err = _refused(publish_main, ['cra_cifar_resnet20.test_out', weights, '--out', hidden, '--overwrite'], capsys)
    assert f'--out {hidden} is not a model repo folder (holds .data, .env; folders .data)' in err
    repo = tmp_path / 'repo'
    publish_main(['cra_cifar_resnet20.test_out', str(weights), '--out', str(repo)])
    (repo / '.experiments').mkdir()
    (repo / '.experiments' / 'notes.md').write_text('notes')
    err = _refused(publish_main, ['cra_cifar_resnet20.test_out', weights, '--out', repo, '--overwrite'], capsys)
    assert 'folders .experiments' in err
    assert (hidden / '.data' / 'train.csv').read_text() == 'precious' and (hidden / '.env').is_file()
    assert (repo / '.experiments' / 'notes.md').read_text() == 'notes'
    (repo / '.experiments' / 'notes.md').unlink()
    (repo / '.experiments').rmdir()
    for name in ('.git/HEAD', '.gitattributes', '.cache/huggingface/download/config.json.metadata'):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text('x')
    publish_main(['cra_cifar_resnet20.test_out', str(weights), '--out', str(repo), '--overwrite'])
    assert (repo / '.git' / 'HEAD').is_file() and (repo / '.gitattributes').is_file()
    assert not (repo / '.cache').exists() and (repo / 'model.safetensors').is_file()


@pytest.mark.parametrize('how', ['renamed', 'removed'])
def test_a_run_folder_moved_mid_run_stops_with_advice_that_keeps_the_epochs(tmp_path, monkeypatch, cifar10_test, how):
    """The run folder renamed (or removed) between epochs: the trainer's next writes by name silently started a new
    folder at the old place (no args.yaml, the checkpoint of the epochs before in the moved one). It stops instead,
    naming the moved folder's last.pth to --resume: that resume finishes the run with every epoch."""
    import shutil
    import torch
    from timm_cra.train import train, trainer
    from timm_cra.utils.errors import UsageError
    run, moved = tmp_path / 'o' / 'r', tmp_path / 'o' / 'r-moved'
    real_save = trainer.save_checkpoint

    def save_then_move(path, **kwargs):  # the user's `mv` (or `rm -r`) right after epoch 0 was saved
        real_save(path, **kwargs)
        if kwargs['epoch'] == 1:
            os.rename(run, moved) if how == 'renamed' else shutil.rmtree(run)

    monkeypatch.setattr(trainer, 'save_checkpoint', save_then_move)
    argv = _TINY_RUN[:-2] + ['--data-dir', str(cifar10_test), '--output', str(tmp_path / 'o'), '--epochs', '3']
    with pytest.raises(UsageError) as e:
        train(argv + ['--experiment', 'r'])
    message = str(e.value)
    assert '\n' not in message and not run.exists(), message  # no new folder at the old place
    if how == 'removed':
        assert f'The run folder {run} was moved or removed during epoch 1' in message and 'start the run again' in message
        return
    assert message.startswith(f'The run folder {run} was moved to {moved} during epoch 1') and \
        message.endswith(f'continue with --resume {moved / "last.pth"}.'), message
    monkeypatch.setattr(trainer, 'save_checkpoint', real_save)
    summary = train(argv + ['--resume', str(moved / 'last.pth')])
    assert summary['epochs'] == 3 and summary['output_dir'] == str(moved)
    history = torch.load(moved / 'last.pth', weights_only=True)['history']
    assert [row['epoch'] for row in history] == [0, 1, 2] and sorted(os.listdir(tmp_path / 'o')) == ['r-moved']


@pytest.mark.slow  # over ~15 s on 2 cores (many processes or epochs): CI step 2
def test_ctrl_c_during_a_training_is_one_line_exit_130_and_leaves_no_half_written_file(class_folder, tmp_path,
                                                                                        cli_env):
    """SIGINT (Ctrl-C) during any console script was a KeyboardInterrupt traceback: the shared runner (run_cli)
    prints `interrupted` (here with the trainer's `--resume` line) and exits 130; the run folder holds whole files only (the atomic writers remove their temp
    file on the way out), and the checkpoint written before the interrupt loads."""
    import signal
    import time
    out = tmp_path / 'out'
    proc = subprocess.Popen(
        [sys.executable, '-m', 'timm_cra.train', '--model', 'cra_cifar_resnet20', '--data-dir', str(class_folder),
         '--val-split', 'val', '--epochs', '1000', '-b', '6', '-j', '0', '--no-plot', '--output', str(out),
         '--experiment', 'run'], env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=sigint_as_a_shell_leaves_it)
    try:
        deadline = time.monotonic() + 120
        while not (out / 'run' / 'last.pth').exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # interrupt mid-run, with a checkpoint already written
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=180)  # a loaded 2-core CI machine: 60 s ran out once
    finally:
        proc.kill()
    # how to go on, as the last line (it was `interrupted` alone)
    resume = f"interrupted: the epochs saved are kept; continue with --resume {out / 'run' / 'last.pth'}\n"
    assert proc.returncode == 130 and err.endswith(resume) and 'Traceback' not in err, err[-3000:]
    files = sorted(p.name for p in (out / 'run').iterdir())
    assert not [f for f in files if f.startswith('.') or f.endswith('.tmp')], files
    assert torch.load(out / 'run' / 'last.pth', weights_only=True)['epoch'] >= 1


@pytest.mark.slow  # over ~15 s on 2 cores (many processes or epochs): CI step 2
def test_ctrl_c_while_torch_and_numpy_are_imported_ends_the_command_130_with_no_file(class_folder, tmp_path, cli_env):
    """Ctrl-C about 2 s after start, while numpy / torch were being imported, was sometimes swallowed by the
    library: the run then trained to "Done" with rc 0, or died at the export (`module 'numpy' has no attribute
    'multiply'`) leaving last.pth without model.safetensors. The command records the signal from `import timm_cra`
    on (before torch), so it ends `interrupted`, 130, with no traceback and no run file, wherever the signal lands.
    The signal is sent when the import log (-X importtime) shows numpy or torch modules loading."""
    import signal
    out = tmp_path / 'out'
    proc = subprocess.Popen(
        [sys.executable, '-X', 'importtime', '-m', 'timm_cra.train', '--model', 'cra_cifar_resnet20', '--data-dir',
         str(class_folder), '--val-split', 'val', '--epochs', '2', '-b', '6', '-j', '0', '--no-plot', '--output',
         str(out), '--experiment', 'run'], env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=sigint_as_a_shell_leaves_it)
    try:
        seen = []
        for line in proc.stderr:  # one line per module imported, as it finishes
            seen.append(line)
            if line.startswith('import time:') and line.split('|')[-1].strip().split('.')[0] in ('numpy', 'torch'):
                break
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    err = ''.join(seen) + err
    assert 'numpy' in ''.join(seen) or 'torch' in ''.join(seen), err[-2000:]
    assert proc.returncode == 130 and err.endswith('interrupted\n') and 'Traceback' not in err, err[-3000:]
    assert not (out / 'run').exists() or list((out / 'run').iterdir()) == [], list((out / 'run').iterdir())


# --- train --overwrite keeps the replaced run until the new one's first checkpoint ---

def _make_class_folder(root, n_train: int, broken_train: bool = False):
    """``root/train`` and ``root/val`` with 2 classes of 32x32 PNGs (``broken_train``: every training file is bytes
    that are no image)."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    for split, n in (('train', n_train), ('val', 2)):
        for c in ('cat', 'dog'):
            for i in range(n):
                p = root / split / c / f'{i}.png'
                p.parent.mkdir(parents=True, exist_ok=True)
                if broken_train and split == 'train':
                    p.write_bytes(b'not a png')
                else:
                    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(p)
    return root


def _overwrite_train(data, out, *extra):
    return ['--model', 'cra_cifar_resnet20', '--data-dir', data, '--val-split', 'val', '--epochs', '1', '-b', '2',
            '-j', '0', '--no-plot', '--device', 'cpu', '--output', out, '--experiment', 'det', *extra]


def _folder_bytes(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def _stop_in_epoch_0(argv, cli_env, cwd, sig):
    """Start the trainer, send ``sig`` once it logs its first step of epoch 0 (of many: the epoch goes on), wait for
    the end; -> (returncode, output)."""
    import signal
    proc = subprocess.Popen([sys.executable, '-m', 'timm_cra.train'] + [str(a) for a in argv], env=cli_env,
                            cwd=str(cwd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=sigint_as_a_shell_leaves_it)
    log = []
    try:
        for line in proc.stdout:
            log.append(line)
            if line.split('INFO ')[-1].startswith('Train: 0 ['):
                proc.send_signal(sig)
                break
        out, _ = proc.communicate(timeout=CLI_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    log.append(out or '')
    assert any(line.split('INFO ')[-1].startswith('Train: 0 [') for line in log), ''.join(log)[-3000:]
    return proc.returncode, ''.join(log)


@pytest.fixture(scope='module')
def earlier_run(tmp_path_factory, cli_env):
    """A finished run (``out/det``) of the CLI, and the data it trained on (many small steps per epoch)."""
    root = tmp_path_factory.mktemp('overwrite')
    data = _make_class_folder(root / 'data', n_train=60)
    proc = _cli('timm_cra.train', _overwrite_train(data, root / 'out'), cli_env, root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / 'out' / 'det', data


def _replaced_run(earlier_run, tmp_path):
    run, data = earlier_run
    shutil.copytree(run, tmp_path / 'out' / 'det')
    return tmp_path / 'out' / 'det', data, _folder_bytes(run)


@pytest.mark.parametrize('failure', ['nan', 'no_readable_image'])
@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_overwrite_failing_in_epoch_0_keeps_the_replaced_run(earlier_run, tmp_path, cli_env, failure):
    """`--overwrite` deleted the earlier run's files before training: a new run failing in epoch 0 (--lr 1e6 -> NaN,
    every training image unreadable) left only its args.yaml, and the NaN line said "last.pth keeps the epochs
    before" with no last.pth there. The earlier run now waits aside until the first checkpoint: after the failure
    its files are back byte for byte, nothing hidden is left, and the line names no last.pth."""
    run, data, before = _replaced_run(earlier_run, tmp_path)
    if failure == 'nan':
        extra = ['--lr', '1e6']
    else:
        data = _make_class_folder(tmp_path / 'broken', n_train=2, broken_train=True)
        extra = []
    proc = _cli('timm_cra.train', _overwrite_train(data, tmp_path / 'out', '--overwrite', *extra), cli_env, tmp_path)
    err = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and err.startswith('error: '), proc.stderr[-3000:]
    assert ('in epoch 0, so the run stopped:' in err) if failure == 'nan' else ('read no training image' in err)
    assert 'last.pth' not in err
    assert _folder_bytes(run) == before  # the replaced run, whole; no hidden leftover


@pytest.mark.slow  # two trainer processes and a signal (~20 s on 2 busy cores)
@pytest.mark.parametrize('how', ['sigint', 'kill'])
def test_overwrite_stopped_in_epoch_0_keeps_the_replaced_run(earlier_run, tmp_path, cli_env, how):
    """Ctrl-C in epoch 0 of an `--overwrite` run puts the replaced run back at once (exit 130); a kill -9 there
    leaves it aside (hidden, in the run folder), and the next run on the folder puts it back first: without
    `--overwrite` it is then refused as a folder holding a run, and the earlier run is there byte for byte."""
    import signal
    run, data, before = _replaced_run(earlier_run, tmp_path)
    argv = _overwrite_train(data, tmp_path / 'out', '--overwrite', '--log-interval', '1')
    rc, log = _stop_in_epoch_0(argv, cli_env, tmp_path, signal.SIGINT if how == 'sigint' else signal.SIGKILL)
    if how == 'sigint':
        assert rc == 130 and log.endswith('interrupted\n'), log[-3000:]
    else:
        assert rc == -signal.SIGKILL and not (run / 'last.pth').exists(), log[-3000:]
        assert (run / '.overwritten-run').is_dir()
        proc = _cli('timm_cra.train', _overwrite_train(data, tmp_path / 'out'), cli_env, tmp_path)
        assert proc.returncode == 2 and 'already holds a run (last.pth' in proc.stderr, proc.stderr[-3000:]
    assert _folder_bytes(run) == before


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_a_run_failing_in_epoch_0_removes_the_folders_it_created(earlier_run, tmp_path, cli_env):
    """A run failing before its first checkpoint in a new nested --output left out1/x/y/e/args.yaml and the
    folders above it, though nothing of it can be resumed: the folders it created go again, with its files."""
    data = earlier_run[1]
    proc = _cli('timm_cra.train', _overwrite_train(data, tmp_path / 'out1' / 'x' / 'y', '--lr', '1e6'), cli_env,
                tmp_path)
    assert proc.returncode == 2 and 'in epoch 0, so the run stopped:' in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / 'out1').exists()


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_checkpoint_upgrade_into_another_runs_folder_is_refused(earlier_run, tmp_path, cli_env):
    """`timm-cra-checkpoint upgrade A/last.pth B/last.pth` (B another complete run) wrote A's checkpoint beside B's
    weights and results ("Wrote B/last.pth"), mixing the runs: refused in one line, B untouched; in place, or into a
    folder holding no run, it writes as before."""
    run = earlier_run[0]
    a, b = tmp_path / 'a', tmp_path / 'b'
    shutil.copytree(run, a)
    shutil.copytree(run, b)
    before = _folder_bytes(b)
    proc = _cli('timm_cra.train.checkpoint', ['upgrade', a / 'last.pth', b / 'last.pth'], cli_env, tmp_path)
    assert proc.returncode == 2 and proc.stderr.count('\n') == 1, proc.stderr[-3000:]
    assert 'in the folder of another run' in proc.stderr and 'OUT = SRC' in proc.stderr
    assert _folder_bytes(b) == before
    (tmp_path / 'fresh').mkdir()
    for dst in (a / 'last.pth', tmp_path / 'fresh' / 'last.pth'):
        proc = _cli('timm_cra.train.checkpoint', ['upgrade', a / 'last.pth', dst], cli_env, tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert torch.load(tmp_path / 'fresh' / 'last.pth', weights_only=True)['epoch'] == 1


def test_readers_of_a_folder_whose_run_is_set_aside_say_where_it_is(tmp_path):
    """After an --overwrite run was killed before its first checkpoint, the earlier run waits in .overwritten-run
    until the next training on the folder: `--checkpoint run/last.pth` said only "does not exist" and `local-dir:`
    "is not a model folder", with no word of where the run was or how it comes back."""
    from timm_cra.models import create_model
    from timm_cra.utils.errors import TimmCraError, UsageError
    from timm_cra.utils.weights import check_file
    run = tmp_path / 'run'
    (run / '.overwritten-run').mkdir(parents=True)
    (run / '.overwritten-run' / 'last.pth').write_bytes(b'x')
    (run / 'args.yaml').write_text('epochs: 1\n')
    note = (f"(an earlier run of this folder is in {run / '.overwritten-run'}: an --overwrite run was stopped before "
            f"its first checkpoint; the next timm-cra-train with this folder as its run folder puts it back).")
    with pytest.raises(UsageError) as e:
        check_file(str(run / 'last.pth'))
    assert str(e.value) == f"Checkpoint '{run / 'last.pth'}' does not exist {note}"
    with pytest.raises(TimmCraError) as e:
        create_model(f'local-dir:{run}', pretrained=True)
    assert str(e.value).endswith(f"python -m timm_cra.hub.publish) {note}") and '\n' not in str(e.value)
    (run / '.overwritten-run' / 'last.pth').unlink()
    (run / '.overwritten-run').rmdir()
    with pytest.raises(UsageError) as e:
        check_file(str(run / 'last.pth'))
    assert str(e.value) == f"Checkpoint '{run / 'last.pth'}' does not exist."
