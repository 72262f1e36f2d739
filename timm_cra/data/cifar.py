"""CIFAR-10/100 in the torchvision pickle layout (``cifar-10-batches-py``, ``cifar-100-python``).

The batch files are pickles. A plain ``pickle.load`` runs whatever callable a file names, so they are read
with an unpickler that admits only what those files hold: dicts, lists, str/bytes, numbers and numpy arrays
without Python objects (numpy's array reconstruction and latin-1 bytes, nothing else).
"""
import io
import os
import pickle
from typing import Any, List, Optional

import numpy as np
import torch

from ..utils.errors import printable
from ..utils.io import read_capped
from .errors import DataError, first_non_integer
from .folders import warn_empty_classes
from .in_memory import TensorImageDataset

__all__ = ['load_cifar_pickle', 'find_cifar_pickle_dir', 'cifar_split_files']

_LAYOUTS = {
    'cifar-10-batches-py': dict(
        train=[f'data_batch_{i}' for i in range(1, 6)], test=['test_batch'],
        meta='batches.meta', names_key='label_names', labels_key='labels'),
    'cifar-100-python': dict(
        train=['train'], test=['test'],
        meta='meta', names_key='fine_label_names', labels_key='fine_labels'),
}


#: ``--dataset torch/<name>`` -> the folder of its layout.
_FOLDERS = {'cifar10': 'cifar-10-batches-py', 'cifar100': 'cifar-100-python'}


def find_cifar_pickle_dir(root: str, variant: Optional[str] = None) -> Optional[str]:
    """``root`` itself or ``root/cifar-10-batches-py`` / ``root/cifar-100-python``, if present; ``variant``
    (``'cifar10'`` / ``'cifar100'``, the ``--dataset`` name) accepts only that layout."""
    folders = [_FOLDERS[variant]] if variant else list(_LAYOUTS)
    if os.path.basename(os.path.normpath(root)) in folders:
        return root
    for name in folders:
        if os.path.isdir(os.path.join(root, name)):
            return os.path.join(root, name)
    return None


def _dtype(*args, **kwargs) -> np.dtype:
    dt = np.dtype(*args, **kwargs)
    if dt.hasobject:  # an object array would unpickle arbitrary objects into its elements
        raise pickle.UnpicklingError(f'numpy dtype {dt} holds Python objects')
    return dt


def _latin1_bytes(text: str, encoding: str) -> bytes:
    """What protocol-2 pickles written by Python 3 call to rebuild ``bytes`` (``_codecs.encode(s, 'latin1')``)."""
    if encoding not in ('latin1', 'latin-1') or not isinstance(text, str):
        raise pickle.UnpicklingError(f'_codecs.encode with {encoding!r} is not allowed')
    return text.encode('latin1')


def _allowed_globals():
    from numpy._core import multiarray, numeric
    g = {('numpy', 'ndarray'): np.ndarray, ('numpy', 'dtype'): _dtype, ('_codecs', 'encode'): _latin1_bytes}
    for mod in ('numpy.core.multiarray', 'numpy._core.multiarray'):  # the module path of numpy < 2 / >= 2
        g[(mod, '_reconstruct')] = multiarray._reconstruct
    for mod in ('numpy.core.numeric', 'numpy._core.numeric'):  # protocol 5 out-of-band buffers
        g[(mod, '_frombuffer')] = numeric._frombuffer
    return g


class _CifarUnpickler(pickle.Unpickler):
    """Resolves only numpy's array-rebuilding globals and latin-1 ``bytes``; any other global (``os.system``,
    ...) is refused."""
    _allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        fn = self._allowed.get((module, name))
        if fn is None:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a CIFAR batch file")
        return fn


#: The largest CIFAR batch file read: CIFAR-100's train file, the largest, is 155 MB (50,000 images of 3,072 bytes).
MAX_BATCH_FILE_BYTES = 256 * 2**20


def _unpickle(path: str) -> dict:
    """Read one batch file safely, at most :data:`MAX_BATCH_FILE_BYTES`; keys come back as ``str`` (Python 2 files
    and bytes keys alike)."""
    raw = read_capped(path, 'CIFAR batch file', MAX_BATCH_FILE_BYTES, "any CIFAR batch file (CIFAR-100's train "
                      "file is 155 MB)", 're-extract the official cifar-10/100-python archive.')
    try:
        entry = _CifarUnpickler(io.BytesIO(raw), encoding='latin1').load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as e:
        raise DataError(f"CIFAR batch file '{path}' is not a plain CIFAR pickle ({e}); refusing to load it. "
                        f"Re-extract the official cifar-10/100-python archive.") from e
    if not isinstance(entry, dict):
        raise DataError(f"CIFAR batch file '{path}' holds a {type(entry).__name__}, not a dict; "
                        f"re-extract the archive.")
    return {k.decode('latin1') if isinstance(k, bytes) else k: v for k, v in entry.items()}


