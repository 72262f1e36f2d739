"""One clear error for every way fetching or loading pretrained CRA weights can fail.

timm and huggingface_hub report these failures as HTTP errors, bare ``assert``s or safetensors/PyTorch
internals; :func:`explain_pretrained_errors` (used once, by ``create_cra_model`` in ``_builder.py``)
re-raises them as :class:`PretrainedWeightsError` with what went wrong and how to fix it, and removes a
corrupt downloaded file from the HF cache so no unusable file is left behind.
"""
import contextlib
import logging
import os
import re
from typing import Iterator, Optional

from timm.models import PretrainedCfg

from ..utils.errors import TIMED_OUT, TimmCraError, transport_failure
from ..utils.io import cache_write_errno
from ._weight_checks import HubUnreachableError, WeightsCheckError, split_revision

__all__ = ['PretrainedWeightsError', 'UnknownPretrainedTagError', 'explain_pretrained_errors', 'cache_write_problem']

_logger = logging.getLogger(__name__)

_OFFLINE_FIX = (
    "Connect to the Hub (or point HF_ENDPOINT at a mirror, e.g. `timm-cra-hub-mirror --root hub`) and "
    "unset HF_HUB_OFFLINE for the first download, or load a local copy with "
    "pretrained_cfg_overlay=dict(file='path/to/model.safetensors').")


class PretrainedWeightsError(TimmCraError, RuntimeError):
    """Pretrained weights for a CRA model could not be fetched or loaded (message says why and the fix)."""


class UnknownPretrainedTagError(PretrainedWeightsError, ValueError):
    """The ``<arch>.<tag>`` is not registered (a ``ValueError`` too, as timm's own unknown-name errors are)."""


def check_pretrained_tag(variant: str, tag: Optional[str]) -> None:
    """Raise :class:`UnknownPretrainedTagError` unless ``<variant>.<tag>`` is registered (timm's own refusal is a
    RuntimeError naming no tag that exists); ``None`` is the architecture's default tag."""
    from timm.models import get_arch_pretrained_cfgs
    known = list(get_arch_pretrained_cfgs(variant))
    if tag is not None and f'{variant}.{tag}' not in known:
        raise UnknownPretrainedTagError(
            f"timm_cra: unknown pretrained tag '{variant}.{tag}'. Use one of the registered names: "
            f"{', '.join(known) or variant} (timm.list_pretrained('{variant}*') lists those with weights).")


def _source(cfg: PretrainedCfg, with_revision: bool = True) -> str:
    """Where ``cfg``'s weights come from, for messages: a pinned Hub revision is named apart from the repo (an
    ``org/repo@<hash>`` read as one repo name); ``with_revision=False`` leaves it to the message."""
    if cfg.state_dict is not None:
        return 'the given state_dict'
    if cfg.file:
        return f"file '{cfg.file}'"
    if cfg.hf_hub_id:
        from huggingface_hub import constants
        repo_id, revision = split_revision(cfg.hf_hub_id)
        pinned = f" (revision '{revision}')" if revision and with_revision else ''
        return f"Hub repo '{repo_id}'{pinned} at {constants.ENDPOINT}"
    return f"url '{cfg.url}'"


def _drop_cached_weights(hf_hub_id: str) -> None:
    """Remove a corrupt downloaded weights file (snapshot link and blob) from the HF cache."""
    from ._weight_checks import cached_weights, drop_cached
    repo_id, revision = split_revision(hf_hub_id)
    link = cached_weights(repo_id, revision)
    if link is not None:
        drop_cached(link)
        _logger.info(f'Removed corrupt cached file {link}.')


def _failed_request(err: BaseException) -> str:
    """What happened to the request behind huggingface_hub's 'cannot find the file' error."""
    from huggingface_hub import errors as hf_errors
    from huggingface_hub import constants
    cause = err.__cause__ or err.__context__
    if constants.HF_HUB_OFFLINE or isinstance(cause, hf_errors.OfflineModeIsEnabled):
        return 'was not asked (HF_HUB_OFFLINE=1 is set)'
    response = getattr(cause, 'response', None)
    if isinstance(cause, hf_errors.HfHubHTTPError) and response is not None:
        return (f'answered HTTP {response.status_code} (a server-side error; huggingface_hub retried it with '
                f'back-off)')
    if cause is not None and transport_failure(cause) == TIMED_OUT:
        return 'did not answer in time'
    return 'is unreachable'


