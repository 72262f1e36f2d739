"""Argument helpers shared by the CLIs: which command is starting, the train and validate flags."""
import argparse
import math
import os
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .errors import UsageError
from .input_limits import (CROP_MODES, INTERPOLATIONS, MAX_CROP_PCT, MAX_INPUT_CHANS, MAX_INPUT_PIXELS, MAX_INPUT_SIDE,
                           MAX_NORM_VALUE, MAX_SQUARE_SIDE, MIN_INPUT_SIDE, MIN_STD, crop_resize_problem)

__all__ = ['CommandParser', 'add_shared_args', 'add_in_chans_arg', 'keyword_args_action', 'default_workers',
           'input_files', 'check_positive', 'check_in_range', 'check_device', 'check_shared_values', 'starting_module',
           'starting_light_command', 'starting_command', 'resolve_pretrained', 'check_use_ema', 'data_name']

#: commands that import neither torch nor timm (``python -m`` module, console script): in their process
#: ``import timm_cra`` does not register the models
LIGHT_COMMANDS = ('timm_cra.hub.server', 'timm-cra-hub-mirror')


class CommandParser(argparse.ArgumentParser):
    """The parser of every command: argparse's, with a usage error that fits on a screen. argparse prints the whole
    usage before its ``error:`` line, 48 lines for ``timm-cra-train``; past a few lines it is replaced by a pointer
    to ``--help`` (a short usage is printed as argparse does)."""

    def error(self, message: str):
        usage = self.format_usage()
        if usage.count('\n') > 4:
            usage = f'usage: {self.prog} [options]  ({self.prog} --help lists them)\n'
        self.exit(2, f'{usage}{self.prog}: error: {message}\n')


def starting_module() -> Optional[str]:
    """The module ``python -m <module>`` is starting, while it imports the packages of its target (before the
    target runs): runpy sets ``sys.argv[0]`` from ``'-m'`` to the file only once the target is found; else None."""
    argv = getattr(sys, 'orig_argv', [])
    if getattr(sys, 'argv', [])[:1] == ['-m'] and '-m' in argv[:-1]:
        return argv[argv.index('-m') + 1]
    return None


def starting_light_command() -> bool:
    """Whether this process was started as one of :data:`LIGHT_COMMANDS` (the read-only Hub mirror)."""
    argv = getattr(sys, 'argv', None) or ['']
    return starting_module() in LIGHT_COMMANDS or os.path.basename(argv[0]) in LIGHT_COMMANDS


def starting_command() -> bool:
    """Whether this process was started as a timm-cra command: a ``timm-cra-*`` console script or ``python -m
    timm_cra...`` (not a program or test that imports the package)."""
    argv = getattr(sys, 'argv', None) or ['']
    return (starting_module() or '').startswith('timm_cra') or os.path.basename(argv[0]).startswith('timm-cra-')


def default_workers(cap: int = 4) -> int:
    """Data-loader processes: ``cap``, but never more than the CPUs this process may run on."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(0, min(cap, cpus))


def input_files(model_name: str, checkpoint: str = '') -> List[str]:
    """The files a validate / export command reads its model from (``--checkpoint``, a ``local-dir:`` folder's
    config and weights): no output of that command may be one of them."""
    files = [checkpoint] if checkpoint else []
    if model_name.startswith('local-dir:'):
        folder = model_name[len('local-dir:'):]
        files += [os.path.join(folder, name) for name in ('config.json', 'model.safetensors', 'pytorch_model.bin')]
    return files


def check_use_ema(use_ema: bool, checkpoint: str) -> None:
    """Refuse ``--use-ema`` without ``--checkpoint`` before any work: EMA weights come only from a trainer checkpoint,
    so the flag did nothing and the model's own weights were used, said nowhere."""
    if use_ema and not checkpoint:
        raise UsageError('--use-ema takes the EMA weights of a --checkpoint, and none is given: add --checkpoint '
                         '<run>/last.pth (a trainer checkpoint with EMA weights), or drop --use-ema.')


