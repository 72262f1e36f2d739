"""One error root: every exception class the package defines derives from ``timm_cra.TimmCraError``, and the CLI
boundary (``run_cli``) prints exactly those as one line."""
import importlib
import inspect
import pkgutil

import pytest

import timm_cra
from timm_cra import PretrainedWeightsError, TimmCraError
from timm_cra.export.onnx import OnnxMismatchError
from timm_cra.utils.errors import UsageError, run_cli

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