def _local_weights(file: str) -> str:
    """The file timm reads for a cfg ``file``: the file itself, or in a folder the first of timm's preferred names."""
    if os.path.isdir(file):
        from timm.models._hub import _PREFERRED_FILES
        return next((os.path.join(file, f) for f in _PREFERRED_FILES if os.path.lexists(os.path.join(file, f))), file)
    return file


_CHANNELS_RE = re.compile(r'Pretrained (\S+) weight shape \(([^)]*)\) is inconsistent with input_size\[0\]=(\d+)')
_SIZE_MISMATCH_RE = re.compile(r'size mismatch for (\S+): copying a param with shape torch\.Size\(\[(.*?)\]\) from '
                               r'checkpoint, the shape in current model is torch\.Size\(\[(.*?)\]\)')


def _state_dict_mismatch(err: BaseException) -> str:
    """torch's multi-line ``load_state_dict`` report as one line: first keys of each kind and their counts."""
    from ..utils.weights import describe_mismatch
    missing, unexpected, shapes = [], [], []
    for line in str(err).splitlines():
        line = line.strip()
        if line.startswith('Missing key(s) in state_dict:'):
            missing = re.findall(r'"([^"]+)"', line)
        elif line.startswith('Unexpected key(s) in state_dict:'):
            unexpected = re.findall(r'"([^"]+)"', line)
        else:
            m = _SIZE_MISMATCH_RE.match(line)
            if m:
                shapes.append(f'{m.group(1)} ({m.group(2)}) vs model ({m.group(3)})')
    return describe_mismatch(missing, unexpected, shapes) or str(err).strip().splitlines()[0]


def _raised_in_torch_load(err: BaseException) -> bool:
    """Whether ``err`` came out of ``torch.load`` (timm reads ``pytorch_model.bin`` / ``.pth`` files with it and
    re-raises some of its errors: their cause counts)."""
    for e in (err, err.__cause__ or err.__context__):
        tb = e.__traceback__ if e is not None else None
        while tb is not None:
            if tb.tb_frame.f_code.co_filename.replace(os.sep, '/').endswith('torch/serialization.py'):
                return True
            tb = tb.tb_next
    return False


def _torch_file_problem(err: BaseException) -> str:
    """torch.load's failure as what is wrong with the file, without torch's advice to load with
    ``weights_only=False`` (which would run the code the file names)."""
    text = ' '.join(str(err).split())
    blocked = re.search(r'Unsupported globals: (.+?)\.? No automatic', text) or re.search(r'Unsupported global: '
                                                                                        r'GLOBAL (\S+)', text)
    if blocked:
        return (f"needs `{blocked.group(1)}`, which loading would import and run (code, not weights): only tensors, "
                f"numbers and containers are read. Re-save its state dict as model.safetensors")
    first = (str(err).strip().splitlines() or [type(err).__name__])[0].split('. ')[0]
    return (f"is not a readable torch checkpoint (truncated or corrupt: {type(err).__name__}: {first:.150}). "
            f"Re-download or re-export it (timm_cra.hub.repo.export_repo writes valid ones)")


def _hf_home_problem(err: BaseException) -> Optional[str]:
    """What is wrong with huggingface_hub's own folders when ``err`` is an OSError on a path inside them (HF_HOME a
    file or FIFO, a cache folder that cannot be written), else ``None``."""
    from huggingface_hub import constants
    if not isinstance(err, OSError) or not err.filename:
        return None
    path = os.path.abspath(os.fspath(err.filename))
    homes = {os.path.abspath(constants.HF_HOME): 'HF_HOME', os.path.abspath(constants.HF_HUB_CACHE): 'HF_HUB_CACHE'}
    for home, variable in homes.items():
        if path == home or path.startswith(home + os.sep):
            return (f"huggingface_hub cannot use {path} ({err.strerror or type(err).__name__}), which is under "
                    f"{variable}={home}: point {variable} at a folder you can write, or unset it")
    return None


