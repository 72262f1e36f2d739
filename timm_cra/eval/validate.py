"""Validate any registered model (random, ``--pretrained``, ``--checkpoint`` or ``hf-hub:``) on a dataset.

Uses the model's pretrained-cfg eval transform (``resolve_data_config`` + timm's eval transform: resize,
crop_pct, interpolation, mean/std) unless flags override it. Results follow timm's results CSV columns; the JSON
also records which weights were scored (``state_dict_sha256``) and what else the score depends on, the class each
output was scored as (``label_names``) and the preprocessing (``data_config``), which publish holds to the repo.
"""
import argparse
import csv
import io
import logging
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from timm.data import create_loader

from ..data import (check_labels, check_num_classes, create_dataset, map_classes_by_name, model_in_chans,
                    numbered_classes, resolve_model_data_config, skip_collate)
from ..models import check_model_name
from ..models._factory import label_count_problem
from ..utils.amp import amp_dtype_for
from ..utils.cli import (CommandParser, add_shared_args, check_positive, check_shared_values, check_use_ema,
                         data_name, input_files, resolve_pretrained)
from ..utils.errors import TimmCraError, UsageError, printable
from ..utils.extras import require_train_extra
from ..utils.io import atomic_write, check_output_file, file_digest, locked_folder, open_regular_file
from ..utils.labels import name_key
from ..utils.strict_json import dumps
from ..utils.weights import (DATA_CONFIG_KEYS, SCORED_DATA_CONFIG_KEYS, load_fitting_weights, recorded_data_config,
                             tensor_digest)
from .evaluate import evaluate

__all__ = ['create_parser', 'validate', 'write_results', 'RESULT_FIELDS']

_logger = logging.getLogger('timm_cra.validate')

#: timm's ``results-*.csv`` columns.
RESULT_FIELDS = ('model', 'top1', 'top1_err', 'top5', 'top5_err', 'param_count', 'img_size', 'crop_pct',
                 'interpolation')


def create_parser() -> argparse.ArgumentParser:
    p = CommandParser(prog='timm-cra-validate', description='Validate an image classifier (timm / timm-cra)',
                                allow_abbrev=False)
    groups = add_shared_args(p, batch_size=256, model_aliases=('-m',))
    add = groups['Dataset'].add_argument
    add('--split', default='validation', help="dataset split ('validation', 'val', 'test', ...)")
    add('--num-samples', type=int, default=None, help='evaluate only the first N examples')
    add = groups['Model'].add_argument
    add('--checkpoint', default='', metavar='PATH', help='model.safetensors, state dict, or trainer checkpoint')
    add('--use-ema', action='store_true', default=False, help='use the EMA weights of a trainer checkpoint')
    add('--crop-mode', default=None)
    add('--use-train-size', action='store_true', default=False,
        help="score at the model's train input size and crop even where its cfg has test ones (timm validate.py)")
    add = p.add_argument
    add('--results-file', default=None, help='write the result as JSON here')
    add('--results-csv', default=None, help="append a row in timm's results CSV format here")
    add('--no-progress', action='store_true', default=False)
    # As export: unset, hf-hub: / local-dir: models load their weights (--no-pretrained: random init).
    p.set_defaults(pretrained=None)
    next(a for a in p._actions if a.dest == 'pretrained').help = (
        'load the named weights (default: on for hf-hub: / local-dir: names, off for registry names; '
        '--no-pretrained: random init)')
    return p


