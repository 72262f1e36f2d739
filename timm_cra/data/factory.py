"""One entry point for every supported dataset source, plus the skip-counting collate."""
import glob
import logging
import os
from typing import NamedTuple, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import default_collate

from ..utils.cli import SPLIT_FOLDER_NAMES
from ..utils.errors import printable
from ..utils.labels import name_key, numbered_classes
from .cifar import cifar_split_files, find_cifar_pickle_dir, load_cifar_pickle
from .errors import DataError, check_class_names, classes_absent_from_training, index_by_name
from .folders import (TRAIN_FOLDER_NAMES, ImageFolderDataset, check_data_folder, class_folders, find_split_dir,
                      recorded_split, shared_files)
from .hf import (CLASSLABEL_FIX, HFImageDataset, iter_parquet_files, parquet_splits, saved_split_files,
                 split_candidates)
from .in_memory import TensorImageDataset, decode_to_memory

__all__ = ['create_dataset', 'detect_source', 'skip_collate', 'check_labels', 'check_num_classes',
           'map_classes_by_name', 'split_overlap', 'SplitOverlap', 'SOURCES']

_logger = logging.getLogger(__name__)

#: ``--dataset`` values (timm spellings where timm has them).
SOURCES = ('', 'imagenet', 'folder', 'torch/cifar10', 'torch/cifar100', 'hfds', 'hfds/<hub-name>', 'parquet')


def detect_source(root: str) -> str:
    """Guess the source kind of a local ``--data-dir``."""
    if os.path.isfile(root):
        return 'hfds'
    check_data_folder(root)  # says what it is instead: nothing, a FIFO, a device
    if find_cifar_pickle_dir(root):
        return 'torch/cifar'
    if any(os.path.exists(os.path.join(root, f)) for f in ('dataset_dict.json', 'state.json')):
        return 'hfds'
    if next(iter_parquet_files(root), None):
        return 'hfds'
    return 'folder-auto'


def _is_hf_data(root: str) -> bool:
    """Whether ``root`` is plainly parquet / ``save_to_disk`` data: a ``.parquet`` file, a saved dataset, or
    ``*.parquet`` files at the top or one folder down. Shallow on purpose, unlike :func:`detect_source`'s
    recursive search: a class-folder tree may hold symlink loops."""
    if os.path.isfile(root):
        return root.endswith('.parquet')
    if any(os.path.exists(os.path.join(root, f)) for f in ('dataset_dict.json', 'state.json')):
        return True
    top = glob.escape(root)
    return bool(glob.glob(os.path.join(top, '*.parquet')) or glob.glob(os.path.join(top, '*', '*.parquet')))


