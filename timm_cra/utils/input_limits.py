"""The bound on an input's pixels, which every place that takes an input size holds it to: a model's
``config.json`` (``models._factory``), the CLI flags (``utils.cli``) and the resolved data config (``data.config``)."""
import math
from typing import Optional, Sequence

__all__ = ['MAX_INPUT_PIXELS', 'crop_resize_problem']

#: The most pixels an input may have, and the resize before timm's eval crop (``input side / crop_pct``): 16 times
#: timm's largest input (1024 x 1024; one 3-channel float32 image of 4096 x 4096 is 201 MB). ``input_size [3, 8000,
#: 8000]`` on a 32-px model passed the side limit and validate died in a MemoryError traceback; ``crop_pct 1e-6``
#: asked a 32000000 px resize, every image was skipped and the message blamed the images. Below the loaders' pixel
#: limit (PIL's ``MAX_IMAGE_PIXELS``, 89478485, ``data.images.check_pixels``), so a resize it allows is decoded.
MAX_INPUT_PIXELS = 4096 * 4096


def crop_resize_problem(side: Sequence[int], crop_pct: float) -> Optional[str]:
    """Why timm's eval resize for a ``side`` (height, width) input cropped at ``crop_pct`` is too large, or None: it
    resizes images to ``side / crop_pct`` before the centre crop, which must stay within :data:`MAX_INPUT_PIXELS`."""
    height, width = (math.floor(s / crop_pct) for s in side)
    if height * width <= MAX_INPUT_PIXELS:
        return None
    least = math.sqrt(side[0] * side[1] / MAX_INPUT_PIXELS)
    return f"timm would resize images to {height} x {width} px before the {side[0]} x {side[1]} crop, over " \
           f"{MAX_INPUT_PIXELS} pixels (4096 x 4096): give at least {math.ceil(least * 1000) / 1000} (timm's " \
           f"models use 0.875 to 1.15)"
