"""The training loop, assembled from timm's library parts.

timm's ``train.py`` is not in the timm wheel, so this is the pip-installable equivalent for what this
project needs: timm data loaders/transforms/Mixup, ``create_optimizer_v2``, ``create_scheduler_v2``,
timm losses, ``ModelEmaV3``, ``NativeScaler``, plus DDP, atomic resumable checkpoints, a metrics CSV,
a PNG of the curves and a Hub-format export (``config.json`` + ``model.safetensors``).

Python entry point::

    from timm_cra.train import parse_args, train
    summary = train(parse_args(['--config', 'cifar', '--model', 'cra_resnet18', '--data-dir', DIR]))
"""
import argparse
import hashlib
import json
import logging
import os
import time
from contextlib import nullcontext
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
import torch.distributed as dist
import torch.nn as nn
import yaml
from timm.data import Mixup, create_loader
from timm.loss import BinaryCrossEntropy, LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import AverageMeter, ModelEmaV3, NativeScaler, dispatch_clip_grad, distribute_bn, random_seed

from ..data import (DataError, ImageFolderDataset, TensorImageDataset, TensorLoader, check_num_classes,
                    create_dataset, model_in_chans, resolve_model_data_config, skip_collate)
from ..eval.evaluate import evaluate
from ..utils.errors import UsageError
from ..utils.weights import load_checkpoint_file, load_state_checked, read_weights
from .args import parse_args
from .checkpoint import remove_stale_temp_files, save_checkpoint, set_rng_state
from .distributed import DistInfo, init_distributed
from .metrics import plot_metrics, write_metrics_csv

__all__ = ['train', 'main', 'create_optimizer', 'create_scheduler', 'STOP_EXIT_CODE']

_logger = logging.getLogger('timm_cra.train')

#: Exit status of ``--stop-after-steps`` (a simulated crash).
STOP_EXIT_CODE = 75


class _Shard(torch.utils.data.Dataset):
    """Every ``world_size``-th example from ``rank`` (eval sharding without the padding of samplers)."""

    def __init__(self, dataset, rank: int, world_size: int):
        self.dataset, self.indices = dataset, range(rank, len(dataset), world_size)

    @property
    def transform(self):
        return self.dataset.transform

    @transform.setter
    def transform(self, t):  # create_loader sets the transform on the dataset it is given
        self.dataset.transform = t

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        return self.dataset[self.indices[i]]


def _setup_logging(primary: bool) -> None:
    level = logging.INFO if primary else logging.WARNING
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level, format='%(asctime)s %(levelname)s %(message)s', datefmt='%H:%M:%S')
    root.setLevel(level)


def _requested_in_chans(args) -> int:
    """Channels asked for before the model exists (``--in-chans``, else ``--model-kwargs in_chans=``)."""
    return int(args.in_chans or (args.model_kwargs or {}).get('in_chans') or 3)


def _head_keys(model: nn.Module) -> List[str]:
    """State-dict keys of the classifier named by the model's pretrained cfg (e.g. ``fc.weight``, ``fc.bias``)."""
    names = model.pretrained_cfg.get('classifier') or []
    names = [names] if isinstance(names, str) else list(names)
    own = model.state_dict()
    return [f'{n}.{p}' for n in names for p in ('weight', 'bias') if f'{n}.{p}' in own]


