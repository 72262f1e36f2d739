"""Hugging Face ``datasets`` sources: Hub names, local parquet files/folders, ``save_to_disk`` folders.

Image and label columns are detected (``img``/``image``, ``label``/``labels``/``fine_label``), so the
Hub's ``uoft-cs/cifar10`` (``img``) and ``imagenet-1k`` (``image``) both work without flags. Local files are
a stranger's: their JSON goes through this package's reader, parquet footers and class names are checked before
``datasets`` reads them, and what ``datasets`` / ``pyarrow`` still raise on damaged bytes is one line.
"""
import contextlib
import hashlib
import json
import logging
import math
import numbers
import os
import re
import shutil
from typing import Any, Callable, Dict, Iterator, List, Optional

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from ..utils.io import (OutputPathError, cache_write_errno, check_output_folder, check_regular_file, file_identity,
                        not_folder_reason, not_regular_reason)
from ..utils.errors import TimmCraError, UsageError, printable
from ..utils.strict_json import loads, read_json
from .errors import DataError, check_class_names, first_non_integer, index_by_name, split_hint
from .folders import recorded_split, walk_folder
from .images import UnreadableImage, check_in_chans, decode_image, resize_short_side

__all__ = ['HFImageDataset', 'load_hf_split', 'detect_columns', 'IMAGE_KEYS', 'LABEL_KEYS', 'CLASSLABEL_FIX']

_logger = logging.getLogger(__name__)

IMAGE_KEYS = ('image', 'img', 'jpg', 'png', 'webp')
LABEL_KEYS = ('label', 'labels', 'fine_label', 'cls', 'target')
_VAL_ALIASES = ('validation', 'val', 'valid')


def split_candidates(split: str) -> List[str]:
    return list(_VAL_ALIASES) if split in _VAL_ALIASES else [split]


def iter_parquet_files(root: str) -> Iterator[str]:
    """The ``*.parquet`` files under ``root`` (hidden files and folders left out, as ``glob('**')`` does), through
    the folder reader's loop-safe walk: a recursive ``glob`` follows folder symlinks without end."""
    for dirpath, dirnames, files in walk_folder(root):
        dirnames[:] = [d for d in dirnames if not d.startswith('.')]
        for f in sorted(files):
            if f.endswith('.parquet') and not f.startswith('.'):
                yield os.path.join(dirpath, f)


def parquet_splits(path: str) -> Dict[str, List[str]]:
    """Group the parquet files under ``path`` by split exactly as ``datasets.load_dataset(path)`` does (its own
    split patterns, ``datasets.data_files._get_data_files_patterns``: ``train-00000-of-00001.parquet``,
    ``cifar10-test.parquet``, ``test/x.parquet``), a file in no split refused.

    The files are not found by ``datasets`` (``get_data_patterns`` globs the folder itself): it skips a FIFO named
    ``train-*.parquet`` without a word (this must refuse it: docs/reliability.md) and drops files in no split
    silently (``test-0.parquet`` beside a ``train/`` folder; ``extra.parquet`` beside ``train-*.parquet``). Here the
    loop-safe walk finds them, each is checked to be a regular file, and only the split assignment is ``datasets``'.
    """
    from datasets.data_files import _get_data_files_patterns
    from fsspec.utils import glob_translate  # what fsspec's glob (datasets' resolver) matches patterns with

    files = sorted(iter_parquet_files(path))
    for f in files:  # a FIFO named x.parquet would block the parquet reader forever
        check_regular_file(f, 'parquet file')
    if not files:
        return {}
    relative = {f: os.path.relpath(f, path).replace(os.sep, '/') for f in files}

    def matching(pattern: str) -> List[str]:
        regex = re.compile(glob_translate(pattern))
        return [f for f in files if regex.match(relative[f])]

    try:
        patterns = _get_data_files_patterns(matching)
    except ValueError as e:  # a sharded name whose split part is not a split name (data/a b-00000-of-00001.parquet)
        raise DataError(printable(f"'{path}': {e} Rename the parquet files.")) from None
    splits = {str(split): sorted({f for pattern in found for f in matching(pattern)})
              for split, found in patterns.items()}
    splits = {split: found for split, found in splits.items() if found}
    placed = {f for found in splits.values() for f in found}
    left = [relative[f] for f in files if f not in placed]
    if left:
        raise DataError(printable(
            f"'{path}': {len(left)} parquet file(s) belong to no split by the datasets library's naming rules "
            f"({', '.join(left[:3])}{' ...' if len(left) > 3 else ''}; splits: {', '.join(splits)}): name each file "
            f"or its folder after its split (train-0.parquet, test/0.parquet), or move the extra files out."))
    return splits


