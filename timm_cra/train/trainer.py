"""The training run, assembled from timm's library parts.

timm's ``train.py`` is not in the timm wheel, so this is the pip-installable equivalent for what this
project needs: timm data loaders/transforms/Mixup, ``create_optimizer_v2``, ``create_scheduler_v2``,
timm losses, ``ModelEmaV3``, ``NativeScaler``, plus DDP, atomic resumable checkpoints, a metrics CSV,
a PNG of the curves and a Hub-format export (``config.json`` + ``model.safetensors``). The parts live in
:mod:`.loaders` (data), :mod:`.model` (weights to start from), :mod:`.loop` (one epoch), :mod:`.resume`
and :mod:`.checkpoint` (continuing a run), :mod:`.export` (the end of a run).

Python entry point::

    from timm_cra.train import parse_args, train
    summary = train(parse_args(['--config', 'cifar', '--model', 'cra_resnet18', '--data-dir', DIR]))
"""
import argparse
import contextlib
import logging
import math
import os
import shutil
import time
from typing import Any, Dict, Optional, Sequence, Union

import torch
import torch.distributed as dist
import torch.nn as nn
from timm.utils import ModelEmaV3, distribute_bn, random_seed

from ..data import DataError, TensorImageDataset, model_in_chans, resolve_model_data_config
from ..eval.evaluate import evaluate
from ..utils.errors import TimmCraError, UsageError, check_not_interrupted, printable
from ..utils.extras import require_train_extra
from ..utils.io import (EARLIER_RUN_ASIDE, HeldFolder, OutputPathError, atomic_write, check_output_folder,
                        locked_folder, temp_pattern)
from ..utils.strict_yaml import safe_dump
from ..utils.weights import DATA_CONFIG_KEYS, recorded_data_config, setting_differences
from .args import parse_args
from .checkpoint import remove_stale_run_temp_files, save_checkpoint
from .distributed import DistInfo, init_distributed
from .export import EARLIER_RUN_FILES, EXPORT_TMP_PREFIX, RUN_FILES, finish_run, run_label_names
from .loaders import create_datasets, create_loaders
from .loop import (create_amp, create_loss, create_mixup, create_optimizer, create_scheduler, stop_unless_finite,
                   train_one_epoch)
from .metrics import write_metrics_csv
from .model import create_train_model
from .resume import (ResumeState, check_resume_classes, load_training_state, read_resume_checkpoint, resume_rng,
                     resume_scheduler)

__all__ = ['train', 'main']

_logger = logging.getLogger('timm_cra.train')


def _setup_logging(primary: bool) -> None:
    level = logging.INFO if primary else logging.WARNING
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level, format='%(asctime)s %(levelname)s %(message)s', datefmt='%H:%M:%S')
    root.setLevel(level)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _output_dir(args) -> str:
    if args.experiment:
        name = args.experiment
        if name in ('.', '..') or os.sep in name or (os.altsep and os.altsep in name) or '\0' in name:
            raise UsageError(f"--experiment {name!r} must be one folder name (no '/', not '.' or '..'): it names the "
                             f"run's sub-folder of --output; pass the parent folder as --output.")
        return _inside_output(os.path.join(args.output, name), args.output)
    if args.resume:  # continue in the folder of the checkpoint
        return os.path.dirname(os.path.abspath(args.resume))
    name = '-'.join([time.strftime('%Y%m%d-%H%M%S'), args.model.replace('/', '_').replace(':', '_')])
    return _inside_output(os.path.join(args.output, name), args.output)


def _inside_output(run_dir: str, output: str) -> str:
    """``run_dir`` (a sub-folder of ``--output``), refused when it is a symlink leading out of ``--output``: the run
    would write its files into whatever folder the link names (another run, a repo folder), as a linked run file
    would (:func:`_check_no_linked_run_files`)."""
    if not os.path.islink(run_dir):
        return run_dir
    target, root = os.path.realpath(run_dir), os.path.realpath(output)
    if target != root and target.startswith(root.rstrip(os.sep) + os.sep):
        return run_dir
    raise UsageError(printable(
        f"'{run_dir}' is a symlink to {os.readlink(run_dir)}, outside --output {output}: the run would write its "
        f"files there. Remove the link, or write into that folder itself (--output {os.path.dirname(target)} "
        f"--experiment {os.path.basename(target)})."))




