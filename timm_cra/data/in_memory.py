"""In-memory uint8 image tensors with batched tensor augmentation, for CIFAR-size data.

On a few CPU cores, per-sample PIL decoding and transforms cost more than a small ResNet's forward
pass. Decoding once into a ``(N, H, W, C)`` uint8 tensor (150 MB for CIFAR-10 train) and augmenting
whole batches with tensor ops (random crop with zero padding + horizontal flip) removes that cost.

What one split may hold is bounded (:data:`MAX_IN_MEMORY_BYTES` of decoded uint8 pixels, as decoded and as
:func:`fit_to_input` resizes them), and the pixel limit of :func:`~.images.decode_image` holds for the images as
:func:`fit_to_input`'s resize makes them, as it does in the per-image loaders.
"""
import logging
import math
from typing import Any, Callable, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from timm.data import DEFAULT_CROP_PCT, create_transform
from torch.utils.data import Dataset

from ..utils.errors import printable
from .errors import DataError
from .images import MODES, UnreadableImage, check_in_chans, check_pixels, resize_short_side

__all__ = ['TensorImageDataset', 'TensorLoader', 'decode_to_memory', 'fit_to_input', 'random_crop_flip',
           'MAX_IN_MEMORY_BYTES']

_logger = logging.getLogger(__name__)

#: Bytes of decoded uint8 pixels one in-memory split may hold (1 GiB: CIFAR-10's train split is 150 MB). Read at call
#: time, so a program may raise it. Six 8000 x 8000 PNGs (1.5 MB of files) would otherwise decode to 1.15 GB.
MAX_IN_MEMORY_BYTES = 1 << 30


def _check_held_size(count: int, shape: Sequence[int], desc: str) -> None:
    """Refuse, in one line naming the per-image loader, ``count`` images of ``shape`` (H, W, C) over
    :data:`MAX_IN_MEMORY_BYTES`."""
    size = count * math.prod(shape)
    if size > MAX_IN_MEMORY_BYTES:
        h, w, c = shape
        raise DataError(printable(f'{desc or "The dataset"} would hold {count} images of {w}x{h}x{c} in memory: '
                                  f'{size / 2 ** 20:.0f} MiB of decoded pixels, over the in-memory limit of '
                                  f'{MAX_IN_MEMORY_BYTES / 2 ** 20:.0f} MiB '
                                  f'(timm_cra.data.in_memory.MAX_IN_MEMORY_BYTES): pass --no-in-memory to decode '
                                  f'images one batch at a time.'))


class TensorImageDataset(Dataset):
    """Images held as one uint8 ``(N, H, W, C)`` tensor (C = 1 greyscale or 3 RGB) with int64 targets.

    ``__getitem__`` returns PIL images so timm's ``create_loader`` transforms still work; the fast path is
    :class:`TensorLoader`, which never leaves tensors. ``split``: the split's name, where the data gives one.
    """
    split: Optional[str] = None

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, class_names: Sequence[str],
                 transform: Optional[Callable] = None, num_skipped: int = 0):
        assert images.dtype == torch.uint8 and images.ndim == 4 and images.shape[-1] in MODES, images.shape
        assert len(images) == len(targets)
        self.images = images
        self.targets = targets
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.transform = transform
        self.num_skipped = num_skipped  # unreadable images dropped while decoding

    @property
    def in_chans(self) -> int:
        return int(self.images.shape[-1])

    def set_in_chans(self, in_chans: int) -> None:
        """Convert the held images to ``in_chans`` channels (PIL's integer ITU-R 601-2 luma for RGB -> L)."""
        check_in_chans(in_chans)
        if in_chans == self.in_chans:
            return
        if in_chans == 1:
            w = torch.tensor([19595, 38470, 7471], dtype=torch.int64)  # PIL's 'L' weights (sum 65536)
            luma = (self.images.to(torch.int64) * w).sum(-1, keepdim=True).add_(0x8000) >> 16
            self.images = luma.to(torch.uint8)
        else:
            self.images = self.images.expand(-1, -1, -1, 3).contiguous()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        a = self.images[index].numpy()
        img = Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a)
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.targets[index])

    def subset(self, num_samples: int) -> 'TensorImageDataset':
        return TensorImageDataset(self.images[:num_samples], self.targets[:num_samples], self.class_names,
                                  self.transform, self.num_skipped)