#: The fix for class names a ClassLabel feature gives twice (:func:`~.errors.check_class_names`).
CLASSLABEL_FIX = "fix the names of the label column's ClassLabel feature"
_SAVED_FIX = 'save the dataset again (Dataset.save_to_disk) or copy the folder anew'
_PARQUET_FIX = 'write the file again (Dataset.to_parquet) or copy it anew'


@contextlib.contextmanager
def _read_errors(source: str, kind: str, fix: str) -> Iterator[None]:
    """What ``datasets`` / ``pyarrow`` raise on a stranger's damaged files (a truncated ``.arrow`` or parquet file,
    a ``state.json`` without its keys: ``ArrowInvalid``, ``KeyError``, ``DatasetGenerationError``, ...) as one
    :class:`DataError` line naming ``source`` and ``fix``; this package's own errors pass unchanged."""
    import pyarrow
    from datasets.exceptions import DatasetsError
    try:
        yield
    except TimmCraError:
        raise
    except (ValueError, KeyError, TypeError, IndexError, OSError, RecursionError, pyarrow.ArrowException,
            DatasetsError) as e:
        cause = e
        while isinstance(cause, DatasetsError) and cause.__cause__ is not None:  # the reader's own reason
            cause = cause.__cause__
        reason = (str(cause).strip().splitlines() or [''])[0] or type(cause).__name__
        raise DataError(printable(f"'{source}' cannot be read as {kind} ({type(cause).__name__}: {reason:.160}): "
                                  f"{fix}.")) from e


def _classlabel_names(features: Any) -> Dict[str, list]:
    """The names of each ClassLabel column in a saved ``datasets`` features dict (``dataset_info.json``, a parquet
    file's ``huggingface`` metadata): ``{'label': {'_type': 'ClassLabel', 'names': [...]}}``."""
    if not isinstance(features, dict):
        return {}
    return {column: feature['names'] for column, feature in features.items()
            if isinstance(feature, dict) and feature.get('_type') == 'ClassLabel'
            and isinstance(feature.get('names'), list)}


def _check_saved_dataset(source: str) -> None:
    """Every file ``datasets.load_from_disk(source)`` will open -- ``dataset_dict.json``, each split's ``state.json``,
    ``dataset_info.json`` and arrow shards -- is a regular file inside ``source`` (a FIFO shard blocks the reader
    forever; a folder or FIFO json file is a traceback), checked with ``stat`` before anything opens it, and its JSON
    read by this package's reader (non-UTF-8 bytes, nesting 100k deep: one line); split and shard names must be
    plain names, so no path outside the folder is read; ClassLabel names given twice are refused (datasets gives a
    traceback). Else one line naming the file and the fix."""
    def problem(path: str, reason: str) -> DataError:
        return DataError(printable(f"'{source}' is not a usable save_to_disk folder: {path} {reason}; {_SAVED_FIX}."))

    def plain(name) -> bool:
        return isinstance(name, str) and name not in ('', '.', '..') and '/' not in name and os.sep not in name

    def read(path: str, required: bool = True):
        if not required and not os.path.lexists(path):
            return {}  # datasets names what is missing
        reason = not_regular_reason(path)
        if reason:
            raise problem(path, reason)
        try:
            data = read_json(path, os.path.basename(path))
        except UsageError as e:
            raise DataError(printable(f"'{source}' is a damaged save_to_disk folder: {str(e).rstrip('.')}; "
                                      f"{_SAVED_FIX}.")) from None
        if not isinstance(data, dict):
            raise DataError(f"'{source}' is a damaged save_to_disk folder: {path} is not a JSON object; {_SAVED_FIX}.")
        return data

    folders = [source]
    dict_json = os.path.join(source, 'dataset_dict.json')
    if os.path.lexists(dict_json):
        splits = read(dict_json).get('splits')
        if not isinstance(splits, list) or not all(plain(s) for s in splits):
            raise problem(dict_json, f'must list its splits as names of its sub-folders ({{"splits": ["train", '
                                     f'"test"]}}), not {json.dumps(splits)[:60]}')
        folders = [os.path.join(source, s) for s in splits]
    for folder in folders:
        reason = not_folder_reason(folder)
        if reason:
            raise problem(folder, reason)
        state = read(os.path.join(folder, 'state.json'), required=False)
        info = read(os.path.join(folder, 'dataset_info.json'), required=False)
        shards = state.get('_data_files', [])
        names = [d.get('filename') if isinstance(d, dict) else None for d in shards or ()]
        if not isinstance(shards, list) or not all(plain(n) for n in names):
            raise problem(os.path.join(folder, 'state.json'), 'must name its arrow files in _data_files as file '
                                                              'names in its folder')
        for name in names:
            reason = not_regular_reason(os.path.join(folder, name))
            if reason:
                raise problem(os.path.join(folder, name), reason)
        for class_names in _classlabel_names(info.get('features')).values():
            check_class_names(class_names, source, CLASSLABEL_FIX)


