"""One error root: every exception class the package defines derives from ``timm_cra.TimmCraError``, and the CLI
boundary (``run_cli``) prints exactly those as one line."""
import importlib
import inspect
import os
import pkgutil

import pytest

import timm_cra
from timm_cra import PretrainedWeightsError, TimmCraError
from timm_cra.export.onnx import OnnxMismatchError
from timm_cra.utils.errors import UsageError, run_cli

from ..conftest import sigint_as_a_shell_leaves_it

#: Exception classes allowed outside the root, with the reason.
OUTSIDE_ROOT = {
    # The loopback Hub server's internal carrier of an HTTP status and message from a request handler to its
    # one reply; it never leaves the server and is not a failure of the library.
    'timm_cra.hub.server._HubError',
}


def _package_modules():
    yield timm_cra.__name__
    for info in pkgutil.walk_packages(timm_cra.__path__, prefix=timm_cra.__name__ + '.'):
        yield info.name


def _exception_classes():
    for name in _package_modules():
        module = importlib.import_module(name)  # __main__ modules run their CLI only under `python -m`
        for cls in vars(module).values():
            if inspect.isclass(cls) and issubclass(cls, BaseException) and cls.__module__ == name:
                yield f'{name}.{cls.__qualname__}', cls


def test_every_exception_class_derives_from_the_root():
    classes = dict(_exception_classes())
    assert 'timm_cra.utils.errors.UsageError' in classes and 'timm_cra.data.images.UnreadableImage' in classes
    outside = sorted(name for name, cls in classes.items() if not issubclass(cls, TimmCraError))
    assert outside == sorted(OUTSIDE_ROOT & set(classes)), f'exception classes outside TimmCraError: {outside}'


def test_public_names_keep_their_import_paths_and_builtin_bases():
    from timm_cra import PretrainedWeightsError, UnknownModelError, UnknownPretrainedTagError
    from timm_cra.data.errors import DataError
    from timm_cra.data.images import UnreadableImage
    from timm_cra.export.onnx import OnnxMismatchError
    from timm_cra.hub.card import RepoContentError
    from timm_cra.models import RetrofitKeyError
    from timm_cra.models._weight_checks import HubUnreachableError, WeightsCheckError
    from timm_cra.train.checkpoint import CheckpointSaveError
    from timm_cra.utils.errors import UsageError
    from timm_cra.utils.extras import MissingExtraError
    from timm_cra.utils.io import OutputPathError
    bases = {PretrainedWeightsError: RuntimeError, UnknownPretrainedTagError: (PretrainedWeightsError, ValueError),
             UnknownModelError: (UsageError, RuntimeError), OnnxMismatchError: RuntimeError,
             RetrofitKeyError: (WeightsCheckError, ValueError), HubUnreachableError: WeightsCheckError,
             DataError: UsageError, UnreadableImage: (DataError, ValueError), CheckpointSaveError: UsageError,
             MissingExtraError: (UsageError, ImportError), OutputPathError: (UsageError, OSError),
             RepoContentError: (UsageError, ValueError)}
    for cls, base in bases.items():
        for b in base if isinstance(base, tuple) else (base,):
            assert issubclass(cls, b), (cls, b)


def _raising(err):
    def main(argv):
        raise err
    return main


@pytest.mark.parametrize('err', [PretrainedWeightsError('timm_cra: no weights\nfor x'), UsageError('bad --lr'),
                                 OnnxMismatchError('max abs diff 1.0')])
def test_run_cli_prints_library_errors_as_one_line(err, capsys):
    with pytest.raises(SystemExit) as info:
        run_cli(_raising(err), [])
    err_text = capsys.readouterr().err
    assert info.value.code == 2 and err_text.startswith('error: ') and err_text.count('\n') == 1, err_text


@pytest.mark.parametrize('err', [RuntimeError('a bug'), ValueError('a bug'), OSError('a bug')])
def test_run_cli_leaves_other_errors_their_traceback(err):
    with pytest.raises(type(err), match='a bug'):
        run_cli(_raising(err), [])


def test_run_cli_prints_an_interrupt_as_one_line_exit_130(capsys):
    def interrupted(argv):
        raise KeyboardInterrupt
    with pytest.raises(SystemExit) as e:
        run_cli(interrupted)
    assert e.value.code == 130 and capsys.readouterr().err == 'interrupted\n'


