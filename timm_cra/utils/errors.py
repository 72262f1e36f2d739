"""The package's error root and the CLI boundary that prints it.

Every exception class of timm_cra derives from :class:`TimmCraError`: a failure the package reports on purpose,
whose message is one line naming the fix. Library functions raise it (or a subclass); CLIs (:func:`run_cli`)
print ``error: <message>`` and exit 2 for it, and for nothing else: bugs, and failures of other libraries that
the package has not explained, keep their tracebacks. A failure a CLI must print as one line is converted into
a :class:`TimmCraError` where it happens, not caught by class (``RuntimeError``, ``OSError``) at the CLI. The one
exception is running out of memory, which any allocation may do: :func:`out_of_memory` recognises it at the CLI,
which prints one line naming what to lower and exits 1.
:func:`transport_failure` says which failures of the HTTP library are transport failures, and of which kind (no
answer, a time-out, a broken connection), for the places that convert those (a weights download, a push);
:func:`hub_failure` adds answers that are not the Hub API's (a proxy's HTML page), for a push.

The tree (subclasses keep a builtin base where callers catch that, e.g. ``PretrainedWeightsError`` is a
``RuntimeError`` like timm's own load errors)::

    TimmCraError
    +-- UsageError                bad input: arguments, configs, files, checkpoints (this module)
    |   +-- DataError             a dataset that cannot be used as given (data.errors)
    |   |   +-- UnreadableImage   one image not decoded; datasets count and skip it (data.images)
    |   +-- OutputPathError       an output path that cannot be written as asked; an OSError (utils.io)
    |   +-- MissingExtraError     the ``train`` extra is not installed; an ImportError (utils.extras)
    |   +-- CheckpointSaveError   writing a checkpoint failed (train.checkpoint)
    |   +-- UnknownModelError     no architecture of that name; a RuntimeError (models._factory)
    |   +-- RepoContentError      eval results, class names, a cfg a Hub repo cannot be written from; also a
    |                             ValueError (hub.card)
    +-- PretrainedWeightsError    pretrained weights not fetched or loaded; a RuntimeError (models._load_errors)
    |   +-- UnknownPretrainedTagError   also a ValueError
    +-- WeightsCheckError         one check on loaded weights failed (models._weight_checks)
    |   +-- HubUnreachableError
    |   +-- RetrofitKeyError      also a ValueError (models.retrofit)
    +-- OnnxMismatchError         onnxruntime disagrees with PyTorch; a RuntimeError (export.onnx)
"""

import os
import re
import signal
import sys
import threading
from typing import Any, Callable, Optional, Sequence

__all__ = ['TimmCraError', 'UsageError', 'run_cli', 'INTERRUPTED_EXIT', 'interrupted', 'check_not_interrupted',
           'catch_interrupts', 'printable', 'transport_failure', 'out_of_memory',
           'hub_failure', 'never_connected', 'NO_ANSWER', 'TIMED_OUT', 'BROKEN', 'NOT_A_HUB']


class TimmCraError(Exception):
    """A failure timm_cra reports on purpose: the message is one line saying what is wrong and how to fix it."""


class UsageError(TimmCraError):
    """Bad input (arguments, configs, files, checkpoints): the message says what is wrong and how to fix it."""


def printable(text) -> str:
    """``text`` (a message, name or path) with its unprintable characters escaped as ``repr`` writes them (``\\n``,
    ``\\x1b``): a file name holding a newline or an ANSI escape code can neither forge a log / error line nor
    drive the terminal. Printable text, any script, is unchanged."""
    text = os.fspath(text) if isinstance(text, os.PathLike) else str(text)
    return text if text.isprintable() else ''.join(c if c.isprintable() else repr(c)[1:-1] for c in text)


#: The kinds of :func:`transport_failure`.
NO_ANSWER, TIMED_OUT, BROKEN = 'no answer', 'time-out', 'broken connection'

#: httpx / httpx2 error classes (with their subclasses) of each kind, checked in this order: refused or
#: unresolvable (ConnectError), accepted then closed before an answer (RemoteProtocolError); silent past the
#: time-out (TimeoutException: connect, read, write, pool); any other transport failure (ReadError, WriteError,
#: CloseError, ProxyError, ...: TransportError) broke a connection that had been made.
_TRANSPORT_KINDS = ((NO_ANSWER, ('ConnectError', 'RemoteProtocolError')), (TIMED_OUT, ('TimeoutException',)),
                    (BROKEN, ('TransportError',)))


