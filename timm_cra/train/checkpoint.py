"""Atomic, verifiable, resumable training checkpoints (reading them back lives in :mod:`timm_cra.utils.weights`).

Format version 2 (``last.pth``): a dict of tensors and plain Python data only, so it loads with
``torch.load(weights_only=True)``: ``state_dict``, ``optimizer``, ``scheduler``, ``state_dict_ema``,
``loss_scaler``, ``epoch``, ``num_updates``, ``history``, ``args`` (plain containers), ``rng`` (torch state
tensor; numpy MT19937 key as an int64 tensor + ints; python ``random`` state as a tuple of ints),
``label_names`` (the training split's class names, or None; files without it still load) and ``sha256``
(digests of the model / optimizer / EMA tensors, checked on every load). Version 1 files (numpy RNG state
pickled as an array) still load: the reader admits numeric numpy arrays.

``python -m timm_cra.train.checkpoint upgrade OLD NEW`` rewrites a version-1 file as version 2.
"""
import logging
import os
import random
from typing import Any, Dict, Optional, Sequence

import numpy as np
import torch

from ..utils.errors import UsageError, printable, run_cli
from ..utils.io import atomic_write, check_output_file, temp_pattern
from ..utils.io import remove_stale_temp_files
from ..utils.weights import checkpoint_digests, load_checkpoint_file, nonfinite_tensors
from ..utils.cli import CommandParser

__all__ = ['atomic_save', 'save_checkpoint', 'get_rng_state', 'set_rng_state', 'remove_stale_run_temp_files',
           'upgrade_checkpoint', 'CheckpointSaveError', 'CHECKPOINT_VERSION']

_logger = logging.getLogger(__name__)

CHECKPOINT_VERSION = 2
_TMP_PREFIX, _TMP_SUFFIX = '.tmp-', '.pth'


class CheckpointSaveError(UsageError):
    """Writing a checkpoint failed (disk full, quota, permissions): the previous file is left as it was."""


def atomic_save(obj: Any, path: str) -> None:
    """``torch.save`` through :func:`~timm_cra.utils.io.atomic_write`: a crash never leaves a torn file."""
    with atomic_write(path, 'wb', prefix=_TMP_PREFIX, suffix=_TMP_SUFFIX) as f:
        out = _WriteRecorder(f)
        try:
            torch.save(obj, out)
        except RuntimeError as e:  # torch's writer reports a failed write() as "unexpected pos ..."
            if out.error is not None:
                raise out.error from e
            raise


class _WriteRecorder:
    """File wrapper that keeps the first ``OSError`` of ``write`` (torch's zip writer swallows the reason)."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, data):
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self):
        return self.f.flush()


def remove_stale_run_temp_files(folder: str, names: Sequence[str] = (), patterns: Sequence[str] = ()) -> int:
    """Delete what killed writes left in ``folder``: checkpoints' ``.tmp-*.pth``, the temp files of ``names``
    (files written with :func:`~timm_cra.utils.io.atomic_write`) and ``patterns``; returns how many."""
    n = remove_stale_temp_files(folder, [temp_pattern(None, prefix=_TMP_PREFIX, suffix=_TMP_SUFFIX)]
                           + [temp_pattern(name) for name in names]
                           + list(patterns))
    if n:
        _logger.info(f'Removed {n} temp file(s) of an interrupted write in {folder}.')
    return n


def get_rng_state() -> Dict[str, Any]:
    """RNG states as tensors and plain data (loadable with ``weights_only=True``)."""
    bit_generator, key, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = dict(
        torch=torch.get_rng_state(),
        numpy=dict(bit_generator=str(bit_generator), key=torch.from_numpy(key.astype(np.int64)), pos=int(pos),
                   has_gauss=int(has_gauss), cached_gaussian=float(cached)),
        python=(int(version), tuple(int(i) for i in internal), gauss_next),
    )
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore :func:`get_rng_state` output (also the version-1 layout: numpy's own state tuple)."""
    torch.set_rng_state(state['torch'])
    np_state = state['numpy']
    if isinstance(np_state, dict):
        np_state = (np_state['bit_generator'], np_state['key'].numpy().astype(np.uint32), np_state['pos'],
                    np_state['has_gauss'], np_state['cached_gaussian'])
    np.random.set_state(np_state)
    version, internal, gauss_next = state['python']
    random.setstate((version, tuple(internal), gauss_next))
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


