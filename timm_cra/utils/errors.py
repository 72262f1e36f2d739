"""The package's error root and the CLI boundary that prints it.

Every exception class of timm_cra derives from :class:`TimmCraError`: a failure the package reports on purpose,
whose message is one line naming the fix. Library functions raise it (or a subclass); CLIs (:func:`run_cli`)
print ``error: <message>`` and exit 2 for it, and for nothing else: bugs, and failures of other libraries that
the package has not explained, keep their tracebacks. A failure a CLI must print as one line is converted into
a :class:`TimmCraError` where it happens, not caught by class (``RuntimeError``, ``OSError``) at the CLI.
:func:`is_connect_error` says which failures of the HTTP library mean "no connection at all", for the places that
convert those (a weights download, a push).

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
import sys
from typing import Any, Callable, Optional, Sequence

__all__ = ['TimmCraError', 'UsageError', 'run_cli', 'printable', 'is_connect_error']


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


#: httpx / httpx2 error classes (with their subclasses) for an endpoint that gave no answer: refused or
#: unresolvable (ConnectError), accepted then closed or reset before answering (RemoteProtocolError; ReadError,
#: WriteError, CloseError: NetworkError), silent past the time-out (TimeoutException: connect, read, write, pool).
_NO_ANSWER_ERRORS = ('NetworkError', 'RemoteProtocolError', 'TimeoutException')


def is_connect_error(err: BaseException) -> bool:
    """Whether ``err`` (from the HTTP library huggingface_hub uses) means the endpoint gave no answer at all:
    refused, a name that does not resolve, a connection closed or reset before an answer, or a time-out. An
    answer of any status is not."""
    # Matched by class name inside the httpx / httpx2 packages, so this does not depend on which of the two
    # huggingface_hub uses (2.x vendors httpx2).
    return any(cls.__name__ in _NO_ANSWER_ERRORS and cls.__module__.split('.')[0] in ('httpx', 'httpx2')
               for cls in type(err).__mro__)


def run_cli(main: Callable[[Optional[Sequence[str]]], Any], argv: Optional[Sequence[str]] = None) -> None:
    """Run a CLI ``main(argv)``; a :class:`TimmCraError` exits with status 2 and one line, no traceback."""
    try:
        main(argv)
    except TimmCraError as e:
        print(f'error: {printable(e)}', file=sys.stderr)  # one line, even naming a hostile file
        sys.exit(2)