def _create_model(args, num_classes: int) -> nn.Module:
    """``timm.create_model`` with the weights the flags ask for, logging where they came from.

    ``--initial-checkpoint`` wins over ``--pretrained`` (nothing is downloaded then); ``--in-chans`` reaches
    timm, which adapts pretrained RGB first-conv weights; ``--reset-head`` re-initialises the classifier even
    when its class count matches the weights (timm already starts a fresh one when the count differs).
    """
    import timm
    import timm_cra  # noqa: F401  registers the cra_* models
    from timm.models._builder import _resolve_pretrained_source
    kwargs = dict(args.model_kwargs or {}, num_classes=num_classes, drop_rate=args.drop)
    if args.in_chans is not None:
        kwargs['in_chans'] = args.in_chans
    if args.drop_path is not None:
        kwargs['drop_path_rate'] = args.drop_path
    pretrained = args.pretrained and not args.initial_checkpoint
    if args.pretrained and args.initial_checkpoint:
        _logger.info(f'--initial-checkpoint given: its weights are used, not the pretrained ones of {args.model}.')
    try:
        model = timm_cra.create_model(args.model, pretrained=pretrained, **kwargs)
    except RuntimeError as e:  # unknown model, no pretrained weights, ...
        raise UsageError(f"Cannot create model '{args.model}': {e}") from e
    head = _head_keys(model)
    if args.initial_checkpoint:
        _load_initial_checkpoint(model, args.initial_checkpoint, head, args.reset_head)
    elif pretrained:
        cfg = model.pretrained_cfg
        source, loc = _resolve_pretrained_source(cfg)
        _logger.info(f"Weights: pretrained {args.model} from {source} '{loc if isinstance(loc, str) else 'state_dict'}'"
                     + (f" (adapted to {model_in_chans(model)} input channel(s))"
                        if model_in_chans(model) != (cfg.get('input_size') or (3,))[0] else ''))
        if cfg.get('num_classes') != num_classes:  # timm dropped the pretrained classifier
            _logger.info(f"Head re-initialised ({cfg.get('num_classes')} -> {num_classes} classes): {', '.join(head)}")
        elif args.reset_head:
            model.reset_classifier(num_classes)
            _logger.info(f"Head re-initialised (--reset-head): {', '.join(head)}")
    else:
        _logger.info(f'Weights: random initialisation of {args.model}')
    return model


def _load_initial_checkpoint(model: nn.Module, path: str, head: List[str], reset_head: bool) -> None:
    """Load ``path`` into ``model``: without the classifier when ``reset_head`` (or refuse a head that does not
    fit), with an RGB first conv adapted to the model's input channels; log what was left out."""
    from timm.models import adapt_input_conv
    state, _ = read_weights(path)
    own = model.state_dict()
    dropped = [k for k in head if k in state and (reset_head or state[k].shape != own[k].shape)]
    if dropped and not reset_head:
        raise UsageError(f"The head of '{path}' ({tuple(state[dropped[0]].shape)}) does not fit {model.num_classes} "
                         f"classes: pass --reset-head to fine-tune a fresh head on the new classes.")
    state.update({k: own[k] for k in dropped})  # the model's own fresh head
    first = model.pretrained_cfg.get('first_conv')
    for name in ([first] if isinstance(first, str) else list(first or [])):
        k = f'{name}.weight'
        if k in state and k in own and state[k].ndim == 4 and state[k].shape[1] != own[k].shape[1]:
            _logger.info(f'{k} adapted from {state[k].shape[1]} to {own[k].shape[1]} input channel(s)')
            state[k] = adapt_input_conv(own[k].shape[1], state[k])
    load_state_checked(model, state, path, hint='check --model and --model-kwargs')
    if reset_head:
        model.reset_classifier(model.num_classes)
    _logger.info(f"Weights: '{path}'" + (f"; head re-initialised: {', '.join(dropped or head)}" if reset_head else ''))


