"""Read weights back: trainer checkpoints, raw state dicts and ``model.safetensors`` (for train and eval alike)."""
import os
from typing import Any, Dict

import torch

from .errors import UsageError

__all__ = ['load_checkpoint_file', 'load_model_weights']


def load_checkpoint_file(path: str) -> Dict[str, Any]:
    if not os.path.isfile(path):
        raise UsageError(f"Checkpoint '{path}' does not exist. Pass the 'last.pth' of an earlier run to --resume.")
    try:
        # Our checkpoints hold numpy RNG state and arg dicts, so full unpickling is needed: only load your own files.
        return torch.load(path, map_location='cpu', weights_only=False)
    except Exception as e:  # torch raises many types for a torn/foreign file
        raise UsageError(f"Checkpoint '{path}' could not be read ({type(e).__name__}: {e}).") from e


def load_model_weights(model: torch.nn.Module, path: str, use_ema: bool = False, strict: bool = True) -> None:
    """Load weights from ``model.safetensors``, a raw state dict, or a trainer checkpoint into ``model``."""
    if not os.path.isfile(path):
        raise UsageError(f"Checkpoint '{path}' does not exist.")
    if path.endswith('.safetensors'):
        from safetensors.torch import load_file
        state = load_file(path)
    else:
        ckpt = load_checkpoint_file(path)
        if isinstance(ckpt, dict) and 'state_dict' in ckpt:
            state = ckpt['state_dict_ema'] if use_ema and ckpt.get('state_dict_ema') else ckpt['state_dict']
        else:
            state = ckpt
    state = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=strict)
    except RuntimeError as e:
        raise UsageError(f"Weights in '{path}' do not fit model: {str(e).splitlines()[0]} "
                         f"(check --model and --num-classes).") from e