def _http_error_classes(err: BaseException) -> set:
    # Matched by class name inside the httpx / httpx2 packages, so this does not depend on which of the two
    # huggingface_hub uses (2.x uses httpx2) and imports neither.
    return {cls.__name__ for cls in type(err).__mro__ if cls.__module__.split('.')[0] in ('httpx', 'httpx2')}


def transport_failure(err: BaseException) -> Optional[str]:
    """The kind of transport failure ``err`` (from the HTTP library huggingface_hub uses) is: :data:`NO_ANSWER`
    (refused, a name that does not resolve, a connection closed before an answer), :data:`TIMED_OUT`,
    :data:`BROKEN` (a connection reset or cut mid-way); ``None`` when it is not one (an answer of any status is
    not)."""
    names = _http_error_classes(err)
    return next((kind for kind, classes in _TRANSPORT_KINDS if names.intersection(classes)), None)


def never_connected(err: BaseException) -> bool:
    """Whether ``err`` is a connection that was never made (refused, a name that does not resolve): the request
    was not sent. A :data:`NO_ANSWER` that is not one (closed after the request was read) may have been acted on."""
    return 'ConnectError' in _http_error_classes(err)


#: The kind of :func:`hub_failure` beyond :func:`transport_failure`'s: the endpoint answered, not as a Hub does.
NOT_A_HUB = 'not a Hub answer'

#: What huggingface_hub raises when a successful answer's body is not what the Hub API sends: not JSON
#: (``JSONDecodeError`` is a ValueError), JSON of another shape (``ValueError: preupload_info is improperly formatted``,
#: ``KeyError: 'commitUrl'``, a ``TypeError`` indexing a string), or a ``commitUrl`` that is no Hub URL (``HfUriError``,
#: a ValueError).
_ANSWER_SHAPE_ERRORS = (ValueError, KeyError, IndexError, TypeError, AttributeError)


def hub_failure(err: BaseException) -> Optional[str]:
    """The kind of failure ``err``, raised by a huggingface_hub call, is: :func:`transport_failure`'s kinds, or
    :data:`NOT_A_HUB` when huggingface_hub could not read an answer it got (HTML, JSON of another shape: an endpoint
    that is not a Hub, e.g. a proxy's login page answering ``200``); ``None`` otherwise. Only for calls whose inputs
    were checked before (a push): it sorts by the class huggingface_hub's own code raised."""
    kind = transport_failure(err)
    if kind is not None or not isinstance(err, _ANSWER_SHAPE_ERRORS) or isinstance(err, TimmCraError):
        return kind
    tb = err.__traceback__
    while tb is not None:  # raised inside huggingface_hub (or the json / HTTP code it called), not around it
        if str(tb.tb_frame.f_globals.get('__name__', '')).split('.')[0] == 'huggingface_hub':
            return NOT_A_HUB
        tb = tb.tb_next
    return None


#: Exit status of a command stopped by Ctrl-C (SIGINT): 128 + the signal's number, as a shell reports it.
INTERRUPTED_EXIT = 130

#: The signals a command stops on, and the line it prints: Ctrl-C, and the polite kill (``kill``, a batch system's
#: time limit) that the atomic writers can then clean up after as they do for Ctrl-C.
_STOP_SIGNALS = {signal.SIGINT: 'interrupted', signal.SIGTERM: 'terminated'}

#: The first stop signal this process received under :func:`catch_interrupts` (None: none), and the process that
#: installed the handler (a forked data-loader worker inherits the handler, not the role).
_received: Optional[int] = None
_handler_pid: Optional[int] = None


def interrupted() -> Optional[int]:
    """The number of the stop signal (SIGINT, SIGTERM) this process received, or None. Recorded before the
    ``KeyboardInterrupt`` is raised, so it stays set when a library swallows that exception (numpy / torch
    imports, a worker loop): the run still stops at its next write (:func:`check_not_interrupted`)."""
    return _received


def check_not_interrupted() -> None:
    """Raise ``KeyboardInterrupt`` when a stop signal was received: called where a run starts a write or an
    epoch, so a swallowed Ctrl-C never goes on to write (or half-write) files."""
    if _received is not None:
        raise KeyboardInterrupt(_STOP_SIGNALS.get(_received, 'interrupted'))


def _on_stop_signal(signum, frame) -> None:
    global _received
    if os.getpid() != _handler_pid:  # a forked child (a data-loader worker): the default behaviour
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    if _received is None:
        _received = signum
    raise KeyboardInterrupt


