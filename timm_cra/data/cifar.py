"""CIFAR-10/100 in the torchvision pickle layout (``cifar-10-batches-py``, ``cifar-100-python``)."""
import os
import pickle
from typing import List, Optional

import numpy as np
import torch

from .errors import DataError
from .in_memory import TensorImageDataset

__all__ = ['load_cifar_pickle', 'find_cifar_pickle_dir']

_LAYOUTS = {
    'cifar-10-batches-py': dict(
        train=[f'data_batch_{i}' for i in range(1, 6)], test=['test_batch'],
        meta='batches.meta', names_key='label_names', labels_key='labels'),
    'cifar-100-python': dict(
        train=['train'], test=['test'],
        meta='meta', names_key='fine_label_names', labels_key='fine_labels'),
}


def find_cifar_pickle_dir(root: str) -> Optional[str]:
    """``root`` itself or ``root/cifar-10-batches-py`` / ``root/cifar-100-python``, if present."""
    if os.path.basename(os.path.normpath(root)) in _LAYOUTS:
        return root
    for name in _LAYOUTS:
        if os.path.isdir(os.path.join(root, name)):
            return os.path.join(root, name)
    return None


def _unpickle(path: str) -> dict:
    with open(path, 'rb') as f:
        return pickle.load(f, encoding='latin1')


def load_cifar_pickle(root: str, split: str = 'train') -> TensorImageDataset:
    """Read a CIFAR pickle split straight into an in-memory uint8 ``(N, 32, 32, 3)`` dataset."""
    path = find_cifar_pickle_dir(root)
    if path is None:
        raise DataError(f"No 'cifar-10-batches-py' or 'cifar-100-python' folder in '{root}'. Extract the "
                        f"torchvision CIFAR archive there, or pass the parquet/HF dataset instead.")
    layout = _LAYOUTS[os.path.basename(os.path.normpath(path))]
    key = 'train' if split in ('train', 'training') else 'test' if split in ('test', 'val', 'validation') else None
    if key is None:
        raise DataError(f"CIFAR has splits 'train' and 'test', not '{split}'.")
    data: List[np.ndarray] = []
    labels: List[int] = []
    for name in layout[key]:
        f = os.path.join(path, name)
        if not os.path.isfile(f):
            raise DataError(f"CIFAR batch file '{f}' is missing: the archive is incomplete; re-extract it.")
        entry = _unpickle(f)
        data.append(np.asarray(entry['data'], dtype=np.uint8))
        labels.extend(entry[layout['labels_key']])
    images = np.concatenate(data).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    meta = os.path.join(path, layout['meta'])
    names = _unpickle(meta)[layout['names_key']] if os.path.isfile(meta) else None
    num_classes = 100 if 'fine' in layout['labels_key'] else 10
    return TensorImageDataset(
        torch.from_numpy(np.ascontiguousarray(images)), torch.tensor(labels, dtype=torch.int64),
        class_names=list(names) if names else [str(i) for i in range(num_classes)])
