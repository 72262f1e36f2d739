"""Read weights back, safely: trainer checkpoints, timm ``train.py`` checkpoints, state dicts, ``.safetensors``.

The one reader of ``.pth`` files in this package (train ``--resume`` / ``--initial-checkpoint``, validate
``--checkpoint``, publish, the official-checkpoint converter). Files are always read with
``torch.load(weights_only=True)``: tensors, numbers and containers only. A few globals that old or foreign
checkpoints need are admitted by name through ``torch.serialization.safe_globals``, each mapped to
something inert: ``argparse.Namespace`` (timm ``train.py``'s ``args``) to :class:`PickledNamespace`, and numpy's
array rebuilders (the numpy RNG state of version-1 trainer checkpoints, training recorders) to wrappers
that only build numeric arrays. Anything else (how a malicious ``__reduce__`` runs code) is refused with one
line naming the global. A tensor that claims more elements than its storage holds (an expanded view: a tiny file
that any copy would turn into terabytes) is refused before anything touches the data.
"""
import hashlib
import json
import logging
import math
import os
import pickle
import zipfile
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from timm.models import clean_state_dict

from .errors import UsageError, printable
from .io import check_regular_file, earlier_run_note
from .labels import name_key, repeated_names
from .strict_json import loads, read_json

__all__ = [
    'PickledNamespace', 'read_torch_file', 'load_checkpoint_file', 'load_model_weights', 'read_weights',
    'load_state_checked', 'tensor_digest', 'checkpoint_digests', 'check_file', 'describe_mismatch',
    'non_float_kind', 'non_float_weights', 'not_safetensors', 'is_safetensors_error', 'nonfinite_tensors',
    'NONFINITE_FIX', 'safetensors_metadata', 'weights_shape_kwargs', 'load_fitting_weights', 'safetensors_header',
    'check_state_fits', 'recorded_data_config', 'DATA_CONFIG_KEYS', 'recorded_label_names', 'DATA_CONFIG_META_KEY',
    'check_names_beside', 'SCORED_DATA_CONFIG_KEYS', 'same_setting', 'setting_differences',
]

_logger = logging.getLogger(__name__)


class PickledNamespace:
    """Inert stand-in for a pickled ``argparse.Namespace`` (or another allowlisted plain object): only data."""

    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update({str(k): v for k, v in state.items()})
        else:
            self.__dict__['state'] = state

    def __repr__(self):
        return f'PickledNamespace({self.__dict__!r:.200})'


def _numpy_globals(refusals: List[str]):
    """Numpy's array/scalar/dtype rebuilders, restricted to numeric and bool dtypes (no object arrays). Each
    refusal is also appended to ``refusals`` (torch wraps the error in advice that must not reach the user)."""
    import numpy as np
    from numpy._core import multiarray

    def refuse(message: str):
        refusals.append(message)
        return pickle.UnpicklingError(message)

    def check(dt) -> 'np.dtype':
        if not isinstance(dt, np.dtype) or dt.kind not in 'biufc' or dt.hasobject:
            raise refuse(f'numpy dtype {dt!r} refused: only numeric arrays are read')
        return dt

    def dtype(spec, align=False, copy=True):
        if not isinstance(spec, str):
            raise refuse(f'numpy dtype spec {spec!r:.40} refused: only numeric arrays are read')
        return check(np.dtype(spec, align=bool(align), copy=bool(copy)))

    def reconstruct(subtype, shape, dtype_code):
        if subtype is not np.ndarray:
            raise refuse(f'numpy array subtype {subtype!r:.40} refused')
        return multiarray._reconstruct(np.ndarray, shape, dtype_code)

    def scalar(dt, data=None):
        return multiarray.scalar(check(dt), data) if data is not None else multiarray.scalar(check(dt))

    dtype_classes = {type(np.dtype(c)) for c in '?bBhHiIlLqQefdgFDG'}
    out = [(np.ndarray, 'numpy.ndarray'), (dtype, 'numpy.dtype')]
    for mod in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        out += [(reconstruct, f'{mod}._reconstruct'), (scalar, f'{mod}.scalar')]
    out += [(cls, f'numpy.dtypes.{cls.__name__}') for cls in sorted(dtype_classes, key=lambda c: c.__name__)]
    return out


def _safe_globals(extra: Iterable[Tuple[Any, str]] = (), refusals: Optional[List[str]] = None) -> list:
    return [(PickledNamespace, 'argparse.Namespace')] + _numpy_globals([] if refusals is None else refusals) \
        + list(extra)


