"""Training data: the train / validation datasets the flags describe and their loaders (timm's
``create_loader``, or the in-memory ``TensorLoader`` for CIFAR-size images)."""
import logging
from typing import Optional, Tuple

import torch
from timm.data import create_loader

from ..data import (DataError, TensorImageDataset, TensorLoader, check_num_classes,
                    create_dataset, fit_to_input, images_listed_once, skip_collate, split_overlap)
from .distributed import DistInfo

__all__ = ['create_datasets', 'create_loaders', 'EvalShard']

_logger = logging.getLogger('timm_cra.train')


class EvalShard(torch.utils.data.Dataset):
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


def _requested_in_chans(args) -> int:
    """Channels asked for before the model exists (``--in-chans``, else ``--model-kwargs in_chans=``)."""
    return int(args.in_chans or (args.model_kwargs or {}).get('in_chans') or 3)


def create_datasets(args) -> Tuple[object, Optional[object], int]:
    """``(train_ds, val_ds or None, num_classes)`` from ``--dataset`` / ``--data-dir`` / the split flags;
    the validation split takes the training split's class indices, matched by name."""
    ds_kwargs = dict(in_memory=args.in_memory, image_key=args.input_key, label_key=args.target_key,
                     in_chans=_requested_in_chans(args))
    with images_listed_once():  # the split check and each dataset's split name compare the same folders
        overlap = split_overlap(args.dataset, args.data_dir, args.train_split, args.val_split) if args.val_split \
            else None
        if overlap and overlap.one_split:  # best_top1 would be training accuracy
            raise DataError(f"--data-dir {args.data_dir} holds one split, so validation would run on the training "
                            f"rows: pass a folder with separate train and validation/test splits (train-*.parquet and "
                            f"test-*.parquet, or train/ and val/ folders), or --val-split '' to train without "
                            f"validation.")
        if overlap and overlap.shared:  # val/ of hard links or per-class symlinks into train/
            raise DataError(f"{overlap.shared} of the {overlap.total} images of --val-split {args.val_split} in "
                            f"{args.data_dir} are images of the training split (hard links or symlinks to them), so "
                            f"validation would score training images: give a validation split of its own images, or "
                            f"--val-split '' to train without validation.")
        train_ds = create_dataset(args.dataset, args.data_dir, args.train_split,
                                  num_samples=args.train_num_samples, split_flag='--train-split', **ds_kwargs)
        if args.train_num_samples and len(torch.as_tensor(train_ds.targets).unique()) == 1:
            # the first rows of sorted class folders are one class: as a one-class folder, a run that learns nothing
            _logger.warning(f'--train-num-samples {args.train_num_samples} keeps examples of one class only (the '
                            f'first rows of the data, e.g. sorted class folders): the model learns nothing; raise it.')
        val_ds = None
        if args.val_split:
            val_ds = create_dataset(args.dataset, args.data_dir, args.val_split, num_samples=args.val_num_samples,
                                    class_names=train_ds.class_names, split_flag='--val-split', **ds_kwargs)
    num_classes = args.num_classes or train_ds.num_classes
    check_num_classes(train_ds, num_classes, 'training split')
    if val_ds is not None:
        check_num_classes(val_ds, num_classes, 'validation split')
    _logger.info(f'Data: {len(train_ds)} train / {len(val_ds) if val_ds is not None else 0} val examples, '
                 f'{num_classes} classes' + (' (in memory)' if args.in_memory else ''))
    return train_ds, val_ds, num_classes


def create_loaders(args, dinfo: DistInfo, train_ds, val_ds, data_config):
    """``(train_loader, val_loader or None)``; both yield ``(images, targets, num_skipped)``."""
    vb = args.validation_batch_size or args.batch_size
    if isinstance(train_ds, TensorImageDataset):
        # validate's resize / centre crop, once: train and evaluate on what timm-cra-validate scores
        train_ds = fit_to_input(train_ds, data_config, f'{args.data_dir} [{args.train_split}]')
        val_ds = fit_to_input(val_ds, data_config, f'{args.data_dir} [{args.val_split}]') if val_ds is not None \
            else None
        common = dict(mean=data_config['mean'], std=data_config['std'],
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
        shard = EvalShard(val_ds, dinfo.rank, dinfo.world_size) if dinfo.distributed else val_ds
        val_loader = create_loader(
            shard, input_size=data_config['input_size'], batch_size=vb, is_training=False,
            interpolation=data_config['interpolation'], crop_pct=data_config['crop_pct'],
            crop_mode=data_config.get('crop_mode'), **common)
    return train_loader, val_loader