def resolve_pretrained(pretrained: Optional[bool], model_name: str) -> bool:
    """``--pretrained`` / ``--no-pretrained`` as given; unset (None): on for ``hf-hub:`` / ``local-dir:`` names, which
    name their weights (scoring or exporting such a model with random weights, under its name, misleads), off for
    registry names."""
    return pretrained if pretrained is not None else ':' in model_name


def check_positive(args, *names: str) -> None:
    """Refuse a zero or negative count among the ``names`` of ``args`` (``batch_size``; None means unset): torch's
    loader would fail later with a traceback, or never yield a batch."""
    for name in names:
        value = getattr(args, name)
        if value is not None and not value > 0:
            kind = 'integer' if isinstance(value, int) else 'number'  # --decay-epochs is a float
            raise UsageError(f"--{name.replace('_', '-')} must be a positive {kind}, not {value}.")


def _flag(dest: str) -> str:
    return f"--{dest.replace('_', '-')}"


def check_in_range(args, names: Sequence[str], low: float = 0, high: Optional[float] = None,
                   below_high: bool = False) -> None:
    """Refuse a value of the ``names`` of ``args`` (a number or a list of numbers; None means unset) below ``low``
    or above ``high`` (with ``below_high``: at ``high`` too), in one line naming the flag and its range: torch and
    timm refuse such values with a traceback after the data was read (``--lr -1``), or train on them silently
    (``--weight-decay -1``)."""
    span = f'{low} or more' if high is None else f"from {low} to {'below ' if below_high else ''}{high}"
    for name in names:
        value = getattr(args, name)
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if v is not None and (v < low or (high is not None and (v >= high if below_high else v > high))):
                shown = ' '.join(map(str, value)) if isinstance(value, (list, tuple)) else value
                raise UsageError(f'{_flag(name)} {shown} must be {span}.')


def check_device(device: str) -> None:
    """Refuse a ``--device`` torch cannot parse (``bogus``: a RuntimeError traceback) or that is not here (a GPU
    index past the last one, a device type without a backend on this machine), in one line naming the fix."""
    if not device:
        return
    import torch
    fix = "pass --device cpu, cuda or cuda:N (or leave --device out: cuda when there is one, else cpu)"
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {device!r} is not a device: {fix}.") from None
    if dev.type == 'cpu':
        return
    backend = getattr(torch, dev.type, None)
    available = getattr(backend, 'is_available', None)
    if available is None or not available():
        raise UsageError(f"--device {device}: no {dev.type.upper()} device is available here; pass --device cpu (or "
                         f"leave --device out to use a GPU when there is one).")
    count = getattr(backend, 'device_count', None)
    if dev.index is not None and count is not None and dev.index >= count():
        raise UsageError(f"--device {device}: this machine has {count()} {dev.type.upper()} device(s), numbered from "
                         f"0; {fix}.")