def _names(values, meta: str, key: str) -> List[str]:
    """The class names a meta file gives: a list of strings (bytes in files pickled by Python 3, which must be
    UTF-8), else one line (an int was a traceback, a dict's keys were taken, a string's letters were refused as
    repeated names)."""
    if not isinstance(values, (list, tuple)) or not all(isinstance(v, (str, bytes)) for v in values):
        raise DataError(printable(f"CIFAR meta file '{meta}' has {key} {values!r:.60}: it must be a list of class "
                                  f"names (strings); re-extract the archive or fix that list."))
    names = []
    for v in values:
        try:
            names.append(v.decode('utf-8') if isinstance(v, bytes) else v)
        except UnicodeDecodeError as e:  # 'replace' turned it into U+FFFD silently, a class name nobody gave
            raise DataError(f"CIFAR meta file '{meta}' has {key} {v!r:.60} that is not UTF-8 text (byte "
                            f"{e.object[e.start]:#04x} at {e.start}): re-extract the archive or fix that "
                            f"name.") from None
    return names


def _split_key(split: str) -> Optional[str]:
    return 'train' if split in ('train', 'training') else 'test' if split in ('test', 'val', 'validation') else None


def cifar_split_files(root: str, split: str, variant: Optional[str] = None) -> List[str]:
    """The batch files :func:`load_cifar_pickle` reads for ``split`` ([] where it would refuse the data)."""
    path = find_cifar_pickle_dir(root, variant)
    key = _split_key(split)
    if path is None or key is None:
        return []
    return [os.path.join(path, name) for name in _LAYOUTS[os.path.basename(os.path.normpath(path))][key]]


def load_cifar_pickle(root: str, split: str = 'train', variant: Optional[str] = None) -> TensorImageDataset:
    """Read a CIFAR pickle split straight into an in-memory uint8 ``(N, 32, 32, 3)`` dataset. ``variant``
    (``'cifar10'`` / ``'cifar100'``, from ``--dataset torch/<variant>``) chooses the layout; without it the
    first one present is read."""
    path = find_cifar_pickle_dir(root, variant)
    other = find_cifar_pickle_dir(root) if variant and path is None else None
    if other is not None:  # the name must choose the layout, never the folder that happens to be there
        found = os.path.basename(os.path.normpath(other))
        right = next(k for k, v in _FOLDERS.items() if v == found)
        raise DataError(f"--dataset torch/{variant} reads '{_FOLDERS[variant]}', but '{root}' holds '{found}': "
                        f"pass --dataset torch/{right} to train on it, or a --data-dir holding {_FOLDERS[variant]}.")
    if path is None:
        raise DataError(f"No 'cifar-10-batches-py' or 'cifar-100-python' folder in '{root}'. Extract the "
                        f"torchvision CIFAR archive there, or pass the parquet/HF dataset instead.")
    layout = _LAYOUTS[os.path.basename(os.path.normpath(path))]
    key = _split_key(split)
    if key is None:
        raise DataError(f"CIFAR has splits 'train' and 'test', not '{split}'.")
    data: List[np.ndarray] = []
    labels: List[int] = []
    for name in layout[key]:
        f = os.path.join(path, name)
        if not os.path.lexists(f):
            raise DataError(f"CIFAR batch file '{f}' is missing: the archive is incomplete; re-extract it.")
        entry = _unpickle(f)
        try:
            arr = entry['data']
            if not isinstance(arr, np.ndarray) or arr.dtype != np.uint8 or arr.ndim != 2 or arr.shape[1] != 3072:
                raise ValueError(f"'data' must be a uint8 (N, 3072) array, got {getattr(arr, 'dtype', type(arr))} "
                                 f"{getattr(arr, 'shape', '')}")
            bad = first_non_integer(entry[layout['labels_key']])
            if bad is not None:
                raise ValueError(f"label {bad[1]!r:.40} at example {bad[0]} is not a class index (an integer)")
            batch_labels = [int(v) for v in entry[layout['labels_key']]]
            if len(batch_labels) != len(arr):
                raise ValueError(f'{len(arr)} images but {len(batch_labels)} labels')
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"CIFAR batch file '{f}' has an unexpected layout ({e}); re-extract the archive.") from e
        data.append(arr)
        labels.extend(batch_labels)
    images = np.concatenate(data).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    meta = os.path.join(path, layout['meta'])
    names = _unpickle(meta).get(layout['names_key']) if os.path.lexists(meta) else None
    names = _names(names, meta, layout['names_key']) if names is not None else None
    num_classes = 100 if 'fine' in layout['labels_key'] else 10
    if names:  # names no label uses are classes without images, as empty class folders are: warned, kept
        used = set(labels)
        warn_empty_classes(meta, f"class name(s) of {len(names)} in the '{key}' split",
                           [name for i, name in enumerate(names) if i not in used])
    ds = TensorImageDataset(
        torch.from_numpy(np.ascontiguousarray(images)), torch.tensor(labels, dtype=torch.int64),
        class_names=list(names) if names else [str(i) for i in range(num_classes)])
    ds.split = key  # 'validation' reads the test batch: results say which
    return ds