def check_file(path: str, what: str = 'Checkpoint') -> None:
    """One clear line for a missing path, a folder, anything but a regular file where a weights file is expected
    (a FIFO would block the read forever), or an ONNX model (read by torch as its *legacy format*)."""
    if os.path.isdir(path):
        raise UsageError(f"{what} '{path}' is a directory, not a weights file: pass the file inside it "
                         f"(e.g. {os.path.join(path, 'last.pth')} or {os.path.join(path, 'model.safetensors')}).")
    if not os.path.lexists(path):
        raise UsageError(f"{what} '{path}' does not exist{earlier_run_note(os.path.dirname(path))}.")
    check_regular_file(path, what)
    if path.lower().endswith('.onnx') and not zipfile.is_zipfile(path):  # torch took it for its legacy format
        raise UsageError(f"{what} '{path}' is an ONNX model (timm-cra-export's output), not a weights file: pass the "
                         f".pth / .safetensors it was exported from (a run's last.pth or model.safetensors); run an "
                         f".onnx with onnxruntime (timm_cra.export.onnx_session).")


def _refused_globals(path: str, allowed: Iterable[str]) -> List[str]:
    """The globals the file's pickle names that neither torch's weights-only unpickler nor ``allowed`` admit
    (torch lists them without loading anything)."""
    try:
        needed = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001  (legacy non-zip format, or a pickle torch cannot even walk)
        return []
    allowed = set(allowed)
    return [g for g in needed if g not in allowed]


def _walk_error(path: str) -> str:
    """Why torch cannot walk the file's pickle (its own short message, without torch.load's advice)."""
    if not zipfile.is_zipfile(path):
        return "torch's legacy format, holding objects other than tensors, numbers and containers"
    try:
        torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception as e:  # noqa: BLE001
        return (str(e).strip().splitlines() or [type(e).__name__])[0]
    return 'objects other than tensors, numbers and containers'


def read_torch_file(path: str, extra_safe_globals: Sequence[Tuple[Any, str]] = (), what: str = 'Checkpoint') -> Any:
    """``torch.load(path, weights_only=True)`` on CPU, with the stand-ins above allowlisted by name.

    Raises :class:`UsageError` (one line) for a missing/unreadable file or one that needs other globals. torch's
    own error text (which advises ``weights_only=False``) never reaches the user: the refused globals come from
    ``torch.serialization.get_unsafe_globals_in_checkpoint``.
    """
    check_file(path, what)
    refusals: List[str] = []
    safe = _safe_globals(extra_safe_globals, refusals)
    try:
        with torch.serialization.safe_globals(safe):
            obj = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError:
        names = _refused_globals(path, [name for _, name in safe])
        if refusals:  # one of our own stand-ins refused what it was given (e.g. a numpy object array)
            reason = refusals[0]
        elif names:
            raise UsageError(
                f"{what} '{path}' refused: it needs `{'`, `'.join(names[:3])}`, which loading would import and run "
                f"(code, not weights). Only tensors, numbers and containers are read (torch.load weights_only=True); "
                f"if you made the file yourself, re-save its state dict (torch.save(model.state_dict(), ...)) or as "
                f".safetensors.") from None
        else:
            reason = _walk_error(path)
        raise UsageError(f"{what} '{path}' could not be read safely ({reason:.200}): only tensors, numbers and "
                         f"containers written by torch.save are read; re-save its state dict "
                         f"(torch.save(model.state_dict(), ...)) or as .safetensors.") from None
    except Exception as e:  # torn zip, random bytes, empty file, legacy formats: torch raises many types
        first = (str(e).strip().splitlines() or [''])[0]
        raise UsageError(f"{what} '{path}' could not be read: not a torch checkpoint, or truncated/corrupt "
                         f"({type(e).__name__}: {first:.200}).") from e
    problem = _tensor_view_problem(obj)
    if problem == _TOO_MANY_ENTRIES:  # a bound of this reader, not damage: an ordinary file can pass it
        raise UsageError(f"{what} '{path}' holds more than {MAX_CHECKPOINT_ENTRIES} entries (numbers, tensors and "
                         f"containers, counted along every path), the most this reader walks "
                         f"(MAX_CHECKPOINT_ENTRIES; a model's and optimizer's state hold thousands): a long Python "
                         f"list of numbers, or containers nested in or referencing one another. Store long series as "
                         f"tensors (torch.tensor(values)), or re-save the state dict alone "
                         f"(torch.save(model.state_dict(), ...)).")
    if problem:
        raise UsageError(f"{what} '{path}' is damaged: {problem}. torch.save never writes weights that way; use an "
                         f"intact copy, or re-save its state dict (torch.save(model.state_dict(), ...)).")
    return obj


#: The most tensors, numbers and containers a checkpoint may hold: a model's and its optimizer's state are
#: thousands. A 1.5 KB pickle can reference one list from itself 40 times over (2**40 paths), which any walk of
#: it (these checks, the digests) would visit for hours.
MAX_CHECKPOINT_ENTRIES = 1_000_000
_TOO_MANY_ENTRIES = 'too many entries'


