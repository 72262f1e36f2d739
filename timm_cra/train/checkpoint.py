"""Atomic, resumable training checkpoints and the final safetensors export."""
import os
import random
import tempfile
from typing import Any, Dict

import numpy as np
import torch

from ..data.errors import UsageError

__all__ = ['atomic_save', 'save_checkpoint', 'load_checkpoint_file', 'get_rng_state', 'set_rng_state',
           'load_model_weights']

CHECKPOINT_VERSION = 1


def atomic_save(obj: Any, path: str) -> None:
    """``torch.save`` to a temp file in the same folder, then ``os.replace``: a crash never leaves a torn file."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.tmp-', suffix='.pth', dir=folder)
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def get_rng_state() -> Dict[str, Any]:
    state = dict(torch=torch.get_rng_state(), numpy=np.random.get_state(), python=random.getstate())
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state['torch'])
    np.random.set_state(state['numpy'])
    random.setstate(state['python'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


def save_checkpoint(path: str, *, model: torch.nn.Module, optimizer, scheduler, model_ema=None, loss_scaler=None,
                    epoch: int, num_updates: int, history, args: Dict[str, Any]) -> None:
    """Everything needed to continue: ``epoch`` is the number of completed epochs."""
    state = dict(
        version=CHECKPOINT_VERSION,
        arch=args.get('model'),
        state_dict=model.state_dict(),
        optimizer=optimizer.state_dict(),
        scheduler=scheduler.state_dict() if scheduler is not None else None,
        state_dict_ema=model_ema.state_dict() if model_ema is not None else None,
        loss_scaler=loss_scaler.state_dict() if loss_scaler is not None else None,
        epoch=epoch,
        num_updates=num_updates,
        history=list(history),
        rng=get_rng_state(),
        args=args,
    )
    atomic_save(state, path)


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
