"""Continue a run from its ``last.pth`` exactly where it stopped: weights, optimizer, EMA, loss scaler,
LR schedule, epoch / step counters, metrics history and the random streams (so a resumed run is
bit-identical to an uninterrupted one)."""
import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from timm.scheduler import PlateauLRScheduler
from timm.utils import random_seed

from ..utils.errors import UsageError, printable
from ..utils.labels import index_by_name, same_names
from ..utils.strict_json import is_count, is_number
from ..utils.weights import load_checkpoint_file, load_state_checked, same_setting
from .checkpoint import CHECKPOINT_VERSION, get_rng_state, set_rng_state
from .distributed import DistInfo

__all__ = ['ResumeState', 'read_resume_checkpoint', 'check_resume_classes', 'load_training_state', 'resume_scheduler',
           'resume_rng', 'STATE_ARGS', 'REQUIRED_KEYS', 'progress_problem', 'optimizer_problem']

_logger = logging.getLogger('timm_cra.train')


@dataclass
class ResumeState:
    """Where a run continues: ``epoch`` completed epochs, ``num_updates`` optimizer steps (zeros: a new run)."""
    epoch: int = 0
    num_updates: int = 0
    history: List[Dict[str, Any]] = field(default_factory=list)
    scheduler: Optional[Dict[str, Any]] = None
    rng: Optional[Dict[str, Any]] = None


#: Arguments the checkpointed state is built for. Changed on ``--resume``, the saved state would be loaded into
#: objects it does not fit: another optimizer's buffers (SGD momentum into AdamW: ``KeyError: 'step'``), other
#: parameter groups, another schedule's fields, another model, or an EMA that the run did not keep.
STATE_ARGS = ('model', 'model_kwargs', 'num_classes', 'in_chans', 'opt', 'filter_bias_and_bn', 'layer_decay',
              'sched', 'model_ema',
              # the preprocessing the weights learn on, which the export records once (config.json)
              'img_size', 'input_size', 'mean', 'std', 'interpolation', 'crop_pct')
#: The arguments the optimizer's saved parameter groups hold, by the groups' key (:func:`optimizer_problem` checks the
#: groups against them); one the optimizer does not use (``--momentum`` of AdamW) changes nothing and is not compared.
#: ``--lr`` too: the schedule restarts from the groups' saved ``initial_lr``, so a new one would be ignored.
OPTIMIZER_ARGS = {'lr': 'lr', 'momentum': 'momentum', 'weight_decay': 'weight_decay', 'opt_eps': 'eps',
                  'opt_betas': 'betas'}
REQUIRED_KEYS = ('state_dict', 'optimizer', 'epoch', 'num_updates', 'history', 'rng')
#: Arguments a resumed run changes without a word: where and how long it runs, not what it learns.
_RUN_ONLY_ARGS = frozenset({'allow_nonfinite_weights', 'config', 'device', 'epochs', 'experiment', 'initial_checkpoint',
                            'log_interval', 'no_plot', 'output', 'overwrite', 'pin_mem', 'pretrained', 'resume',
                            'validation_batch_size', 'workers'})


def _comparable(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)  # tuples and lists alike (YAML / checkpoint round trips)


def _same_value(a: Any, b: Any) -> bool:
    """One setting, as recorded and as given: numbers by value (a config's ``weight_decay: 0`` is the flag's 0.0),
    lists and tuples alike."""
    return same_setting(a, b) or _comparable(a) == _comparable(b)