def _create_model(args) -> Tuple[torch.nn.Module, Optional[List[str]], Dict[str, Any]]:
    """``(model, label_names, checkpoint)``: the names of the head's outputs, from the pretrained config or a trainer
    checkpoint's training split (None when neither names them), and the ``--checkpoint``'s dict (``{}``: none, or a
    bare state dict)."""
    import timm_cra
    kwargs = dict(args.model_kwargs or {})
    if args.in_chans is not None:
        kwargs['in_chans'] = args.in_chans
    if args.num_classes is not None:
        kwargs['num_classes'] = args.num_classes
    def create(**from_weights):
        try:
            return timm_cra.create_model(args.model, pretrained=args.pretrained,
                                         allow_nonfinite=args.allow_nonfinite_weights, **kwargs, **from_weights)
        except TimmCraError as e:  # unknown model, no pretrained weights, ...
            raise UsageError(f"Cannot create model '{args.model}': {e}") from e

    model = create()
    trained = (getattr(model, 'pretrained_cfg', None) or {}).get('num_classes') if args.pretrained else None
    if args.num_classes is not None and trained and args.num_classes != trained:
        # timm would put a new, random head on the pretrained weights: a confident result that means nothing.
        raise UsageError(f"--num-classes {args.num_classes} differs from the {trained} classes of the pretrained "
                         f"weights' head, and validation never replaces a trained head with a random one: drop "
                         f"--num-classes (a val set with a subset of the model's classes is mapped by name).")
    label_names = (getattr(model, 'pretrained_cfg', None) or {}).get('label_names') if args.pretrained else None
    ckpt: Dict[str, Any] = {}
    if args.checkpoint:
        # a --checkpoint tells its class count and channels (a fine-tune's last.pth): unless the flags set them
        model, ckpt = load_fitting_weights(model, args.checkpoint, create, keep=kwargs, use_ema=args.use_ema,
                                           allow_nonfinite=args.allow_nonfinite_weights)
        names = ckpt.get('label_names')  # a trainer checkpoint's: its training split's class names
        # every weight is the checkpoint's, its head's too: names of --model's config are another head's
        label_names = names if isinstance(names, list) and names and all(isinstance(n, str) for n in names) else None
        problem = label_count_problem(label_names, model.num_classes)
        if problem:  # mapped by name they would score outputs as other classes; by position, silently
            raise UsageError(printable(f"'{args.checkpoint}' records {problem}, so they cannot say which output is "
                                       f"which class: re-export the weights (the trainer and publish write one name "
                                       f"per output), or re-save its tensors without them."))
    return model, label_names, ckpt


#: The flags that set the preprocessing (validate's names of :data:`DATA_CONFIG_KEYS` and ``img_size``).
_SIZE_KEYS = ('input_size', 'img_size')


def _data_config_args(args: argparse.Namespace, model: torch.nn.Module, ckpt: Dict[str, Any]
                      ) -> Tuple[Dict[str, Any], str]:
    """``(the arguments the eval transform is resolved from, where its preprocessing comes from)``: a
    ``--checkpoint``'s recorded preprocessing (:func:`recorded_data_config`: the run's config.json or arguments) where
    no flag sets it (flags win); a checkpoint that records none is scored with the model's defaults, said in one
    warning line (a run trained with other --mean/--std scored 33.3 instead of 100.0, with exit 0)."""
    cfg_args = vars(args).copy()
    flags = [k for k in DATA_CONFIG_KEYS + ('img_size',) if cfg_args.get(k) not in (None, '')]  # --interpolation: ''
    by_flags = f" and {', '.join('--' + k.replace('_', '-') for k in flags)}" if flags else ''
    if not args.checkpoint:  # the model's own pretrained cfg (local-dir:, hf-hub:, a tag) is its preprocessing
        own = f"{args.model}'s pretrained cfg" if args.pretrained else f"{args.model}'s defaults"
        return cfg_args, own + by_flags
    recorded, where = recorded_data_config(args.checkpoint, ckpt.get('args') if isinstance(ckpt.get('args'), dict)
                                           else None)
    if not where:
        cfg = getattr(model, 'pretrained_cfg', None) or {}
        if not flags:
            _logger.warning(printable(
                f"'{args.checkpoint}' records no preprocessing (no run arguments, no config.json beside it): scored "
                f"with {args.model}'s default (mean {cfg.get('mean')}, std {cfg.get('std')}, input "
                f"{cfg.get('input_size')}); pass --mean/--std/--img-size/--interpolation/--crop-pct if the weights "
                f"were trained with others."))
        return cfg_args, f"{args.model}'s defaults (the checkpoint records none)" + by_flags
    size_flag = any(k in flags for k in _SIZE_KEYS)  # --img-size wins over a recorded input_size, and the reverse
    taken = {k: v for k, v in recorded.items() if k not in flags and not (k in _SIZE_KEYS and size_flag)}
    if taken:
        cfg_args.update(taken)
        try:
            check_shared_values(argparse.Namespace(**cfg_args))
        except UsageError as e:
            raise UsageError(printable(f"The preprocessing recorded in {where} cannot be used ({e}): pass the flags "
                                       f"that set it.")) from None
    source = (where if recorded else f"{where} (the architecture's defaults)") + by_flags
    _logger.info(printable(f'Preprocessing: {source}.'))
    return cfg_args, source


