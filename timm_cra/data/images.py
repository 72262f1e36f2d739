"""Decoded images to the channel count a model takes: 'L' for 1 channel, 'RGB' for 3.

PIL's ``convert`` clips wide greyscale to 255 and float greyscale to black, so such images are scaled to 8 bit
here first (:func:`_to_8bit`): 16-bit (``I;16*``, 16-bit PNGs, and PGMs whose maxval is over 255, which Pillow
scales to 0..65535 whatever the maxval) by ``value / 257``, the exact 16 -> 8 bit map; other
32-bit integer (``I``) by the range of its values (all in 0..255: 8-bit values kept; in 0..65535: 16-bit,
``/ 257``; anything else: no known scale, unreadable); float (``F``) with values in [0, 1] by ``x 255``, any
other float image (negative, above 1, NaN) unreadable. An unreadable image is a counted, logged skip.

Every loader decodes through :func:`decode_image`, the data contract for untrusted image files: regular files
only (a FIFO, socket, device or dangling symlink named ``x.jpg`` is never opened for reading, so it cannot
block), the raster formats of :data:`IMAGE_FORMATS` only (never one PIL hands to an external program, such
as EPS to Ghostscript), and at most ``PIL.Image.MAX_IMAGE_PIXELS`` pixels (89,478,485 by default; a
"decompression bomb" of a few KB that would expand to gigabytes is refused from its header), counted both as
stored and as the transform's first resize would make it (:func:`resize_short_side`: a 1 x 2,000,000 PNG is
2 M pixels, but 32 x 64,000,000 after timm's eval resize of the short side to 32). Anything else
raises :class:`UnreadableImage`, which the datasets turn into a counted, logged skip. A decoded image is turned
upright by its EXIF Orientation tag (:func:`upright`), as transformers' ``load_image`` does; :func:`convert_image`
does that too, so code that opens a file itself (a model card's) gets the loaders' pixels from it.
"""
import contextlib
import io
import os
import warnings
from typing import Optional, Sequence, Union

import numpy as np
from PIL import ExifTags, Image, ImageOps
from timm.data.transforms import ResizeKeepRatio
from torchvision import transforms

from ..utils.errors import UsageError
from ..utils.io import not_regular_reason, open_regular_file
from .errors import DataError

__all__ = ['MODES', 'IMAGE_FORMATS', 'UnreadableImage', 'decode_image', 'check_pixels', 'resize_short_side',
           'upright', 'image_mode', 'convert_image', 'check_in_chans', 'fit_mean_std']

#: PIL formats decoded (pure raster decoders inside Pillow); anything else is an unreadable image.
IMAGE_FORMATS = ('JPEG', 'PNG', 'PPM', 'BMP', 'TIFF', 'WEBP', 'GIF')

#: PIL mode of each supported channel count.
MODES = {1: 'L', 3: 'RGB'}
_16BIT_MODES = ('I;16', 'I;16L', 'I;16B', 'I;16N')
#: Formats whose mode 'I' images hold 16-bit values: PNG greyscale is 8 or 16 bit, never 32; Pillow reads a PGM of any
#: maxval over 255 as 'I' scaled to 0..65535 (PpmImagePlugin), so its values alone would misread dark pixels as 8 bit.
_16BIT_FORMATS = ('PNG', 'PPM')
#: Modes Pillow converts to RGB only (LAB to 'L' fails with "conversion from LAB to RGB not supported"): read through
#: RGB for every channel count, so a 1-channel model sees the greyscale of the colours a 3-channel one does.
_VIA_RGB_MODES = ('LAB',)


class UnreadableImage(DataError, ValueError):
    """An image file or value that is not decoded (corrupt, special file, other format, over the pixel limit)."""


def resize_short_side(transform) -> Optional[int]:
    """The short side ``transform`` first resizes a PIL image to, when that resize keeps the aspect ratio and so
    can blow a thin image up (timm's eval transform, and its ``no_aug`` train transform: ``Resize(int)``, or
    ``ResizeKeepRatio`` fitting the shortest edge, whose largest target side bounds the scale); None for
    anything else (``RandomResizedCrop`` crops before it resizes, a fixed ``(h, w)`` resize has a fixed size)."""
    first = next(iter(getattr(transform, 'transforms', None) or [None]))
    if isinstance(first, transforms.Resize):
        size = first.size
        if isinstance(size, int) or len(size) == 1:
            return int(size if isinstance(size, int) else size[0])
    elif isinstance(first, ResizeKeepRatio) and not first.longest:
        return int(max(first.size))
    return None


def check_pixels(width: int, height: int, resize_side: Optional[int] = None) -> None:
    """Raise :class:`UnreadableImage` when a ``width`` x ``height`` image is over ``PIL.Image.MAX_IMAGE_PIXELS`` as
    stored, or as the resize of its short side to ``resize_side`` (:func:`resize_short_side`) would make it."""
    limit = Image.MAX_IMAGE_PIXELS  # read at call time: a program may raise it (None: no limit)
    if limit is None:
        return
    if width * height > limit:
        raise UnreadableImage(f'{width}x{height} pixels is over the decoding limit of {limit} pixels '
                              f'(PIL.Image.MAX_IMAGE_PIXELS)')
    if resize_side:
        scale = resize_side / max(1, min(width, height))
        w, h = round(width * scale), round(height * scale)
        if w * h > limit:
            raise UnreadableImage(f'{width}x{height} pixels would be {w}x{h} after the resize of its short '
                                  f'side to {resize_side} the model needs, over the decoding limit of {limit} pixels '
                                  f'(PIL.Image.MAX_IMAGE_PIXELS)')