def parquet_cache_key(files: List[str]) -> str:
    """Name of the arrow cache of ``files``: a digest of each file's :func:`~timm_cra.utils.io.file_identity`, read
    without opening the files (a content digest read every file on every load: minutes for an ImageNet-sized set)."""
    return hashlib.sha256(' '.join(str(file_identity(f)) for f in files).encode()).hexdigest()[:32]


def datasets_cache(cache_dir: Optional[str] = None) -> str:
    """The folder ``datasets`` writes its arrow cache to (``cache_dir``, else ``HF_DATASETS_CACHE``), refused in one
    line naming the fix when it cannot be written (a file, a read-only place): ``datasets`` failed there with a
    traceback or an error blaming the data."""
    import datasets
    folder = cache_dir or str(datasets.config.HF_DATASETS_CACHE)
    try:
        check_output_folder(folder, 'The datasets cache folder')
    except OutputPathError as e:
        fix = 'give a writable cache folder' if cache_dir else 'set HF_DATASETS_CACHE to a writable folder'
        raise DataError(printable(f"{str(e).split('; choose')[0]}; {fix}.")) from None
    return folder


def _raise_if_cache_unwritable(error: BaseException, cache_dir: str, source: str) -> None:
    """One line naming the cache folder and the fix when ``error`` comes from a full or read-only cache (``datasets``
    wraps the ``OSError`` in its own errors), so the message does not blame the parquet data."""
    code = cache_write_errno(error)
    if code is not None:
        raise DataError(printable(
            f"The datasets cache folder {cache_dir} cannot be written while converting '{source}' "
            f"({os.strerror(code)}): free space there, or set HF_DATASETS_CACHE to a folder with room."
        )) from error