def test_a_path_stdout_cannot_encode_is_printed_escaped(tmp_path):
    """With an ASCII-only stdout (PYTHONIOENCODING=ascii, LC_ALL=C on older Pythons), `wrote naïve.onnx` was a
    UnicodeEncodeError traceback after a complete write: run_cli escapes what the stream cannot encode."""
    import subprocess
    import sys
    code = 'from timm_cra.utils.errors import run_cli; run_cli(lambda argv: print("wrote na\\u00efve.onnx"))'
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                       env=dict(__import__('os').environ, PYTHONIOENCODING='ascii'))
    assert r.returncode == 0 and r.stdout == 'wrote na\\xefve.onnx\n', r.stderr


@pytest.fixture
def no_interrupt_recorded():
    """The flag is process-wide: a test that raises a signal must not leave it set for the next test."""
    from timm_cra.utils import errors
    yield errors
    errors._received = None


_SWALLOWED_INTERRUPT = """
import json, os, signal, sys
from timm_cra.utils.errors import run_cli
from timm_cra.utils.io import atomic_folder, atomic_write
sig, folder = getattr(signal, sys.argv[1]), sys.argv[2]
attempts = []

def main(argv):
    try:
        signal.raise_signal(sig)  # delivered now, in this (the main) thread
    except KeyboardInterrupt:
        pass  # what the library did
    for write in (lambda: atomic_write(os.path.join(folder, 'model.safetensors'), 'wb'),
                  lambda: atomic_folder(os.path.join(folder, 'repo'))):
        try:
            with write():
                attempts.append('started')
        except KeyboardInterrupt:
            attempts.append('refused')
    return 'Done'

try:
    run_cli(main, [])
finally:
    print(json.dumps(attempts))
"""


@pytest.mark.parametrize('signame, code, line', [('SIGINT', 130, 'interrupted'), ('SIGTERM', 143, 'terminated')])
def test_a_swallowed_interrupt_stops_the_next_write_and_never_exits_0(tmp_path, cli_env, signame, code, line):
    """A Ctrl-C while numpy / torch were imported was sometimes swallowed by the library: the run trained on to
    "Done", rc 0 (or died later at the export, leaving last.pth without model.safetensors). run_cli records the
    signal before raising KeyboardInterrupt: a write started after it is refused (no file, no temp file), and the
    command ends `interrupted`, 130 (SIGTERM: `terminated`, 143), even when every KeyboardInterrupt is swallowed.
    In a process of its own with SIGINT at its default, as a shell starts a command: a test run started in the
    background ignores SIGINT, and run_cli rightly leaves an ignored signal ignored."""
    import json
    import subprocess
    import sys
    folder = tmp_path / 'out'
    folder.mkdir()
    r = subprocess.run([sys.executable, '-c', _SWALLOWED_INTERRUPT, signame, str(folder)], env=cli_env,
                       capture_output=True, text=True, timeout=120, preexec_fn=sigint_as_a_shell_leaves_it)
    assert (r.returncode, r.stderr) == (code, f'{line}\n'), r.stderr[-2000:]
    assert json.loads(r.stdout) == ['refused', 'refused'] and os.listdir(folder) == []


def test_run_cli_gives_an_in_process_caller_its_signal_handlers_back(no_interrupt_recorded, capsys):
    """run_cli installs its stop-signal handlers for the command and restores the caller's afterwards."""
    import signal
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with pytest.raises(SystemExit) as e:
        run_cli(lambda argv: signal.raise_signal(signal.SIGTERM), [])
    assert e.value.code == 143 and capsys.readouterr().err == 'terminated\n'
    assert {s: signal.getsignal(s) for s in before} == before
    assert no_interrupt_recorded.interrupted() == signal.SIGTERM