def _state_checksum(model: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _create_loaders(args, dinfo: DistInfo, train_ds, val_ds, data_config):
    vb = args.validation_batch_size or args.batch_size
    if isinstance(train_ds, TensorImageDataset):
        common = dict(mean=data_config['mean'], std=data_config['std'], img_size=data_config['input_size'][-1],
                      seed=args.seed, rank=dinfo.rank, world_size=dinfo.world_size, device=dinfo.device,
                      channels_last=args.channels_last)
        # --no-aug: still shuffled, but no crop / flip
        train_loader = TensorLoader(train_ds, args.batch_size, is_training=True,
                                    padding=0 if args.no_aug else args.crop_padding,
                                    hflip=0. if args.no_aug else args.hflip, **common)
        val_loader = TensorLoader(val_ds, vb, is_training=False, **common) if val_ds is not None else None
        return train_loader, val_loader
    common = dict(mean=data_config['mean'], std=data_config['std'], num_workers=args.workers,
                  collate_fn=skip_collate, pin_memory=args.pin_mem, device=dinfo.device, use_prefetcher=False)
    train_loader = create_loader(
        train_ds, input_size=data_config['input_size'], batch_size=args.batch_size, is_training=True,
        no_aug=args.no_aug, re_prob=args.reprob, re_mode=args.remode, re_count=args.recount,
        scale=args.scale, ratio=args.ratio, hflip=args.hflip, vflip=args.vflip, color_jitter=args.color_jitter,
        auto_augment=args.aa, interpolation=args.train_interpolation, distributed=dinfo.distributed, **common)
    val_loader = None
    if val_ds is not None:
        shard = _Shard(val_ds, dinfo.rank, dinfo.world_size) if dinfo.distributed else val_ds
        val_loader = create_loader(
            shard, input_size=data_config['input_size'], batch_size=vb, is_training=False,
            interpolation=data_config['interpolation'], crop_pct=data_config['crop_pct'],
            crop_mode=data_config.get('crop_mode'), **common)
    return train_loader, val_loader


def _create_loss(args, mixup_active: bool) -> nn.Module:
    if mixup_active:  # Mixup produces soft targets (and applies label smoothing itself)
        return BinaryCrossEntropy(target_threshold=None) if args.bce_loss else SoftTargetCrossEntropy()
    if args.smoothing:
        return BinaryCrossEntropy(smoothing=args.smoothing) if args.bce_loss \
            else LabelSmoothingCrossEntropy(smoothing=args.smoothing)
    return BinaryCrossEntropy() if args.bce_loss else nn.CrossEntropyLoss()


def _train_one_epoch(epoch, model, loader, optimizer, loss_fn, args, dinfo, *, lr_scheduler, model_ema,
                     loss_scaler, autocast, mixup_fn, num_updates: int):
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
        if args.stop_after_steps and num_updates >= args.stop_after_steps:
            _logger.warning(f'--stop-after-steps {args.stop_after_steps} reached: exiting abruptly (simulated crash).')
            logging.shutdown()
            os._exit(STOP_EXIT_CODE)
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
    elapsed = time.perf_counter() - t_start
    stats = dict(train_loss=losses.avg, train_img_s=seen * dinfo.world_size / max(elapsed, 1e-9),
                 train_skipped=skipped, epoch_time=elapsed)
    return stats, num_updates


def create_optimizer(model: nn.Module, args) -> torch.optim.Optimizer:
    """timm's ``create_optimizer_v2`` from the args (``--no-filter-bias-and-bn``: weight decay on every param)."""
    opt_kwargs = dict(args.opt_kwargs or {})
    if args.opt_eps is not None:
        opt_kwargs['eps'] = args.opt_eps
    if args.opt_betas is not None:
        opt_kwargs['betas'] = tuple(args.opt_betas)
    return create_optimizer_v2(
        model, opt=args.opt, lr=args.lr, weight_decay=args.weight_decay, momentum=args.momentum,
        layer_decay=args.layer_decay, **{'filter_bias_and_bn': args.filter_bias_and_bn, **opt_kwargs})


def create_scheduler(optimizer: torch.optim.Optimizer, args, updates_per_epoch: int):
    """timm's ``create_scheduler_v2`` from the args -> ``(scheduler or None, num_epochs)``."""
    return create_scheduler_v2(
        optimizer, sched=args.sched, num_epochs=args.epochs, decay_epochs=args.decay_epochs,
        decay_milestones=args.decay_milestones, cooldown_epochs=args.cooldown_epochs, decay_rate=args.decay_rate,
        min_lr=args.min_lr, warmup_lr=args.warmup_lr, warmup_epochs=args.warmup_epochs,
        warmup_prefix=args.warmup_prefix, step_on_epochs=not args.sched_on_updates,
        updates_per_epoch=updates_per_epoch)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def train(args: Union[argparse.Namespace, Sequence[str]]) -> Dict[str, Any]:
    """Run a training job described by ``args`` (a parsed Namespace or an argv list).

    Returns the summary also written to ``<output>/results.json`` (on every rank; files only on rank 0).
    Raises :class:`timm_cra.data.UsageError` for bad input.
    """
    if not isinstance(args, argparse.Namespace):
        args = parse_args(list(args))
    dinfo = init_distributed(args.device)
    _setup_logging(dinfo.is_primary)
    try:
        return _train(args, dinfo)
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def _output_dir(args) -> str:
    if args.experiment:
        return os.path.join(args.output, args.experiment)
    if args.resume:  # continue in the folder of the checkpoint
        return os.path.dirname(os.path.abspath(args.resume))
    name = '-'.join([time.strftime('%Y%m%d-%H%M%S'), args.model.replace('/', '_').replace(':', '_')])
    return os.path.join(args.output, name)


def _train(args, dinfo: DistInfo) -> Dict[str, Any]:
    random_seed(args.seed, dinfo.rank)
    if dinfo.distributed:
        _logger.info(f'DDP: {dinfo.world_size} processes, backend {dist.get_backend()}, device {dinfo.device}')

    # Data
    ds_kwargs = dict(in_memory=args.in_memory, image_key=args.input_key, label_key=args.target_key,
                     in_chans=_requested_in_chans(args))
    train_ds = create_dataset(args.dataset, args.data_dir, args.train_split, num_samples=args.train_num_samples,
                              split_flag='--train-split', **ds_kwargs)
    val_ds = None
    if args.val_split:
        class_names = train_ds.class_names if isinstance(train_ds, ImageFolderDataset) else None
        val_ds = create_dataset(args.dataset, args.data_dir, args.val_split, num_samples=args.val_num_samples,
                                class_names=class_names, split_flag='--val-split', **ds_kwargs)
    num_classes = args.num_classes or train_ds.num_classes
    check_num_classes(train_ds, num_classes, 'training split')
    if val_ds is not None:
        check_num_classes(val_ds, num_classes, 'validation split')
    _logger.info(f'Data: {len(train_ds)} train / {len(val_ds) if val_ds is not None else 0} val examples, '
                 f'{num_classes} classes' + (' (in memory)' if args.in_memory else ''))

    # Model
    model = _create_model(args, num_classes)
    for ds in (train_ds, val_ds):  # the data follows the channels of the model actually built
        if ds is not None and ds.in_chans != model_in_chans(model):
            ds.set_in_chans(model_in_chans(model))
    cfg_args = vars(args).copy()
    if isinstance(train_ds, TensorImageDataset):
        cfg_args['crop_pct'] = 1.0  # the in-memory eval path feeds whole images, no crop
    data_config = resolve_model_data_config(cfg_args, model, verbose=dinfo.is_primary)
    _logger.info(f'Model {args.model}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params')
    model.to(dinfo.device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)

    optimizer = create_optimizer(model, args)

    amp_dtype = None
    loss_scaler = None
    if args.amp:
        amp_dtype = torch.bfloat16 if args.amp_dtype == 'bfloat16' or dinfo.device.type == 'cpu' else torch.float16
        if amp_dtype == torch.float16:
            loss_scaler = NativeScaler(device=dinfo.device.type)
        _logger.info(f'AMP: autocast {amp_dtype}' + (' with loss scaling' if loss_scaler else ''))

    def autocast():
        return torch.autocast(dinfo.device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()

    model_ema = ModelEmaV3(model, decay=args.model_ema_decay, use_warmup=args.model_ema_warmup) \
        if args.model_ema else None

    # Resume (weights and optimizer state before DDP wraps the model)
    start_epoch, num_updates, history = 0, 0, []
    ckpt = None
    if args.resume:
        ckpt = load_checkpoint_file(args.resume)
        if 'optimizer' not in ckpt or 'epoch' not in ckpt:
            raise UsageError(f"'{args.resume}' is not a training checkpoint (a 'last.pth' written by this trainer).")
        load_state_checked(model, ckpt['state_dict'], args.resume,
                           hint=f'--model {args.model} with {num_classes} classes; check --model-kwargs')
        optimizer.load_state_dict(ckpt['optimizer'])
        if model_ema is not None and ckpt.get('state_dict_ema') is not None:
            model_ema.load_state_dict(ckpt['state_dict_ema'])
        if loss_scaler is not None and ckpt.get('loss_scaler') is not None:
            loss_scaler.load_state_dict(ckpt['loss_scaler'])
        start_epoch, num_updates, history = ckpt['epoch'], ckpt['num_updates'], list(ckpt['history'])
        _logger.info(f"Resumed '{args.resume}': {start_epoch} epochs / {num_updates} optimizer steps done")

    if dinfo.distributed:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[dinfo.device] if dinfo.device.type == 'cuda' else None)

    train_loader, val_loader = _create_loaders(args, dinfo, train_ds, val_ds, data_config)
    updates_per_epoch = len(train_loader)
    if updates_per_epoch == 0:
        raise DataError(f'The training split has {len(train_ds)} examples: fewer than one batch of '
                        f'{args.batch_size} per process x {dinfo.world_size} processes. Lower --batch-size.')

    mixup_fn = None
    mixup_active = args.mixup > 0 or args.cutmix > 0. or args.cutmix_minmax is not None
    if mixup_active:
        mixup_fn = Mixup(mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, cutmix_minmax=args.cutmix_minmax,
                         prob=args.mixup_prob, switch_prob=args.mixup_switch_prob, mode=args.mixup_mode,
                         label_smoothing=args.smoothing, num_classes=num_classes)
    loss_fn = _create_loss(args, mixup_active).to(dinfo.device)

    lr_scheduler, num_epochs = create_scheduler(optimizer, args, updates_per_epoch)
    if lr_scheduler is not None:
        if ckpt is not None and ckpt.get('scheduler'):
            lr_scheduler.load_state_dict(ckpt['scheduler'])
        if start_epoch > 0:
            lr_scheduler.step(start_epoch)
            if args.sched_on_updates:
                lr_scheduler.step_update(num_updates)

    output_dir = _output_dir(args)
    args_dict = vars(args).copy()
    if dinfo.is_primary:
        os.makedirs(output_dir, exist_ok=True)
        remove_stale_temp_files(output_dir)  # left by a checkpoint write that was killed
        with open(os.path.join(output_dir, 'args.yaml'), 'w') as f:
            yaml.safe_dump({k: list(v) if isinstance(v, tuple) else v for k, v in args_dict.items()}, f)
        _logger.info(f'Output: {output_dir}  ({updates_per_epoch} steps/epoch, {num_epochs} epochs)')

    # RNG last: a resumed run continues the exact random stream of the checkpointed one (rank 0 state).
    if ckpt is not None:
        if dinfo.is_primary:
            set_rng_state(ckpt['rng'])
        else:
            random_seed(args.seed + start_epoch, dinfo.rank)
    ckpt = None

    for epoch in range(start_epoch, num_epochs):
        if hasattr(train_loader, 'set_epoch'):
            train_loader.set_epoch(epoch)
        elif hasattr(train_loader.sampler, 'set_epoch'):
            train_loader.sampler.set_epoch(epoch)
        if mixup_fn is not None and args.mixup_off_epoch and epoch >= args.mixup_off_epoch:
            mixup_fn.mixup_enabled = False
        lr = optimizer.param_groups[0]['lr']
        stats, num_updates = _train_one_epoch(
            epoch, model, train_loader, optimizer, loss_fn, args, dinfo, lr_scheduler=lr_scheduler,
            model_ema=model_ema, loss_scaler=loss_scaler, autocast=autocast, mixup_fn=mixup_fn,
            num_updates=num_updates)
        if dinfo.distributed:
            distribute_bn(model, dinfo.world_size, reduce=True)  # average BN statistics over ranks
        row: Dict[str, Any] = dict(epoch=epoch, optimizer_steps=num_updates, lr=lr, **stats)
        if val_loader is not None:
            ev = evaluate(model, val_loader, dinfo.device, amp_dtype, args.channels_last)
            row.update(eval_loss=ev['loss'], eval_top1=ev['top1'], eval_top5=ev['top5'], eval_skipped=ev['skipped'])
            if model_ema is not None:
                ev_ema = evaluate(model_ema.module, val_loader, dinfo.device, amp_dtype, args.channels_last)
                row.update(ema_eval_loss=ev_ema['loss'], ema_eval_top1=ev_ema['top1'], ema_eval_top5=ev_ema['top5'])
            _logger.info(f"Eval: {epoch}  Loss: {ev['loss']:.4f}  Acc@1: {ev['top1']:.2f}  Acc@5: {ev['top5']:.2f}"
                         + (f"  (EMA Acc@1: {row['ema_eval_top1']:.2f})" if model_ema is not None else '')
                         + (f"  [{ev['skipped']} unreadable images skipped]" if ev['skipped'] else ''))
        if stats['train_skipped']:
            _logger.warning(f"Epoch {epoch}: {stats['train_skipped']} unreadable training images skipped.")
        history.append(row)
        if lr_scheduler is not None:
            lr_scheduler.step(epoch + 1, row.get('eval_top1'))
        if dinfo.is_primary:
            write_metrics_csv(history, os.path.join(output_dir, 'metrics.csv'))
            save_checkpoint(os.path.join(output_dir, 'last.pth'), model=_unwrap(model), optimizer=optimizer,
                            scheduler=lr_scheduler, model_ema=model_ema, loss_scaler=loss_scaler,
                            epoch=epoch + 1, num_updates=num_updates, history=history, args=args_dict)

    return _finish(args, dinfo, model, model_ema, history, num_updates, output_dir, data_config, train_ds)


def _finish(args, dinfo, model, model_ema, history: List[Dict[str, Any]], num_updates: int, output_dir: str,
            data_config, train_ds) -> Dict[str, Any]:
    net = _unwrap(model)
    checksum = _state_checksum(net)
    checksums = [checksum]
    if dinfo.distributed:
        checksums = [None] * dinfo.world_size
        dist.all_gather_object(checksums, checksum)
        if len(set(checksums)) != 1:
            _logger.error(f'Ranks hold different weights after training: {checksums}')
    summary: Dict[str, Any] = dict(
        model=args.model, num_classes=net.num_classes, epochs=len(history), optimizer_steps=num_updates,
        world_size=dinfo.world_size, final=history[-1] if history else {}, output_dir=output_dir,
        rank_state_sha256=checksums,
    )
    evals = [r for r in history if 'eval_top1' in r]
    if evals:
        best = max(evals, key=lambda r: r['eval_top1'])
        summary.update(best_top1=best['eval_top1'], best_epoch=best['epoch'])
    if dinfo.is_primary:
        from safetensors.torch import save_file
        from timm.models import save_for_hf
        net.to(memory_format=torch.contiguous_format)  # safetensors refuses channels_last (strided) tensors
        export_cfg = {k: data_config[k] for k in ('input_size', 'interpolation', 'mean', 'std', 'crop_pct')}
        label_names = list(getattr(train_ds, 'class_names', []) or [])
        save_for_hf(net, output_dir, safe_serialization=True, data_config=export_cfg,
                    model_config=dict(label_names=label_names) if len(label_names) == net.num_classes else None)
        summary['weights'] = os.path.join(output_dir, 'model.safetensors')
        if model_ema is not None:
            save_file({k: v.contiguous() for k, v in model_ema.module.state_dict().items()},
                      os.path.join(output_dir, 'model_ema.safetensors'))
            summary['weights_ema'] = os.path.join(output_dir, 'model_ema.safetensors')
        with open(os.path.join(output_dir, 'results.json'), 'w') as f:
            json.dump(summary, f, indent=2)
        if history and not args.no_plot:
            plot_metrics(history, os.path.join(output_dir, 'summary.png'))
        _logger.info(f'Done: {len(history)} epochs, {num_updates} optimizer steps. Exported to {output_dir}')
    return summary


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    return train(parse_args(argv))