def _rng_problem(ckpt: Dict[str, Any]) -> Optional[str]:
    """Why the checkpoint's ``rng`` cannot be restored, or None: plain data outside the sha256 record, restored
    only after data and model are set up (a wrong type or shape was a traceback there). Checked by restoring it
    once and putting this process's states back: the one definition of the layout stays :func:`set_rng_state`."""
    saved = get_rng_state()
    try:
        set_rng_state(ckpt['rng'])
    except (TypeError, ValueError, RuntimeError, KeyError, IndexError, AttributeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return f"its 'rng' entry cannot be restored ({type(e).__name__}: {first:.80})"
    finally:
        set_rng_state(saved)
    return None


def progress_problem(ckpt: Dict[str, Any]) -> Optional[str]:
    """Why the counters of a checkpoint cannot be where a run stopped, or None. They are plain values outside its
    sha256 record, and a run continues from them (epoch -3 gave negative learning rates, 10**12 a run of that many
    epochs): ``epoch`` is the count of ``history`` rows (one per completed epoch, numbered from 0), ``num_updates``
    the last row's ``optimizer_steps``."""
    epoch, num_updates, history = ckpt['epoch'], ckpt['num_updates'], ckpt['history']
    if not is_count(epoch) or not is_count(num_updates):
        return f"its 'epoch' ({epoch!r:.40}) and 'num_updates' ({num_updates!r:.40}) must be counts (integers >= 0)"
    if not isinstance(history, (list, tuple)) or not all(isinstance(row, dict) for row in history):
        return "its 'history' is not a list of per-epoch rows"
    for i, row in enumerate(history):  # metrics.csv, best_top1 and the plot read them as numbers
        bad = next((k for k, v in row.items() if v is not None and not is_number(v, finite=False)), None)
        if bad is not None:
            return f"its history row {i} has {bad}={row[bad]!r:.40} (the trainer records numbers)"
    if len(history) != epoch or any(row.get('epoch') != i for i, row in enumerate(history)):
        return f"its 'epoch' {epoch} does not match its history of {len(history)} epochs"
    if history and history[-1].get('optimizer_steps') != num_updates:
        return f"its 'num_updates' {num_updates} does not match its history's {history[-1].get('optimizer_steps')!r}"
    return None


#: Optimizer group hyper-parameters a run continues with: ``load_state_dict`` puts the saved values back over the
#: args', and they are plain numbers outside the sha256 record (momentum=NaN trained to NaN with exit 0).
_GROUP_HYPER_PARAMS = ('lr', 'initial_lr', 'lr_scale', 'momentum', 'dampening', 'weight_decay', 'eps', 'betas')


def _is_rate(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def optimizer_problem(ckpt: Dict[str, Any], args=None) -> Optional[str]:
    """Why the optimizer's param_groups cannot be the run's, or None: every hyper-parameter finite and >= 0, and
    those the args set (momentum, weight decay -- or 0 for the no-decay group --, betas, eps, the base lr as
    ``initial_lr``) equal to them."""
    groups = ckpt['optimizer'].get('param_groups') if isinstance(ckpt['optimizer'], dict) else None
    if not isinstance(groups, (list, tuple)) or not all(isinstance(g, dict) for g in groups):
        return "its optimizer 'param_groups' is not a list of parameter groups"
    opt_kwargs = dict(getattr(args, 'opt_kwargs', None) or {})
    betas = getattr(args, 'opt_betas', None)
    expected = {'momentum': getattr(args, 'momentum', None), 'eps': getattr(args, 'opt_eps', None),
                'betas': list(betas) if betas is not None else None, **opt_kwargs}
    decay = opt_kwargs.get('weight_decay', getattr(args, 'weight_decay', None))
    base_lr = getattr(args, 'lr', None)  # the rate the schedule restarts from: the groups', whatever args say
    for i, group in enumerate(groups):
        for key in _GROUP_HYPER_PARAMS:
            if key not in group:
                continue
            value = group[key]
            values = list(value) if key == 'betas' and isinstance(value, (list, tuple)) else [value]
            if not all(_is_rate(v) for v in values):
                return f"its optimizer group {i} has {key}={value!r:.40} (must be finite and >= 0)"
            want = expected.get(key)
            if key in ('momentum', 'eps', 'betas') and want is not None and values != (
                    list(want) if isinstance(want, (list, tuple)) else [want]):
                return f"its optimizer group {i} has {key}={value!r:.40}, not the run's {want!r:.40}"
            if key == 'weight_decay' and decay is not None and value not in (0, decay):
                return f"its optimizer group {i} has weight_decay={value!r:.40}, not the run's {decay!r:.40} (or 0)"
            if key == 'initial_lr' and is_number(base_lr, finite=False) and not same_setting(value, base_lr):
                return f"its optimizer group {i} has initial_lr={value!r:.40}, not the run's --lr {base_lr!r:.40}"
    return None


def read_resume_checkpoint(path: str, args=None) -> Dict[str, Any]:
    """Read ``--resume``'s checkpoint and refuse it, before any data is read, when it is not this trainer's
    ``last.pth`` or when an argument of :data:`STATE_ARGS` in ``args`` differs from the one it was written with."""
    ckpt = load_checkpoint_file(path)
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise UsageError(f"'{path}' is not a training checkpoint of this trainer (no {', '.join(missing)}): "
                         f"--resume continues a 'last.pth' written by it; to start from the weights of another "
                         f"checkpoint use --initial-checkpoint {path}.")
    version = ckpt.get('version', 1)  # version 1 wrote none
    if version not in range(1, CHECKPOINT_VERSION + 1) or isinstance(version, bool):
        newer = is_count(version) and version > CHECKPOINT_VERSION
        raise UsageError(f"Cannot --resume '{path}': it records checkpoint version {version!r:.40}, "
                         + (f"written by a newer timm-cra than this one (which reads versions 1 to {CHECKPOINT_VERSION}):"
                            f" resume with that timm-cra, or upgrade this one." if newer else
                            f"not one this trainer writes (1 to {CHECKPOINT_VERSION}), so it was edited or damaged: "
                            f"resume from an intact copy."))
    problem = progress_problem(ckpt) or _rng_problem(ckpt)
    if not problem:
        _check_same_settings(path, ckpt, args)  # before the optimizer's check, which a changed flag also fails
        problem = optimizer_problem(ckpt, args)
    if problem:
        raise UsageError(f"Cannot --resume '{path}': {problem}, so it was edited or damaged (the sha256 it records "
                         f"covers the tensors only) or run with other settings. Resume from an intact copy with the "
                         f"run's settings, or start a new run from its weights "
                         f"with --initial-checkpoint {path}.")
    epochs = getattr(args, 'epochs', None)
    if isinstance(epochs, int) and ckpt['epoch'] > epochs:  # the loop would train nothing and export as finished
        raise UsageError(f"Cannot --resume '{path}' with --epochs {epochs}: it has already done {ckpt['epoch']} "
                         f"epochs. Pass --epochs {ckpt['epoch']} or more to continue it.")
    return ckpt


def _check_same_settings(path: str, ckpt: Dict[str, Any], args) -> None:
    """Refuse ``--resume`` with an argument of :data:`STATE_ARGS` or :data:`OPTIMIZER_ARGS` other than the run
    recorded (``--weight-decay 0.1`` on a 0.0001 run was worded as a checkpoint edited or damaged)."""
    saved = ckpt.get('args') if isinstance(ckpt.get('args'), dict) and args is not None else {}
    groups = ckpt['optimizer'].get('param_groups') if isinstance(ckpt.get('optimizer'), dict) else None
    held = {k for g in groups or () if isinstance(g, dict) for k in g}
    compared = STATE_ARGS + ('opt_kwargs',) + tuple(k for k, key in OPTIMIZER_ARGS.items() if key in held)
    # a recorded value the flag could never have given (a string for --weight-decay): the file was edited, not the
    # command line changed
    def change(k: str) -> str:
        return f"--{k.replace('_', '-')} {saved[k]!r} -> {getattr(args, k, None)!r}"

    damaged = [k for k in compared if saved.get(k) is not None and is_number(getattr(args, k, None), finite=False)
               and not is_number(saved[k], finite=False)]  # (None: not given then, a change as any other)
    if damaged:
        k = damaged[0]
        raise UsageError(f"Cannot --resume '{path}': it records --{k.replace('_', '-')} as {saved[k]!r:.40}, which the "
                         f"flag never gives, so it was edited or damaged (the sha256 it records covers the tensors "
                         f"only). Resume from an intact copy, or start a new run from its weights with "
                         f"--initial-checkpoint {path}.")
    changed = [change(k) for k in compared if k in saved and not _same_value(saved[k], getattr(args, k, None))]
    # Other settings may change (timm's train.py allows it), but never without a word: they apply from the next
    # epoch on while args.yaml will record them for the whole run.
    others = [change(k) for k in sorted(saved) if k not in compared and k not in _RUN_ONLY_ARGS and hasattr(args, k)
              and not _same_value(saved[k], getattr(args, k))]
    if others and not changed:
        _logger.warning(printable(f"Resuming '{path}' with settings other than the run's ({'; '.join(others)}): they "
                                  f"apply from epoch {ckpt.get('epoch')} on, and the run's args.yaml records them as "
                                  f"the whole run's (metrics.csv keeps each epoch's lr)."))
    if changed:
        raise UsageError(f"Cannot --resume '{path}' with changed settings ({'; '.join(changed)}): the saved model / "
                         f"optimizer / schedule state and preprocessing do not fit them. Resume with the values the run "
                         f"was started with, or start a new run from its weights with --initial-checkpoint {path}.")


def _shown_names(names) -> str:
    return printable(', '.join(map(str, names[:6])) + (f', ... ({len(names)} in all)' if len(names) > 6 else ''))


def check_resume_classes(path: str, ckpt: Dict[str, Any], label_names: Optional[List[str]]) -> None:
    """Refuse ``--resume`` on data whose classes are not the run's, in the run's order (its ``label_names``): the
    head's outputs would train on other classes from the next step, and the export would carry the new names.
    Checked once the data is read, before the model is built; a checkpoint that records no names is not checked."""
    recorded = ckpt.get('label_names')
    if not (isinstance(recorded, list) and all(isinstance(n, str) for n in recorded)) \
            or same_names(recorded, label_names or []):  # compared as everywhere: NFC, so a macOS copy resumes
        return
    same_classes = len(recorded) == len(label_names or []) and index_by_name(label_names, recorded) is not None
    changed = 'the classes in another order' if same_classes else 'other classes'
    raise UsageError(f"Cannot --resume '{path}' on data with {changed}: the run trained on "
                     f"[{_shown_names(recorded)}], this data has [{_shown_names(label_names or ['(unnamed)'])}]. "
                     f"Resume on the run's data, or start a new run from its weights with --initial-checkpoint {path}.")


def load_training_state(path: str, model, optimizer, model_ema=None, loss_scaler=None,
                        hint: str = 'check --model and --model-kwargs', ckpt: Optional[Dict[str, Any]] = None,
                        allow_nonfinite: bool = False) -> ResumeState:
    """Load a trainer checkpoint (``ckpt``, as :func:`read_resume_checkpoint` returned it, or read from ``path``)
    into the (not yet DDP-wrapped) model, optimizer, EMA and loss scaler.

    The scheduler and RNG states come back in the result: they are restored once those objects exist
    (:func:`resume_scheduler`) and last of all (:func:`resume_rng`).
    """
    if ckpt is None:
        ckpt = read_resume_checkpoint(path)
    load_state_checked(model, ckpt['state_dict'], path, hint=hint, allow_nonfinite=allow_nonfinite)
    optimizer.load_state_dict(ckpt['optimizer'])
    if model_ema is not None and ckpt.get('state_dict_ema') is not None:
        model_ema.load_state_dict(ckpt['state_dict_ema'])
    if loss_scaler is not None and ckpt.get('loss_scaler') is not None:
        loss_scaler.load_state_dict(ckpt['loss_scaler'])
    state = ResumeState(epoch=ckpt['epoch'], num_updates=ckpt['num_updates'], history=list(ckpt['history']),
                        scheduler=ckpt.get('scheduler'), rng=ckpt['rng'])
    _logger.info(f"Resumed '{printable(path)}': {state.epoch} epochs / {state.num_updates} optimizer steps done")
    return state


def resume_scheduler(lr_scheduler, state: ResumeState, sched_on_updates: bool) -> None:
    """Put the LR schedule at the start of epoch ``state.epoch`` (and step ``state.num_updates``).

    As timm's ``train.py``: the schedule is the one the run's arguments build, only the progress comes from the
    checkpoint. Loading a fixed schedule's saved state put back its ``t_initial``, so a finished run continued
    with more ``--epochs`` trained them at lr 0. A plateau schedule's saved state is its progress (best metric)."""
    if lr_scheduler is None:
        return
    if state.scheduler and isinstance(lr_scheduler, PlateauLRScheduler):
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