def decode_to_memory(dataset, desc: str = '') -> TensorImageDataset:
    """Decode every image of a folder / HF dataset once into a :class:`TensorImageDataset`.

    All images must share one size (CIFAR-style data); unreadable ones are skipped, counted (the count
    reaches the loaders and so ``metrics.csv``) and named in the log (row index, and file for folders).
    """
    if isinstance(dataset, TensorImageDataset):
        return dataset
    images: Optional[np.ndarray] = None  # allocated once for all rows at the first image's size: no second copy
    kept = 0
    targets: List[int] = []
    bad: List[str] = []
    in_chans = getattr(dataset, 'in_chans', 3)
    if hasattr(dataset, 'iter_raw_images'):  # HF: bulk column reads are much faster than row access
        from .hf import decode_value
        where = f'{desc or "dataset"} row'
        items = ((i, _safe(lambda v=v: decode_value(v, in_chans, dataset.image_root), f'{where} {i}'))
                 for i, v in dataset.iter_raw_images())
    else:
        items = ((i, dataset.load_image(i)) for i in range(len(dataset)))
    for i, img in items:
        if img is None:
            name = dataset.filename(i) if hasattr(dataset, 'filename') else ''
            bad.append(f'{i}' + (f' ({name})' if name else ''))
            continue
        a = np.asarray(img, dtype=np.uint8)
        if a.ndim == 2:
            a = a[..., None]
        if images is None:  # every image must have this size: the first one tells what all of them will hold
            _check_held_size(len(dataset), a.shape, desc)
            images = np.empty((len(dataset),) + a.shape, dtype=np.uint8)
        elif a.shape != images.shape[1:]:
            raise DataError(
                f'In-memory mode needs images of one size, but {desc or "the dataset"} mixes {images.shape[1:3]} '
                f'and {a.shape[:2]} (image {i}). Drop --in-memory for datasets of varying image sizes.')
        images[kept] = a
        kept += 1
        targets.append(int(dataset.targets[i]))
    skipped = len(bad)
    if not kept:
        raise DataError(f'No readable images in {desc or "the dataset"} ({skipped} unreadable).')
    if skipped:
        _logger.warning(printable(f'{desc}: skipped {skipped} unreadable image(s) of {skipped + kept}: rows '
                                  f'{", ".join(bad[:10])}{" ..." if skipped > 10 else ""}'))
    return TensorImageDataset(torch.from_numpy(images[:kept]), torch.tensor(targets, dtype=torch.int64),
                              dataset.class_names, num_skipped=skipped)


def fit_to_input(dataset: TensorImageDataset, data_config: Mapping[str, Any], desc: str = '') -> TensorImageDataset:
    """``dataset`` resized and cropped once to the model's ``input_size`` by timm's eval transform (the one
    ``timm-cra-validate`` applies to every image), so training and the trainer's evaluation see the pixels validate
    sees, for any image size. Images that transform would leave as they are (already the input size, a crop_pct
    whose resize is the same size) are returned unchanged: the fast path does no work.

    The pixel limit holds for the images as that resize makes them (:func:`~.images.check_pixels`, as the per-image
    loaders check it): the images share one size, so over it none is readable, refused in one line; the resized
    split is held to :data:`MAX_IN_MEMORY_BYTES`, both before any image is resized."""
    n, h, w, c = dataset.images.shape
    size = tuple(int(v) for v in data_config['input_size'][-2:])
    crop_pct = data_config.get('crop_pct') or DEFAULT_CROP_PCT
    if (h, w) == size and all(math.floor(s / crop_pct) == s for s in size):
        return dataset
    transform = create_transform(data_config['input_size'], is_training=False,
                                 interpolation=data_config['interpolation'], mean=data_config['mean'],
                                 std=data_config['std'], crop_pct=data_config.get('crop_pct'),
                                 crop_mode=data_config.get('crop_mode'), normalize=False)  # uint8 CHW out
    try:
        check_pixels(w, h, resize_short_side(transform))
    except UnreadableImage as e:
        raise DataError(printable(f'No readable images in {desc or "the dataset"}: its {n} images of {e}; resize them '
                                  f'nearer the model input size.')) from None
    _check_held_size(n, size + (c,), desc)
    source = TensorImageDataset(dataset.images, dataset.targets, dataset.class_names, transform)
    images = torch.stack([source[i][0] for i in range(len(source))]).permute(0, 2, 3, 1).contiguous()
    return TensorImageDataset(images, dataset.targets, dataset.class_names, num_skipped=dataset.num_skipped)


