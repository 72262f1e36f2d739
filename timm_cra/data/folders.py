"""Image-folder datasets: ImageNet (``<split>/<wnid>/*.JPEG``) and plain class folders.

ImageNet labels come from the full ImageNet-1k synset order (``timm.data.ImageNetInfo``), never from
sorting the folders present, so a folder holding a subset of the classes still gets the right indices.
Plain class folders (fine-tuning on your own data) are indexed in timm's order (its folder reader's ``natural_key``:
case-insensitive, digits by value: ``class2`` before ``Class9`` before ``class10``), so a model trained here scores
the same with timm's ``ImageDataset`` and a timm ``train.py`` checkpoint the same here.
"""
import contextlib
import logging
import os
import re
from collections import Counter
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from PIL import Image
from torch.utils.data import Dataset

from .errors import DataError, classes_absent_from_training, split_hint
from ..utils.cli import SPLIT_FOLDER_NAMES
from ..utils.errors import printable
from ..utils.io import not_folder_reason
from ..utils.labels import name_key
from .images import UnreadableImage, check_in_chans, decode_image, resize_short_side

__all__ = ['ImageFolderDataset', 'IMG_EXTENSIONS', 'TRAIN_FOLDER_NAMES', 'is_wnid', 'imagenet_class_to_idx',
           'find_split_dir', 'shared_files', 'images_listed_once', 'recorded_split', 'walk_folder', 'warn_empty_classes']

_logger = logging.getLogger(__name__)

#: Files the folder reader takes, by extension: the raster formats of :data:`timm_cra.data.images.IMAGE_FORMATS`.
IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.pgm', '.pbm', '.bmp', '.tif', '.tiff', '.webp', '.gif')
_WNID_RE = re.compile(r'^n\d{8}$')
_SPLIT_ALIASES = {
    'train': ('train', 'training'),
    'validation': ('validation', 'val'),
    'val': ('val', 'validation'),
    'test': ('test',),
}
#: The training split's folder names: another split's images found there are training images.
TRAIN_FOLDER_NAMES = _SPLIT_ALIASES['train']


def is_wnid(name: str) -> bool:
    return bool(_WNID_RE.match(name))


def imagenet_class_to_idx() -> dict:
    """WordNet id -> ImageNet-1k index, in timm's canonical synset order."""
    from timm.data import ImageNetInfo
    return {wnid: i for i, wnid in enumerate(ImageNetInfo().label_names())}


def check_data_folder(root: str, what: str = 'Dataset folder') -> None:
    """Raise :class:`DataError` unless ``root`` is a folder, saying what it is instead (a FIFO, a file, nothing)."""
    reason = not_folder_reason(root)
    if reason:
        raise DataError(f"{what} '{root}' {reason}. Pass an existing folder with --data-dir.")


def find_split_dir(root: str, split: Optional[str], split_flag: str = '') -> str:
    """``root/<split>`` (accepting val/validation aliases), or ``root`` itself when it holds classes.

    ``split_flag`` names the caller's option in the error (``--split`` for validate, ``--val-split``, ...).
    """
    check_data_folder(root)
    if split:
        for name in _SPLIT_ALIASES.get(split, (split,)):
            path = os.path.join(root, name)
            if os.path.isdir(path):
                return path
    subdirs = _subdirs(root)
    # A root without split folders but with class folders is the split itself (e.g. imagenet_val_sample).
    if subdirs and not any(d in SPLIT_FOLDER_NAMES for d in subdirs):
        return root
    raise DataError(
        f"Split '{split}' not found in '{root}' (sub-folders: {', '.join(subdirs) or 'none'}). "
        f"Expected '{root}/{split}/<class>/<image>' or '{root}/<class>/<image>'; {split_hint(split_flag)}."
    )


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # a looping symlink: not a folder (os.walk judges entries the same way)
        return False