def _resumes_in(output_dir: str, resume: str) -> bool:
    """Whether ``--resume`` continues the run of ``output_dir`` (its checkpoint lies there)."""
    return bool(resume) and os.path.realpath(os.path.dirname(os.path.abspath(resume))) == os.path.realpath(output_dir)


def _check_output_dir(output_dir: str, args) -> None:
    """Refuse to start in a folder holding another run's files: its config.json, weights and results would sit
    beside this run's last.pth (and publishing would mix them). ``--resume`` continues the run of the
    checkpoint's own folder; ``--overwrite`` replaces what is there."""
    if not os.path.isdir(output_dir):
        return
    _check_no_linked_run_files(output_dir)
    if args.overwrite:
        _check_overwrite_keeps_inputs(output_dir, args)
        return
    if _resumes_in(output_dir, args.resume):
        return
    earlier = [f for f in EARLIER_RUN_FILES if os.path.lexists(os.path.join(output_dir, f))]
    if not earlier:
        return
    if args.resume:
        raise UsageError(f"'{output_dir}' already holds another run ({', '.join(earlier[:3])}) than the one of "
                         f"--resume {args.resume}: resume into the checkpoint's own folder (drop --experiment), "
                         f"choose another --experiment, or pass --overwrite to replace that run.")
    if 'last.pth' not in earlier:  # it stopped before its first checkpoint (a full disk): nothing to resume
        raise UsageError(f"'{output_dir}' holds an earlier run that wrote no checkpoint ({', '.join(earlier[:3])}): "
                         f"pass --overwrite to start it again, or choose another --experiment.")
    raise UsageError(f"'{output_dir}' already holds a run ({', '.join(earlier[:3])}): pass --resume "
                     f"{os.path.join(output_dir, 'last.pth')} to continue it, --overwrite to replace it, or choose "
                     f"another --experiment.")


def _check_no_linked_run_files(output_dir: str) -> None:
    """A run file that is a symlink (``last.pth`` linked from another run to continue it, weights linked into a repo
    folder) would be written through: the other run's checkpoint, or a published repo's weights under its card,
    replaced by this run's. Refused before any work; the run folder's own files are written only there."""
    for name in ('last.pth',) + RUN_FILES:
        path = os.path.join(output_dir, name)
        if os.path.islink(path):
            raise UsageError(printable(
                f"'{path}' is a symlink to {os.readlink(path)}: this run would write its {name} through it, into "
                f"another file. Replace the link with a copy (cp --remove-destination), or continue the run in the "
                f"folder that holds the file (to start from its weights, --initial-checkpoint)."))


def _check_overwrite_keeps_inputs(output_dir: str, args) -> None:
    """``--overwrite`` deletes the earlier run's files (:func:`_prepare_output`): refuse, before any work, when the
    weights this run starts from are among them (``--initial-checkpoint``, or ``--model local-dir:`` of the run
    folder), else they would be gone, and the new run with them if it failed."""
    if _resumes_in(output_dir, args.resume):
        return
    doomed = {os.path.realpath(os.path.join(output_dir, name)) for name in EARLIER_RUN_FILES}
    inputs = [('--initial-checkpoint', args.initial_checkpoint)]
    if args.model.startswith('local-dir:'):
        inputs += [('--model', os.path.join(args.model[len('local-dir:'):], name)) for name in EARLIER_RUN_FILES]
    for what, path in inputs:
        if path and os.path.realpath(path) in doomed and os.path.lexists(path):
            raise UsageError(f"--overwrite would delete {what} {printable(path)}: it is a file of the earlier run in "
                             f"'{printable(output_dir)}' that this run replaces. Copy it out of that folder and start "
                             f"from the copy, or choose another --experiment.")


#: Marks a set-aside run being moved back (:func:`_settle_earlier_run`): a kill midway is finished by the next run.
_MOVING_BACK = '.moving-back'

#: The files a run writes in its folder, the ones ``--overwrite`` replaces.
_ALL_RUN_FILES = ('last.pth',) + RUN_FILES


