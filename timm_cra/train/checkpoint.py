"""Atomic, resumable training checkpoints (reading them back lives in :mod:`timm_cra.utils.weights`)."""
import os
import random
import tempfile
from typing import Any, Dict

import numpy as np
import torch

__all__ = ['atomic_save', 'save_checkpoint', 'get_rng_state', 'set_rng_state']

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