def cache_write_problem(err: BaseException) -> Optional[str]:
    """What stopped huggingface_hub from caching a download when its cache's disk is full, over quota or read-only
    (an ``OSError`` without a path, so :func:`_hf_home_problem` cannot name it), else ``None``."""
    from huggingface_hub import constants
    code = cache_write_errno(err)
    if code is None:
        return None
    return (f"the download could not be cached ({os.strerror(code)} under HF_HUB_CACHE={constants.HF_HUB_CACHE}): "
            f"free space there, or point HF_HUB_CACHE at a folder with room")


def _message(name: str, cfg: PretrainedCfg, err: BaseException, hint: Optional[str] = None) -> Optional[str]:
    """Clear message for a known failure, ``None`` for anything else (re-raised as is). ``hint``: where else
    the weights of ``name`` are, added when the Hub has no such repo."""
    from huggingface_hub import errors as hf_errors
    from ..utils.weights import is_safetensors_error, not_safetensors

    source = _source(cfg)
    repo_id, revision = split_revision(cfg.hf_hub_id or '')
    if isinstance(err, hf_errors.RepositoryNotFoundError):
        from huggingface_hub import constants
        org = f"{constants.ENDPOINT.rstrip('/')}/{repo_id.split('/')[0]}"  # a mirror's (HF_ENDPOINT), or the Hub's
        return (f"Pretrained weights for '{name}': {_source(cfg, with_revision=False)} does not exist. Check the "
                f"model name / hf_hub_id (published repos: {org}); with a "
                f"mirror, check that HF_ENDPOINT serves it.{' ' + hint if hint else ''}")
    if isinstance(err, hf_errors.RevisionNotFoundError):
        return (f"Pretrained weights for '{name}': revision '{revision}' does not exist in "
                f"{_source(cfg, with_revision=False)}. Use an "
                f"existing branch or commit hash (hf-hub:{repo_id}@<revision>), or drop '@{revision}'.")
    home_problem = _hf_home_problem(err)
    if home_problem:
        return f"Pretrained weights for '{name}': {home_problem}."
    full = cache_write_problem(err)
    if full:
        return f"Pretrained weights for '{name}' from {source}: {full}.{' ' + hint if hint else ''}"
    if isinstance(err, HubUnreachableError):
        return (f"Pretrained weights for '{name}': {source} {err} and the weights are not in the local "
                f"cache. {_OFFLINE_FIX}{' ' + hint if hint else ''}")
    if isinstance(err, WeightsCheckError):
        return f"Pretrained weights for '{name}' from {source}: {err}.{' ' + hint if hint else ''}"
    if isinstance(err, hf_errors.LocalEntryNotFoundError):
        return (f"Pretrained weights for '{name}': {source} {_failed_request(err)} and the weights are not in "
                f"the local cache. {_OFFLINE_FIX}{' ' + hint if hint else ''}")
    if isinstance(err, hf_errors.OfflineModeIsEnabled):
        return (f"Pretrained weights for '{name}': HF_HUB_OFFLINE=1 is set and the weights are not in the local "
                f"cache. {_OFFLINE_FIX}{' ' + hint if hint else ''}")
    if isinstance(err, hf_errors.EntryNotFoundError):
        return (f"Pretrained weights for '{name}': {source} has no model.safetensors (nor pytorch_model.bin). The "
                f"repo holds no weights yet: publish them with python -m timm_cra.hub.publish ... --push, or load a "
                f"local file with "
                f"pretrained_cfg_overlay=dict(file='path/to/model.safetensors').")
    if isinstance(err, hf_errors.HfHubHTTPError):
        return (f"Pretrained weights for '{name}': {source} answered with an error ({err}). Retry later, check "
                f"HF_ENDPOINT / your token, or load a local file with pretrained_cfg_overlay=dict(file=...).")
    if transport_failure(err) is not None:  # after the reachability probe answered: the download was cut or stalled
        first = (str(err).strip().splitlines() or [''])[0]
        return (f"Pretrained weights for '{name}': the download from {source} broke off ({type(err).__name__}: "
                f"{first:.150}); nothing was cached. Retry (a cut or stalled link may heal); without a working Hub, "
                f"point HF_ENDPOINT at a mirror (e.g. `timm-cra-hub-mirror --root hub`) or load a local copy with "
                f"pretrained_cfg_overlay=dict(file='path/to/model.safetensors').{' ' + hint if hint else ''}")
    if is_safetensors_error(err):
        if cfg.hf_hub_id and cfg.state_dict is None and not cfg.file:
            _drop_cached_weights(cfg.hf_hub_id)
            fix = ('The corrupt download was removed from the cache; re-upload the file to the repo '
                   '(python -m timm_cra.hub.publish ... --push) and load again.')
        else:
            fix = 'Re-download or re-export the file (timm_cra.hub.repo.export_repo writes valid ones).'
        return f"Pretrained weights for '{name}': {not_safetensors(source, err)}. {fix}"
    if _raised_in_torch_load(err):
        where = f"'{_local_weights(cfg.file)}'" if cfg.file else f'the weights file of {source}'
        return f"Pretrained weights for '{name}': {where} {_torch_file_problem(err)}."
    channels = _CHANNELS_RE.match(str(err)) if isinstance(err, RuntimeError) else None
    if channels:  # timm's adapt_input_conv guard: the cfg says other input channels than the weights have
        conv, shape, said = channels.groups()
        have = shape.split(',')[1].strip() if shape.count(',') >= 1 else '?'
        return (f"Pretrained weights for '{name}': the weights from {source} take {have} input channels ({conv} shape "
                f"({shape})), the config says {said} (in_chans / input_size): make config.json describe the weights "
                f"(model_args 'in_chans', pretrained_cfg 'input_size'), and ask for {said} channels at load time "
                f"(in_chans={said}, --in-chans {said}): timm adapts the first conv.")
    if isinstance(err, RuntimeError) and 'Error(s) in loading state_dict' in str(err):
        arch = f" '{cfg.architecture}'" if cfg.architecture else ''
        head = f" '{cfg.classifier}'" if cfg.classifier else ''
        return (f"Pretrained weights for '{name}': the checkpoint from {source} does not fit the architecture{arch}: "
                f"{_state_dict_mismatch(err)}. Load it into the architecture it was trained as (check the model name "
                f"/ config.json 'architecture' and model_args), or pass num_classes=<N> only to replace the "
                f"classifier{head}.")
    if isinstance(err, FileNotFoundError) and cfg.file:
        return _local_file_problem(name, cfg) or (f"Pretrained weights for '{name}': {source} does not exist. Fix "
                                                  f"the path in pretrained_cfg_overlay=dict(file=...).")
    return None