def _set_earlier_run_aside(output_dir: str) -> None:
    """``--overwrite``: move the earlier run's files into :data:`EARLIER_RUN_ASIDE`, where they stay until this run
    writes its first checkpoint (:func:`_settle_earlier_run`): a run failing before that (NaN in epoch 0, no readable
    image, Ctrl-C) puts them back instead of leaving a folder with neither run."""
    names = [n for n in _ALL_RUN_FILES if os.path.lexists(os.path.join(output_dir, n))]
    if not names:
        return
    aside = os.path.join(output_dir, EARLIER_RUN_ASIDE)
    os.mkdir(aside)  # a leftover was settled when the lock was taken
    for name in names:
        os.rename(os.path.join(output_dir, name), os.path.join(aside, name))


def _settle_earlier_run(output_dir: str, new_run_kept: bool = False) -> None:
    """Settle what :func:`_set_earlier_run_aside` left: drop the earlier run once this one is kept (``new_run_kept``,
    or its ``last.pth`` is there: a run killed right after its first checkpoint), else put the earlier run back in
    place of the new run's files (a failure or a kill before the first checkpoint). Called on the held folder only."""
    aside = os.path.join(output_dir, EARLIER_RUN_ASIDE)
    if not os.path.lexists(aside):
        return
    if os.path.islink(aside) or not os.path.isdir(aside):
        os.remove(aside)  # not this trainer's folder: nothing of a run to restore
        return
    moving = os.path.join(aside, _MOVING_BACK)
    if not os.path.lexists(moving):
        if new_run_kept or os.path.lexists(os.path.join(output_dir, 'last.pth')):
            shutil.rmtree(aside)
            return
        kept = set(os.listdir(aside))
        for name in _ALL_RUN_FILES:  # the failed run's files that no earlier one replaces
            if name not in kept and os.path.lexists(os.path.join(output_dir, name)):
                os.remove(os.path.join(output_dir, name))
        open(moving, 'w').close()  # from here a kill leaves a move to finish, not a choice to make again
    for name in os.listdir(aside):
        if name != _MOVING_BACK:
            os.replace(os.path.join(aside, name), os.path.join(output_dir, name))
    os.remove(moving)
    os.rmdir(aside)
    _logger.warning(f'The run replaced by --overwrite is back in {printable(output_dir)}: the new run ended before '
                    f'its first checkpoint.')


def _remove_unfinished_run(output_dir: str) -> None:
    """The files of a run that failed before its first checkpoint in a folder it created (``args.yaml``, a metrics
    row): nothing to resume, so the folder goes again (:func:`_held_run_folder`)."""
    if os.path.lexists(os.path.join(output_dir, 'last.pth')):
        return
    for name in RUN_FILES:
        if os.path.lexists(os.path.join(output_dir, name)):
            os.remove(os.path.join(output_dir, name))
    remove_stale_run_temp_files(output_dir, names=RUN_FILES, patterns=[temp_pattern(None, prefix=EXPORT_TMP_PREFIX)])


def _prepare_output(output_dir: str, args_dict: Dict[str, Any]) -> None:
    """Create the run folder, remove what killed writes left there (and, with ``--overwrite``, set another run's
    files aside: never those of the run being resumed), write ``args.yaml``."""
    check_output_folder(output_dir, 'run folder')
    try:
        os.makedirs(output_dir, exist_ok=True)
    except OSError as e:
        raise OutputPathError(f'run folder {output_dir} cannot be created ({e.strerror}); choose another '
                              f'--output.') from e
    if args_dict.get('overwrite') and not _resumes_in(output_dir, args_dict.get('resume')):
        _set_earlier_run_aside(output_dir)
    remove_stale_run_temp_files(output_dir, names=RUN_FILES, patterns=[temp_pattern(None, prefix=EXPORT_TMP_PREFIX)])
    with atomic_write(os.path.join(output_dir, 'args.yaml')) as f:
        safe_dump({k: list(v) if isinstance(v, tuple) else v for k, v in args_dict.items()}, f)


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
        output_dir = _output_dir(args)  # once: a timestamped name must not change between uses
        with contextlib.ExitStack() as stack:
            try:
                held, refusal = stack.enter_context(_held_run_folder(output_dir, dinfo.is_primary, args.data_dir)), None
            except TimmCraError as e:
                held, refusal = None, e
            if dinfo.distributed:  # rank 0 alone takes the folder: every rank ends on its answer, at once (the
                # others went on to DDP's first collective, which rank 0 had left: a gloo traceback, or a wait)
                answer = [None if refusal is None else str(refusal)]
                dist.broadcast_object_list(answer, src=0)
                if refusal is None and answer[0] is not None:
                    raise SystemExit(2)  # rank 0 prints why
            if refusal is not None:
                raise refusal
            try:
                return _train(args, dinfo, output_dir, held)
            except KeyboardInterrupt as e:  # Ctrl-C / SIGTERM: the epochs checkpointed stay; say how to go on
                last = os.path.join(output_dir, 'last.pth')
                if dinfo.is_primary and os.path.isfile(last):
                    e.hint = f'the epochs saved are kept; continue with --resume {last}'
                raise
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


