"""The autocast dtype for ``--amp``, chosen once for the trainer and validation.

bfloat16 autocast pays on a CPU only where it has bfloat16 arithmetic (AVX512-BF16 / AMX on x86, oneDNN's
check covers Arm too); elsewhere oneDNN emulates it and runs slower than float32, so ``--amp`` then stays in
float32 and says so. float16 on CPU autocast is not offered: CPU training uses bfloat16 or nothing.
"""
import logging
from typing import Optional

import torch

__all__ = ['cpu_has_bf16', 'amp_dtype_for']

_logger = logging.getLogger(__name__)


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (what oneDNN's bfloat16 kernels need to be fast)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN
        return False


def amp_dtype_for(amp: bool, requested: str, device: torch.device) -> Optional[torch.dtype]:
    """Autocast dtype for ``--amp`` / ``--amp-dtype`` on ``device`` (None: no autocast), logged with the reason."""
    if not amp:
        return None
    if device.type == 'cpu':
        if not cpu_has_bf16():
            _logger.info('AMP: this CPU has no bfloat16 arithmetic (AVX512-BF16 / AMX); --amp ignored, float32')
            return None
        dtype = torch.bfloat16
        why = '' if requested == 'bfloat16' else f' (--amp-dtype {requested} is not used on CPU)'
    else:
        dtype = torch.bfloat16 if requested == 'bfloat16' else torch.float16
        why = ''
    _logger.info(f'AMP: autocast {dtype} on {device.type}{why}')
    return dtype