def _load_parquet(files: List[str], source: str, cache_dir: Optional[str]):
    """``datasets.load_dataset('parquet', ...)`` of ``files`` (regular files), each checked first: a truncated or
    garbage file is one line, as are class names a ClassLabel feature gives twice (read from the schema's
    ``huggingface`` metadata).

    Cached under :func:`parquet_cache_key`: ``datasets`` keys its arrow cache on path + mtime, so a file replaced by
    one with the same mtime (``cp -p``, ``rsync -t``) would be read from the old rows. ``datasets`` trusts a cache it
    finds: one cut at a record-batch boundary reads as fewer rows, one cut mid-batch fails as if the parquet file
    were damaged. So the rows read are checked against the footers' count, and a cache that fails either way is
    removed and built again once; only a fresh build that fails blames the file."""
    import datasets
    import pyarrow.parquet as pq
    rows = 0
    shards = []  # (file, rows, {ClassLabel column: names}) in the order datasets concatenates the files
    for f in files:
        with _read_errors(f, 'a parquet file', _PARQUET_FIX):
            footer = pq.read_metadata(f)
        rows += footer.num_rows
        metadata = footer.metadata or {}
        try:
            features = loads(metadata.get(b'huggingface', b'{}').decode('utf-8')).get('info', {}).get('features')
        except (ValueError, AttributeError):
            features = None  # not JSON: datasets' own read of it below is the one line
        for names in _classlabel_names(features).values():
            check_class_names(names, source, CLASSLABEL_FIX)
        shards.append((f, footer.num_rows, _classlabel_names(features)))
    if not rows:  # datasets' own word for it: 'Instruction "train" corresponds to no data!'
        raise DataError(f"'{source}' has no rows ({len(files)} parquet file(s) of 0 rows): pass data with examples.")
    cache_dir = os.path.join(datasets_cache(cache_dir), 'parquet-by-stat', parquet_cache_key(files))
    cached = os.path.isdir(cache_dir)
    while True:
        try:
            with _read_errors(source, 'parquet data', _PARQUET_FIX):
                ds = datasets.load_dataset('parquet', data_files=files, split='train', cache_dir=cache_dir)
            problem = f'{len(ds)} rows where the parquet footers count {rows}' if len(ds) != rows else None
        except DataError as e:
            _raise_if_cache_unwritable(e, cache_dir, source)
            if not cached:
                raise
            cause = e.__cause__ or e  # the reader's reason, not the advice to write the file again
            problem = f'{type(cause).__name__}: {(str(cause).strip().splitlines() or [""])[0]}'
        if not problem:
            return _labels_by_shard_names(ds, shards, source)
        if not cached:
            raise DataError(f"'{source}' read as {problem}: {_PARQUET_FIX}.")
        _logger.warning(printable(f"The arrow cache of '{source}' is damaged ({problem:.200}): removing "
                                  f"{cache_dir} and building it again."))
        shutil.rmtree(cache_dir, ignore_errors=True)
        cached = False


def _labels_by_shard_names(ds, shards: List[tuple], source: str):
    """``ds`` with each shard's ClassLabel ids mapped through that shard's own names onto the split's (``datasets``
    gives every row the first file's names: shards written as [cat, dog] and [dog, cat] swapped the second one's
    labels), by name as a validation split is mapped onto the training split's classes; a shard naming a class the
    split's names lack, or a label outside its own names, is refused in one line."""
    import datasets
    for column, feature in ds.features.items():
        if not isinstance(feature, datasets.ClassLabel) or \
                all(names.get(column, feature.names) == feature.names for _, _, names in shards):
            continue
        with _read_errors(source, 'parquet data', _PARQUET_FIX):
            labels, start = list(ds[column]), 0
        for f, count, names in shards:
            own = names.get(column, feature.names)
            positions = index_by_name(own, feature.names)
            if positions is None:
                missing = [c for c in own if index_by_name([c], feature.names) is None]
                raise DataError(printable(
                    f"'{f}' names classes {', '.join(map(repr, missing[:5]))} that the other parquet files of its "
                    f"split in '{source}' lack (label column '{column}'): write every shard of a split with one "
                    f"ClassLabel feature."))
            for i in range(start, start + count):
                if labels[i] is not None and labels[i] >= 0 and own != feature.names:
                    if labels[i] >= len(own):
                        raise DataError(printable(
                            f"'{f}' has label {labels[i]} in column '{column}', outside its {len(own)} ClassLabel "
                            f"names: {CLASSLABEL_FIX} or the labels."))
                    labels[i] = positions[labels[i]]
            start += count
        _logger.info(printable(f"'{source}': the parquet files of a split name the classes of '{column}' in different "
                               f"orders; each file's labels are mapped by name onto {feature.names[:10]}"))
        ds = ds.remove_columns(column).add_column(column, labels, feature=feature)
    return ds


def _folders_without_parquet(source: str, splits: Dict[str, List[str]]) -> List[str]:
    """The visible sub-folders of ``source`` that hold none of its parquet files (``train/`` and ``val/`` class folders
    beside ``*.parquet``): data the parquet reading leaves out, named when a split is missing."""
    used = {os.path.relpath(f, source).split(os.sep)[0] for found in splits.values() for f in found}
    return sorted(d for d in os.listdir(source) if not d.startswith('.') and d not in used
                  and os.path.isdir(os.path.join(source, d)))


def load_hf_split(source: str, split: str, cache_dir: Optional[str] = None, split_flag: str = ''):
    """Load one split as a ``datasets.Dataset`` from a Hub name or a local path (``split_flag``: the
    caller's option, named in the missing-split error)."""
    return _load_hf_split(source, split, cache_dir, split_flag)[0]