def create_dataset(name: Optional[str], root: Optional[str], split: str = 'train', *,
                   in_memory: bool = False, num_samples: Optional[int] = None,
                   class_names: Optional[Sequence[str]] = None, image_key: Optional[str] = None,
                   label_key: Optional[str] = None, cache_dir: Optional[str] = None, in_chans: int = 3,
                   split_flag: str = ''):
    """Build a dataset split.

    Args:
        name: ``''`` (detect from ``root``), ``'imagenet'`` (``<split>/<wnid>/`` with ImageNet-1k indices),
            ``'folder'`` (``<split>/<class>/``, classes in timm's order), ``'torch/cifar10'`` /
            ``'torch/cifar100'`` (torchvision pickle layout), ``'hfds/<hub-name>'`` (Hub dataset),
            ``'hfds'`` / ``'parquet'`` (local parquet file/folder or ``save_to_disk`` folder at ``root``).
        root: ``--data-dir``.
        split: split name (``validation``/``val`` are aliases).
        in_memory: decode every image once into a uint8 tensor (CIFAR-size data; see ``TensorLoader``).
        num_samples: keep only the first ``num_samples`` examples (quick runs, data slices).
        class_names: class list of the training split: a val split of any kind takes its indices, matched by
            class name (a split with a class the training split lacks is refused).
        in_chans: channels of the images produced (1: greyscale, 3: RGB): the model's input channels;
            ``set_in_chans(n)`` on the returned dataset changes it later.
        split_flag: the caller's option for ``split`` (e.g. ``--split``), named when the split is missing.

    Every returned dataset has ``num_classes``, ``class_names``, ``targets`` and ``split``: the name the data gives
    the split read (``'val'`` for a ``val/`` folder asked as ``validation``, ``'test'`` for CIFAR's test batch),
    None where it names none (a class folder or parquet file that is one split itself): what results record.
    """
    name = (name or '').strip()
    if name.startswith('hfds/'):
        ds = HFImageDataset(name[len('hfds/'):], split, image_key=image_key, label_key=label_key,
                            cache_dir=cache_dir or root, in_chans=in_chans, split_flag=split_flag)
    else:
        if not root:
            raise DataError('No --data-dir given. Point it at the dataset folder or file '
                            '(or use --dataset hfds/<hub-name> for a Hub dataset).')
        kind = name.lower() if name else detect_source(root)
        if kind in ('hfds', 'parquet'):
            ds = HFImageDataset(root, split, image_key=image_key, label_key=label_key, cache_dir=cache_dir,
                                in_chans=in_chans, split_flag=split_flag)
        elif kind.startswith('torch/cifar') or kind in ('cifar10', 'cifar100'):
            variant = kind.rpartition('/')[2]
            ds = load_cifar_pickle(root, split, variant if variant in ('cifar10', 'cifar100') else None)
            ds.set_in_chans(in_chans)
        elif kind in ('imagenet', 'folder', 'folder-auto'):
            if kind != 'folder-auto' and _is_hf_data(root):
                # e.g. a recipe's `dataset: folder` given parquet data: the folder errors would not say why
                raise DataError(f"--dataset {kind} reads class folders, but '{root}' is parquet / save_to_disk "
                                f"data: pass --dataset hfds (or --dataset '' to detect the kind).")
            mode = {'imagenet': 'imagenet', 'folder': 'folder', 'folder-auto': 'auto'}[kind]
            split_dir = find_split_dir(root, split, split_flag)
            ds = ImageFolderDataset(split_dir, label_mode=mode, class_names=class_names, in_chans=in_chans)
            if split_dir != root:
                ds.split = _split_name(root, split_dir)
            elif os.path.basename(os.path.normpath(root)) in SPLIT_FOLDER_NAMES:  # --data-dir data/val: that split
                whole = os.path.abspath(root)
                ds.split = _split_name(os.path.dirname(whole), whole, splits_only=False)
            else:
                ds.split = None
        else:
            raise DataError(f"Unknown --dataset '{name}'. Use one of: {', '.join(s or repr(s) for s in SOURCES)}.")
    check_class_names(ds.class_names, root or name,
                      'rename or merge those class folders' if isinstance(ds, ImageFolderDataset) else
                      CLASSLABEL_FIX if isinstance(ds, HFImageDataset) else
                      'fix the label names in batches.meta / meta')
    if class_names is not None:
        _share_class_names(ds, class_names, f"'{root or name}' [{split}]")
    split_read = ds.split
    if num_samples:
        ds = _head(ds, num_samples)
    if in_memory:
        ds = decode_to_memory(ds, desc=f'{name if name.startswith("hfds/") else root or name} [{split}]')
    ds.split = split_read
    return ds