@contextlib.contextmanager
def _held_run_folder(output_dir: str, primary: bool, data_dir: str = ''):
    """Rank 0 (the only writer of the run folder) holds an exclusive lock on it for the whole run, taken before
    :func:`_check_output_dir` looks at it: a second run started on the same folder is refused at once instead of
    both passing the check and one silently overwriting the other. The kernel drops the lock with the process,
    so a killed run resumes as before. A folder created here is removed again, with the run's files, if the run
    fails before its first checkpoint; in an existing folder, the run that ``--overwrite`` replaces comes back then
    (and, after a kill, when the next run takes the folder). Yields the :class:`~timm_cra.utils.io.HeldFolder`
    (None on other ranks)."""
    if not primary:
        yield None
        return
    # a file, device, unwritable place, or inside --data-dir (its files would become part of the data)
    check_output_folder(output_dir, 'run folder (--output/--experiment)', [data_dir])
    created, path = [], os.path.abspath(output_dir)  # the folders the lock creates, deepest first
    while not os.path.lexists(path) and os.path.dirname(path) != path:
        created.append(path)
        path = os.path.dirname(path)
    busy = 'two runs in one folder overwrite each other; wait for that run to end, or choose another --experiment'
    held = None
    with contextlib.ExitStack() as stack:
        try:  # the clean-up runs still holding the lock, and also when taking it failed after creating folders
            held = stack.enter_context(locked_folder(output_dir, wait=False, busy_hint=busy))
            _settle_earlier_run(output_dir)  # what a run killed before its first checkpoint set aside
            yield held
        except BaseException:
            with contextlib.suppress(OSError):  # created folders go only when empty: a checkpointed run stays
                if held is not None:  # never the files of the run that holds the folder now
                    if created:
                        _remove_unfinished_run(output_dir)
                    else:
                        _settle_earlier_run(output_dir)
                for folder in created:
                    os.rmdir(folder)
            raise
        with contextlib.suppress(OSError):
            _settle_earlier_run(output_dir, new_run_kept=True)


def _check_run_folder_in_place(held: Optional[HeldFolder], output_dir: str, epoch: int) -> None:
    """Stop, before writing epoch ``epoch``'s files, when the run folder was renamed or removed while the run went
    on: writes by its name would start a new folder at the old place without the run's args.yaml and earlier
    files. The advice keeps the epochs done: the moved folder's last.pth holds them."""
    moved = held.moved_to() if held is not None else None
    if moved is None:
        return
    last = os.path.join(moved, 'last.pth') if moved else ''
    if last and os.path.isfile(last):
        fix = f'its last.pth holds the epochs saved before epoch {epoch}: continue with --resume {last}'
    else:
        fix = 'no checkpoint of it is left there: start the run again (in a folder that stays where it is)'
    raise UsageError(f"The run folder {output_dir} was {'moved to ' + moved if moved else 'moved or removed'} "
                     f"during epoch {epoch}, so the run stopped instead of writing a new folder at the old place; "
                     f"{fix}.")


def _note_other_preprocessing(path: str, data_config: Dict[str, Any], ignore: Sequence[str] = ()) -> None:
    """Warn when ``--initial-checkpoint``'s weights record other preprocessing (its run's config.json, its header)
    than this run's: fine-tuning may mean to change it, but a 64-px or other-mean start trained on the tag's defaults
    without a word. Rank 0 alone: it never raises (the other ranks would wait for it at DDP's first collective)."""
    try:
        recorded, where = recorded_data_config(path, None)
    except UsageError as e:
        _logger.warning(f"--initial-checkpoint's recorded preprocessing cannot be compared with this run's: {e}")
        return
    differ = setting_differences(recorded, data_config, 'this run', [k for k in DATA_CONFIG_KEYS if k not in ignore])
    if differ:
        _logger.warning(printable(f"--initial-checkpoint was trained with other preprocessing ({where}): "
                                  f"{'; '.join(differ)}. Pass those flags (--input-size, --mean, ...) to keep what its "
                                  f"weights learnt on."))


