"""One training epoch and the timm parts it runs with: optimizer, LR schedule, loss, Mixup, AMP."""
import logging
import math
import re
import time
from contextlib import nullcontext
from typing import Any, Callable, ContextManager, Dict, Optional, Tuple

import torch
import torch.nn as nn
from timm.data import Mixup
from timm.loss import BinaryCrossEntropy, LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import AverageMeter, NativeScaler, dispatch_clip_grad

from ..data import DataError
from ..utils.amp import amp_dtype_for
from ..utils.errors import UsageError, printable
from .distributed import DistInfo

__all__ = ['create_optimizer', 'create_scheduler', 'create_loss', 'create_mixup', 'create_amp', 'train_one_epoch',
           'stop_unless_finite']

_logger = logging.getLogger('timm_cra.train')


def create_optimizer(model: nn.Module, args) -> torch.optim.Optimizer:
    """timm's ``create_optimizer_v2`` from the args (``--no-filter-bias-and-bn``: weight decay on every param)."""
    opt_kwargs = dict(args.opt_kwargs or {})
    if args.opt_eps is not None:
        opt_kwargs['eps'] = args.opt_eps
    if args.opt_betas is not None:
        opt_kwargs['betas'] = tuple(args.opt_betas)
    try:
        return create_optimizer_v2(
            model, opt=args.opt, lr=args.lr, weight_decay=args.weight_decay, momentum=args.momentum,
            layer_decay=args.layer_decay, **{'filter_bias_and_bn': args.filter_bias_and_bn, **opt_kwargs})
    except TypeError as e:  # `--opt-kwargs bogus=1`: the optimizer class's own TypeError names the keyword
        m = re.search(r"unexpected keyword argument '([^']*)'", str(e))
        if m is None or m.group(1) not in opt_kwargs:
            raise
        raise UsageError(printable(f"--opt {args.opt} takes no keyword '{m.group(1)}' (--opt-kwargs): remove it or "
                                   f"use one its optimizer takes.")) from None


def create_scheduler(optimizer: torch.optim.Optimizer, args, updates_per_epoch: int):
    """timm's ``create_scheduler_v2`` from the args -> ``(scheduler or None, num_epochs)``."""
    return create_scheduler_v2(
        optimizer, sched=args.sched, num_epochs=args.epochs, decay_epochs=args.decay_epochs,
        decay_milestones=args.decay_milestones, cooldown_epochs=args.cooldown_epochs, decay_rate=args.decay_rate,
        min_lr=args.min_lr, warmup_lr=args.warmup_lr, warmup_epochs=args.warmup_epochs,
        warmup_prefix=args.warmup_prefix, step_on_epochs=not args.sched_on_updates,
        updates_per_epoch=updates_per_epoch)


def create_mixup(args, num_classes: int) -> Optional[Mixup]:
    """timm's Mixup/CutMix when ``--mixup`` / ``--cutmix`` / ``--cutmix-minmax`` ask for it."""
    if not (args.mixup > 0 or args.cutmix > 0. or args.cutmix_minmax is not None):
        return None
    return Mixup(mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, cutmix_minmax=args.cutmix_minmax,
                 prob=args.mixup_prob, switch_prob=args.mixup_switch_prob, mode=args.mixup_mode,
                 label_smoothing=args.smoothing, num_classes=num_classes)


def create_loss(args, mixup_active: bool) -> nn.Module:
    if mixup_active:  # Mixup produces soft targets (and applies label smoothing itself)
        return BinaryCrossEntropy(target_threshold=None) if args.bce_loss else SoftTargetCrossEntropy()
    if args.smoothing:
        return BinaryCrossEntropy(smoothing=args.smoothing) if args.bce_loss \
            else LabelSmoothingCrossEntropy(smoothing=args.smoothing)
    return BinaryCrossEntropy() if args.bce_loss else nn.CrossEntropyLoss()