def check_input_size(img_size: Optional[int] = None, input_size: Optional[Sequence[int]] = None) -> None:
    """Refuse ``--img-size`` / ``--input-size`` outside the bounds a ``config.json`` is held to (``utils.input_limits``):
    sides of ``MIN_INPUT_SIDE``..``MAX_INPUT_SIDE`` px (``--img-size``: ..``MAX_SQUARE_SIDE``), at most
    ``MAX_INPUT_PIXELS`` pixels, 1..``MAX_INPUT_CHANS`` channels (``--img-size 100000`` was a 120 GB allocation
    traceback; ``1`` resized every image to one colour and still scored), and the two flags setting different sizes."""
    # a square's side: the pixel cap, not the side cap, bounds it (8192 passed the side check, then failed the cap)
    if img_size is not None and not MIN_INPUT_SIDE <= img_size <= MAX_SQUARE_SIDE:
        raise UsageError(f'--img-size {img_size} must be a side in pixels from {MIN_INPUT_SIDE} to {MAX_SQUARE_SIDE} '
                         f'(a square input of at most {MAX_INPUT_PIXELS} pixels).')
    if input_size is not None and not (len(input_size) == 3 and 0 < input_size[0] <= MAX_INPUT_CHANS and all(
            MIN_INPUT_SIDE <= v <= MAX_INPUT_SIDE for v in input_size[1:])):
        raise UsageError(f'--input-size {" ".join(map(str, input_size))} must be channels, height, width: 1 to '
                         f'{MAX_INPUT_CHANS} channels, the sides {MIN_INPUT_SIDE} to {MAX_INPUT_SIDE} px.')
    if img_size is not None and input_size is not None and list(input_size[1:]) != [img_size, img_size]:
        # timm takes --input-size and drops --img-size without a word
        raise UsageError(f'--img-size {img_size} and --input-size {" ".join(map(str, input_size))} set different '
                         f'sizes: pass one of them.')
    # validate died in a MemoryError traceback at 8000 x 8000
    if input_size is not None and input_size[1] * input_size[2] > MAX_INPUT_PIXELS:
        raise UsageError(f'--input-size {" ".join(map(str, input_size))} is {input_size[1] * input_size[2]} pixels: '
                         f'at most {MAX_INPUT_PIXELS} (4096 x 4096).')


def _input_side(img_size: Optional[int], input_size: Optional[Sequence[int]]) -> Optional[Tuple[int, int]]:
    """(height, width) that ``--input-size`` (else ``--img-size``) sets, or None."""
    if input_size is not None:
        return tuple(input_size[1:3])
    return (img_size, img_size) if img_size is not None else None


def check_shared_values(args) -> None:
    """Refuse what the flags of :func:`add_shared_args` (from the command line or a train ``--config``) would
    feed timm unchecked, each in one line: a NaN / Inf number of any flag, lists included (a NaN ``--lr`` trained
    to NaN weights, a NaN ``--mean`` or an Inf ``--std`` scored a meaningless top1 with exit 0); ``--std`` not
    above 0, ``--mean`` / ``--std`` past ``MAX_NORM_VALUE`` (``--mean 1e300`` made every logit NaN), ``--crop-pct``
    outside (0, 2] (0 was silently the model's), ``--img-size`` / ``--input-size`` sides outside
    ``MIN_INPUT_SIDE``..``MAX_INPUT_SIDE`` px (tracebacks, a MemoryError; the trainer writes them into the config.json
    a load then refuses), an ``--interpolation`` timm does not know (a KeyError) or a ``--crop-mode`` (scored as
    'center' and recorded as given), ``--workers`` below 0 (a traceback), a ``--device`` that is none here
    (:func:`check_device`). The bounds are those a ``config.json`` is held to (``utils.input_limits``)."""

    def shown(v):
        return ' '.join(map(str, v)) if isinstance(v, (list, tuple)) else v

    bad = [f'{_flag(k)} {shown(v)}' for k, v in vars(args).items()
           if any(isinstance(x, float) and not math.isfinite(x) for x in (v if isinstance(v, (list, tuple)) else [v]))]
    if bad:
        raise UsageError(f"Non-finite values: {', '.join(bad)}; every numeric setting must be a finite number.")
    if args.std is not None and not all(v > 0 for v in args.std):
        raise UsageError(f'--std {shown(args.std)}: every value must be above 0 (the images are divided by it).')
    # images are in [0, 1] when normalised: past these, no input is described (--mean 1e300 overflowed the outputs)
    if args.mean is not None and not all(0 <= v <= MAX_NORM_VALUE for v in args.mean):
        raise UsageError(f'--mean {shown(args.mean)}: every value must be from 0 to {MAX_NORM_VALUE} (images are in '
                         f'[0, 1] when it is subtracted; ImageNet\'s is 0.485 0.456 0.406; divide a 0-255 one by 255).')
    if args.std is not None and not all(MIN_STD <= v <= MAX_NORM_VALUE for v in args.std):
        raise UsageError(f'--std {shown(args.std)}: every value must be from {MIN_STD} to {MAX_NORM_VALUE} (images are '
                         f'in [0, 1] when divided by it; ImageNet\'s is 0.229 0.224 0.225; divide a 0-255 one by 255).')
    if args.crop_pct is not None and not 0 < args.crop_pct <= MAX_CROP_PCT:
        raise UsageError(f"--crop-pct {args.crop_pct} must be in (0, {MAX_CROP_PCT}]: the centre crop's share of the "
                         f"resized image (1.0 keeps it whole).")
    check_input_size(args.img_size, args.input_size)
    side = _input_side(args.img_size, args.input_size)
    problem = crop_resize_problem(side, args.crop_pct) if args.crop_pct is not None and side else None
    if problem:  # the config.json check's
        raise UsageError(f'--crop-pct {args.crop_pct}: {problem}.')
    if getattr(args, 'interpolation', '') not in ('', None, *INTERPOLATIONS):  # timm's KeyError traceback
        raise UsageError(f"--interpolation {args.interpolation!r:.60} is not one timm knows: "
                         f"{', '.join(INTERPOLATIONS)}.")
    if getattr(args, 'crop_mode', None) not in (None, *CROP_MODES):  # timm scored it as 'center' and it was recorded
        raise UsageError(f"--crop-mode {args.crop_mode!r:.60} is not one timm knows: {', '.join(CROP_MODES)}.")
    if args.workers is not None and args.workers < 0:
        raise UsageError(f'--workers {args.workers} must be 0 (load in this process) or more.')
    check_device(args.device)


