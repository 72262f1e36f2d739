"""The end of a run: Hub-format export (``config.json`` + ``model.safetensors``, EMA weights), ``results.json``
and the PNG of the curves, all written atomically; ranks cross-check that they hold the same weights."""
import logging
import os
from typing import Any, Dict, List, Optional

import torch
import torch.distributed as dist
import torch.nn as nn

from ..data.errors import RENAME_IN_DATA
from ..hub.repo import EARLIER_RUN_FILES, RUN_FILES
from ..utils.errors import printable
from ..utils.io import OutputPathError, atomic_path, atomic_write, file_digest, staging_folder
from ..utils.strict_json import dumps
from ..utils.weights import SCORED_DATA_CONFIG_KEYS, safetensors_metadata, tensor_digest
from .distributed import DistInfo
from .metrics import plot_metrics

__all__ = ['finish_run', 'export_weights', 'run_label_names', 'EXPORT_TMP_PREFIX', 'RUN_FILES',
           'EARLIER_RUN_FILES']

_logger = logging.getLogger('timm_cra.train')

#: Prefix of the folder the export is staged in (a killed export leaves one; the next start removes it).
EXPORT_TMP_PREFIX = '.export-'


def run_label_names(train_ds, num_classes: int) -> Optional[List[str]]:
    """The class names a run records (``last.pth``) and exports (``config.json``, the weights' header): the training
    split's, one per output, or None (``--num-classes`` above the data's class count: the extra classes have no
    names). Checked before the first epoch by the check the export applies (``hub.repo.check_label_names``), so a
    name that cannot be exported (a tab, bytes that are no UTF-8) stops the run before any training, not after it."""
    from ..hub.repo import check_label_names
    names = list(getattr(train_ds, 'class_names', []) or [])
    return check_label_names(names, num_classes, rename=RENAME_IN_DATA) if len(names) == num_classes else None


def export_weights(net: nn.Module, output_dir: str, data_config: Dict[str, Any],
                   label_names: Optional[List[str]]) -> str:
    """The run folder as a Hub-format repo (``model.safetensors`` + ``config.json`` with the data config and the
    data's class names, in :mod:`timm_cra.hub.repo`'s one layout), staged in a hidden folder and renamed into
    ``output_dir`` file by file. Returns the weights path."""
    from ..hub.repo import save_model_files
    net.to(memory_format=torch.contiguous_format)  # safetensors refuses channels_last (strided) tensors
    export_cfg = {k: data_config[k] for k in ('input_size', 'interpolation', 'mean', 'std', 'crop_pct')}
    with staging_folder(output_dir, EXPORT_TMP_PREFIX) as staging:
        try:
            save_model_files(net, staging, data_config=export_cfg, label_names=label_names)
        except OutputPathError as e:  # name the file the user asked for, not the hidden staging folder
            raise OutputPathError(str(e).replace(staging, output_dir)) from e
        for name in ('model.safetensors', 'config.json'):
            with atomic_path(os.path.join(output_dir, name)) as tmp:
                os.replace(os.path.join(staging, name), tmp)
    return os.path.join(output_dir, 'model.safetensors')


def _rank_digests(net: nn.Module, dinfo: DistInfo) -> List[str]:
    """:func:`~timm_cra.utils.weights.tensor_digest` of each rank's state dict (the checkpoint's
    ``sha256['state_dict']`` of the same weights); logs an error when ranks differ."""
    digest = tensor_digest(net.state_dict())
    if not dinfo.distributed:
        return [digest]
    digests = [None] * dinfo.world_size
    dist.all_gather_object(digests, digest)
    if len(set(digests)) != 1:
        _logger.error(f'Ranks hold different weights after training: {digests}')
    return digests


def _export_files(summary: Dict[str, Any], net: nn.Module, model_ema, output_dir: str, data_config,
                  label_names: Optional[List[str]]) -> None:
    """Rank 0's files of a finished run: the weights (and EMA weights), then ``results.json`` naming their sha256."""
    from safetensors.torch import save_file
    summary['weights'] = export_weights(net, output_dir, data_config, label_names)
    if model_ema is not None:
        summary['weights_ema'] = os.path.join(output_dir, 'model_ema.safetensors')
        with atomic_path(summary['weights_ema']) as tmp:
            save_file({k: v.contiguous() for k, v in model_ema.module.state_dict().items()}, tmp,
                      metadata=safetensors_metadata(label_names, data_config))
    # the exported files' sha256: publish checks that weights and this results.json are of the same run
    summary['weights_sha256'] = {os.path.basename(summary[k]): file_digest(summary[k])
                                 for k in ('weights', 'weights_ema') if k in summary}
    with atomic_write(os.path.join(output_dir, 'results.json')) as f:
        f.write(dumps(summary, indent=2))  # strict JSON: a diverged run's NaN loss is null with a note


def finish_run(args, dinfo: DistInfo, net: nn.Module, model_ema, history: List[Dict[str, Any]], num_updates: int,
               output_dir: str, data_config, label_names: Optional[List[str]],
               val_split: Optional[str] = None, val_images: Optional[int] = None) -> Dict[str, Any]:
    """The run's summary (returned on every rank); rank 0 also exports the weights (named ``label_names``, from
    :func:`run_label_names`) and writes the files. ``val_split``: the name the data gives the split the evals read
    (CIFAR's ``--val-split validation`` is its test batch); ``val_images``: the images in it (``--val-num-samples``
    keeps a few), unreadable ones included (each eval row counts its skips)."""
    summary: Dict[str, Any] = dict(
        model=args.model, num_classes=net.num_classes, epochs=len(history), optimizer_steps=num_updates,
        world_size=dinfo.world_size, final=history[-1] if history else {}, output_dir=output_dir,
        val_split=val_split, val_images=val_images,
        rank_state_sha256=_rank_digests(net, dinfo),
        # what the evals scored with, as validate records it: publish holds the repo's names and preprocessing to it
        label_names=list(label_names) if label_names else None,
        data_config={k: list(v) if isinstance(v, tuple) else v for k, v in data_config.items()
                     if k in SCORED_DATA_CONFIG_KEYS},
    )
    for prefix, best_key in (('eval', 'best'), ('ema_eval', 'best_ema')):  # the EMA weights' best is their own
        evals = [r for r in history if r.get(f'{prefix}_top1') is not None]
        if evals:
            best = max(evals, key=lambda r: r[f'{prefix}_top1'])
            summary.update({f'{best_key}_top1': best[f'{prefix}_top1'], f'{best_key}_epoch': best['epoch']})
    if not dinfo.is_primary:
        return summary
    try:
        _export_files(summary, net, model_ema, output_dir, data_config, label_names)
    except OutputPathError as e:  # a full disk at the very end: the epochs are in last.pth, not lost
        last = os.path.join(output_dir, 'last.pth')
        if not history or not os.path.isfile(last):
            raise
        reason = str(e).removesuffix('; choose a writable place with free space.').rstrip('.')
        raise OutputPathError(printable(f'{reason}; the training is saved in {last}: make room there, then --resume '
                                        f'{last} finishes the export without training again.')) from e
    if history and not args.no_plot:
        plot_metrics(history, os.path.join(output_dir, 'summary.png'))
    _logger.info(f'Done: {len(history)} epochs, {num_updates} optimizer steps. Exported to {printable(output_dir)}')
    return summary