def _safe(fn, where: str = ''):
    try:
        return fn()
    except UnreadableImage as e:
        _logger.warning(printable(f'Skipping unreadable image ({where}): {e}'))
        return None


def random_crop_flip(x: torch.Tensor, padding: int = 4, hflip: float = 0.5,
                     generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Per-sample random crop (zero padding) and horizontal flip of a ``(B, C, H, W)`` batch."""
    b, c, h, w = x.shape
    if padding > 0:
        padded = F.pad(x, (padding, padding, padding, padding))
        oy = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
        ox = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
        rows = (oy[:, None] + torch.arange(h))[:, None, :, None]
        cols = (ox[:, None] + torch.arange(w))[:, None, None, :]
        x = padded[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]
    if hflip > 0:
        flip = torch.rand(b, generator=generator) < hflip
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x


class TensorLoader:
    """Batches from a :class:`TensorImageDataset`, augmented and normalised as whole tensors.

    Deterministic per ``(seed, epoch, rank)`` -- the shuffle and the augmentation of an epoch do not
    depend on what ran before it, so a resumed run sees the same batches as an uninterrupted one.
    With ``world_size > 1`` every rank takes its own shard of one shared permutation (like
    ``DistributedSampler``); training drops the remainder so all ranks run the same number of steps.
    Images are used at their stored size: :func:`fit_to_input` brings them to the model's input size first.
    Yields ``(images, targets, num_skipped)`` like :func:`timm_cra.data.skip_collate` loaders: the images
    dropped while decoding count once per pass, with its first batch, on rank 0 (as a folder loader counts
    each unreadable file once per epoch).
    """

    def __init__(self, dataset: TensorImageDataset, batch_size: int, is_training: bool = False,
                 mean: Sequence[float] = (0.4914, 0.4822, 0.4465), std: Sequence[float] = (0.2470, 0.2435, 0.2616),
                 padding: int = 4, hflip: float = 0.5, seed: int = 0,
                 rank: int = 0, world_size: int = 1, device: torch.device = torch.device('cpu'),
                 channels_last: bool = False):
        self.dataset = dataset
        self.batch_size = batch_size
        self.is_training = is_training
        c = dataset.in_chans
        if len(mean) != c or len(std) != c:
            raise DataError(f'mean/std have {len(mean)}/{len(std)} values but the images have {c} channel(s).')
        self.mean = torch.tensor(mean, device=device).view(1, c, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, c, 1, 1) * 255
        self.padding, self.hflip = padding, hflip
        self.seed, self.epoch = seed, 0
        self.rank, self.world_size = rank, world_size
        self.device = device
        self.channels_last = channels_last

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> torch.Tensor:
        n = len(self.dataset)
        if self.is_training:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            perm = torch.randperm(n, generator=g)
            per_rank = n // self.world_size
            return perm[self.rank * per_rank:(self.rank + 1) * per_rank]
        return torch.arange(self.rank, n, self.world_size)

    def __len__(self) -> int:
        n = len(self.dataset)
        if self.is_training:
            return (n // self.world_size) // self.batch_size
        return math.ceil(len(range(self.rank, n, self.world_size)) / self.batch_size)

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor, int]]:
        idx = self._indices()
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) * 64 + self.rank + 1)
        for i in range(len(self)):
            bi = idx[i * self.batch_size:(i + 1) * self.batch_size]
            x = self.dataset.images[bi].permute(0, 3, 1, 2)
            y = self.dataset.targets[bi]
            if self.is_training:
                x = random_crop_flip(x, self.padding, self.hflip, generator=g)
            x = x.to(self.device, non_blocking=True).float().sub_(self.mean).div_(self.std)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            else:
                x = x.contiguous()
            skipped = self.dataset.num_skipped if i == 0 and self.rank == 0 else 0
            yield x, y.to(self.device, non_blocking=True), skipped