def _split_name(root: str, split_dir: str, splits_only: bool = True) -> str:
    """The split a folder under ``root`` holds, as results and cards name it: a link to another split folder of
    ``root`` (``val -> train``), or a folder whose images all are another split folder's (per-class links, hard
    links), is that split, said once (its scores were recorded as the 'val' split's); a folder sharing some of its
    images with another split is said to. The other splits are ``root``'s other folders (a dataset root holds
    splits only), the training ones first; ``splits_only=False`` (``root`` is a split folder's parent, which may
    hold anything): its ``train`` / ``training`` folder only. A training split is never renamed."""
    name = os.path.basename(split_dir)
    real = os.path.realpath(split_dir)
    if os.path.dirname(real) == os.path.realpath(root) and os.path.basename(real) != name:
        target = os.path.basename(real)
        _logger.warning(printable(f"'{split_dir}' is a link to the '{target}' split of '{root}': its images are "
                                  f"recorded as the '{target}' split."))
        return target
    others = [d for d in TRAIN_FOLDER_NAMES if os.path.isdir(os.path.join(root, d))]
    if splits_only:
        others += [d for d in class_folders(root) if d not in others]
    others = [d for d in others if d != name and not os.path.samefile(os.path.join(root, d), split_dir)]
    return recorded_split(name, others, lambda other: shared_files(split_dir, os.path.join(root, other)), root=root,
                          what=f"'{split_dir}'", renamable=name not in TRAIN_FOLDER_NAMES)


def _share_class_names(ds, class_names: Sequence[str], what: str) -> None:
    """Give ``ds`` (a val split) the training split's indices, by class name: splits name their classes
    independently (parquet ClassLabels in another order, a val folder holding a subset of the classes). Data
    that names no classes keeps its integer labels."""
    if list(ds.class_names) == list(class_names) or numbered_classes(class_names):
        return
    if numbered_classes(ds.class_names):  # nothing to match by: say so, the scores depend on it
        pairs = ', '.join(f'{i} = {c!r}' for i, c in enumerate(class_names[:5]))
        _logger.warning(printable(f"{what} has plain integer labels (no class names) while the training split names "
                                  f"its classes: the labels are taken by position ({pairs}"
                                  f"{', ...' if len(class_names) > 5 else ''})."))
        return
    check_labels(ds, what)
    if not map_classes_by_name(ds, class_names):
        known = {name_key(c) for c in class_names}
        raise classes_absent_from_training(what, [c for c in ds.class_names if name_key(c) not in known])


class SplitOverlap(NamedTuple):
    """How much of a validation split is the training split (:func:`split_overlap`)."""
    one_split: bool = False  # every split name reads the same rows
    shared: int = 0  # class folders: validation images that are training images
    total: int = 0  # class folders: validation images


def split_overlap(name: Optional[str], root: Optional[str], train_split: str = 'train',
                  val_split: str = 'validation') -> SplitOverlap:
    """Whether validation on ``val_split`` of a local ``--data-dir`` would read the training rows, which training must
    refuse (best top-1 would be training accuracy; validating such data alone is fine):

    - ``one_split``: the data holds one split only, which every split name resolves to (a parquet file, a
      single-split ``save_to_disk`` folder, a folder of class folders without split folders), or its ``val_split``
      is ``train_split``'s own files under another name (a ``val -> train`` symlinked folder, a ``test-*.parquet``
      linked to ``train-*.parquet``: compared by file identity, ``os.path.samefile``);
    - ``shared`` of ``total``: class folders whose validation images are partly or wholly the training split's
      (hard links, per-class or per-file symlinks; see :func:`folders.shared_files`).

    One split named as both (``--train-split test --val-split test``) is the user's choice, said, not refused; data
    that cannot be read overlaps nothing here (the loader says what is wrong with it)."""
    kind = (name or '').strip().lower()
    if not root or kind.startswith('hfds/') or not os.path.exists(root):
        return SplitOverlap()
    kind = kind or detect_source(root)
    if kind in ('hfds', 'parquet'):
        if os.path.isfile(root) or (os.path.exists(os.path.join(root, 'state.json'))
                                    and not os.path.exists(os.path.join(root, 'dataset_dict.json'))):
            return SplitOverlap(one_split=True)
        try:
            return SplitOverlap(one_split=_same_split_files(root, train_split, val_split))
        except (DataError, OSError):
            return SplitOverlap()
    if kind.startswith('torch/cifar') or kind in ('cifar10', 'cifar100'):  # test_batch linked to a data_batch
        variant = kind.rpartition('/')[2]
        variant = variant if variant in ('cifar10', 'cifar100') else None
        try:
            return SplitOverlap(one_split=_shared_file(cifar_split_files(root, train_split, variant),
                                                       cifar_split_files(root, val_split or 'validation', variant)))
        except OSError:
            return SplitOverlap()
    if kind not in ('imagenet', 'folder', 'folder-auto') or not os.path.isdir(root):
        return SplitOverlap()
    try:
        val_dir, train_dir = find_split_dir(root, val_split or 'validation'), find_split_dir(root, train_split)
        if os.path.samefile(val_dir, root):  # no split folders: every split name is the one folder
            return SplitOverlap(one_split=True)
        if os.path.abspath(val_dir) == os.path.abspath(train_dir):  # one split named for both
            return SplitOverlap()
        if os.path.samefile(val_dir, train_dir):  # a link is not the user's choice
            return SplitOverlap(one_split=True)
        shared, total = shared_files(val_dir, train_dir)
    except (DataError, OSError):
        return SplitOverlap()
    return SplitOverlap(shared=shared, total=total)