def _train(args, dinfo: DistInfo, output_dir: str, held: Optional[HeldFolder] = None) -> Dict[str, Any]:
    # Refused before any data is read: a folder holding another run, a --resume with changed settings.
    _check_output_dir(output_dir, args)
    resume_ckpt = read_resume_checkpoint(args.resume, args) if args.resume else None
    # The set-up order is part of the random stream a resumed run must reproduce: keep it.
    random_seed(args.seed, dinfo.rank)
    if dinfo.distributed:
        _logger.info(f'DDP: {dinfo.world_size} processes, backend {dist.get_backend()}, device {dinfo.device}')

    train_ds, val_ds, num_classes = create_datasets(args)
    label_names = run_label_names(train_ds, num_classes)  # refused now if the export would refuse them
    if resume_ckpt is not None:  # before any model or step: the run's classes must be these, in this order
        check_resume_classes(args.resume, resume_ckpt, label_names)
    model = create_train_model(args, num_classes, label_names)
    for ds in (train_ds, val_ds):  # the data follows the channels of the model actually built
        if ds is not None and ds.in_chans != model_in_chans(model):
            ds.set_in_chans(model_in_chans(model))
    cfg_args = vars(args).copy()
    if isinstance(train_ds, TensorImageDataset):
        cfg_args['crop_pct'] = 1.0  # the in-memory eval path feeds whole images, no crop
    data_config = resolve_model_data_config(cfg_args, model, verbose=dinfo.is_primary)
    if args.initial_checkpoint and dinfo.is_primary:
        _note_other_preprocessing(args.initial_checkpoint, data_config,
                                  # the in-memory path feeds whole images whatever --crop-pct says
                                  ignore=('crop_pct',) if isinstance(train_ds, TensorImageDataset) else ())
    _logger.info(f'Model {args.model}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params')
    model.to(dinfo.device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)

    optimizer = create_optimizer(model, args)
    amp_dtype, loss_scaler, autocast = create_amp(args, dinfo.device)
    model_ema = ModelEmaV3(model, decay=args.model_ema_decay, use_warmup=args.model_ema_warmup) \
        if args.model_ema else None

    resumed = ResumeState()  # weights and optimizer state go in before DDP wraps the model
    if args.resume:
        resumed = load_training_state(args.resume, model, optimizer, model_ema, loss_scaler,
                                      hint=f'--model {args.model} with {num_classes} classes; check --model-kwargs',
                                      ckpt=resume_ckpt, allow_nonfinite=args.allow_nonfinite_weights)
        del resume_ckpt
    num_updates, history = resumed.num_updates, resumed.history

    if dinfo.distributed:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[dinfo.device] if dinfo.device.type == 'cuda' else None)

    train_loader, val_loader = create_loaders(args, dinfo, train_ds, val_ds, data_config)
    updates_per_epoch = len(train_loader)
    if updates_per_epoch == 0:
        raise DataError(f'The training split has {len(train_ds)} examples: fewer than one batch of '
                        f'{args.batch_size} per process x {dinfo.world_size} processes. Lower --batch-size.')
    mixup_fn = create_mixup(args, num_classes)
    loss_fn = create_loss(args, mixup_fn is not None).to(dinfo.device)
    lr_scheduler, num_epochs = create_scheduler(optimizer, args, updates_per_epoch)
    resume_scheduler(lr_scheduler, resumed, args.sched_on_updates)

    args_dict = vars(args).copy()
    if args.resume and not args.experiment:  # it writes into the checkpoint's folder, not a new one under --output
        args_dict.update(output=os.path.dirname(output_dir), experiment=os.path.basename(output_dir))
    if dinfo.is_primary:
        _prepare_output(output_dir, args_dict)
        _logger.info(f'Output: {printable(output_dir)}  ({updates_per_epoch} steps/epoch, {num_epochs} epochs)')
    resume_rng(resumed, dinfo, args.seed)  # last: a resumed run continues the checkpointed random stream

    for epoch in range(resumed.epoch, num_epochs):
        check_not_interrupted()  # a Ctrl-C swallowed during the last epoch (a library, a loader worker) stops here
        if hasattr(train_loader, 'set_epoch'):
            train_loader.set_epoch(epoch)
        elif hasattr(train_loader.sampler, 'set_epoch'):
            train_loader.sampler.set_epoch(epoch)
        if mixup_fn is not None and args.mixup_off_epoch and epoch >= args.mixup_off_epoch:
            mixup_fn.mixup_enabled = False
        lr = optimizer.param_groups[0]['lr']
        stats, num_updates = train_one_epoch(
            epoch, model, train_loader, optimizer, loss_fn, args, dinfo, lr_scheduler=lr_scheduler,
            model_ema=model_ema, loss_scaler=loss_scaler, autocast=autocast, mixup_fn=mixup_fn,
            num_updates=num_updates)
        if dinfo.distributed:
            distribute_bn(model, dinfo.world_size, reduce=True)  # average BN statistics over ranks
        row: Dict[str, Any] = dict(epoch=epoch, optimizer_steps=num_updates, lr=lr, **stats)
        if val_loader is not None:
            row.update(_evaluate_epoch(epoch, model, model_ema, val_loader, dinfo, amp_dtype, args.channels_last))
        if stats['train_skipped']:
            _logger.warning(f"Epoch {epoch}: {stats['train_skipped']} unreadable training images skipped.")
        history.append(row)
        if lr_scheduler is not None:
            lr_scheduler.step(epoch + 1, row.get('eval_top1'))
        if dinfo.is_primary:
            _check_run_folder_in_place(held, output_dir, epoch)
            write_metrics_csv(history, os.path.join(output_dir, 'metrics.csv'))
            save_checkpoint(os.path.join(output_dir, 'last.pth'), model=_unwrap(model), optimizer=optimizer,
                            scheduler=lr_scheduler, model_ema=model_ema, loss_scaler=loss_scaler,
                            epoch=epoch + 1, num_updates=num_updates, history=history, args=args_dict,
                            label_names=label_names)
            _settle_earlier_run(output_dir, new_run_kept=True)  # this run is now the folder's

    return finish_run(args, dinfo, _unwrap(model), model_ema, history, num_updates, output_dir, data_config,
                      label_names, val_split=val_ds.split if val_ds is not None else None,
                      val_images=len(val_ds) if val_ds is not None else None)


