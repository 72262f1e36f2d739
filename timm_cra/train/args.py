"""Command-line arguments of the trainer, with timm ``train.py``'s flag names, and YAML ``--config`` files.

As in timm, a config file sets defaults and flags given on the command line override it. Besides a path,
``--config`` takes the name of a bundled recipe (``timm_cra/train/recipes/<name>.yaml``).
"""
import argparse
import os
import sys
from typing import Any, Dict, List, Optional, Sequence

from timm.utils import ParseKwargs

from ..models import check_model_name
from ..utils.cli import (CommandParser, add_shared_args, check_in_range, check_positive, check_shared_values,
                         default_workers, keyword_args_action)
from ..utils.errors import UsageError, printable
from ..utils.input_limits import INTERPOLATIONS
from ..utils.io import check_path_given, check_regular_file
from ..utils.strict_yaml import load_config_file

__all__ = ['create_parser', 'parse_args', 'load_config', 'list_recipes', 'RECIPE_DIR']

RECIPE_DIR = os.path.join(os.path.dirname(__file__), 'recipes')


def list_recipes() -> List[str]:
    return sorted(f[:-5] for f in os.listdir(RECIPE_DIR) if f.endswith('.yaml'))


def load_config(path_or_name: str) -> Dict[str, Any]:
    """Read a YAML config (a path, or a bundled recipe name such as ``paper_imagenet``)."""
    path = path_or_name
    if os.path.lexists(path) and path_or_name in list_recipes():  # which one a run read would not be on record
        raise UsageError(f"Config '{path_or_name}' names both a bundled recipe and a file in this folder: pass "
                         f"./{path_or_name} for the file, or rename the file to use the recipe.")
    if not os.path.isfile(path):
        bundled = os.path.join(RECIPE_DIR, f'{path_or_name}.yaml')
        if not os.path.isfile(bundled):
            if os.path.lexists(path):
                check_regular_file(path, 'config')  # one line naming what it is (a FIFO would block open)
            raise UsageError(f"Config '{path_or_name}' is neither a file nor a bundled recipe "
                             f"({', '.join(list_recipes())}).")
        path = bundled
    cfg = load_config_file(path)
    return {k.replace('-', '_'): v for k, v in cfg.items()}


_KINDS = {int: 'an integer', float: 'a number', None: 'a string'}


def _config_value(action: argparse.Action, value: Any) -> Any:
    """``value`` from a config file as the flag of ``action`` would have parsed it; ValueError (naming what it must
    be) when it is not of the flag's type. argparse applies ``type`` only to string defaults, so without this a
    list for ``lr`` or a string for ``epochs`` reaches the trainer."""
    if value is None and action.default is None:
        return None
    if action.nargs == 0:  # store_true, --x / --no-x
        if not isinstance(value, bool):
            raise ValueError('true or false')
        return value
    if isinstance(action, ParseKwargs):
        if not (isinstance(value, dict) and all(isinstance(k, str) for k in value)):
            raise ValueError('a mapping of keyword names to values')
        return value
    kind = action.type if action.type in _KINDS else None

    def scalar(v):
        if isinstance(v, str) and kind is not None:
            return kind(v)  # YAML reads 1e-3 as a string; the flag takes it, and so does its config
        if isinstance(v, bool) or not isinstance(v, (int, float, str)) or (kind is int and not isinstance(v, int)):
            raise ValueError(_KINDS[kind])
        v = v if kind is not None else str(v)  # a number for a string flag (--experiment 2024) as typed
        if action.choices is not None and v not in action.choices:
            raise ValueError(v)
        return v

    if action.nargs is None:
        if isinstance(value, bool) and kind is None and action.choices is None:  # `experiment: no`
            raise ValueError("a string (YAML reads an unquoted yes / no / on / off / true / false as a boolean: quote "
                             "it, e.g. 'no')")
        try:
            return scalar(value)
        except ValueError:
            raise ValueError(f"one of {', '.join(map(str, action.choices))}" if action.choices
                             else _KINDS[kind]) from None
    n = action.nargs if isinstance(action.nargs, int) else None
    what = f"a list of {n or ('one or more' if action.nargs == '+' else 'any number of')} " \
           f"{_KINDS[kind].split(' ', 1)[1]}s"
    if not isinstance(value, (list, tuple)) or len(value) != (n or len(value)) or (action.nargs == '+' and not value):
        raise ValueError(what)
    try:
        return [scalar(v) for v in value]
    except ValueError:
        raise ValueError(what) from None