def _interrupted_hook(exc_type, exc, tb) -> None:
    """``sys.excepthook`` of a command process: a stop signal before :func:`run_cli` runs (while ``import timm_cra``
    imports torch) ends it as run_cli would, one line and 128 + the signal, not a traceback."""
    if issubclass(exc_type, KeyboardInterrupt) and os.getpid() == _handler_pid:
        print(_STOP_SIGNALS.get(_received, 'interrupted'), file=sys.stderr)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(128 + (_received or signal.SIGINT))  # nothing was written yet: there is nothing to clean up
    sys.__excepthook__(exc_type, exc, tb)


def catch_interrupts(command_process: bool = False) -> dict:
    """Record SIGINT / SIGTERM in :func:`interrupted` and raise ``KeyboardInterrupt`` for both (SIGTERM's default
    killed the process without clean-up). Only where the handler is Python's default (a signal ignored with
    ``nohup`` / by a parent, or handled by the caller, stays so) and only in the main thread. Returns the handlers
    replaced (for :func:`run_cli` to restore). ``command_process``: this process is a timm-cra command (set from
    ``import timm_cra`` there, before torch is imported): an interrupt that escapes also ends as in :func:`run_cli`."""
    global _handler_pid
    replaced = {}
    if threading.current_thread() is not threading.main_thread():
        return replaced
    if command_process and sys.excepthook is sys.__excepthook__:
        sys.excepthook = _interrupted_hook
    defaults = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
    for signum, default in defaults.items():
        current = signal.getsignal(signum)
        if current is _on_stop_signal and _handler_pid == os.getpid():
            continue
        if current is default or current is _on_stop_signal:
            replaced[signum] = default if current is _on_stop_signal else current
            signal.signal(signum, _on_stop_signal)
    _handler_pid = os.getpid()
    return replaced


def _exit_interrupted(hint: Optional[str] = None) -> None:
    """The stop signal's word, with how to go on where the command knows one (``KeyboardInterrupt.hint``: the
    trainer's ``--resume``)."""
    word = _STOP_SIGNALS.get(_received, 'interrupted')
    print(f'{word}: {printable(hint)}' if hint else word, file=sys.stderr)
    sys.exit(128 + (_received or signal.SIGINT))


#: Exit status when stdout's reader went away (``| head -1``): 128 + SIGPIPE, what a shell reports for ``yes | head``.
BROKEN_PIPE_EXIT = 141


class _CommandStream:
    """``sys.stdout`` / ``sys.stderr`` of a command under :func:`run_cli` (attributes not set here are the
    stream's). A write or flush that fails with an OSError (a pipe whose reader went away, a full device) points the
    stream's file descriptor at /dev/null, so that later writes and the exit's flush fail no more; then
    ``best_effort`` (stderr: progress bars, log lines, warnings) drops the failure and the work goes on, else
    (stdout: the results) it is raised marked as this stream's, for :func:`_stdout_failure`."""

    def __init__(self, stream, name: str, best_effort: bool):
        self._stream, self._name, self._best_effort = stream, name, best_effort

    def __getattr__(self, attr):
        return getattr(self._stream, attr)

    def _guarded(self, call, *args):
        try:
            return call(*args)
        except OSError as e:
            try:
                fd = self._stream.fileno()
            except (AttributeError, OSError, ValueError):  # not a real file (a test's capture object)
                fd = None
            if fd is not None:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, fd)
                os.close(devnull)
            if self._best_effort:
                return len(args[0]) if args and isinstance(args[0], str) else None
            e.failed_stream = self._name
            raise

    def write(self, text):
        return self._guarded(self._stream.write, text)

    def writelines(self, lines):
        return self._guarded(self._stream.writelines, lines)

    def flush(self):
        return self._guarded(self._stream.flush)


def _command_streams() -> tuple:
    """Replace ``sys.stdout`` / ``sys.stderr`` by :class:`_CommandStream` s for :func:`run_cli`; returns the
    streams replaced, to restore. A stream closed by the shell (``>&-``, ``2>&-``: Python's is ``None``) becomes
    /dev/null, opened on the lowest free descriptor, so no file the command opens later takes its number."""
    replaced = sys.stdout, sys.stderr
    streams = [stream if stream is not None else open(os.devnull, 'w') for stream in replaced]
    for stream in streams:
        if hasattr(stream, 'reconfigure'):  # a TextIOWrapper (not a test's capture object)
            stream.reconfigure(errors='backslashreplace')
    sys.stdout = _CommandStream(streams[0], 'stdout', best_effort=False)
    sys.stderr = _CommandStream(streams[1], 'stderr', best_effort=True)
    return replaced