def add_in_chans_arg(parser) -> None:
    """``--in-chans`` (train, validate through :func:`add_shared_args`, and export): the model's input channels,
    passed to ``create_model`` as ``in_chans``."""
    parser.add_argument('--in-chans', type=int, default=None, metavar='N',
                        help="input image channels (1: greyscale, 3: RGB; default: the model's): images are "
                             "converted to it, pretrained RGB weights adapted (first conv summed over channels, as "
                             "timm does)")


def keyword_args_action() -> type:
    """timm's ``ParseKwargs`` (``K=V`` items, values read as Python literals), with an item that is not ``K=V``
    (``foo``, ``=1``) refused by argparse in one line; timm's own action raised a ``ValueError`` traceback."""
    from timm.utils import ParseKwargs  # timm imports torch: only when a parser is built

    class KeywordArgs(ParseKwargs):
        def __call__(self, parser, namespace, values, option_string=None):
            for item in values:
                if item and ('=' not in item or not item.split('=', 1)[0].isidentifier()):
                    raise argparse.ArgumentError(self, f"{item!r} is not NAME=VALUE (e.g. layers='(1,1,1,1)')")
            super().__call__(parser, namespace, values, option_string)
            kwargs = getattr(namespace, self.dest)
            for key, value in kwargs.items():  # `nan` / `inf` are no literals: numbers, so the ceilings see them
                if isinstance(value, str) and value.strip().lower().lstrip('+-') in ('nan', 'inf', 'infinity'):
                    kwargs[key] = float(value)

    return KeywordArgs


#: Folder names that name a split of a dataset, not the dataset.
SPLIT_FOLDER_NAMES = ('train', 'training', 'val', 'validation', 'test')