@pytest.mark.parametrize('argv', [
    ['-c', 'from timm_cra.utils.errors import run_cli; run_cli(lambda a: print("x" * 99999))'],  # as a command's
    ['-m', 'timm_cra.eval', '--help'],  # argparse drops what it cannot write: exit 0, quiet, no traceback
])
@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_stdout_closed_early_or_full_is_quiet_or_one_line(argv, cli_env):
    """`timm-cra-validate ... | head -1` was a BrokenPipeError traceback (`--help` too, at the exit's flush); stdout
    on a full device (`> /dev/full`) an OSError traceback. A reader gone is quiet, exit 141 (as `yes | head`); no
    space is one line, exit 2."""
    import subprocess
    import sys
    proc = subprocess.Popen([sys.executable] + argv, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    proc.stdout.close()  # the reader is gone before the command writes
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == (141 if argv[0] == '-c' else 0) and err == '', err[-2000:]
    if argv[0] != '-c':
        return
    with open('/dev/full', 'w') as full:
        proc = subprocess.run([sys.executable] + argv, env=cli_env, stdout=full, stderr=subprocess.PIPE, text=True,
                              timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith('error: the output could not be written to stdout (No '
                                                           'space left on device)'), proc.stderr[-2000:]
    assert proc.stderr.count('\n') == 1


def _run_with_failing_stream(cli_env, cwd, module, argv, how):
    """``python -m module argv`` (a command as its console script runs it) with stderr closed (``2>&-``), on a full
    device (``2>/dev/full``), or a pipe whose reader went away (``2>&1 | head -1``); ``stdout closed``: ``>&-``.
    Returns (exit status, stdout)."""
    import subprocess
    import sys
    cmd = [sys.executable, '-m', module] + [str(a) for a in argv]
    kwargs = dict(env=cli_env, cwd=str(cwd), stdout=subprocess.PIPE, text=True)
    if how in ('stderr closed', 'stdout closed'):
        fd = 2 if how == 'stderr closed' else 1
        kwargs.update(preexec_fn=lambda: os.close(fd), stderr=subprocess.DEVNULL)
        if fd == 1:
            kwargs['stdout'] = subprocess.DEVNULL
        r = subprocess.run(cmd, timeout=300, **kwargs)
        return r.returncode, r.stdout or ''
    if how == 'stderr full':
        with open('/dev/full', 'w') as full:
            r = subprocess.run(cmd, timeout=300, stderr=full, **kwargs)
        return r.returncode, r.stdout
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, **kwargs)
    proc.stderr.close()  # the reader is gone before the command writes its first log line
    out = proc.stdout.read()
    return proc.wait(timeout=300), out


@pytest.mark.parametrize('how', ['stderr closed', 'stderr full', 'stderr pipe broken', 'stdout closed'])
@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_validate_with_an_unwritable_stderr_or_stdout_still_writes_its_results(cli_env, class_folder, tmp_path,
                                                                                 how):
    """timm-cra-validate with stderr closed, full or a broken pipe ended rc 1 with no results file and nothing on
    stdout: tqdm's progress bar write failed inside the evaluation. Stdout closed (`>&-`) did the work, then an
    AttributeError at run_cli's flush, rc 1. Stderr is best-effort (progress bar, log lines), stdout closed is
    /dev/null: the results file and stdout come out, exit 0."""
    import json
    code, out = _run_with_failing_stream(cli_env, tmp_path, 'timm_cra.eval', [
        '--model', 'cra_cifar_resnet20', '--num-classes', '3', '--data-dir', class_folder / 'val', '--device', 'cpu',
        '-j', '0', '--results-file', tmp_path / 'r.json'], how)
    assert code == 0
    results = json.loads((tmp_path / 'r.json').read_text())
    assert results['count'] == 6
    if how != 'stdout closed':
        assert json.loads(out)['top1'] == results['top1']


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_every_command_of_a_journey_survives_an_unwritable_stderr(cli_env, class_folder, tmp_path):
    """The commands that already survived an unwritable stderr (train, publish, export) survive it through the same
    mechanism as validate (run_cli's best-effort stderr), each under another of the three failures, each step
    consuming what the previous one wrote: train -> publish its last.pth -> validate and export the repo."""
    import json
    steps = [
        ('timm_cra.train', ['--model', 'cra_cifar_resnet20', '--data-dir', class_folder, '--epochs', '1',
                            '--batch-size', '6', '-j', '0', '--no-plot', '--output', tmp_path / 'runs',
                            '--experiment', 'run', '--device', 'cpu'], 'stderr closed'),
        ('timm_cra.hub.publish', ['cra_cifar_resnet20.pets', tmp_path / 'runs' / 'run' / 'last.pth', '--out',
                                  tmp_path / 'repo'], 'stderr full'),
        ('timm_cra.export', ['--model', f'local-dir:{tmp_path / "repo"}', '-o', tmp_path / 'm.onnx'],
         'stderr pipe broken'),
    ]
    for module, argv, how in steps:
        code, out = _run_with_failing_stream(cli_env, tmp_path, module, argv, how)
        assert code == 0, (module, how)
    assert (tmp_path / 'runs' / 'run' / 'model.safetensors').is_file()
    assert json.loads((tmp_path / 'repo' / 'config.json').read_text())['label_names'] == ['cat', 'dog', 'emu']
    assert (tmp_path / 'm.onnx').stat().st_size > 0 and 'm.onnx' in out


def test_an_out_of_space_error_elsewhere_is_not_blamed_on_stdout(cli_env):
    """run_cli printed "the output could not be written to stdout" for any out-of-space error (a full stderr, a
    file a library wrote): only a failure of stdout itself is stdout's; another keeps its traceback."""
    import subprocess
    import sys
    code = ('import errno; from timm_cra.utils.errors import run_cli\n'
            'def main(argv):\n    print("result")\n    raise OSError(errno.ENOSPC, "No space left on device")\n'
            'run_cli(main)')
    r = subprocess.run([sys.executable, '-c', code], env=cli_env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and r.stdout == 'result\n' and 'stdout' not in r.stderr, r.stderr[-2000:]
    assert r.stderr.rstrip().endswith('OSError: [Errno 28] No space left on device')


@pytest.mark.parametrize('repo_id', ['me/bad name', 'a/b/c', 'me/x..y', '', 'me/' + 'x' * 97])
def test_an_invalid_hub_repo_id_is_one_line(repo_id):
    """`--model hf-hub:<id the Hub refuses>` was huggingface_hub's HFValidationError, a 41-line traceback: the
    name is refused where hf-hub: names are resolved (create_model), as a UsageError naming the form to write."""
    from timm_cra.models import create_model
    with pytest.raises(UsageError, match='is not a Hub repo id: write hf-hub:<org>/<name>') as e:
        create_model(f'hf-hub:{repo_id}')
    assert '\n' not in str(e.value)


def test_an_hf_hub_name_ending_in_at_names_no_revision_and_is_refused():
    """`hf-hub:org/repo@` (a revision left out after the '@') loaded the default branch as if none was asked."""
    from timm_cra.models import create_model
    with pytest.raises(UsageError, match=r"'hf-hub:timm-cra/cra_resnet50\.paper_in1k@' names no revision after '@': "
                                         r"write hf-hub:timm-cra/cra_resnet50\.paper_in1k@<branch, tag or commit>"):
        create_model('hf-hub:timm-cra/cra_resnet50.paper_in1k@')


@pytest.mark.parametrize('module, argv', [
    ('timm_cra.train', ['--epochs', '1', '--no-plot']),
    ('timm_cra.eval', []),
    ('timm_cra.export', ['-o', 'm.onnx']),
])
@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_every_command_refuses_an_invalid_hub_repo_id_in_one_line(run_command, class_folder, tmp_path, module, argv):
    """train, validate and export: one `error:` line, exit 2, nothing written."""
    from timm_cra.cli import COMMANDS
    command = next(c for c, m in COMMANDS.items() if m == module)
    data = {'timm_cra.export': [], 'timm_cra.train': ['--data-dir', class_folder, '-j', '0']}.get(
        module, ['--data-dir', class_folder / 'val', '-j', '0'])
    r = run_command(command, ['--model', 'hf-hub:me/bad name'] + data + [
        str(tmp_path / a) if a.endswith('.onnx') else a for a in argv] + (
        ['--output', tmp_path / 'runs'] if module == 'timm_cra.train' else []))
    assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr[-2000:]
    last = r.stderr.splitlines()[-1]  # train logs its data first
    assert last.startswith('error: ') and "'me/bad name' is not a Hub repo id: write hf-hub:<org>/<name>" in last
    assert not (tmp_path / 'runs').exists() and not (tmp_path / 'm.onnx').exists()