def _tensor_view_problem(obj: Any) -> Optional[str]:
    """Why a loaded object holds a tensor that cannot be used as weights, or None. A tensor is a view of its storage:
    a 1.7 KB file can hold ``torch.zeros(1).expand(2**40)`` (stride 0), which every ``.contiguous()``, ``isfinite``
    or copy would allocate in full (terabytes). So each tensor must be dense and hold no more elements than its
    storage (checked before anything touches the data); then no copy is larger than the bytes the file held.
    Walked without recursion and at most :data:`MAX_CHECKPOINT_ENTRIES` entries, so nothing later walks more."""
    stack, visited = [(obj, '')], 0
    while stack:
        o, where = stack.pop()
        visited += 1
        if visited > MAX_CHECKPOINT_ENTRIES:
            return _TOO_MANY_ENTRIES
        if isinstance(o, torch.Tensor):
            if o.layout != torch.strided:
                return f"tensor '{where}' is {str(o.layout).replace('torch.', '')} (only dense tensors are read)"
            if o.numel() * o.element_size() > o.untyped_storage().nbytes():
                return (f"tensor '{where}' of shape {tuple(o.shape)} claims {o.numel()} elements but its storage "
                        f"holds {o.untyped_storage().nbytes() // max(o.element_size(), 1)} (an expanded or overlapping "
                        f"view)")
        elif isinstance(o, dict):
            stack.extend((v, f'{where}/{k}' if where else str(k)) for k, v in reversed(list(o.items())))
        elif isinstance(o, (list, tuple)):
            stack.extend((v, f'{where}/{i}' if where else str(i)) for i, v in reversed(list(enumerate(o))))
    return None


def tensor_digest(obj: Any) -> str:
    """sha256 over every tensor in a nested dict/list (key path, dtype, shape, bytes), keys in sorted order."""
    h = hashlib.sha256()

    def walk(o, where):
        if isinstance(o, torch.Tensor):
            t = o.detach().cpu().contiguous()
            h.update(f'{where}|{t.dtype}|{tuple(t.shape)}|'.encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b'')
        elif isinstance(o, dict):
            for k in sorted(o, key=lambda k: (type(k).__name__, str(k))):
                walk(o[k], f'{where}/{k}')
        elif isinstance(o, (list, tuple)):
            for i, v in enumerate(o):
                walk(v, f'{where}/{i}')

    walk(obj, '')
    return h.hexdigest()


#: Parts of a trainer checkpoint covered by its ``sha256`` record.
_DIGEST_PARTS = ('state_dict', 'optimizer', 'state_dict_ema')


def checkpoint_digests(ckpt: Dict[str, Any]) -> Dict[str, str]:
    return {k: tensor_digest(ckpt[k]) for k in _DIGEST_PARTS if ckpt.get(k) is not None}


def _verify(ckpt: Dict[str, Any], path: str) -> None:
    recorded = ckpt.get('sha256')
    if not isinstance(recorded, dict):
        return
    for part, digest in recorded.items():
        if ckpt.get(part) is None or tensor_digest(ckpt[part]) != digest:
            raise UsageError(
                f"Checkpoint '{path}' is corrupt: its '{part}' tensors do not match the sha256 recorded when it was "
                f"written (damaged on disk or in a copy). Use an intact copy, or start the run again.")


def _plain_args(ckpt: Dict[str, Any]) -> None:
    if isinstance(ckpt.get('args'), PickledNamespace):  # timm train.py checkpoints
        ckpt['args'] = dict(vars(ckpt['args']))


def load_checkpoint_file(path: str, extra_safe_globals: Sequence[Tuple[Any, str]] = ()) -> Dict[str, Any]:
    """A checkpoint dict (trainer ``last.pth``, timm ``*.pth.tar``), integrity-checked when it records sha256."""
    ckpt = read_torch_file(path, extra_safe_globals)
    if not isinstance(ckpt, dict):
        raise UsageError(f"Checkpoint '{path}' holds a {type(ckpt).__name__}, not a checkpoint or state dict.")
    _plain_args(ckpt)
    _verify(ckpt, path)
    return ckpt


def is_safetensors_error(err: BaseException) -> bool:
    """Whether ``err`` is safetensors' own report of bytes it cannot parse (torn, empty or foreign file)."""
    from safetensors import SafetensorError
    return isinstance(err, SafetensorError) or 'safetensors' in type(err).__module__


def not_safetensors(source: str, err: BaseException) -> str:
    """The corrupt-safetensors message (``source``: the file, quoted, or where it came from), for this module's
    reader and for timm's pretrained loads (``models._load_errors``); each adds its own fix."""
    reason = (str(err).strip().splitlines() or [''])[0] or type(err).__name__
    return f"{source} is not a valid safetensors file (truncated or corrupt: {reason})"