def data_name(args: Dict[str, Any]) -> Optional[str]:
    """The data that ``--dataset`` / ``--data-dir`` arguments (a run's, validate's) name, as cards and results name
    it: a Hub dataset's id, else the ``--data-dir`` folder's name (not the full local path), else the ``--dataset``
    source; None when they name none."""
    dataset = args.get('dataset') or ''
    if dataset.startswith('hfds/'):
        return dataset[len('hfds/'):]
    data_dir = args.get('data_dir') or ''
    # '.', '..', '/' name no folder ('' normalises to '.', which a card showed as a dataset called '.')
    folder = os.path.basename(os.path.normpath(data_dir)) if data_dir else ''
    if folder in SPLIT_FOLDER_NAMES:  # --data-dir data/val: the data is 'data', its split 'val'
        folder = os.path.basename(os.path.dirname(os.path.abspath(data_dir))) or folder
    # a reader's kind names no data ('folder' read as a dataset called folder); imagenet, torch/cifar10 do
    return (folder if folder not in ('', '.', '..') else None) or (
        dataset if dataset.lower() not in ('folder', 'folder-auto', 'hfds', 'parquet') else None) or None


def add_shared_args(parser: argparse.ArgumentParser, *, batch_size: int,
                    model_aliases: Sequence[str] = ()) -> Dict[str, 'argparse._ArgumentGroup']:
    """Add the flags the train and validate CLIs share (timm ``train.py`` / ``validate.py`` names) to ``parser``,
    in three groups returned by title (``'Dataset'``, ``'Model'``, ``'Precision and device'``) for each CLI to
    add its own flags to. What differs between the two is an argument: the ``--batch-size`` default and the
    short aliases of ``--model`` (timm's ``validate.py`` has ``-m``). Their values are checked after parsing by
    :func:`check_shared_values` (so that a train ``--config`` value is too)."""
    groups = {title: parser.add_argument_group(title) for title in ('Dataset', 'Model', 'Precision and device')}
    g = groups['Dataset']
    g.add_argument('--data-dir', metavar='DIR', help='dataset root: folder, parquet file/folder, save_to_disk folder')
    g.add_argument('--dataset', '-d', default='', metavar='NAME',
                   help="'' (detect), imagenet, folder, torch/cifar10, torch/cifar100, hfds (local), hfds/<hub-name>")
    g.add_argument('--input-key', default=None, help='image column of an HF dataset (default: detect)')
    g.add_argument('--target-key', default=None, help='label column of an HF dataset (default: detect)')
    g.add_argument('-b', '--batch-size', type=int, default=batch_size, help='per-process batch size')
    g.add_argument('-j', '--workers', type=int, default=default_workers(),
                   help='data-loader processes (default: 4, at most the CPUs available)')

    g = groups['Model']
    g.add_argument('--model', *model_aliases, default='cra_resnet50',
                   help='model name, or hf-hub:org/repo, or local-dir:PATH')
    g.add_argument('--pretrained', action=argparse.BooleanOptionalAction, default=False,
                   help='load the registered / Hub / local-dir: weights (--no-pretrained: random init)')
    add_in_chans_arg(g)
    g.add_argument('--model-kwargs', nargs='*', default={}, action=keyword_args_action(), metavar='K=V',
                   help='extra create_model kwargs, e.g. layers="(1,1,1,1)"')
    g.add_argument('--allow-nonfinite-weights', action='store_true', default=False,
                   help='load weights holding NaN / Inf (refused by default: a diverged run or a damaged file)')
    g.add_argument('--num-classes', type=int, default=None,
                   help="classifier outputs (train: default the dataset's class count)")
    g.add_argument('--img-size', type=int, default=None)
    g.add_argument('--input-size', type=int, nargs=3, default=None, metavar='N')
    g.add_argument('--crop-pct', type=float, default=None)
    g.add_argument('--mean', type=float, nargs='+', default=None)
    g.add_argument('--std', type=float, nargs='+', default=None)
    g.add_argument('--interpolation', default='', help='eval resize interpolation (default: the model cfg)')
    g.add_argument('--channels-last', action='store_true', default=False)

    g = groups['Precision and device']
    g.add_argument('--amp', action='store_true', default=False, help='autocast to --amp-dtype (default: fp32)')
    g.add_argument('--amp-dtype', default='float16', choices=['float16', 'bfloat16'])
    g.add_argument('--device', default='', help="'cpu', 'cuda', 'cuda:1' (default: cuda if available)")
    return groups
