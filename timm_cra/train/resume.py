"""Continue a run from its ``last.pth`` exactly where it stopped: weights, optimizer, EMA, loss scaler,
LR schedule, epoch / step counters, metrics history and the random streams (so a resumed run is
bit-identical to an uninterrupted one)."""
import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from timm.utils import random_seed

from ..utils.errors import UsageError
from ..utils.weights import load_checkpoint_file, load_state_checked
from .checkpoint import set_rng_state
from .distributed import DistInfo

__all__ = ['ResumeState', 'load_training_state', 'resume_scheduler', 'resume_rng']

_logger = logging.getLogger('timm_cra.train')


@dataclass
class ResumeState:
    """Where a run continues: ``epoch`` completed epochs, ``num_updates`` optimizer steps (zeros: a new run)."""
    epoch: int = 0
    num_updates: int = 0
    history: List[Dict[str, Any]] = field(default_factory=list)
    scheduler: Optional[Dict[str, Any]] = None
    rng: Optional[Dict[str, Any]] = None


def load_training_state(path: str, model, optimizer, model_ema=None, loss_scaler=None,
                        hint: str = 'check --model and --model-kwargs') -> ResumeState:
    """Load a trainer checkpoint into the (not yet DDP-wrapped) model, optimizer, EMA and loss scaler.

    The scheduler and RNG states come back in the result: they are restored once those objects exist
    (:func:`resume_scheduler`) and last of all (:func:`resume_rng`).
    """
    ckpt = load_checkpoint_file(path)
    if 'optimizer' not in ckpt or 'epoch' not in ckpt:
        raise UsageError(f"'{path}' is not a training checkpoint (a 'last.pth' written by this trainer).")
    load_state_checked(model, ckpt['state_dict'], path, hint=hint)
    optimizer.load_state_dict(ckpt['optimizer'])
    if model_ema is not None and ckpt.get('state_dict_ema') is not None:
        model_ema.load_state_dict(ckpt['state_dict_ema'])
    if loss_scaler is not None and ckpt.get('loss_scaler') is not None:
        loss_scaler.load_state_dict(ckpt['loss_scaler'])
    state = ResumeState(epoch=ckpt['epoch'], num_updates=ckpt['num_updates'], history=list(ckpt['history']),
                        scheduler=ckpt.get('scheduler'), rng=ckpt['rng'])
    _logger.info(f"Resumed '{path}': {state.epoch} epochs / {state.num_updates} optimizer steps done")
    return state


def resume_scheduler(lr_scheduler, state: ResumeState, sched_on_updates: bool) -> None:
    """Put the LR schedule at the start of epoch ``state.epoch`` (and step ``state.num_updates``)."""
    if lr_scheduler is None:
        return
    if state.scheduler:
        lr_scheduler.load_state_dict(state.scheduler)
    if state.epoch > 0:
        lr_scheduler.step(state.epoch)
        if sched_on_updates:
            lr_scheduler.step_update(state.num_updates)


def resume_rng(state: ResumeState, dinfo: DistInfo, seed: int) -> None:
    """Continue the checkpointed random streams (rank 0's state; other ranks reseed per epoch). Call last,
    after everything that draws random numbers while the run is set up."""
    if state.rng is None:
        return
    if dinfo.is_primary:
        set_rng_state(state.rng)
    else:
        random_seed(seed + state.epoch, dinfo.rank)