#: The key of a ``.safetensors`` header's metadata holding the class names of the head's outputs (a JSON list), so
#: the weights carry them wherever the file goes (a ``last.pth`` records them as its ``label_names`` entry).
LABEL_NAMES_KEY = 'label_names'


#: The key of a ``.safetensors`` header's metadata holding the preprocessing the weights were trained with (a JSON
#: object of :data:`DATA_CONFIG_KEYS`, the fields ``config.json``'s ``pretrained_cfg`` gets), read by
#: :func:`recorded_data_config` when the file travels without its ``config.json``.
DATA_CONFIG_META_KEY = 'data_config'


def safetensors_metadata(label_names: Optional[Sequence[str]] = None,
                         data_config: Optional[Dict[str, Any]] = None) -> Dict[str, str]:
    """The header metadata of a weights file the trainer writes: ``format: pt`` as transformers writes it, plus
    the class names (:data:`LABEL_NAMES_KEY`) and the preprocessing (:data:`DATA_CONFIG_META_KEY`) when given; timm
    and transformers read the tensors only, so these change nothing for them."""
    metadata = {'format': 'pt'}
    if label_names:
        metadata[LABEL_NAMES_KEY] = json.dumps(list(label_names), ensure_ascii=False)
    recorded = {k: list(v) if isinstance(v, tuple) else v for k, v in (data_config or {}).items()
                if k in DATA_CONFIG_KEYS and v}
    if recorded:
        metadata[DATA_CONFIG_META_KEY] = json.dumps(recorded)
    return metadata


def safetensors_header(path: str) -> Dict[str, torch.Tensor]:
    """The tensors a ``.safetensors`` file declares, read from its header only (no tensor data): each an empty
    ``meta`` tensor of its shape and dtype, for :func:`check_state_fits`."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import _getdtype  # safetensors' own dtype names ('F32', 'I8', ...) to torch's
    try:
        with safe_open(path, 'pt') as f:
            slices = {k: f.get_slice(k) for k in f.keys()}
            return {k: torch.empty(v.get_shape(), dtype=_getdtype(v.get_dtype()), device='meta')
                    for k, v in slices.items()}
    except (SafetensorError, OSError, ValueError, RuntimeError, KeyError) as e:  # KeyError: a dtype torch lacks
        raise _not_safetensors_error(path, e) from e


def _not_safetensors_error(path: str, err: BaseException) -> UsageError:
    return UsageError(f"{not_safetensors(repr(path), err)}. Re-export it (the trainer writes model.safetensors; "
                      f"python -m timm_cra.hub.publish writes Hub folders).")


def _read_safetensors(path: str, model: Optional[torch.nn.Module] = None
                      ) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """``(state_dict, {'label_names': [...]})`` (``{}`` when the header records no class names). With ``model``,
    the header's names, shapes and dtypes are checked against it first (:func:`check_state_fits`) and only its
    tensors are read: ``load_file`` reads every tensor the header declares, and one extra tensor claiming 4 GiB
    (a sparse file of a megabyte) was a MemoryError."""
    from safetensors import SafetensorError, safe_open
    if model is not None:
        check_state_fits(model, safetensors_header(path), source=path)
    try:
        with safe_open(path, 'pt') as f:
            metadata = f.metadata() or {}
            own = model.state_dict() if model is not None else None
            state = {k: f.get_tensor(k) for k in f.keys() if own is None or k in own}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:  # torch's errors: dtypes the file claims
        raise _not_safetensors_error(path, e) from e
    names = _checked_label_names(path, metadata)
    return state, ({} if names is None else {LABEL_NAMES_KEY: names})


def recorded_label_names(path: str) -> Optional[List[str]]:
    """The class names the header of the ``.safetensors`` file at ``path`` records (None: it records none), checked
    as every read of the file checks them (:func:`_checked_label_names`): ``local-dir:`` loads, which timm reads
    itself, check a folder's weights with this before they are used."""
    return _checked_label_names(path, _header_metadata(path))


def _header_metadata(path: str) -> Dict[str, str]:
    """The metadata of the ``.safetensors`` header at ``path`` (no tensor is read); one line if it is none."""
    from safetensors import SafetensorError, safe_open
    try:
        with safe_open(path, 'pt') as f:
            return f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise _not_safetensors_error(path, e) from e


def _checked_label_names(path: str, metadata: Dict[str, str]) -> Optional[List[str]]:
    """The class names a weights file's header ``metadata`` records, or None: refused unless a JSON list of
    distinct names that the ``config.json`` beside the file (if it names classes) gives in the same order. The one
    rule for ``validate --checkpoint``, publish and ``local-dir:`` folders."""
    text = metadata.get(LABEL_NAMES_KEY)
    if text is None:
        return None
    try:
        names = loads(text)
    except ValueError:
        names = None
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)) or repeated_names(names):
        raise UsageError(f"'{path}' records {LABEL_NAMES_KEY} in its header that are not a JSON list of distinct "
                         f"class names ({text!r:.80}): re-export it, or re-save its tensors without that metadata.")
    check_names_beside(path, names, 'in its header')
    return names