def _stdout_failure(err: OSError) -> Optional[int]:
    """The exit status when ``err`` is stdout failing (:class:`_CommandStream` marks it), else None: its reader went
    away (``| head -1``): quiet, :data:`BROKEN_PIPE_EXIT`; another failure (no space left, ``> /dev/full``; the
    package's own files report that as an :class:`~timm_cra.utils.io.OutputPathError`): one line, 2."""
    if getattr(err, 'failed_stream', None) != 'stdout':
        return None  # another pipe, socket or file failed: not ours to hide
    if isinstance(err, BrokenPipeError):
        return BROKEN_PIPE_EXIT
    print(f'error: the output could not be written to stdout ({err.strerror}): redirect it to a file on a device '
          f'with space.', file=sys.stderr)
    return 2


#: The size an allocation that failed asked for, as torch words it: CPU ``you tried to allocate 1125899906842624
#: bytes``, CUDA ``Tried to allocate 20.00 GiB``.
_ALLOCATION_RE = re.compile(r'[Tt]ried to allocate (\d+ bytes|[\d.]+ [KMGTP]iB)')


def out_of_memory(err: BaseException) -> Optional[str]:
    """One line for ``err`` if it is running out of memory (a GPU's ``torch.OutOfMemoryError``, the CPU allocator's
    ``RuntimeError``, Python's ``MemoryError``), naming the allocation and what to lower; None for anything else."""
    text = str(err)
    if type(err).__name__ == 'OutOfMemoryError' or 'CUDA out of memory' in text:
        device = 'GPU'
    elif isinstance(err, MemoryError) or (isinstance(err, RuntimeError) and "can't allocate memory" in text):
        device = 'CPU'
    else:
        return None
    size = _ALLOCATION_RE.search(text)
    asked = size.group(1) if size else ''
    if asked.endswith(' bytes'):
        n, unit = float(asked.split()[0]), 'bytes'
        for unit in ('bytes', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'):
            if n < 1024 or unit == 'PiB':
                break
            n /= 1024
        asked = f'{n:.1f} {unit}' if unit != 'bytes' else f'{int(n)} bytes'
    return (f"out of {device} memory{f' (an allocation of {asked})' if asked else ''}: lower --batch-size (or the "
            f"image size), or free the memory other processes hold.")


def run_cli(main: Callable[[Optional[Sequence[str]]], Any], argv: Optional[Sequence[str]] = None) -> None:
    """Run a CLI ``main(argv)``; a :class:`TimmCraError` exits with status 2 and one line, no traceback; Ctrl-C
    (``KeyboardInterrupt``, SIGINT) with status 130 and the line ``interrupted``, SIGTERM with 143 and
    ``terminated`` (the atomic writers leave no half-written file behind); running out of memory with status 1 and
    one line (:func:`out_of_memory`). A stop signal that a library swallowed
    (:func:`catch_interrupts` records it) stops the next write and still ends the command so, never with status 0.
    Text that stdout cannot encode (a non-ASCII path under ``PYTHONIOENCODING=ascii`` / ``LC_ALL=C``) is printed
    backslash-escaped, as stderr already does, instead of failing after the work was done. Stderr is best-effort
    (:class:`_CommandStream`): closed (``2>&-``), full or a pipe whose reader went away, the progress bar and the log
    lines are dropped and the command still writes its results and exits as it would; stdout closed (``>&-``) is
    /dev/null."""
    streams = _command_streams()
    replaced = catch_interrupts()
    try:
        try:
            check_not_interrupted()  # received while the command's modules were imported
            main(argv)
        except SystemExit:  # argparse's --help / usage error: its output is flushed here too
            sys.stdout.flush()
            raise
        sys.stdout.flush()  # a closed pipe or a full device fails here, not as an "Exception ignored" at exit
        check_not_interrupted()
    except TimmCraError as e:
        print(f'error: {printable(e)}', file=sys.stderr)  # one line, even naming a hostile file
        sys.exit(2)
    except KeyboardInterrupt as e:
        _exit_interrupted(getattr(e, 'hint', None))
    except (MemoryError, RuntimeError) as e:
        line = out_of_memory(e)
        if line is None:
            raise
        print(f'error: {line}', file=sys.stderr)
        sys.exit(1)
    except OSError as e:
        code = _stdout_failure(e)
        if code is None:
            raise
        sys.exit(code)
    finally:
        for signum, handler in replaced.items():  # an in-process caller (a test) gets its handlers back
            signal.signal(signum, handler)
        sys.stdout, sys.stderr = streams