def _same_split_files(root: str, train_split: str, val_split: str) -> bool:
    """Whether a parquet / ``save_to_disk`` folder's ``val_split`` shares a file or folder with its ``train_split``:
    a saved split's folder, or any of its ``.arrow`` files (hard-linked or symlinked one by one)."""
    def split_files(split: str) -> list:
        if os.path.exists(os.path.join(root, 'dataset_dict.json')):  # its splits are its sub-folders
            found = [os.path.join(root, s) for s in split_candidates(split) if os.path.isdir(os.path.join(root, s))]
            found += [f for s in split_candidates(split) if os.path.isdir(os.path.join(root, s))
                      for f in saved_split_files(root, s)]
        else:
            splits = parquet_splits(root)
            found = next((splits[s] for s in split_candidates(split) if s in splits), [])
        return found

    return _shared_file(split_files(train_split), split_files(val_split or 'validation'))


def _shared_file(files: Sequence[str], others: Sequence[str]) -> bool:
    """Whether a file of ``others`` is one of ``files`` (device and inode, links followed); the same paths are one
    split named for both (``--train-split test --val-split test``), the user's choice."""
    if sorted(files) == sorted(others):
        return False
    ids = {(st.st_dev, st.st_ino) for st in map(os.stat, files)}
    return any((st.st_dev, st.st_ino) in ids for st in map(os.stat, others))


def _head(ds, n: int):
    if isinstance(ds, TensorImageDataset):
        return ds.subset(n)
    if isinstance(ds, HFImageDataset):
        ds.ds = ds.ds.select(range(min(n, len(ds.ds))))
        ds.targets = ds.targets[:n]
        return ds
    ds.samples = ds.samples[:n]
    ds.targets = ds.targets[:n]
    return ds


def check_labels(dataset, what: str = 'dataset') -> None:
    """Refuse labels outside ``0 .. num_classes - 1``, naming the first bad one (before any step runs)."""
    n = int(dataset.num_classes)
    targets = torch.as_tensor(dataset.targets)
    bad = ((targets < 0) | (targets >= n)).nonzero().flatten()
    if not len(bad):
        return
    i = int(bad[0])
    label = int(targets[i])
    where = f'example {i}'
    if hasattr(dataset, 'filename'):
        where += f" ('{dataset.filename(i)}')"
    fix = ('-1 usually marks unlabelled examples (e.g. a test split without labels): use a labelled split '
           'or drop those rows' if label < 0 else
           f'give the label column all {n} class names (a ClassLabel feature) or fix the labels')
    raise DataError(f'The {what} has label {label} at {where} ({len(bad)} example(s) outside 0..{n - 1} for '
                    f'its {n} classes): {fix}.')