def create_parser() -> argparse.ArgumentParser:
    p = CommandParser(prog='timm-cra-train', description='Train a timm / timm-cra image classifier',
                                allow_abbrev=False)
    add = p.add_argument
    add('-c', '--config', default='', metavar='FILE', help='YAML config file or bundled recipe name')

    groups = add_shared_args(p, batch_size=128)
    g = groups['Dataset']
    g.add_argument('--train-split', default='train')
    g.add_argument('--val-split', default='validation', help="validation split ('' to skip evaluation)")
    g.add_argument('--train-num-samples', type=int, default=None, help='use only the first N training examples')
    g.add_argument('--val-num-samples', type=int, default=None, help='use only the first N validation examples')
    g.add_argument('--in-memory', action=argparse.BooleanOptionalAction, default=False,
                   help='decode all images once into a uint8 tensor; batched crop+flip augmentation (CIFAR-size)')
    g.add_argument('--crop-padding', type=int, default=4, help='zero padding of the in-memory random crop')
    g.add_argument('-vb', '--validation-batch-size', type=int, default=None)

    g = groups['Model']
    g.add_argument('--reset-head', action=argparse.BooleanOptionalAction, default=False,
                   help='re-initialise the classifier even when the class count matches the weights '
                        '(fine-tuning on new classes); --no-reset-head keeps a matching head')
    g.add_argument('--initial-checkpoint', default='', metavar='PATH',
                   help='load weights (not state) before training; wins over --pretrained')
    g.add_argument('--resume', default='', metavar='PATH', help='resume full training state from a checkpoint')
    g.add_argument('--drop', type=float, default=0.0, help='dropout before the classifier')
    g.add_argument('--drop-path', type=float, default=None, help='stochastic depth rate')

    g = p.add_argument_group('Optimizer')
    g.add_argument('--opt', default='sgd')
    g.add_argument('--opt-eps', type=float, default=None)
    g.add_argument('--opt-kwargs', nargs='*', default={}, action=keyword_args_action(), metavar='K=V',
                   help='extra create_optimizer_v2 kwargs (as timm train.py)')
    g.add_argument('--opt-betas', type=float, nargs='+', default=None)
    g.add_argument('--momentum', type=float, default=0.9)
    g.add_argument('--weight-decay', type=float, default=2e-5)
    g.add_argument('--filter-bias-and-bn', action=argparse.BooleanOptionalAction, default=True,
                   help='exempt biases and norm weights from weight decay (timm default); '
                        '--no-filter-bias-and-bn decays all parameters (paper recipe)')
    g.add_argument('--clip-grad', type=float, default=None)
    g.add_argument('--clip-mode', default='norm')
    g.add_argument('--layer-decay', type=float, default=None)

    g = p.add_argument_group('Learning rate schedule')
    g.add_argument('--sched', default='cosine', help='cosine, step, multistep, tanh, poly, plateau, none')
    g.add_argument('--sched-on-updates', action='store_true', default=False, help='step the schedule every update')
    g.add_argument('--lr', type=float, default=0.1)
    g.add_argument('--min-lr', type=float, default=0.0)
    g.add_argument('--warmup-lr', type=float, default=1e-5)
    g.add_argument('--warmup-epochs', type=int, default=0)
    g.add_argument('--warmup-prefix', action='store_true', default=False)
    g.add_argument('--cooldown-epochs', type=int, default=0)
    g.add_argument('--epochs', type=int, default=100)
    g.add_argument('--decay-epochs', type=float, default=90, help="period of the 'step' schedule")
    g.add_argument('--decay-milestones', type=int, nargs='+', default=[90, 180, 270],
                   help="epochs of the 'multistep' schedule")
    g.add_argument('--decay-rate', '--dr', type=float, default=0.1)

    g = p.add_argument_group('Augmentation and regularization')
    g.add_argument('--no-aug', action='store_true', default=False)
    g.add_argument('--scale', type=float, nargs=2, default=[0.08, 1.0], metavar='PCT')
    g.add_argument('--ratio', type=float, nargs=2, default=[3. / 4., 4. / 3.], metavar='RATIO')
    g.add_argument('--hflip', type=float, default=0.5)
    g.add_argument('--vflip', type=float, default=0.0)
    g.add_argument('--color-jitter', type=float, default=0.4)
    g.add_argument('--aa', default=None, help='AutoAugment policy, e.g. rand-m9-mstd0.5-inc1')
    g.add_argument('--train-interpolation', default='random')
    g.add_argument('--reprob', type=float, default=0.0)
    g.add_argument('--remode', default='pixel')
    g.add_argument('--recount', type=int, default=1)
    g.add_argument('--mixup', type=float, default=0.0)
    g.add_argument('--cutmix', type=float, default=0.0)
    g.add_argument('--cutmix-minmax', type=float, nargs='+', default=None)
    g.add_argument('--mixup-prob', type=float, default=1.0)
    g.add_argument('--mixup-switch-prob', type=float, default=0.5)
    g.add_argument('--mixup-mode', default='batch')
    g.add_argument('--mixup-off-epoch', type=int, default=0)
    g.add_argument('--smoothing', type=float, default=0.0)
    g.add_argument('--bce-loss', action='store_true', default=False)

    g = p.add_argument_group('EMA')
    g.add_argument('--model-ema', action='store_true', default=False)
    g.add_argument('--model-ema-decay', type=float, default=0.9998)
    g.add_argument('--model-ema-warmup', action='store_true', default=False)

    g = p.add_argument_group('Misc')
    g.add_argument('--seed', type=int, default=42)
    g.add_argument('--log-interval', type=int, default=50)
    g.add_argument('--pin-mem', action='store_true', default=False)
    g.add_argument('--output', default='./output/train', metavar='DIR',
                   help='folder the run folders are written into (default: ./output/train)')
    g.add_argument('--experiment', default='', help='sub-folder of --output (default: <timestamp>-<model>)')
    g.add_argument('--overwrite', action='store_true', default=False,
                   help="start afresh in an --experiment folder that holds an earlier run's files (replaced once the new "
                        "run writes its first checkpoint; without it such a folder is refused unless --resume continues that run)")
    g.add_argument('--no-plot', action='store_true', default=False, help='skip the PNG of the curves')
    return p