def _subdirs(path: str) -> List[str]:
    return sorted(e.name for e in os.scandir(path) if _is_dir(e) and not e.name.startswith('.'))


def class_folders(path: str) -> List[str]:
    """The class sub-folders of ``path`` in the order timm's folder reader indexes them (``find_images_and_targets``
    sorts with ``natural_key``; names equal under it keep their plain sorted order)."""
    from timm.utils import natural_key
    return sorted(_subdirs(path), key=natural_key)


def _hidden_subdirs(path: str) -> List[str]:
    return sorted(e.name for e in os.scandir(path) if _is_dir(e) and e.name.startswith('.'))


def walk_folder(folder: str) -> Iterator[Tuple[str, List[str], List[str]]]:
    """``os.walk(folder)`` that ends on any tree: folder symlinks are followed, but a folder reached twice is walked
    once and a link back to ``folder`` or above it is not entered (two links to ``.`` would make ~2**40 paths).
    Sub-folders come sorted; the caller may prune ``dirnames`` in place, as with ``os.walk``."""
    seen = set()
    real = os.path.realpath(folder)
    for dirpath, dirnames, files in os.walk(folder, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError:
            continue
        target = os.path.realpath(dirpath)
        # A link back to the walked folder or above it (``here -> ..``) is a loop, or would take the images of
        # other classes as this one's; a folder reached twice is walked once.
        if (st.st_dev, st.st_ino) in seen or (dirpath != folder and (real + os.sep).startswith(target + os.sep)):
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames.sort()
        yield dirpath, dirnames, files


#: :func:`_image_ids` by real folder path, inside :func:`images_listed_once` (None outside it).
_listed_images: Optional[Dict[str, List[Tuple[int, int]]]] = None


@contextlib.contextmanager
def images_listed_once() -> Iterator[None]:
    """Inside the block each split folder's images are listed and ``stat``-ed once (:func:`shared_files`): setting up
    a training compares its train and val folders in the split check and again for each dataset's split name, one
    ``stat`` per image each time. Only for a block that reads the folders without changing them."""
    global _listed_images
    outer = _listed_images
    if outer is None:
        _listed_images = {}
    try:
        yield
    finally:
        _listed_images = outer


def _image_ids(split_dir: str) -> List[Tuple[int, int]]:
    """``(device, inode)`` of each image the folder reader takes from ``split_dir`` (its class folders' image files,
    hidden ones and other files left out, links followed): what a split's scores are made of."""
    key = os.path.realpath(split_dir)
    if _listed_images is not None and key in _listed_images:
        return _listed_images[key]
    ids = []
    for c in class_folders(split_dir):
        for path in _scan_class_folder(os.path.join(split_dir, c), Counter()):
            try:
                st = os.stat(path)
            except OSError:  # a dangling link named x.png: a counted skip when loaded
                continue
            ids.append((st.st_dev, st.st_ino))
    if _listed_images is not None:
        _listed_images[key] = ids
    return ids


def shared_files(folder: str, other: str) -> Tuple[int, int]:
    """``(shared, total)``: how many of the ``total`` images the folder reader takes from ``folder`` are images
    it takes from ``other`` -- the same file by device and inode: hard links, or symlinks either way (a ``val/`` of
    per-class links or hard links into ``train/`` passed a check of the split folders alone). Files the reader
    does not take (a README, hidden files) count for neither. One ``stat`` per image of both folders."""
    ids = _image_ids(folder)
    others = set(_image_ids(other))
    return sum(1 for i in ids if i in others), len(ids)


def recorded_split(name: str, others: Iterable[str], shared_with: Callable[[str], Tuple[int, int]], *, root: str,
                   what: str, unit: str = 'image', renamable: bool = True) -> str:
    """The split name results record for split ``name`` of ``root`` (``what``: how to name it): the first of
    ``others`` whose files hold all of its ``unit``s (``shared_with(other)`` -> ``(shared, total)``; hard links or
    symlinks) when ``renamable`` (a training split never is), said once; a split sharing some is said to share them.
    One rule for class folders and parquet / ``save_to_disk`` splits. A training split's images are training images
    whatever else holds them: nothing to say (a warning that its scores were "partly the 'test' split's" read backwards)."""
    if not renamable:
        return name
    for other in others:
        shared, total = shared_with(other)
        if shared and shared == total:
            _logger.warning(printable(f"every {unit} of {what} is a {unit} of the '{other}' split of "
                                      f"'{root}' (hard links or symlinks): they are recorded as the '{other}' split."))
            return other
        if shared:
            _logger.warning(printable(f"{shared} of the {total} {unit}s of {what} are {unit}s of the '{other}' split of "
                                      f"'{root}' (hard links or symlinks): its scores are partly the '{other}' "
                                      f"split's."))
    return name


def _scan_class_folder(folder: str, ignored: Counter) -> List[str]:
    """The image files under ``folder`` (sub-folders included, sorted); what is not one counts in ``ignored``.

    A file is taken by its extension (:data:`IMG_EXTENSIONS`) whatever it is -- a FIFO or a dangling symlink
    named ``x.jpg`` is kept here and becomes a counted skip when loaded, as a corrupt image does. Hidden files
    and folders are ignored; a folder reached twice (symlink loops) is walked once, so the scan ends.
    """
    found = []
    for dirpath, dirnames, files in walk_folder(folder):
        hidden = [d for d in dirnames if d.startswith('.')]
        if hidden:
            ignored['hidden'] += len(hidden)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))
        for f in sorted(files):
            if f.startswith('.'):
                ignored['hidden'] += 1
            elif f.lower().endswith(IMG_EXTENSIONS):
                found.append(os.path.join(dirpath, f))
            else:
                ignored[os.path.splitext(f)[1].lower() or 'no extension'] += 1
    return found