def check_names_beside(path: str, names: Sequence[str], where: str = '') -> None:
    """Refuse weights at ``path`` that name their classes (``names``: a ``.safetensors`` header's, a trainer
    checkpoint's ``label_names``) otherwise than the ``config.json`` beside them, if it names classes: validate
    ``--checkpoint`` reads the weights' own names, publish, ``local-dir:``, timm and transformers the config's, so one
    folder would have two class orders (a ``last.pth`` scored 100% by validate was published with the config's swapped
    names, and the repo scored 50%). The one check for every weights file; ``where``: where the file records them."""
    beside = _config_label_names(os.path.join(os.path.dirname(path), 'config.json'))
    if beside is not None and [name_key(n) for n in beside] != [name_key(n) for n in names]:
        raise UsageError(printable(
            f"'{path}' names its classes{' ' + where if where else ''} ({', '.join(names[:3])}, ...) otherwise than "
            f"the config.json beside it ({', '.join(map(str, beside[:3]))}, ...): re-export the folder (the trainer "
            f"and publish write both from one list)."))


def _config_label_names(path: str) -> Optional[List[Any]]:
    """The ``label_names`` list of the Hub-format ``config.json`` at ``path``, or None (none there, or not one)."""
    if not os.path.isfile(path):
        return None
    try:
        config = read_json(path, 'config')
    except UsageError:
        return None
    names = config.get('label_names') if isinstance(config, dict) else None
    return names if isinstance(names, list) else None


#: The preprocessing fields of a pretrained cfg (``config.json``), which are also the flags / run arguments setting
#: them (``--input-size``, ``--mean``, ...), plus the arguments' ``img_size``.
DATA_CONFIG_KEYS = ('input_size', 'interpolation', 'mean', 'std', 'crop_pct')

#: The preprocessing fields validate records in its results (``data_config``: all that decides what an image becomes,
#: timm's ``crop_mode`` too), which publish compares with the ``pretrained_cfg`` it writes.
SCORED_DATA_CONFIG_KEYS = DATA_CONFIG_KEYS + ('crop_mode',)