def _local_file_problem(name: str, cfg: PretrainedCfg) -> Optional[str]:
    """Why the local weights of ``cfg`` (a ``file``, or the ``local-dir:`` folder's weights file) cannot be read, or
    None. Checked before timm opens them: timm logs its own *No checkpoint found* line beside this package's one
    line (a FIFO or folder named model.safetensors), or raises a RuntimeError traceback (a folder with no weights)."""
    if cfg.state_dict is not None or not cfg.file:
        return None
    from ..utils.io import not_regular_reason
    path = _local_weights(cfg.file)
    if path == cfg.file and os.path.isdir(path):  # no preferred name: timm takes the first *.safetensors, *.pth ...
        from timm.models._hub import _EXT_PRIORITY
        if any(f.endswith(_EXT_PRIORITY) for f in os.listdir(path)):
            return None
        return (f"Pretrained weights for '{name}': the folder {path} holds no weights file (model.safetensors); "
                f"export the weights there (python -m timm_cra.hub.publish writes model folders), or pass "
                f"--no-pretrained / pretrained=False for its config only.")
    reason = not_regular_reason(path)
    if reason is None:
        return None
    if not os.path.lexists(path):
        return (f"Pretrained weights for '{name}': {_source(cfg)} does not exist. Fix the path in "
                f"pretrained_cfg_overlay=dict(file=...).")
    return f"Pretrained weights for '{name}': weights file {path} {reason}; pass the path of a regular file."


@contextlib.contextmanager
def explain_pretrained_errors(name: str, cfg: PretrainedCfg, hint: Optional[str] = None) -> Iterator[None]:
    """Re-raise known weight fetch/load failures inside the block as :class:`PretrainedWeightsError`; local weights
    that cannot be read are refused before the block (:func:`_local_file_problem`)."""
    problem = _local_file_problem(name, cfg)
    if problem:
        raise PretrainedWeightsError(f'timm_cra: {problem}')
    try:
        yield
    except PretrainedWeightsError:
        raise
    except Exception as err:
        message = _message(name, cfg, err, hint)
        if message is None:
            raise
        raise PretrainedWeightsError(f'timm_cra: {message}') from err