def check_num_classes(dataset, model_num_classes: int, what: str = 'dataset', *,
                      label_names: Optional[Sequence[str]] = None, head_fixed: bool = False) -> None:
    """Refuse a dataset whose labels are out of range or do not fit the model head.

    ``head_fixed``: the head holds trained weights that must be kept (validating pretrained weights), so the
    fix is data with the model's classes (``label_names``), never ``--num-classes`` (a new, random head).
    """
    check_labels(dataset, what)
    n = int(dataset.num_classes)
    known = {name_key(c) for c in label_names or ()}
    unknown = [c for c in dataset.class_names if name_key(c) not in known]
    if n == model_num_classes and known and unknown and len(unknown) < n:
        # Some names match, some do not (automobile/ renamed car/): the labels would be the sorted class
        # positions, wrong wherever the names do not line up; no overlap at all (0..9) is scored by position.
        present = {name_key(c) for c in dataset.class_names}
        missing = [c for c in label_names if name_key(c) not in present]
        raise DataError(
            f"The {what}'s classes {', '.join(map(repr, unknown[:5]))}{' ...' if len(unknown) > 5 else ''} are not "
            f"among the model's label_names while its other classes are, so classes cannot be matched by name: "
            f"rename them to the model's names (missing from the data: {', '.join(map(repr, missing[:5]))}"
            f"{' ...' if len(missing) > 5 else ''}), or give every class a name that is not a label name to score by "
            f"sorted class order.")
    if n == model_num_classes:
        return
    if head_fixed:
        why = (f"its classes {', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''} are not among the "
               f"model's label_names" if label_names else 'the weights carry no label_names to map classes by name')
        raise DataError(
            f'The {what} has {n} classes but the pretrained head has {model_num_classes} outputs and {why}: '
            f"validate on data whose class names are the model's label_names (or a subset of them), or use "
            f'a model trained on these classes.')
    raise DataError(
        f'The {what} has {n} classes but the model head has {model_num_classes} outputs. '
        f'Pass --num-classes {n} (training / fine-tuning resets the head), or use a model and '
        f'dataset with the same label set.')


def map_classes_by_name(dataset, label_names: Sequence[str]) -> bool:
    """Re-index ``dataset`` onto ``label_names`` when its class names are a subset of them in another order or
    count (a val folder holding 3 of a model's 10 classes): targets become the model's indices and
    ``class_names`` / ``num_classes`` the model's. Returns whether it re-indexed; a dataset with a class not in
    ``label_names`` is left as it was (:func:`check_num_classes` refuses it). Labels must be checked first."""
    names, label_names = list(dataset.class_names), list(label_names)
    positions = index_by_name(names, label_names)
    if names == label_names or not names or positions is None:
        return False
    remap = np.asarray(positions, dtype=np.int64)
    if isinstance(dataset, TensorImageDataset):
        dataset.targets = torch.from_numpy(remap[dataset.targets.numpy()])
    elif isinstance(dataset, HFImageDataset):
        dataset.targets = remap[np.asarray(dataset.targets)]
    else:  # ImageFolderDataset: the targets live in ``samples`` too
        dataset.samples = [(path, int(remap[t])) for path, t in dataset.samples]
        dataset.targets = [t for _, t in dataset.samples]
    dataset.class_names, dataset.num_classes = label_names, len(label_names)
    return True


def skip_collate(batch):
    """``default_collate`` that drops unreadable samples (``image is None``) and returns their count.

    Yields ``(images, targets, num_skipped)``; the count travels with the batch because dataset
    attributes changed inside worker processes never reach the main process.
    """
    kept = [b for b in batch if b[0] is not None]
    skipped = len(batch) - len(kept)
    if not kept:
        return torch.empty(0), torch.empty(0, dtype=torch.int64), skipped
    x, y = default_collate(kept)
    return x, y, skipped