def same_setting(a: Any, b: Any) -> bool:
    """Whether two preprocessing values are the same (numbers to float precision, lists element-wise)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_setting(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) \
            and not isinstance(b, bool):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    return a == b


def setting_differences(recorded: Dict[str, Any], other: Dict[str, Any], other_name: str,
                        keys: Sequence[str] = SCORED_DATA_CONFIG_KEYS) -> List[str]:
    """``'<key> <recorded value> (<other_name>: <other value>)'`` for each of ``keys`` that ``recorded`` holds and
    ``other`` sets otherwise (:func:`same_setting`), by key: the one comparison of two records of preprocessing."""
    return [f'{k} {recorded[k]} ({other_name}: {other.get(k)})' for k in sorted(recorded)
            if k in keys and not same_setting(recorded[k], other.get(k))]


def recorded_data_config(path: str, args: Optional[Dict[str, Any]]) -> Tuple[Dict[str, Any], str]:
    """``(preprocessing, where it was read)``: what the weights at ``path`` were trained with. The ``pretrained_cfg``
    of the Hub-format ``config.json`` beside them (what the trainer exports next to ``last.pth`` and
    ``model.safetensors``), else the run's arguments ``args`` (a checkpoint's ``args``: the trainer's and timm
    ``train.py``'s ``--input-size`` / ``--img-size`` / ``--mean`` / ``--std`` / ``--interpolation`` / ``--crop-pct``;
    ``{}`` when it set none, as a run on the architecture's defaults); for a ``.safetensors`` file without that
    config, what its header records (the trainer writes it there too, so a weights file copied on its own keeps it).
    ``({}, '')`` when none is recorded; a ``config.json`` there that cannot be read (not JSON, over the JSON size
    cap) is refused in one line."""
    config_path = os.path.join(os.path.dirname(path), 'config.json')
    config = None
    if os.path.isfile(config_path):
        try:
            config = read_json(config_path, 'config')
        except UsageError as e:  # scored with the defaults, it was said to record nothing: neither is true
            raise UsageError(f"{str(e).rstrip('.')}: it is the run's record of the preprocessing the weights beside it "
                             f"were trained with; fix or remove it (the trainer and publish write it), or move the "
                             f"weights out of that folder.") from None
    if isinstance(config, dict) and config.get('architecture') and isinstance(config.get('pretrained_cfg'), dict):
        cfg = config['pretrained_cfg']
        found = {k: cfg[k] for k in DATA_CONFIG_KEYS if cfg.get(k)}
        if found:
            # as for class names (check_names_beside): validate --checkpoint on the file alone reads its header, a
            # folder's readers the config, so one folder would preprocess two ways (the header edited, or copied in)
            header = _header_data_config(path) if str(path).endswith('.safetensors') else None
            differ = setting_differences(header or {}, found, 'config.json')
            if differ:
                raise UsageError(printable(
                    f"'{path}' records other preprocessing in its header than the config.json beside it "
                    f"({'; '.join(differ)}), so its readers would disagree (the trainer writes both from one data "
                    f"config): put back the files the run wrote, or copy the weights out of that folder."))
            return found, f'the config.json beside {path}'
    found = _header_data_config(path) if str(path).endswith('.safetensors') else None
    if found:
        return found, f'the header of {path}'
    if isinstance(args, dict) and args:
        return ({k: args[k] for k in DATA_CONFIG_KEYS + ('img_size',) if args.get(k)},
                f"the run's arguments recorded in {path}")
    return {}, ''


def _header_data_config(path: str) -> Optional[Dict[str, Any]]:
    """The preprocessing a ``.safetensors`` header records (:data:`DATA_CONFIG_META_KEY`, the trainer writes it), or
    None (none recorded, or no readable header: the weights reader reports that)."""
    try:
        text = _header_metadata(path).get(DATA_CONFIG_META_KEY)
    except UsageError:
        return None
    if text is None:
        return None
    try:
        cfg = loads(text)
    except ValueError:
        cfg = None
    if not isinstance(cfg, dict):
        raise UsageError(f"'{path}' records {DATA_CONFIG_META_KEY} in its header that is not a JSON object of "
                         f"{', '.join(DATA_CONFIG_KEYS)} ({text!r:.80}): re-export it, or re-save its tensors without "
                         f"that metadata.")
    return {k: cfg[k] for k in DATA_CONFIG_KEYS if cfg.get(k)} or None


def read_weights(path: str, use_ema: bool = False, model: Optional[torch.nn.Module] = None
                 ) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """``(state_dict, checkpoint)`` from a ``.safetensors`` file, a state dict, or a trainer / timm checkpoint.

    ``checkpoint`` is the full dict for checkpoints: its ``args`` tell how the model was built, its ``label_names``
    the classes of the head's outputs; for a ``.safetensors`` file, ``{'label_names': [...]}`` when its header
    records them, else ``{}`` (as for a plain state dict). ``use_ema`` prefers ``state_dict_ema`` when the
    checkpoint has one. ``model``: a ``.safetensors`` file must fit it by its header, before any tensor is read.
    """
    check_file(path)
    if path.endswith('.safetensors'):
        return _read_safetensors(path, model)
    ckpt = load_checkpoint_file(path)
    meta: Dict[str, Any] = {}
    state = ckpt
    for key in (['state_dict_ema'] if use_ema else []) + ['state_dict', 'model']:
        if isinstance(ckpt.get(key), dict) and ckpt[key]:
            state, meta = ckpt[key], ckpt
            break
    if not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UsageError(f"'{path}' holds no state dict: expected tensors, or a checkpoint with 'state_dict'.")
    names = meta.get(LABEL_NAMES_KEY)
    if isinstance(names, list) and names and all(isinstance(n, str) for n in names):
        check_names_beside(path, names)  # a trainer's last.pth names them as its model.safetensors header does
    return clean_state_dict(state), meta  # timm's: drops DDP 'module.' and torch.compile '_orig_mod.' prefixes


def _first(items: Sequence[str], n: int = 5) -> str:
    return ', '.join(items[:n]) + (f', ... ({len(items)} in all)' if len(items) > n else
                                   f' ({len(items)} in all)' if len(items) > 1 else '')


def describe_mismatch(missing: Sequence[str], unexpected: Sequence[str], shapes: Sequence[str]) -> str:
    """One line naming the first missing / unexpected / shape-mismatched keys and how many there are in all."""
    return '; '.join(([f'missing keys: {_first(missing)}'] if missing else [])
                     + ([f'unexpected keys: {_first(unexpected)}'] if unexpected else [])
                     + ([f'size mismatch: {_first(shapes, 3)}'] if shapes else []))


def non_float_kind(dtype_name: str) -> str:
    """'complex', 'integer' or 'bool' for a tensor dtype name (torch's ``complex64`` or safetensors' ``C64``)."""
    name = dtype_name.lower().replace('torch.', '')
    return 'complex' if name.startswith(('complex', 'c')) else 'bool' if name.startswith('bool') else 'integer'


def non_float_weights(own: Dict[str, torch.Tensor], dtypes: Dict[str, str]) -> Optional[str]:
    """The one integer / bool / complex weights check: ``dtypes`` (key -> dtype name, torch's ``torch.int8`` or
    safetensors' ``I8``, read from a state dict or a file header) against the model's floating-point tensors
    ``own``. ``load_state_dict`` would cast them without a word (a quantised or foreign file then predicts
    nothing); float16 / bfloat16 / float8 are upcast as usual. Returns the problem (to follow the file's name
    and 'hold'/'holds'), ``None`` when there is none."""
    def is_float(name: str) -> bool:  # torch float*/bfloat16, safetensors F*/BF*
        return name.lower().replace('torch.', '').startswith(('f', 'bf'))

    bad = [k for k, v in own.items() if k in dtypes and v.is_floating_point() and not is_float(dtypes[k])]
    if not bad:
        return None
    kinds = sorted({non_float_kind(dtypes[k]) for k in bad})
    return (f"{'/'.join(kinds)} tensors for float parameters: {_first([f'{k} ({dtypes[k]})' for k in bad], 3)}. "
            f"Quantized, foreign or corrupt weights cannot be loaded; export float32/float16/bfloat16 weights")


def nonfinite_tensors(state: Dict[str, torch.Tensor]) -> List[str]:
    """``'<key> (<n> NaN/Inf of <numel>)'`` for every floating-point tensor holding NaN or infinity."""
    out = []
    for key, t in state.items():
        if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex()) and t.numel():
            if t.is_floating_point() and t.element_size() == 1:  # float8: torch has no isfinite for it
                t = t.float()  # exact: NaN / Inf stay what they are
            bad = int((~torch.isfinite(t)).sum())
            if bad:
                out.append(f'{key} ({bad} NaN/Inf of {t.numel()})')
    return out


#: The fix named when non-finite weights are refused (library keyword / CLI flag).
NONFINITE_FIX = ('pass allow_nonfinite=True (timm_cra.create_model, load_model_weights; CLIs: '
                 '--allow-nonfinite-weights) to load them anyway')


#: The model keywords a weights file's shapes tell, by the pretrained cfg field naming the layer and the weight's
#: dimension that holds it: the classifier's outputs (``fc.weight`` (classes, features)) and the first conv's input
#: channels (``conv1.weight`` (out, channels, k, k)).
_SHAPE_KWARGS = (('num_classes', 'classifier', 0), ('in_chans', 'first_conv', 1))


def _shape_differences(model: torch.nn.Module, state: Dict[str, torch.Tensor]) -> Dict[str, Tuple[int, int]]:
    """``{keyword: (the weights', the model's)}`` for each of :data:`_SHAPE_KWARGS` where they differ."""
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    own = model.state_dict()
    out = {}
    for kwarg, field, dim in _SHAPE_KWARGS:
        names = cfg.get(field)
        names = [names] if isinstance(names, str) else list(names or [])
        key = f'{names[0]}.weight' if names else ''
        theirs, mine = state.get(key), own.get(key)
        if isinstance(theirs, torch.Tensor) and mine is not None and theirs.ndim == mine.ndim > dim \
                and theirs.shape[dim] != mine.shape[dim]:
            out[kwarg] = (int(theirs.shape[dim]), int(mine.shape[dim]))
    return out


def weights_shape_kwargs(model: torch.nn.Module, state: Dict[str, torch.Tensor]) -> Dict[str, int]:
    """``num_classes`` / ``in_chans`` that the classifier and first conv of ``state`` (the layers ``model``'s
    pretrained cfg names) were made for, where they differ from ``model``'s: the keywords to build a model the
    weights fit (a 2-class fine-tune's ``last.pth`` into a 10-class architecture)."""
    return {kwarg: theirs for kwarg, (theirs, _) in _shape_differences(model, state).items()}


#: The flag setting each of :func:`weights_shape_kwargs`' keywords, and what it counts.
_SHAPE_FLAGS = {'num_classes': '--num-classes', 'in_chans': '--in-chans'}
_SHAPE_WORDS = {'num_classes': 'classes', 'in_chans': 'input channels'}


def check_state_fits(model: torch.nn.Module, state: Dict[str, torch.Tensor], source: str = '',
                     hint: str = 'check --model, --model-kwargs and --num-classes', strict: bool = True) -> None:
    """The names, shapes and dtypes of ``state`` against ``model``'s, in one :class:`UsageError` line naming the
    missing / unexpected / mismatched keys with their counts. ``state`` may be a file header's ``meta`` tensors
    (:func:`safetensors_header`): nothing is read."""
    own = model.state_dict()
    missing = [k for k in own if k not in state] if strict else []
    unexpected = [k for k in state if k not in own] if strict else []
    shapes = [f'{k} {tuple(state[k].shape)} vs model {tuple(v.shape)}' for k, v in own.items()
              if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        name = (getattr(model, 'pretrained_cfg', None) or {}).get('architecture') or type(model).__name__
        differences = _shape_differences(model, state)  # a head or input of another size: name the flag setting it
        if differences:
            hint = '; '.join(f'the weights take {theirs} {_SHAPE_WORDS[kwarg]}, the model {mine}: pass '
                             f'{_SHAPE_FLAGS[kwarg]} {theirs}' for kwarg, (theirs, mine) in differences.items()) \
                + f'; else {hint}'
        raise UsageError(f"Weights in '{source}' do not fit {name}: {describe_mismatch(missing, unexpected, shapes)} "
                         f"({hint}).")
    problem = non_float_weights(own, {k: str(v.dtype) for k, v in state.items()})
    if problem:
        raise UsageError(f"Weights in '{source}' hold {problem}.")


def load_state_checked(model: torch.nn.Module, state: Dict[str, torch.Tensor], source: str,
                       hint: str = 'check --model, --model-kwargs and --num-classes', strict: bool = True,
                       allow_nonfinite: bool = False) -> None:
    """``model.load_state_dict(state)`` with one line that names the missing / unexpected / mismatched keys.

    Float weights given as integer, bool or complex tensors are refused (a quantized or foreign file); float16
    and bfloat16 are upcast as usual (:func:`check_state_fits`). Weights holding NaN or infinity are refused unless
    ``allow_nonfinite`` (a diverged run or a damaged file would otherwise evaluate to NaN without a word).
    """
    check_state_fits(model, state, source=source, hint=hint, strict=strict)
    own = model.state_dict()
    if not allow_nonfinite:
        nonfinite = nonfinite_tensors({k: v for k, v in state.items() if k in own})
        if nonfinite:
            raise UsageError(f"Weights in '{source}' hold NaN/Inf values: {_first(nonfinite, 3)}. The run that "
                             f"wrote them diverged or the file is damaged: use an earlier checkpoint, or "
                             f"{NONFINITE_FIX}.")
    model.load_state_dict(state, strict=strict)


def _read_model_weights(path: str, use_ema: bool, model: Optional[torch.nn.Module] = None
                        ) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    state, ckpt = read_weights(path, use_ema=use_ema, model=model)
    if use_ema and not (isinstance(ckpt.get('state_dict_ema'), dict) and ckpt['state_dict_ema']):
        raise UsageError(f"--use-ema: '{path}' holds no EMA weights ('state_dict_ema'; a trainer checkpoint of a run "
                         f"with --model-ema has them): drop --use-ema to use its plain weights.")
    return state, ckpt


def load_model_weights(model: torch.nn.Module, path: str, use_ema: bool = False, strict: bool = True,
                       allow_nonfinite: bool = False) -> Dict[str, Any]:
    """Load weights from ``model.safetensors``, a raw state dict, or a trainer / timm checkpoint into ``model``
    (checked as :func:`load_state_checked` does). ``use_ema``: the checkpoint's EMA weights, refused when it has
    none (the plain weights would be scored under the EMA's name). Returns the checkpoint dict as
    :func:`read_weights` does (``{}`` for a state dict, a safetensors file's recorded ``label_names``)."""
    state, ckpt = _read_model_weights(path, use_ema, model if strict else None)
    load_state_checked(model, state, path, strict=strict, allow_nonfinite=allow_nonfinite)
    return ckpt


def load_fitting_weights(model: torch.nn.Module, path: str, rebuild: Callable[..., torch.nn.Module],
                         keep: Sequence[str] = (), use_ema: bool = False,
                         allow_nonfinite: bool = False) -> Tuple[torch.nn.Module, Dict[str, Any]]:
    """:func:`load_model_weights`, but weights whose classifier or first conv were made for another class count or
    input channels than ``model``'s (:func:`weights_shape_kwargs`: a 2-class fine-tune's ``last.pth`` given with a
    10-class architecture) go into ``rebuild(num_classes=..., in_chans=...)``, the model built as their run built it;
    keywords in ``keep`` (those the user set) are never taken from the weights (a mismatch there is refused, naming
    the flag). Returns ``(the model loaded, the checkpoint dict)``: validate and export read the class count and
    channels of a ``--checkpoint`` this way."""
    header = safetensors_header(path) if path.endswith('.safetensors') and os.path.isfile(path) else None
    state, ckpt = (None, None) if header is not None else _read_model_weights(path, use_ema)
    made_for = {k: v for k, v in weights_shape_kwargs(model, state if header is None else header).items()
                if k not in keep}
    if made_for:
        _logger.info(f"'{printable(path)}' holds weights for {', '.join(f'{k}={v}' for k, v in made_for.items())}: "
                     f"the model is built with that")
        model = rebuild(**made_for)
    if header is not None:  # read once the model is known: its header is checked against it first
        state, ckpt = _read_model_weights(path, use_ema, model)
    load_state_checked(model, state, path, allow_nonfinite=allow_nonfinite)
    return model, ckpt