def _plain(obj: Any) -> Any:
    """Plain containers (dict/list/tuple of str/int/float/bool/None/tensors); anything else as its ``str``."""
    if obj is None or isinstance(obj, (bool, int, float, str, torch.Tensor)):
        return obj
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj) if type(obj) in (list, tuple) else [_plain(v) for v in obj]
    return str(obj)


def _os_reason(err: OSError) -> str:
    if isinstance(err.__cause__, OSError) and not err.strerror:  # atomic_path's one-line error: the OS reason
        err = err.__cause__
    return err.strerror or str(err) or type(err).__name__


def _save_failed(path: str, err: OSError) -> CheckpointSaveError:
    reason = _os_reason(err)
    if os.path.isfile(path):  # --resume only from a checkpoint that exists
        return CheckpointSaveError(f"Saving the checkpoint failed: could not write '{path}' ({reason}); the previous "
                                   f"'{os.path.basename(path)}' is intact. Free space or fix the folder, then "
                                   f"continue with --resume {path}.")
    return CheckpointSaveError(f"Saving the checkpoint failed: could not write '{path}' ({reason}); no earlier "
                               f"checkpoint exists. Free space or fix the folder, then start the run again.")


def save_checkpoint(path: str, *, model: torch.nn.Module, optimizer, scheduler, model_ema=None, loss_scaler=None,
                    epoch: int, num_updates: int, history, args: Dict[str, Any],
                    label_names: Optional[Sequence[str]] = None) -> None:
    """Everything needed to continue: ``epoch`` is the number of completed epochs. ``label_names``: the
    training split's class names, one per output, so validating the file maps a split's classes by name.

    Raises :class:`CheckpointSaveError` (one line; the previous file untouched) when the write fails.
    """
    state = dict(
        version=CHECKPOINT_VERSION,
        arch=args.get('model'),
        state_dict=model.state_dict(),
        optimizer=optimizer.state_dict(),
        scheduler=_plain(scheduler.state_dict()) if scheduler is not None else None,
        state_dict_ema=model_ema.state_dict() if model_ema is not None else None,
        loss_scaler=loss_scaler.state_dict() if loss_scaler is not None else None,
        epoch=epoch,
        num_updates=num_updates,
        history=_plain(list(history)),
        rng=get_rng_state(),
        args=_plain(dict(args)),
        label_names=list(label_names) if label_names is not None else None,
    )
    state['sha256'] = checkpoint_digests(state)
    try:
        atomic_save(state, path)
    except OSError as e:
        raise _save_failed(path, e) from e


