"""Decoded images to the channel count a model takes: 'L' for 1 channel, 'RGB' for 3.

PIL's ``convert`` clips 16-bit greyscale (``I;16``, ``I``) to 255, so such an image would silently become
all white; it is scaled to 8 bit here first (``value / 257``, the exact 16 -> 8 bit map).
"""
from typing import Sequence

import numpy as np
from PIL import Image

from .errors import DataError

__all__ = ['MODES', 'image_mode', 'convert_image', 'check_in_chans', 'fit_mean_std']

#: PIL mode of each supported channel count.
MODES = {1: 'L', 3: 'RGB'}
_WIDE_MODES = ('I;16', 'I;16L', 'I;16B', 'I;16N', 'I')


def check_in_chans(in_chans: int) -> int:
    if in_chans not in MODES:
        raise DataError(f'Images decode to 1 (greyscale) or 3 (RGB) channels, not in_chans={in_chans}. '
                        f'Use --in-chans 1 or 3 (or a dataset class of your own for other channel counts).')
    return in_chans


def image_mode(in_chans: int) -> str:
    return MODES[check_in_chans(in_chans)]


def convert_image(img: Image.Image, in_chans: int = 3) -> Image.Image:
    """A new 8-bit image with ``in_chans`` channels (16-bit greyscale scaled, not clipped); never ``img``
    itself, so the result outlives the file ``img`` was opened from."""
    if img.mode in _WIDE_MODES:
        a = np.asarray(img).astype(np.float64)
        img = Image.fromarray(np.clip(np.rint(a / 257.0), 0, 255).astype(np.uint8), mode='L')
    mode = image_mode(in_chans)
    return img.copy() if img.mode == mode else img.convert(mode)


def fit_mean_std(values: Sequence[float], in_chans: int, what: str = 'mean') -> tuple:
    """A per-channel normalisation vector for ``in_chans`` channels.

    One value is repeated; a 3-channel vector for a 1-channel model is averaged (greyscale input to an RGB
    pretrained cfg, as when timm sums the first conv's weights over the input channels).
    """
    values = tuple(float(v) for v in values)
    if len(values) == in_chans:
        return values
    if len(values) == 1:
        return values * in_chans
    if in_chans == 1:
        return (sum(values) / len(values),)
    raise DataError(f'--{what} has {len(values)} values but the model takes {in_chans} input channels: '
                    f'give {in_chans} values (or one).')