def validate(args: argparse.Namespace) -> Dict[str, Any]:
    """Evaluate ``args.model`` on ``args.data_dir``/``args.dataset``; returns timm-style results (+ loss)."""
    device = torch.device(args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    args.pretrained = resolve_pretrained(args.pretrained, args.model)
    _logger.info(f"Model {printable(args.model)}: " + ('pretrained weights' if args.pretrained else
                                                      'random initialisation (--no-pretrained or a registry name)')
                 + (f', then --checkpoint {printable(args.checkpoint)}' if args.checkpoint else ''))
    model, label_names, ckpt = _create_model(args)
    dataset = create_dataset(args.dataset, args.data_dir, args.split, num_samples=args.num_samples,
                             image_key=args.input_key, label_key=args.target_key, in_chans=model_in_chans(model),
                             split_flag='--split')
    head_fixed = bool(args.pretrained or args.checkpoint)
    mapped = None
    if label_names and len(label_names) == model.num_classes:
        check_labels(dataset)
        n_data = int(dataset.num_classes)
        if map_classes_by_name(dataset, label_names):
            mapped = f"by name: the dataset's {n_data} classes onto the model's {len(label_names)}"
            _logger.warning(f"Dataset classes mapped {mapped} label_names (the trained head is evaluated; a "
                            f"prediction of a class absent from the data counts as wrong).")
    shown = f"{', '.join(map(repr, dataset.class_names[:5]))}{' ...' if dataset.num_classes > 5 else ''}"
    if not mapped and head_fixed and (not label_names or numbered_classes(label_names)) \
            and not numbered_classes(dataset.class_names):
        # Weights that name no classes (a bare state dict, a .safetensors of another tool or of an older trainer):
        # the data's named classes can only be taken in their sorted order, which may not be the training order.
        mapped = 'by position'
        _logger.warning(f"The weights record no class names (label_names), so the dataset's classes {shown} are "
                        f"scored by position, which is right only if the model was trained with them in this "
                        f"order: validate a trainer's run folder with --model local-dir:<run>, or its last.pth.")
    elif not mapped and head_fixed and label_names and not numbered_classes(dataset.class_names) \
            and int(dataset.num_classes) == model.num_classes \
            and not {name_key(c) for c in dataset.class_names} & {name_key(c) for c in label_names}:
        # Named apart (pomme/ for apple, Apple/ for apple): scored by position as documented, never silently.
        mapped = 'by position'
        _logger.warning(printable(
            f"None of the dataset's classes {shown} is among the weights' class names "
            f"{', '.join(map(repr, label_names[:5]))}{' ...' if len(label_names) > 5 else ''}, so the data's sorted "
            f"classes are scored by position, which is right only if they are the model's classes in its order: "
            f"rename the class folders to the model's names to score by name."))
    check_num_classes(dataset, model.num_classes, label_names=label_names, head_fixed=head_fixed)
    scored_names = _scored_names(label_names, model.num_classes, dataset.class_names)
    cfg_args, preprocessing = _data_config_args(args, model, ckpt)
    # as timm's validate.py: a cfg's test_input_size / test_crop_pct, unless --use-train-size or a size is given
    data_config = resolve_model_data_config(cfg_args, model, use_test_size=not args.use_train_size)
    # The weights scored, whichever way they were loaded (a tag, hf-hub:, local-dir:, --checkpoint, random): the
    # trainer's digest of a model's tensors (its rank_state_sha256, last.pth's sha256['state_dict']), the same for
    # last.pth and the model.safetensors exported from it; publish compares it with the weights it publishes.
    state_dict_sha256 = tensor_digest(model.state_dict())
    model.to(device).eval()
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    loader = create_loader(
        dataset, input_size=data_config['input_size'], batch_size=args.batch_size, is_training=False,
        interpolation=data_config['interpolation'], mean=data_config['mean'], std=data_config['std'],
        crop_pct=data_config['crop_pct'], crop_mode=data_config.get('crop_mode'), num_workers=args.workers,
        collate_fn=skip_collate, device=device, use_prefetcher=False)
    amp_dtype = amp_dtype_for(args.amp, args.amp_dtype, device)
    m = evaluate(model, loader, device, amp_dtype, args.channels_last, progress=not args.no_progress,
                 desc=f'Validate {args.model}')
    if m['skipped']:
        _logger.warning(f"{m['skipped']} unreadable image(s) skipped (not counted in the metrics).")
    if m['nonfinite']:  # top-1 of NaN logits is arbitrary (50% on two classes): no score rather than a false one
        raise UsageError(f"The model's outputs are not finite (NaN / Inf logits) for {m['nonfinite']} of {m['count']} "
                         f"images, so they have no score: check the weights (a diverged run), --mean / --std, and "
                         f"drop --amp if float16 overflows.")
    return dict(
        model=args.model,
        top1=round(m['top1'], 3), top1_err=round(100 - m['top1'], 3),
        top5=round(m['top5'], 3), top5_err=round(100 - m['top5'], 3),
        param_count=round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        img_size=data_config['input_size'][-1], crop_pct=data_config['crop_pct'],
        interpolation=data_config['interpolation'],
        mean=list(data_config['mean']), std=list(data_config['std']), preprocessing=preprocessing,
        # What the score depends on beside the tensors (publish compares both with the repo it writes): the class
        # each output was scored as, in output order (None: data without names, scored by index), and the whole
        # preprocessing the images got (a header's relabelled classes or edited mean/std keep the tensors' digest).
        label_names=scored_names,
        data_config={k: list(v) if isinstance(v, tuple) else v for k, v in data_config.items()
                     if k in SCORED_DATA_CONFIG_KEYS},
        # What was scored, named as the trainer's results name their data (the card quotes it): the data, the split
        # the data names what was read (None: a folder or file that is one split itself), the images read (skipped
        # ones not counted).
        dataset=data_name(vars(args)), split=dataset.split,
        loss=round(m['loss'], 5), count=m['count'], skipped=m['skipped'],
        # Which weights were scored: the model's pretrained ones (hf-hub: / local-dir: load theirs by default), or a
        # --checkpoint, which replaces every tensor (named with its file's sha256); neither: a random initialisation.
        pretrained=bool(args.pretrained and not args.checkpoint), state_dict_sha256=state_dict_sha256,
        **({'checkpoint': args.checkpoint, 'checkpoint_sha256': file_digest(args.checkpoint),
            'checkpoint_weights': 'ema' if args.use_ema else 'state_dict'} if args.checkpoint else {}),
        **({'class_mapping': mapped} if mapped else {}),
    )


def _scored_names(label_names: Optional[List[str]], num_classes: int, data_names: Sequence[str]
                  ) -> Optional[List[str]]:
    """The class each of the model's outputs was scored as, in output order: the weights' own names when they name
    every output (the data's classes were matched to them by name), else the data's class names in its index order
    (scored by position: output ``i`` is the data's class ``i``); None when neither names the classes (numbered
    stand-ins ``'0'..'K-1'``: scored by index, whatever the names)."""
    if label_names and len(label_names) == num_classes and not numbered_classes(label_names):
        return list(label_names)
    names = [str(n) for n in data_names or ()]
    return names if names and not numbered_classes(names) else None


def check_result_paths(json_path: Optional[str] = None, csv_path: Optional[str] = None,
                       inputs: Sequence[str] = ()) -> None:
    """Refuse result paths that cannot be written (empty, a folder, a FIFO, a device, one of the command's input
    files, a path inside its ``--data-dir``) and one path for both results, before any work; and a ``csv_path`` whose
    folder another process holds past the wait (a training's run folder). ``None``: not asked for (``''`` given is an
    unset shell variable: it wrote nothing, exit 0)."""
    if json_path and csv_path and _same_place(json_path, csv_path):
        both = f'both {json_path}' if json_path == csv_path else f'one file ({json_path} and {csv_path})'
        raise UsageError(f"--results-file and --results-csv are {both}: the CSV would replace the JSON "
                         f"(or be refused after it was written); give each its own path.")
    if json_path is not None:
        check_output_file(json_path, '--results-file', inputs, new_folders=False)
    if csv_path is not None:
        check_output_file(csv_path, '--results-csv', inputs, new_folders=False)
        with _results_csv_lock(csv_path):  # a held folder is refused now, not after the whole evaluation
            read_results_csv(csv_path)  # a CSV rows cannot be appended to is refused now, not after the work


def _same_place(a: str, b: str) -> bool:
    """Whether two output paths name one file (also when it does not exist yet: same resolved path)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def read_results_csv(csv_path: str) -> str:
    """The text of an existing ``--results-csv`` ('' if there is none), refused in one line unless it is UTF-8 with
    the header of :data:`RESULT_FIELDS` (rows appended under another header would sit in the wrong columns)."""
    if not os.path.exists(csv_path):
        return ''
    with open_regular_file(csv_path, '--results-csv') as f:
        raw = f.read()
    try:
        text = raw.decode('utf-8')
    except UnicodeDecodeError:
        raise UsageError(f"--results-csv {csv_path} is not UTF-8 text (not a results CSV): choose another file.") \
            from None
    header = next(csv.reader(text.splitlines()[:1]), [])
    if text and header != list(RESULT_FIELDS):
        raise UsageError(f"--results-csv {csv_path} has another header ({','.join(header)[:80]}) than validate's "
                         f"({','.join(RESULT_FIELDS)}): choose another file, or one with that header.")
    reader = csv.reader(io.StringIO(text, newline=''), strict=True)
    try:
        for _ in reader:
            pass
    except csv.Error as e:  # an unterminated quote: the row appended after it would be read as part of that field
        raise UsageError(printable(f"--results-csv {csv_path} is not a well-formed CSV ({e} at line {reader.line_num}"
                                   f"; an unterminated quote?): a row appended to it would be lost inside it. Fix "
                                   f"that line, or choose another file.")) from None
    return text


# How long an append waits for the CSV's folder: another validate's append takes milliseconds; a training holds its
# run folder for its whole run, so past this the append is refused in one line instead of waiting silently.
RESULTS_CSV_LOCK_WAIT_S = 10.0


def _results_csv_lock(csv_path: str):
    """The lock on ``csv_path``'s folder (a link's target's: the folder written), waited for at most
    :data:`RESULTS_CSV_LOCK_WAIT_S`."""
    return locked_folder(os.path.dirname(os.path.realpath(csv_path)), wait=RESULTS_CSV_LOCK_WAIT_S,
                         busy_hint='a running training holds its run folder until it ends; write the CSV elsewhere')


def write_results(results: Dict[str, Any], json_path: Optional[str] = None, csv_path: Optional[str] = None) -> None:
    if json_path:
        with atomic_write(json_path) as f:
            f.write(dumps(results, indent=2))  # strict JSON: a NaN loss is null with a note
    if csv_path:
        # "Appending" rewrites the whole file atomically: a kill never leaves half a row. The folder lock makes
        # concurrent appends (several validations into one CSV) take turns: none reads a file another replaces.
        check_output_file(csv_path, '--results-csv')
        with _results_csv_lock(csv_path):
            old = read_results_csv(csv_path)
            with atomic_write(csv_path, newline='') as f:
                f.write(old)
                if old and not old.endswith('\n'):
                    f.write('\r\n')
                w = csv.DictWriter(f, fieldnames=RESULT_FIELDS, extrasaction='ignore')
                if not old:
                    w.writeheader()
                w.writerow(results)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = create_parser().parse_args(argv)
    require_train_extra('timm-cra-validate')  # after parsing: --help needs no extra
    check_shared_values(args)
    check_positive(args, 'batch_size', 'num_samples')
    check_model_name(args.model, flag='--model')
    check_use_ema(args.use_ema, args.checkpoint)
    check_result_paths(args.results_file, args.results_csv,
                       input_files(args.model, args.checkpoint) + [args.data_dir])
    results = validate(args)
    write_results(results, args.results_file, args.results_csv)
    print(dumps(results, indent=2))
    return results