def decode_image(source: Union[str, os.PathLike, bytes, Image.Image], in_chans: int = 3,
                 resize_side: Optional[int] = None) -> Image.Image:
    """Decode a file path, encoded bytes or a PIL image to an 8-bit ``in_chans`` image (:func:`convert_image`);
    ``resize_side``: the short side the caller's transform will resize it to (:func:`resize_short_side`), so the
    pixel limit also holds for the resized image.

    Raises :class:`UnreadableImage` (one line: the reason) for anything that is not a readable image within
    the contract of this module's docstring; nothing is opened before its type and size are checked.
    """
    try:
        with contextlib.ExitStack() as stack, warnings.catch_warnings():
            warnings.simplefilter('error', Image.DecompressionBombWarning)
            if isinstance(source, Image.Image):
                img = source
            else:
                if isinstance(source, (bytes, bytearray, memoryview)):
                    fp = io.BytesIO(source)
                else:
                    reason = not_regular_reason(source)
                    if reason:
                        raise UnreadableImage(reason)
                    fp = stack.enter_context(open_regular_file(source, 'image'))
                img = stack.enter_context(Image.open(fp, formats=IMAGE_FORMATS))
            check_pixels(img.width, img.height, resize_side)
            img.load()
            return convert_image(img, in_chans)
    except UnreadableImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise UnreadableImage(f'over the decoding limit of {Image.MAX_IMAGE_PIXELS} pixels '
                              f'(PIL.Image.MAX_IMAGE_PIXELS): {e}') from e
    except (OSError, ValueError, SyntaxError, EOFError, UsageError) as e:  # PIL: corrupt or truncated files
        raise UnreadableImage(str(e) or type(e).__name__) from e


def upright(img: Image.Image) -> Image.Image:
    """``img`` turned as its EXIF Orientation tag says (a phone's JPEG stored sideways with Orientation 6), as
    transformers' ``load_image`` does with ``PIL.ImageOps.exif_transpose``: both tools see the same pixels. An image
    without the tag (or with Orientation 1) is returned as it is, not copied."""
    if img.getexif().get(ExifTags.Base.Orientation, 1) in range(2, 9):
        return ImageOps.exif_transpose(img)
    return img


def check_in_chans(in_chans: int) -> int:
    if in_chans not in MODES:
        raise DataError(f'Images decode to 1 (greyscale) or 3 (RGB) channels, not in_chans={in_chans}. '
                        f'Use --in-chans 1 or 3 (or a dataset class of your own for other channel counts).')
    return in_chans


def image_mode(in_chans: int) -> str:
    return MODES[check_in_chans(in_chans)]


def _to_8bit(img: Image.Image) -> Image.Image:
    """A wide-integer or float greyscale image as 8-bit 'L' by the rules of the module docstring."""
    a = np.asarray(img).astype(np.float64)
    if img.mode == 'F':
        if not np.isfinite(a).all() or a.min(initial=0) < 0 or a.max(initial=0) > 1:
            raise UnreadableImage(f'float image with values outside [0, 1] (min {np.nanmin(a):g}, max '
                                  f'{np.nanmax(a):g}): no known scale to 8 bit')
        a = a * 255.0
    elif img.mode in _16BIT_MODES or img.format in _16BIT_FORMATS:
        a = a / 257.0
    else:  # 32-bit 'I': the bit depth is not stored, the values tell it
        lo, hi = a.min(initial=0), a.max(initial=0)
        if lo < 0 or hi > 65535:
            raise UnreadableImage(f'32-bit integer image with values {lo:g}..{hi:g}: only 0..255 (8-bit) or '
                                  f'0..65535 (16-bit) values have a known scale to 8 bit')
        if hi > 255:
            a = a / 257.0
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), mode='L')


def convert_image(img: Image.Image, in_chans: int = 3) -> Image.Image:
    """A new 8-bit image with ``in_chans`` channels, as every loader reads it: turned upright (:func:`upright`),
    wide and float greyscale scaled, not clipped (see the module docstring; :class:`UnreadableImage` when no scale
    is known), LAB read through RGB; never ``img`` itself, so the result outlives the file ``img`` was opened
    from."""
    img = upright(img)
    if img.mode in _16BIT_MODES or img.mode in ('I', 'F'):
        img = _to_8bit(img)
    elif img.mode in _VIA_RGB_MODES:
        img = img.convert('RGB')
    mode = image_mode(in_chans)
    return img.copy() if img.mode == mode else img.convert(mode)


def fit_mean_std(values: Sequence[float], in_chans: int, what: str = 'mean') -> tuple:
    """A per-channel normalisation vector for ``in_chans`` channels.

    One value is repeated; a 3-channel vector for a 1-channel model is averaged (greyscale input to an RGB
    pretrained cfg, as when timm sums the first conv's weights over the input channels). Any other length is
    refused: it describes other images.
    """
    values = tuple(float(v) for v in values)
    if len(values) == in_chans:
        return values
    if len(values) == 1:
        return values * in_chans
    if in_chans == 1 and len(values) == 3:
        return (sum(values) / len(values),)
    raise DataError(f'--{what} has {len(values)} values but the model takes {in_chans} input channels: '
                    f'give {in_chans} values (or one).')