def create_amp(args, device: torch.device) -> Tuple[Optional[torch.dtype], Optional[NativeScaler],
                                                        Callable[[], ContextManager]]:
    """``(autocast dtype or None, loss scaler or None, autocast context factory)`` for ``--amp``.

    The dtype is :func:`timm_cra.utils.amp.amp_dtype_for`'s (CPU: bfloat16 where the CPU has it, else none);
    float16 (the default on GPU) gets timm's ``NativeScaler``.
    """
    amp_dtype = amp_dtype_for(args.amp, args.amp_dtype, device)
    loss_scaler = NativeScaler(device=device.type) if amp_dtype == torch.float16 else None
    if loss_scaler:
        _logger.info('AMP: float16 with loss scaling')

    def autocast():
        return torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
    return amp_dtype, loss_scaler, autocast


def stop_unless_finite(value: float, what: str, epoch: int, fix: str) -> None:
    """Stop the run (:class:`UsageError`) when ``what`` (a loss of epoch ``epoch``) is NaN / Inf, before last.pth is
    written: it keeps the last finite epoch, and no later file (weights, card) quotes scores of such a model."""
    if not math.isfinite(value):
        kept = ' (last.pth keeps the epochs before)' if epoch else ''  # epoch 0: no epoch, no last.pth of the run
        raise UsageError(f'{what} became {value} in epoch {epoch}, so the run stopped{kept}: {fix}.')


def train_one_epoch(epoch: int, model: nn.Module, loader, optimizer, loss_fn, args, dinfo: DistInfo, *,
                    lr_scheduler, model_ema, loss_scaler, autocast, mixup_fn,
                    num_updates: int) -> Tuple[Dict[str, Any], int]:
    """Train ``model`` over ``loader`` once -> ``(stats, num_updates)``; logs every ``--log-interval`` steps."""
    model.train()
    losses = AverageMeter()
    skipped = 0
    seen = 0
    steps = len(loader)
    t_start = t_log = time.perf_counter()
    seen_since_log = 0
    for batch_idx, (x, y, n_skip) in enumerate(loader):
        skipped += n_skip
        if x.numel() == 0:
            continue
        x, y = x.to(dinfo.device, non_blocking=True), y.to(dinfo.device, non_blocking=True)
        if mixup_fn is not None:
            if x.shape[0] % 2:  # Mixup needs an even batch (a skipped image can make it odd)
                x, y = x[:-1], y[:-1]
            x, y = mixup_fn(x, y)
        if args.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast():
            loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        if loss_scaler is not None:
            loss_scaler(loss, optimizer, clip_grad=args.clip_grad, clip_mode=args.clip_mode,
                        parameters=model.parameters())
        else:
            loss.backward()
            if args.clip_grad is not None:
                dispatch_clip_grad(model.parameters(), value=args.clip_grad, mode=args.clip_mode)
            optimizer.step()
        num_updates += 1
        if model_ema is not None:
            model_ema.update(model, step=num_updates)
        losses.update(loss.item(), x.shape[0])
        seen += x.shape[0]
        seen_since_log += x.shape[0]
        if lr_scheduler is not None:
            lr_scheduler.step_update(num_updates=num_updates, metric=losses.avg)
        last = batch_idx == steps - 1
        if dinfo.is_primary and (last or (batch_idx + 1) % args.log_interval == 0):
            now = time.perf_counter()
            rate = seen_since_log * dinfo.world_size / max(now - t_log, 1e-9)
            lr = optimizer.param_groups[0]['lr']
            _logger.info(
                f'Train: {epoch} [{batch_idx + 1:>4d}/{steps} ({100. * (batch_idx + 1) / steps:>3.0f}%)]  '
                f'Loss: {losses.val:#.3g} ({losses.avg:#.3g})  LR: {lr:.3e}  '
                f'Throughput: {rate:>7.1f} img/s')
            t_log, seen_since_log = now, 0
    if seen == 0:  # else a run that read nothing would export its random initialisation and exit 0
        raise DataError(f'Epoch {epoch} read no training image: all {skipped} were skipped as unreadable (see the '
                        f'warnings above); fix or replace the training images.')
    stop_unless_finite(losses.avg, 'The training loss', epoch,
                       'lower --lr (or set --clip-grad) and check the data for bad values')
    elapsed = time.perf_counter() - t_start
    stats = dict(train_loss=losses.avg, train_img_s=seen * dinfo.world_size / max(elapsed, 1e-9),
                 train_skipped=skipped, epoch_time=elapsed)
    return stats, num_updates
