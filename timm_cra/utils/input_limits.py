"""The bounds on a model's input and preprocessing, which every place that takes them holds them to: a model's
``config.json`` (``models._factory``), the CLI flags (``utils.cli``) and the resolved data config (``data.config``)."""
import math
from typing import Optional, Sequence

__all__ = ['INTERPOLATIONS', 'CROP_MODES', 'MIN_INPUT_SIDE', 'MAX_INPUT_SIDE', 'MAX_INPUT_CHANS', 'MAX_INPUT_PIXELS',
           'MAX_SQUARE_SIDE', 'MAX_CROP_PCT', 'MAX_NORM_VALUE', 'MIN_STD', 'crop_resize_problem']

#: What timm's eval transform takes for ``interpolation`` (its ``str_to_interp_mode`` names: 'random' is for
#: training only, a ``KeyError`` in ``create_transform``) and ``crop_mode`` (``transforms_imagenet_eval``).
INTERPOLATIONS = ('nearest', 'bilinear', 'bicubic', 'box', 'hamming', 'lanczos')
CROP_MODES = ('center', 'squash', 'border')

#: Input sides and channels, far above every timm model (largest input: 1024 px, 3 channels) and below what would
#: allocate tens of GB before any check (a 100000 px input_size was a MemoryError).
MAX_INPUT_SIDE = 8192
MAX_INPUT_CHANS = 1024
#: The smallest side an input may have: timm's smallest cfg is 32 px (the CIFAR nets), Fashion-MNIST's images 28 px;
#: below 8 px an image holds no picture (``input_size: [3, 1, 1]`` resized every image to one colour and still
#: scored, exit 0).
MIN_INPUT_SIDE = 8
MAX_CROP_PCT = 2  # timm's own crop_pct values go up to 1.15
#: ``mean`` from 0 to this, ``std`` from :data:`MIN_STD` to this: timm normalises images scaled to [0, 1], so a mean
#: or std outside [0, 1] describes no input (a mean of 1e300 made every logit NaN; a mean on the 0-255 scale,
#: ``[125.3, 123.0, 113.9]``, loaded and every client answered one class). timm's own cfgs: mean 0 to 0.5, std 0.143
#: to 1; a fitted 1-channel mean / std of [0, 1] data is within them too.
MAX_NORM_VALUE = 1
MIN_STD = 0.001

#: The most pixels an input may have, and the resize before timm's eval crop (``input side / crop_pct``): 16 times
#: timm's largest input (1024 x 1024; one 3-channel float32 image of 4096 x 4096 is 201 MB). ``input_size [3, 8000,
#: 8000]`` on a 32-px model passed the side limit and validate died in a MemoryError traceback; ``crop_pct 1e-6``
#: asked a 32000000 px resize, every image was skipped and the message blamed the images. Below the loaders' pixel
#: limit (PIL's ``MAX_IMAGE_PIXELS``, 89478485, ``data.images.check_pixels``), so a resize it allows is decoded.
MAX_INPUT_PIXELS = 4096 * 4096
#: The largest side of a square input (``--img-size``) within :data:`MAX_INPUT_PIXELS`.
MAX_SQUARE_SIDE = math.isqrt(MAX_INPUT_PIXELS)


def crop_resize_problem(side: Sequence[int], crop_pct: float) -> Optional[str]:
    """Why timm's eval resize for a ``side`` (height, width) input cropped at ``crop_pct`` is too large, or None: it
    resizes images to ``side / crop_pct`` before the centre crop, which must stay within :data:`MAX_INPUT_PIXELS`."""
    resized = [s / crop_pct for s in side]  # inf below crop_pct ~1e-307, where floor() raised OverflowError
    if all(math.isfinite(r) for r in resized) and math.floor(resized[0]) * math.floor(resized[1]) <= MAX_INPUT_PIXELS:
        return None
    least = math.sqrt(side[0] * side[1] / MAX_INPUT_PIXELS)
    # crop_pct 1e-300: 300 digits a side, written out in full
    height, width = (math.floor(r) if r < 10 ** 9 else f'{r:.3g}' for r in resized)
    return f"timm would resize images to {height} x {width} px before the {side[0]} x {side[1]} crop, over " \
           f"{MAX_INPUT_PIXELS} pixels (4096 x 4096): give at least {math.ceil(least * 1000) / 1000} (timm's " \
           f"models use 0.875 to 1.15)"