def warn_empty_classes(source: str, what: str, empty: Sequence[str]) -> None:
    """The one warning for classes the data names but holds no image of (empty class folders, CIFAR label names no
    label uses): they stay classes (the head gets an output for each, as the data's layout says), named and counted."""
    if empty:
        _logger.warning(printable(f"{source}: {len(empty)} {what} hold no images: "
                                  f"{', '.join(empty[:10])}{' ...' if len(empty) > 10 else ''}"))


def _log_scan(root: str, hidden_classes: List[str], empty: List[str], ignored: Counter) -> None:
    """One warning per kind of thing the scan left out, named and counted (nothing is dropped silently)."""
    if hidden_classes:
        _logger.warning(printable(f"{root}: ignored {len(hidden_classes)} hidden folder(s) (not classes): "
                                  f"{', '.join(hidden_classes[:10])}{' ...' if len(hidden_classes) > 10 else ''}"))
    warn_empty_classes(root, 'class folder(s)', empty)
    if ignored:
        n = sum(ignored.values())
        reasons = ', '.join(f'{count} {reason}' for reason, count in sorted(ignored.items()))
        _logger.warning(printable(f"{root}: skipped {n} file(s) that are not images ({reasons}); images are "
                                  f"{' '.join(IMG_EXTENSIONS)}"))