def upgrade_checkpoint(src: str, dst: str) -> Optional[Dict[str, Any]]:
    """Rewrite a trainer checkpoint (version 1 or 2) in the current format, with sha256 digests; returns it, or
    None when ``dst`` is ``src`` and that is already current (left as it is).

    The new digests vouch for what they cover, so a checkpoint ``--resume`` would refuse (edited counters or
    optimizer settings) or whose weights hold NaN / Inf is refused here, in one line, before anything is written."""
    from .resume import REQUIRED_KEYS, progress_problem, optimizer_problem  # resume imports this module
    check_output_file(dst, 'OUT', new_folders=False)  # a FIFO, folder, device, missing folder: before any work
    _check_not_beside_another_run(src, dst)
    ckpt = load_checkpoint_file(src)
    if any(k not in ckpt for k in REQUIRED_KEYS):
        raise UsageError(f"'{src}' is not a timm-cra trainer checkpoint (a 'last.pth').")
    problem = progress_problem(ckpt) or optimizer_problem(ckpt)
    if problem:
        raise UsageError(f"Cannot upgrade '{src}': {problem}, so it was edited or damaged; upgrading would re-sign it "
                         f"as sound. Upgrade an intact copy.")
    nonfinite = [f'{name}.{t}' for name in ('state_dict', 'state_dict_ema') if isinstance(ckpt.get(name), dict)
                 for t in nonfinite_tensors(ckpt[name])]
    if nonfinite:
        raise UsageError(f"Cannot upgrade '{src}': its weights hold NaN/Inf values: {', '.join(nonfinite[:3])}"
                         f"{' ...' if len(nonfinite) > 3 else ''} (the run diverged or the file is damaged); upgrading "
                         f"would re-sign them as sound. Upgrade an earlier checkpoint of the run.")
    if _is_current(ckpt) and _same_file(src, dst):  # rewriting it would only change its bytes and file sha256
        return None
    rng = dict(ckpt['rng'])
    if not isinstance(rng.get('numpy'), dict):
        bit_generator, key, pos, has_gauss, cached = rng['numpy']
        rng['numpy'] = dict(bit_generator=str(bit_generator), key=torch.from_numpy(np.asarray(key).astype(np.int64)),
                            pos=int(pos), has_gauss=int(has_gauss), cached_gaussian=float(cached))
    version, internal, gauss_next = rng['python']
    rng['python'] = (int(version), tuple(int(i) for i in internal), gauss_next)
    ckpt.update(version=CHECKPOINT_VERSION, rng=rng, args=_plain(ckpt.get('args') or {}),
                history=_plain(list(ckpt.get('history') or [])))
    ckpt.pop('sha256', None)
    ckpt['sha256'] = checkpoint_digests(ckpt)
    try:
        atomic_save(ckpt, dst)
    except OSError as e:
        raise CheckpointSaveError(f"Upgrading failed: could not write '{dst}' ({_os_reason(e)}); '{src}' is "
                                  f"unchanged. Free space or choose a writable OUT, then upgrade again.") from e
    return ckpt


def _check_not_beside_another_run(src: str, dst: str) -> None:
    """Refuse an OUT in another folder than ``src``'s that holds a run's files: the checkpoint would sit beside that
    run's weights and results (publish and --resume would mix the two runs), as the trainer refuses such a folder."""
    from .export import RUN_FILES  # the trainer's one list of run files
    folder = os.path.dirname(os.path.abspath(dst))
    if os.path.realpath(folder) == os.path.realpath(os.path.dirname(os.path.abspath(src))):
        return
    held = [n for n in ('last.pth',) + RUN_FILES if os.path.lexists(os.path.join(folder, n))]
    if held:
        raise UsageError(printable(f"OUT '{dst}' is in the folder of another run ({', '.join(held[:3])}): the "
                                   f"checkpoint of '{src}' would sit beside that run's files. Upgrade it in place "
                                   f"(OUT = SRC), or write it into a folder that holds no run."))


def _is_current(ckpt: Dict[str, Any]) -> bool:
    """Already in the current format: this version, sha256 digests (checked when it was read), the plain RNG."""
    return ckpt.get('version') == CHECKPOINT_VERSION and isinstance(ckpt.get('sha256'), dict) \
        and isinstance(ckpt['rng'], dict) and isinstance(ckpt['rng'].get('numpy'), dict)


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = CommandParser(prog='timm-cra-checkpoint',
                                     description='Trainer checkpoint tools.')
    sub = parser.add_subparsers(dest='command', metavar='{upgrade}', required=True)
    up = sub.add_parser('upgrade', help='rewrite an older last.pth in the current format (with sha256 digests)')
    up.add_argument('src', help='the trainer checkpoint to read (a last.pth)')
    up.add_argument('dst', help='where to write the upgraded checkpoint (may be src itself: replaced atomically)')
    args = parser.parse_args(argv)
    ckpt = upgrade_checkpoint(args.src, args.dst)
    if ckpt is None:
        print(f"{printable(args.src)} is already checkpoint version {CHECKPOINT_VERSION} with sha256 digests: "
              f"left unchanged.")
    else:
        print(f"Wrote {printable(args.dst)} (checkpoint version {ckpt['version']}, epoch {ckpt.get('epoch')}).")


if __name__ == '__main__':
    run_cli(main)