def saved_split_files(root: str, split: str) -> List[str]:
    """The ``.arrow`` files of split ``split`` of a ``save_to_disk`` DatasetDict at ``root`` (its sub-folder ``split``,
    through the loop-safe walk): what that split's rows are read from."""
    return [os.path.join(d, f) for d, _, files in walk_folder(os.path.join(root, split)) for f in sorted(files)
            if f.endswith('.arrow')]


def _split_of_the_files(source: str, name: str, files: Dict[str, List[str]]) -> str:
    """The split whose rows ``name``'s files hold, as results name it (``files``: each split's parquet files or
    saved folder): another split's files under this name (a ``test-*.parquet`` hard-linked or symlinked to a
    ``train-*.parquet``, a saved ``test/`` linked to ``train/``) are that split, compared by file identity, the
    training split first (:func:`folders.recorded_split`, the rule for class folders)."""
    def identities(split):
        return [(st.st_dev, st.st_ino) for st in map(os.stat, files[split])]

    real_root = os.path.realpath(source)
    tops = {os.path.relpath(os.path.realpath(f), real_root).split(os.sep)[0] for f in files[name]}
    top = tops.pop() if len(tops) == 1 else None
    if top not in (None, name, os.pardir) and os.path.isdir(os.path.join(real_root, top)) and not any(
            os.path.relpath(f, source).split(os.sep)[0] == top for f in files[name]):
        # DIR/test -> train: the walk visits the linked folder once, so the split it links to is not listed apart
        _logger.warning(printable(f"the '{name}' split of '{source}' is its '{top}' folder (a link): its rows are "
                                  f"recorded as the '{top}' split."))
        return top
    try:
        ids = identities(name)
        others = sorted((s for s in files if s != name), key=lambda s: s != 'train')
        def shared_with(other):
            theirs = set(identities(other))
            return sum(i in theirs for i in ids), len(ids)

        return recorded_split(name, others, shared_with, root=source, what=f"the '{name}' split", unit='file',
                              renamable=name != 'train')
    except OSError:  # a file gone since it was read: the split keeps its name
        return name


def _load_hf_split(source: str, split: str, cache_dir: Optional[str], split_flag: str):
    """:func:`load_hf_split`'s dataset and the name the data gives the split read (``'validation'`` asked as
    ``val``), None where it names none (a parquet file, a saved split without a name): any split name reads it."""
    import datasets

    if os.path.isfile(source):
        if not source.endswith('.parquet'):
            raise DataError(f"'{source}' is not a parquet file. Pass a .parquet file, a folder of them, "
                            f"a save_to_disk folder, or a Hub dataset name.")
        return _load_parquet([source], source, cache_dir), None
    if os.path.isdir(source):
        if os.path.lexists(os.path.join(source, 'dataset_dict.json')):
            _check_saved_dataset(source)
            with _read_errors(source, 'a save_to_disk folder', _SAVED_FIX):
                dd = datasets.load_from_disk(source)
            for name in split_candidates(split):
                if name in dd:
                    # its rows are its .arrow files: a test/ of hard links to train/'s is the training split
                    return dd[name], _split_of_the_files(source, name, {s: saved_split_files(source, s) for s in dd})
            raise DataError(f"Split '{split}' not in '{source}' (splits: {', '.join(dd)}): "
                            f"{split_hint(split_flag)}.")
        if os.path.lexists(os.path.join(source, 'state.json')):
            _check_saved_dataset(source)  # a single saved split
            with _read_errors(source, 'a save_to_disk folder', _SAVED_FIX):
                ds = datasets.load_from_disk(source)
            return ds, str(ds.split) if ds.split else None
        splits = parquet_splits(source)
        if not splits:
            raise DataError(f"'{source}' holds no parquet files and is not a save_to_disk folder. "
                            f"Pass --dataset hfds/<hub-name> for a Hub dataset, or a folder of *.parquet files.")
        for name in split_candidates(split):
            if name in splits:
                return _load_parquet(splits[name], source, cache_dir), _split_of_the_files(source, name, splits)
        others = _folders_without_parquet(source, splits)
        also = (f"; read as parquet data, though it also holds the folder(s) {', '.join(f'{d}/' for d in others[:5])}"
                f" without parquet files, which were not read: keep one kind of data in a --data-dir"
                if others else '')
        raise DataError(printable(
            f"Split '{split}' not found in '{source}' (parquet splits: {', '.join(sorted(splits))}{also}): "
            f"{split_hint(split_flag)}" + (f", e.g. {split_flag} test for CIFAR." if split_flag else '.')))
    if source.startswith(('/', '.', '~')):
        raise DataError(f"Dataset path '{source}' does not exist. Pass an existing --data-dir.")
    try:
        return datasets.load_dataset(source, split=split, cache_dir=datasets_cache(cache_dir)), split
    except (FileNotFoundError, ConnectionError, ValueError) as e:
        raise DataError(f"Could not load Hub dataset '{source}' split '{split}': {e}. Check the name and split, "
                        f"or download it first (offline: HF_DATASETS_OFFLINE=1 needs a cached copy).") from e