class ImageFolderDataset(Dataset):
    """``root/<class>/<image>`` files with labels from ImageNet wnids or from sorted class names.

    Args:
        root: folder holding one sub-folder per class.
        label_mode: ``'imagenet'`` (folder names are wnids, indexed in the ImageNet-1k order),
            ``'folder'`` (folder names in timm's order, :func:`class_folders` -> 0..K-1) or ``'auto'`` (imagenet when every folder is a wnid).
        transform: applied to the PIL image (timm's ``create_loader`` sets it).
        in_chans: channels of the decoded images (1: greyscale 'L', 3: 'RGB'), the model's input channels.

    ``split``: the split folder's name when ``root`` is one (:func:`timm_cra.data.create_dataset` sets it).
    An unreadable image yields ``(None, target)``; :func:`timm_cra.data.skip_collate` drops it and counts
    it, so one corrupt file is a reported skip, not a crash halfway through an epoch.
    """

    split: Optional[str] = None

    def __init__(self, root: str, label_mode: str = 'auto', transform: Optional[Callable] = None,
                 class_names: Optional[Sequence[str]] = None, in_chans: int = 3):
        self.in_chans = check_in_chans(in_chans)
        check_data_folder(root, 'Image folder')
        classes = class_folders(root)
        if not classes:
            raise DataError(
                f"'{root}' has no class sub-folders. Expected the layout '{root}/<class>/<image>' "
                f"(ImageNet: '<split>/<wnid>/<image>.JPEG').")
        if label_mode == 'auto':
            label_mode = 'imagenet' if all(is_wnid(c) for c in classes) else 'folder'
        if label_mode == 'imagenet':
            class_to_idx = imagenet_class_to_idx()
            unknown = [c for c in classes if c not in class_to_idx]
            if unknown:
                raise DataError(
                    f"'{root}' has folders that are not ImageNet-1k wnids: {', '.join(unknown[:5])}"
                    f"{' ...' if len(unknown) > 5 else ''}. Rename them to wnids (e.g. n01440764), or use "
                    f"--dataset folder to train on your own class folders.")
            self.class_names = list(class_to_idx)
        elif label_mode == 'folder':
            if len(classes) == 1 and class_names is None:
                # Labels from one folder are all 0: training "reaches" 100% and learns nothing.
                raise DataError(
                    f"'{root}' has one class folder ('{classes[0]}'): a classifier needs at least two classes. "
                    f"Add a folder per class ('{root}/<class>/<image>'), or point --data-dir at the folder above.")
            # A fixed class list (e.g. the train split's) keeps val indices equal to train indices.
            self.class_names = list(class_names) if class_names is not None else classes
            index = {name_key(c): i for i, c in enumerate(self.class_names)}  # macOS's NFD 'café' is 'café'
            unknown = [c for c in classes if name_key(c) not in index]
            if unknown:
                raise classes_absent_from_training(f"'{root}'", unknown)
            class_to_idx = {c: index[name_key(c)] for c in classes}
        else:
            raise ValueError(f'unknown label_mode {label_mode!r}')
        self.root = root
        self.label_mode = label_mode
        self.transform = transform
        self.samples: List[Tuple[str, int]] = []
        ignored: Counter = Counter()  # files that are not images, by reason
        empty = []
        for c in classes:
            found = _scan_class_folder(os.path.join(root, c), ignored)
            self.samples.extend((path, class_to_idx[c]) for path in found)
            if not found:
                empty.append(c)
        if not self.samples:
            raise DataError(
                f"No images ({', '.join(IMG_EXTENSIONS)}) found under the class folders of '{root}'.")
        _log_scan(root, _hidden_subdirs(root), empty, ignored)
        self.targets = [t for _, t in self.samples]
        self.num_classes = len(self.class_names)
        self.classes_present = classes

    def __len__(self) -> int:
        return len(self.samples)

    def set_in_chans(self, in_chans: int) -> None:
        """Decode to ``in_chans`` channels from now on (the model's input channels)."""
        self.in_chans = check_in_chans(in_chans)

    def load_image(self, index: int) -> Optional[Image.Image]:
        path = self.samples[index][0]
        try:
            return decode_image(path, self.in_chans, resize_short_side(self.transform))
        except UnreadableImage as e:
            _logger.warning(printable(f'Skipping unreadable image {path}: {e}'))
            return None

    def __getitem__(self, index: int):
        img = self.load_image(index)
        target = self.samples[index][1]
        if img is not None and self.transform is not None:
            img = self.transform(img)
        return img, target

    def filename(self, index: int) -> str:
        return self.samples[index][0]