#: Entries the trainer adds to its args record (``args.yaml``, the checkpoint's ``args``) that are not flags:
#: ``initial_weights``, what the model started from (see :func:`timm_cra.train.model.create_train_model`).
RUN_RECORDS = ('initial_weights',)


#: The trainer's own numeric flags by the values they take (finite numbers: ``check_shared_values``), checked once
#: after parsing, so that a config's values are too: out of range, torch / timm failed with a traceback once the
#: data was read (``--epochs 0``, ``--lr -1``, ``--momentum -1``, ``--log-interval 0``) or trained on them silently
#: (``--weight-decay -1`` grew the weights until the loss was NaN).
_COUNTS = ('epochs', 'log_interval', 'recount', 'decay_epochs')
_NOT_NEGATIVE = ('lr', 'min_lr', 'warmup_lr', 'weight_decay', 'momentum', 'opt_eps', 'clip_grad', 'layer_decay',
                 'decay_rate', 'warmup_epochs', 'cooldown_epochs', 'decay_milestones', 'crop_padding', 'color_jitter',
                 'mixup', 'cutmix', 'mixup_off_epoch')
_PROBABILITIES = ('hflip', 'vflip', 'reprob', 'mixup_prob', 'mixup_switch_prob', 'model_ema_decay')
_RATES = ('drop', 'drop_path', 'smoothing', 'opt_betas')  # 1: drops everything, teaches no class, never decays


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse ``argv``: config-file values become defaults, explicit flags win."""
    parser = create_parser()
    pre, _ = parser.parse_known_args(argv)
    if pre.config:
        cfg = load_config(pre.config)
        known = {a.dest for a in parser._actions}
        for key in RUN_RECORDS:  # what a run recorded, not a flag: a run's args.yaml still works as --config
            cfg.pop(key, None)
        # Replacing a run is the command line's choice, as resuming one is: an --overwrite run's args.yaml (its own
        # --output / --experiment, `overwrite: true`) reused as --config replaced that run without a word.
        cfg.pop('overwrite', None)
        if pre.img_size is not None or pre.input_size is not None:  # one setting: the command line's size replaces
            cfg.pop('img_size', None), cfg.pop('input_size', None)  # the config's, whichever flag names either
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise UsageError(f"Config '{pre.config}' has unknown keys: {', '.join(unknown)}.")
        actions = {a.dest: a for a in parser._actions}
        for key, value in cfg.items():
            try:
                cfg[key] = _config_value(actions[key], value)
            except ValueError as e:
                raise UsageError(f"Config '{pre.config}': {key} must be {e}, not {value!r:.60}; fix it in the "
                                 f"file.") from None
        given = sys.argv[1:] if argv is None else [str(a) for a in argv]
        if cfg.get('resume') and not any(a == '--resume' or a.startswith('--resume=') for a in given):
            # a resumed run's args.yaml records `resume:`: reused as the config of a new experiment, it resumed that run
            raise UsageError(printable(f"Config '{pre.config}' sets resume: {cfg['resume']}, and a config file never "
                                       f"resumes a run by itself: pass --resume {cfg['resume']} to continue that run, "
                                       f"or --resume '' to start afresh with this config."))
        if isinstance(cfg.get('workers'), int):  # a recipe's worker count, capped to the CPUs available here
            cfg['workers'] = min(cfg['workers'], default_workers(cfg['workers']))
        parser.set_defaults(**cfg)
    args = parser.parse_args(argv)
    check_shared_values(args)
    if args.train_interpolation not in ('random', *INTERPOLATIONS):  # timm's KeyError traceback once data loaded
        raise UsageError(f"--train-interpolation {args.train_interpolation!r:.60} is not one timm knows: random, "
                         f"{', '.join(INTERPOLATIONS)}.")
    check_positive(args, 'batch_size', 'validation_batch_size', 'train_num_samples', 'val_num_samples', *_COUNTS)
    check_in_range(args, _NOT_NEGATIVE)
    check_in_range(args, _PROBABILITIES, 0, 1)
    check_in_range(args, _RATES, 0, 1, below_high=True)
    if not 0 <= args.seed < 2 ** 32:  # numpy's seed range (torch's is wider): out of it, a traceback at set-up
        raise UsageError(f'--seed {args.seed} must be an integer from 0 to 2**32 - 1 (numpy seeds its generator with '
                         f'it).')
    if args.resume and args.initial_checkpoint:
        # the run continues from --resume's weights: the other file would be loaded, overwritten and recorded
        # (log, args.yaml, the card) as the weights the run started from
        raise UsageError(printable(f"--resume {args.resume} continues that run from its own weights, so "
                                   f"--initial-checkpoint {args.initial_checkpoint} would never be used: drop "
                                   f"--initial-checkpoint (pass --initial-checkpoint '' if a --config sets it), or "
                                   f"start a new run from it without --resume."))
    check_path_given(args.output, '--output')
    check_model_name(args.model, flag='--model')
    return args