def detect_columns(ds, image_key: Optional[str] = None, label_key: Optional[str] = None):
    cols = list(ds.column_names)

    def pick(given, keys, kind):
        if given:
            if given not in cols:
                raise DataError(f"Column '{given}' not in dataset (columns: {', '.join(cols)}).")
            return given
        for k in keys:
            if k in cols:
                return k
        raise DataError(f"No {kind} column found (columns: {', '.join(cols)}; looked for {', '.join(keys)}). "
                        f"Name it with --input-key/--target-key.")

    return pick(image_key, IMAGE_KEYS, 'image'), pick(label_key, LABEL_KEYS, 'label')


def _path_in(root: str, path: str) -> str:
    """``path`` of a local row (a ``path`` with bytes null, or a plain string) as a file inside ``root``, the data's
    folder (parquet or save_to_disk): relative paths resolve against it (not the working directory); an absolute one,
    or one leaving it (``..``, a symlink out), is an :class:`UnreadableImage` (a counted skip), so no row reads a file
    outside the data."""
    if '\0' in path:  # os.path.realpath's ValueError would be a traceback
        raise UnreadableImage(f"path {path!r:.80} holds a NUL character")
    if os.path.isabs(path):
        raise UnreadableImage(f"path '{path}' is absolute: a local dataset's row names its image relative to the "
                              f"data's folder")
    real_root = os.path.realpath(root)
    full = os.path.realpath(os.path.join(real_root, path))
    if os.path.commonpath([full, real_root]) != real_root:
        raise UnreadableImage(f"path '{path}' leaves the data's folder {root}")
    return full


def decode_value(value, in_chans: int = 3, root: Optional[str] = None,
                 resize_side: Optional[int] = None) -> Image.Image:
    """An image column value (PIL image, bytes, a path string, or ``{'bytes', 'path'}``) through
    :func:`decode_image`; ``root``: the folder a local source's paths are read from (:func:`_path_in`), a plain
    string column's as a ``path`` row's (it was read from anywhere: absolute paths, the working directory)."""
    if isinstance(value, dict):
        value = value['bytes'] if value.get('bytes') is not None else value.get('path')
    if root is not None and isinstance(value, str) and value:
        value = _path_in(root, value)
    if not isinstance(value, (Image.Image, bytes, bytearray, str)) or value == '':
        raise UnreadableImage(f'unsupported image value of type {type(value).__name__}')
    return decode_image(value, in_chans, resize_side)


#: Without a ClassLabel feature the class count is inferred as ``max label + 1``; it is refused above both this
#: floor and twice the number of distinct labels (a few stray large labels would size a huge, mostly unused head).
INFERRED_CLASSES_FLOOR = 1000


def inferred_class_count(targets: np.ndarray, what: str, label_key: str) -> int:
    """``max label + 1`` for integer labels without class names, refused (before anything is sized by it) when
    the labels are too sparse to support it."""
    if not len(targets):
        return 0
    count = int(targets.max()) + 1
    distinct = len(np.unique(targets))
    if count > max(INFERRED_CLASSES_FLOOR, 2 * distinct):
        raise DataError(f"Label column '{label_key}' of {what} has max label {count - 1} but only {distinct} distinct "
                        f"label(s) in {len(targets)} row(s): that would make a {count}-class head; give the column a "
                        f"ClassLabel feature with the real class names, renumber the labels 0..N-1, or pick the "
                        f"right column with --target-key.")
    return count