def _evaluate_epoch(epoch, model, model_ema, val_loader, dinfo: DistInfo, amp_dtype,
                    channels_last: bool) -> Dict[str, Any]:
    """The epoch's eval columns (model and EMA), logged in one line."""
    ev = evaluate(model, val_loader, dinfo.device, amp_dtype, channels_last, desc=f'Epoch {epoch} validation')
    row = dict(eval_loss=ev['loss'], eval_top1=ev['top1'], eval_top5=ev['top5'], eval_skipped=ev['skipped'])
    if model_ema is not None:
        ev_ema = evaluate(model_ema.module, val_loader, dinfo.device, amp_dtype, channels_last)
        # NaN logits score an arbitrary top-1 (50% on two classes) that publish would ship with the EMA weights
        stop_unless_finite(ev_ema['loss'], "The EMA model's validation loss", epoch,
                           'its outputs are not finite: lower --lr (or set --clip-grad), or train without --model-ema')
        row.update(ema_eval_loss=ev_ema['loss'], ema_eval_top1=ev_ema['top1'], ema_eval_top5=ev_ema['top5'])
    _logger.info(f"Eval: {epoch}  Loss: {ev['loss']:.4f}  Acc@1: {ev['top1']:.2f}  Acc@5: {ev['top5']:.2f}"
                 + (f"  (EMA Acc@1: {row['ema_eval_top1']:.2f})" if model_ema is not None else '')
                 + (f"  [{ev['skipped']} unreadable images skipped]" if ev['skipped'] else ''))
    if not math.isfinite(ev['loss']):  # finite weights whose outputs overflow: the accuracy above is not a score
        _logger.warning(f"Epoch {epoch}: the validation loss is {ev['loss']}: the model's outputs overflow on the "
                        f"validation images (the training loss stayed finite); lower --lr or set --clip-grad.")
    return row


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    require_train_extra('timm-cra-train')  # after parsing: --help needs no extra
    return train(args)