class HFImageDataset(Dataset):
    """A split of a Hugging Face dataset as ``(image, target)`` pairs.

    Images are decoded here (not by ``datasets``) so a corrupt one becomes ``(None, target)`` -- a
    counted skip (see :func:`timm_cra.data.skip_collate`) -- instead of an exception inside a worker.
    """

    def __init__(self, source: str, split: str = 'train', transform: Optional[Callable] = None,
                 image_key: Optional[str] = None, label_key: Optional[str] = None,
                 cache_dir: Optional[str] = None, in_chans: int = 3, split_flag: str = ''):
        import datasets

        self.in_chans = check_in_chans(in_chans)
        ds, split_read = _load_hf_split(source, split, cache_dir, split_flag)
        if not len(ds):  # nothing to train or score: the sizes below (class count, batches) would mean nothing
            raise DataError(f"'{source}' [{split}] has no rows: pass data with examples in that split"
                            + (f' (or another {split_flag})' if split_flag else '') + '.')
        self.image_key, self.label_key = detect_columns(ds, image_key, label_key)
        if isinstance(ds.features[self.image_key], datasets.Image):
            ds = ds.cast_column(self.image_key, datasets.Image(decode=False))
        self.ds = ds
        self.source, self.split = source, split_read
        # local data (parquet, save_to_disk): `path` image values are files in its folder, never anywhere else (a
        # Hub dataset's paths are datasets' own cache files)
        self.image_root = os.path.dirname(os.path.abspath(source)) if os.path.isfile(source) else \
            source if os.path.isdir(source) else None
        self.transform = transform
        feat = ds.features[self.label_key]
        with _read_errors(source, 'a dataset', 'its files are damaged: write, save or download them again'):
            labels = ds[self.label_key]  # memory-mapped: damaged bytes may first show here
        bad = first_non_integer(labels)
        if bad is not None:  # int64 conversion would fail on strings / NaN and truncate 0.7 to class 0
            names = (' (class names need a ClassLabel feature)' if isinstance(bad[1], str) else
                     ' (a boolean column: store the classes as integers 0 and 1)'
                     if isinstance(bad[1], (bool, np.bool_)) else
                     ' (this one is outside int64)' if isinstance(bad[1], numbers.Real) and math.isfinite(bad[1])
                     and float(bad[1]).is_integer() else '')
            raise DataError(f"Label column '{self.label_key}' of '{source}' [{split}] has {bad[1]!r:.40} at example "
                            f"{bad[0]}: labels must be integer class indices{names}; pass the label column with "
                            f"--target-key, or cast it to a ClassLabel feature.")
        self.targets = np.asarray(labels, dtype=np.int64)
        if isinstance(feat, datasets.ClassLabel):
            self.class_names = list(feat.names)
        else:
            self.class_names = [str(i) for i in range(inferred_class_count(self.targets, f"'{source}' [{split}]",
                                                                           self.label_key))]
        self.num_classes = len(self.class_names)

    def __len__(self) -> int:
        return len(self.ds)

    def set_in_chans(self, in_chans: int) -> None:
        """Decode to ``in_chans`` channels from now on (the model's input channels)."""
        self.in_chans = check_in_chans(in_chans)

    def load_image(self, index: int) -> Optional[Image.Image]:
        try:
            return decode_value(self.ds[int(index)][self.image_key], self.in_chans, self.image_root,
                                resize_short_side(self.transform))
        except UnreadableImage as e:
            _logger.warning(printable(f'Skipping unreadable image {index} of {self.source}'
                                      f'{f"[{self.split}]" if self.split else ""}: {e}'))
            return None

    def __getitem__(self, index: int):
        img = self.load_image(index)
        if img is not None and self.transform is not None:
            img = self.transform(img)
        return img, int(self.targets[index])

    def iter_raw_images(self, batch: int = 1000):
        """Yield ``(index, encoded value)`` in order, in column batches (fast bulk decoding)."""
        for start in range(0, len(self.ds), batch):
            values = self.ds[start:start + batch][self.image_key]
            for i, v in enumerate(values):
                yield start + i, v
