"""Publish CRA weights: checkpoint + eval results -> Hub repo folder (dry run) -> optional push to the Hub.

    python -m timm_cra.hub.publish cra_resnet18.my_tag <run>/last.pth --results <run>/results.json --out <folder>
    python -m timm_cra.hub.publish ... --push          # also create/update timm-cra/<name> on the Hub

Reads what the trainer writes (``last.pth``, or ``model.safetensors`` with its ``config.json``; the run's
``results.json`` and ``args.yaml``) and timm ``train.py`` checkpoints (``model_best.pth.tar``): how the model was
built (``model_kwargs``, ``num_classes``), its preprocessing (the fitted mean/std), its class names, its data and
the weights it started from come from the run's ``config.json`` or the checkpoint's ``args``, so they need not be
repeated. Class names are only ever the run's (or ``--label-names``), never the architecture's defaults.
Checkpoints go through the one safe reader, :mod:`timm_cra.utils.weights`.
The folder is written by :func:`timm_cra.hub.repo.export_repo`; pushing uploads it with ``huggingface_hub``
(``HfApi.create_repo`` + ``upload_folder``, one commit after which the repo holds the folder's files and its
``.gitattributes``, nothing else), authenticated by ``HF_TOKEN`` or ``hf auth login``.
"""
import argparse
import logging
import math
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch

from ..models._builder import PUBLIC_HUB_ENDPOINT, hub_id
from ..models._factory import pretrained_cfg_problem
from ..utils.cli import CommandParser, data_name, keyword_args_action
from ..utils.labels import name_key, numbered_classes, repeated_names, unusable_name
from ..utils.errors import (NO_ANSWER, NOT_A_HUB, TIMED_OUT, TimmCraError, UsageError, hub_failure, never_connected,
                            printable, run_cli)
from ..utils.hub_session import bounded_hub_requests
from ..utils.io import check_regular_file, file_digest
from ..utils.strict_json import is_count, loads, read_text
from ..utils.weights import (DATA_CONFIG_KEYS, check_file, load_state_checked, read_weights, setting_differences,
                             recorded_data_config, tensor_digest)
from .card import markdown_text, code_span, load_eval_results
from .repo import check_repo_output, export_repo

__all__ = ['load_checkpoint_state_dict', 'build_repo_folder', 'push_repo_folder', 'default_repo_id',
           'trainer_results', 'model_kwargs_for', 'run_provenance', 'read_label_names', 'check_repo_name',
           'check_inputs', 'main']

CLI = 'timm-cra-publish'


def load_checkpoint_state_dict(path: Union[str, Path], use_ema: bool = True) -> Dict[str, torch.Tensor]:
    """State dict from a ``.safetensors`` file or a trainer / timm checkpoint (``state_dict_ema`` preferred
    unless ``use_ema=False``: the weights timm's trainer evaluates as best)."""
    return read_weights(str(path), use_ema=use_ema)[0]


def _json(path: Path, what: str = 'file', bom: bool = False) -> Optional[Dict[str, Any]]:
    """``path``'s JSON object, or None when it is absent or not a JSON object; a FIFO, or a file over the JSON
    reader's cap, is a one-line error (:func:`~timm_cra.utils.strict_json.read_text`, ``bom`` as there)."""
    if not os.path.lexists(path):
        return None
    try:
        data = loads(read_text(path, what, bom))
    except (OSError, ValueError):  # not UTF-8 (UnicodeDecodeError), not JSON, nested too deep
        return None
    return data if isinstance(data, dict) else None


def model_kwargs_for(checkpoint: Union[str, Path], ckpt: Dict[str, Any]) -> Tuple[Optional[str], Dict[str, Any]]:
    """``(arch, create_model kwargs)`` the weights were trained with: the run folder's ``config.json``
    (``model_args``, written next to ``last.pth`` / ``model.safetensors`` by the trainer), else the checkpoint's
    ``args`` (``model``, ``model_kwargs``, ``num_classes``)."""
    config = _run_config(checkpoint)
    if config:
        kwargs = dict(config.get('model_args') or {})
        if config.get('num_classes') is not None:
            kwargs['num_classes'] = config['num_classes']
        return config.get('architecture'), kwargs
    args = ckpt.get('args') if isinstance(ckpt.get('args'), dict) else {}
    kwargs = dict(args.get('model_kwargs') or {})
    if args.get('in_chans') is not None:  # the trainer's --in-chans (a grey fine-tune)
        kwargs['in_chans'] = args['in_chans']
    names = ckpt.get('label_names')  # the trainer's last.pth: one name per output when the data named them
    if args.get('num_classes') is not None:
        kwargs['num_classes'] = args['num_classes']
    elif isinstance(names, list) and names:  # the class count came from the data
        kwargs['num_classes'] = len(names)
    arch = args.get('model') or ckpt.get('arch')
    if isinstance(arch, str) and ':' not in arch:
        arch = arch.split('.', 1)[0]  # `--model cra_cifar_resnet20.cifar10`: the tag named the starting weights
    return arch, kwargs


def _run_config(checkpoint: Union[str, Path]) -> Optional[Dict[str, Any]]:
    """The run folder's ``config.json`` (a Hub-format config with an ``architecture``), if there is one."""
    config = _json(Path(checkpoint).parent / 'config.json', "the run's config")
    return config if config and config.get('architecture') else None


def _run_args(checkpoint: Union[str, Path], ckpt: Dict[str, Any]) -> Dict[str, Any]:
    """The run's arguments: the checkpoint's ``args``, else the trainer's ``args.yaml`` next to the weights."""
    args = ckpt.get('args')
    if isinstance(args, dict):
        return args
    if args is not None and hasattr(args, '__dict__'):  # timm train.py: an argparse.Namespace
        return vars(args)
    path = Path(checkpoint).parent / 'args.yaml'
    if not os.path.lexists(path):
        return {}
    try:  # the train extra's; without it the card has no provenance lines
        from ..utils.strict_yaml import load_config_file
    except ImportError:
        return {}
    # refused as a config is (one line): skipped, the card would lose its lines on the data without a word
    return load_config_file(path, "the run's arguments")


def run_provenance(checkpoint: Union[str, Path], ckpt: Dict[str, Any]) -> Dict[str, Any]:
    """What the run recorded about the weights, for config and card: ``label_names`` (the data's class names),
    ``data_config`` (the preprocessing they were trained with, e.g. a fitted 1-channel mean/std),
    ``trained_on`` (the data) and ``base_weights`` (what a fine-tune started from). Missing ones are ``None``."""
    config = _run_config(checkpoint) or {}
    args = _run_args(checkpoint, ckpt)
    cfg = config.get('pretrained_cfg') or {}
    label_names = config.get('label_names') or cfg.get('label_names') or (
        ckpt.get('label_names') if not config and isinstance(ckpt.get('label_names'), list) else None)
    # the config's pretrained_cfg, else the run's args (timm train.py records the preprocessing it was asked for)
    data_config, where = recorded_data_config(str(checkpoint), args)
    data_config.pop('img_size', None)  # a side, not a pretrained cfg field
    problem = pretrained_cfg_problem(data_config, {})  # what the loaders would refuse is never published
    if problem:
        raise UsageError(printable(f"The preprocessing recorded in {where} cannot be published: {problem}. Publish "
                                   f"the run's last.pth with its config.json, or re-export the weights from the run "
                                   f"that trained them."))
    if not where and str(checkpoint).endswith('.safetensors'):  # a weights file alone (a run's checkpoint records
        # its arguments; a timm one without them is published as before): warned as validate warns
        logging.getLogger('timm_cra.publish').warning(printable(
            f"'{checkpoint}' records no preprocessing (no run arguments, no config.json beside it, none in its "
            f"header): the repo gets the architecture's default mean / std / input size; if the weights were "
            f"trained with others, publish the run's last.pth, or put its config.json beside the weights."))
    _check_provenance_text(args)
    data = data_name(args)
    trained_on = None
    if data:
        kind = args.get('dataset') or ''
        trained_on = (f"{code_span(data)} (" + (f'{markdown_text(kind)}, ' if kind and kind not in (data, f'hfds/{data}')
                                               else '')
                      + f"training split {code_span(args.get('train_split') or 'train')})")
    base = args.get('initial_weights')  # timm-cra's trainer records what it loaded (tag, Hub repo@commit, file)
    if base is None and args.get('initial_checkpoint'):
        base = f"file {os.path.basename(str(args['initial_checkpoint']))}"
    elif base is None and args.get('pretrained') and args.get('model'):
        base = f"{args['model']} (pretrained)"
    elif base is None and args:
        base = 'random initialisation'
    return dict(label_names=list(label_names) if label_names else None, data_config=data_config or None,
                trained_on=trained_on,
                base_weights=code_span(base) if base and base != 'random initialisation' else base)


#: The run's arguments the card quotes as text (the data, its split, the starting weights).
_PROVENANCE_KEYS = ('dataset', 'data_dir', 'train_split', 'initial_weights', 'initial_checkpoint', 'model')


def _check_provenance_text(args: Dict[str, Any]) -> None:
    """Refuse a run's argument the card would quote that is not text, or holds a line break or another character that
    is not printable (it forged a licence line and a heading in the card; ``dataset: 123`` was a traceback)."""
    for key in _PROVENANCE_KEYS:
        value = args.get(key)
        if value is None or value == '':
            continue
        if not isinstance(value, str):
            problem = f'is {type(value).__name__} {value!r:.40}, not text'
        else:
            unusable = unusable_name([value])
            problem = unusable[1] if unusable else None
        if problem:
            raise UsageError(printable(f"The run's arguments (args.yaml, or the checkpoint's args) record {key!r} that "
                                       f"{problem}: the card quotes it; fix it in the run's args.yaml (or publish "
                                       f"the run's intact last.pth)."))


def _label_names_file(value: str) -> Optional[Path]:
    """``--label-names`` as a file path, or None when it names nothing on disk (then it is the list itself;
    a value no file can have, e.g. over 255 bytes, is a list too)."""
    try:
        return Path(value) if os.path.lexists(value) else None
    except (OSError, ValueError):
        return None


def _looks_like_a_path(value: str) -> bool:
    """Whether a ``--label-names`` value that names no file was meant as one: a single value (no comma) holding a
    path separator or ending in a file suffix (``lab/clases.txt``, ``names.csv``)."""
    seps = {os.sep, os.altsep} - {None}
    return ',' not in value and (any(sep in value for sep in seps)
                                 or re.fullmatch(r'\.[A-Za-z][A-Za-z0-9]{0,4}', Path(value).suffix) is not None)


def read_label_names(value: str) -> List[str]:
    """``--label-names``: a comma-separated list, or a file with one name per line (a FIFO or folder: refused; a
    leading BOM skipped). A single value that looks like a path (:func:`_looks_like_a_path`) but names no file is
    refused: a typo'd path was taken as one class name."""
    path = _label_names_file(value)
    if path is not None:
        try:
            text = read_text(path, '--label-names file', bom=True)  # the BOM of Windows editors
            names = [line.strip() for line in text.splitlines()]
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"Cannot read --label-names file '{value}': {e}.") from e
        names = [n for n in names if n]
    elif _looks_like_a_path(value):
        raise UsageError(printable(f"--label-names file '{value}' does not exist: fix the path (class names given "
                                   f"on the command line are comma-separated: a,b,c)."))
    else:
        names = [n.strip() for n in value.split(',')]
    if not names or not all(names):
        raise UsageError(f"--label-names '{value:.200}' has an empty name: give a comma-separated list or a file "
                         f"with one name per line.")
    twice = repeated_names(names)
    if twice:
        raise UsageError(f"--label-names gives {', '.join(map(repr, twice[:5]))} more than once: give each class its "
                         f"own name, in class-index order.")
    return names


def check_repo_name(model_name: str, repo_id: Optional[str]) -> str:
    """The repo id the weights go to, refusing an empty tag and anything the Hub would refuse as a repo name
    (``huggingface_hub.utils.validate_repo_id``: no ``/``, ``..``, spaces; 96 characters at most)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id
    arch, _, tag = model_name.partition('.')
    if not arch or not tag:
        raise UsageError(f"'{model_name}' has no tag: name the weights <arch>.<tag>, e.g. "
                         f"{arch or 'cra_resnet18'}.mydata.")
    if repo_id is not None and ('/' not in repo_id or not all(repo_id.split('/'))):
        raise UsageError(f"--repo-id '{repo_id}' is not <org>/<name>: name the Hub account or organisation too, "
                         f"e.g. my-org/{default_repo_id(model_name).split('/')[-1]}.")
    repo_id = repo_id or default_repo_id(model_name)
    for name in {default_repo_id(model_name), repo_id}:
        try:
            validate_repo_id(name)
        except HFValidationError as e:
            what = '--repo-id' if name == repo_id and repo_id != default_repo_id(model_name) else 'the tag'
            raise UsageError(f"'{name}' is not a valid Hub repo name ({str(e).splitlines()[0].rstrip('.')}): "
                             f"change {what} to letters, digits, '-', '_' and '.'.") from e
    return repo_id


def registered_tag(model_name: str) -> Optional[str]:
    """The registered pretrained tag (``timm.list_pretrained``) that ``model_name`` names, compared case-insensitively
    as the Hub compares repo ids (``cra_cifar_resnet20.CIFAR10`` is ``cra_cifar_resnet20.cifar10``), or None."""
    import timm
    from .. import models  # noqa: F401  (registers cra_*)
    arch = model_name.split('.', 1)[0].lower()
    return next((t for t in timm.list_pretrained(f'{arch}.*') if t.lower() == model_name.lower()), None)


def warn_registered_tag(model_name: str, repo_id: str) -> None:
    """One warning line when the weights are published under a registered tag's name: its repo id is the project's
    (``timm-cra/<tag>``, where ``timm.create_model(tag, pretrained=True)`` downloads from), and any copy of it reads as
    those weights."""
    tag = registered_tag(model_name)
    if tag is None:
        return
    arch = tag.split('.', 1)[0]
    where = 'its repo' if repo_id.lower() == default_repo_id(tag).lower() else repo_id
    logging.getLogger('timm_cra.publish').warning(printable(
        f"'{model_name}' is the name of the registered weights {tag} (timm.create_model('{tag}', pretrained=True) "
        f"loads them from {default_repo_id(tag)}): published as {where}, yours would pass for those; name them "
        f"{arch}.<your tag>, e.g. {arch}.mydata."))


def trainer_results(summary: Dict[str, Any], ckpt: Dict[str, Any], ema: bool = False,
                    args: Optional[Dict[str, Any]] = None, name: str = "The trainer's results.json") -> Dict[str, Any]:
    """Eval results for the card from the trainer's ``results.json`` (the final epoch's eval, which is what
    ``last.pth`` / ``model.safetensors`` hold; ``ema``: the EMA weights' eval). ``name``: the file, for errors."""
    final = summary.get('final') or {}
    if not isinstance(final, dict):
        raise UsageError(f"{name}: 'final' must be an object, not {final!r:.60}; pass the results.json the trainer "
                         f"wrote.")
    prefix = 'ema_eval' if ema and final.get('ema_eval_top1') is not None else 'eval'
    best_key = 'best_ema' if prefix == 'ema_eval' else 'best'  # the best of the weights published, not the others'
    best = summary.get(f'{best_key}_top1')
    # Python's json reads Infinity / NaN, which the trainer never writes (strict JSON): an edited file.
    if best is not None and not (isinstance(best, (int, float)) and not isinstance(best, bool)
                                 and math.isfinite(best) and 0 <= best <= 100):
        raise UsageError(f"{name}: '{best_key}_top1' must be a percentage between 0 and 100, not {best!r:.60}; pass "
                         f"the results.json the trainer wrote.")
    if final.get(f'{prefix}_top1') is None:
        raise UsageError(f"{name} has no eval accuracy (the run had no validation split): "
                         "evaluate the weights with python -m timm_cra.eval --results-file R.json and pass "
                         "--results R.json.")
    if args is None:
        args = ckpt.get('args') if isinstance(ckpt.get('args'), dict) else {}
    dataset = data_name(args)  # None: the card says the results record none
    epochs = summary.get('epochs', len(ckpt.get('history') or []))
    # the split the evals read, as the data names it (older records lack it: the flag's name then)
    split = summary.get('val_split') or args.get('val_split') or 'validation'
    notes = (f"Top-1 measured by the timm-cra trainer on the '{split}' split after "
             f"the final epoch ({epochs} epochs, {summary.get('optimizer_steps', '?')} optimizer steps)"
             + (' with the EMA weights' if prefix == 'ema_eval' else ''))
    if best is not None:
        notes += f"; best epoch {summary.get(f'{best_key}_epoch')}: {best:.2f}%"
    images, skipped = summary.get('val_images'), final.get('eval_skipped') or 0
    count = images - skipped if is_count(images) and is_count(skipped) and images > skipped else None
    return dict(top1=final[f'{prefix}_top1'], top5=final.get(f'{prefix}_top5'), dataset=dataset,
                split=split, source='measured', notes=notes + '.', count=count)


def _check_same_run(summary: Dict[str, Any], checkpoint: Union[str, Path], ckpt: Dict[str, Any], name: str) -> None:
    """Refuse a trainer ``results.json`` of another run than the weights (a card would claim that run's epochs and
    metrics): a checkpoint's ``sha256['state_dict']`` must be one of its ``rank_state_sha256``, a ``.safetensors``
    file's sha256 one of its ``weights_sha256`` (recorded since that field exists; older records are accepted)."""
    if str(checkpoint).endswith('.safetensors'):
        recorded, digest = summary.get('weights_sha256'), None
        if isinstance(recorded, dict):
            digest = file_digest(checkpoint)
            recorded = list(recorded.values())
    else:
        recorded = summary.get('rank_state_sha256')
        digest = (ckpt.get('sha256') or {}).get('state_dict') if isinstance(ckpt.get('sha256'), dict) else None
    if digest is not None and isinstance(recorded, list) and digest not in recorded:
        raise UsageError(f"{name} is not the results of '{checkpoint}' (its sha256 of the weights differs): pass the "
                         f"results.json of the run that wrote these weights.")


def _check_scored_weights(data: Dict[str, Any], checkpoint: Union[str, Path], ema: bool, name: str,
                          model: torch.nn.Module) -> None:
    """Refuse validate's results of other weights than the ones published (the card would quote their numbers).
    ``state_dict_sha256`` (validate records it whichever way the weights were loaded: a tag, ``hf-hub:``,
    ``local-dir:``, ``--checkpoint``) must be the digest of ``model``'s tensors, the weights published, so a run's
    ``last.pth`` and its ``model.safetensors`` (one set of tensors, two files) are one; results older than that
    field are held to their ``checkpoint_sha256``, the published file's sha256. A ``checkpoint_weights`` (EMA or
    not) of the published file must be the part published; ``pretrained: false`` without a checkpoint scored a
    random initialisation. Results that record none of these (timm ``validate.py``, the hand-written schema) are
    taken as given."""
    validate_again = (f"validate the weights you publish (timm-cra-validate --checkpoint {checkpoint} "
                      f"--results-file R.json) and pass --results R.json")
    file_sha256, tensors_sha256 = data.get('checkpoint_sha256'), data.get('state_dict_sha256')
    scored = data.get('checkpoint') or data.get('model') or 'other weights'
    instead = f"publish {data['checkpoint']} instead, or " if data.get('checkpoint') else ''  # a file, not a model
    if file_sha256 is None and data.get('pretrained') is False:
        raise UsageError(printable(f"{name} scored a random initialisation of {data.get('model') or 'the model'} "
                                   f"(pretrained: false, no checkpoint), not '{checkpoint}': {validate_again}."))
    same_file = file_sha256 is not None and file_sha256 == file_digest(checkpoint)
    part = data.get('checkpoint_weights')  # a checkpoint holds two sets, a .safetensors file one
    if same_file and part in ('ema', 'state_dict') and (part == 'ema') != ema \
            and not str(checkpoint).endswith('.safetensors'):
        what = {True: 'its EMA weights', False: 'its plain weights (state_dict)'}
        raise UsageError(f"{name} scored {what[part == 'ema']} of '{checkpoint}' but {what[ema]} are published: "
                         f"{'drop --no-ema' if part == 'ema' else 'pass --no-ema'}, or {validate_again}"
                         f"{' with --use-ema' if ema else ''}.")
    if tensors_sha256 is not None:
        if tensors_sha256 != tensor_digest(model.state_dict()):
            raise UsageError(printable(f"{name} scored other weights than '{checkpoint}' (its state_dict_sha256 "
                                       f"{str(tensors_sha256)[:12]}... is the digest of the tensors of {scored}, not "
                                       f"of the weights published): {instead}{validate_again}."))
    elif file_sha256 is not None and not same_file:
        raise UsageError(printable(f"{name} scored other weights than '{checkpoint}' (its checkpoint_sha256 "
                                   f"{file_sha256[:12]}... is the sha256 of {data.get('checkpoint') or 'another file'}"
                                   f", not of this file): {instead}{validate_again}."))


#: validate's results fields recording what the score depends on beside the tensors, which publish compares with the
#: repo it writes (:func:`_check_scored_answers`); results of a validate older than them are refused.
SCORED_FIELDS = ('label_names', 'data_config')


def _shown_names(names: Sequence[Any], n: int = 4) -> str:
    return ', '.join(map(str, names[:n])) + (', ...' if len(names) > n else '')


def _check_scored_answers(data: Dict[str, Any], config: Dict[str, Any], checkpoint: Union[str, Path], name: str,
                          names_given: bool) -> None:
    """Refuse validate's results whose score the repo would not reproduce with the same tensors: the
    ``state_dict_sha256`` digest covers the tensors only, while the answers also depend on which class each output
    is named as and on the preprocessing. ``config``: the ``config.json`` publish writes. The results' ``label_names``
    (the classes the outputs were scored as, in output order) must be the repo's first names (a repo without names,
    ``'0'..'K-1'``, is scored by index as validate scored it), and their ``data_config`` the repo's ``pretrained_cfg``
    preprocessing; a header relabelled or given other mean / std after validation, a run folder's ``config.json``
    and ``--label-names`` in another order than the data's are refused. Results of timm-cra's validate (they record a
    digest or a checkpoint's sha256) from before these fields existed are refused: they cannot be checked."""
    validate_again = (f"validate the weights you publish (timm-cra-validate --checkpoint {checkpoint} "
                      f"--results-file R.json) and pass --results R.json")
    missing = [k for k in SCORED_FIELDS if data.get(k) is None and (k == 'data_config' or k not in data)]
    if missing:
        raise UsageError(printable(f"{name} records no {' or '.join(missing)} (written by an older timm-cra-validate),"
                                   f" so publish cannot tell whether the repo names the classes and preprocesses the "
                                   f"images as they were scored: {validate_again}."))
    scored, cfg = data['label_names'], data['data_config']  # their types: load_eval_results checked them
    unrecorded = [k for k in DATA_CONFIG_KEYS if k not in cfg]  # what a record lacks is compared with nothing
    if unrecorded:
        listed = ', '.join(unrecorded[:-1]) + (' or ' if len(unrecorded) > 1 else '') + unrecorded[-1]
        raise UsageError(printable(f"{name} records no {listed} in its data_config, so publish cannot tell whether the "
                                   f"repo preprocesses the images as they were scored: {validate_again}."))
    published = config.get('label_names')
    # numbered names ('0'..'K-1', the trainer's for unnamed data) are no names: scored by index, as validate records
    if scored and not numbered_classes(scored) and isinstance(published, list) and not numbered_classes(published):
        if len(scored) > len(published) or [name_key(n) for n in scored] != \
                [name_key(n) for n in published[:len(scored)]]:
            fix = (f"fix --label-names (class-index order: {_shown_names(scored)}), or {validate_again}"
                   if names_given else validate_again)
            raise UsageError(printable(f"{name} scored the outputs as the classes {_shown_names(scored)}, but the repo "
                                       f"would name them {_shown_names(published)}, so its answers are not the ones "
                                       f"scored: {fix}."))
    repo_cfg = dict(config.get('pretrained_cfg') or {})
    repo_cfg.setdefault('crop_mode', 'center')  # timm's default when a cfg names none
    cfg = dict(cfg)
    cfg.setdefault('crop_mode', 'center')  # as for the repo: a record naming none was scored with timm's default
    differ = setting_differences(cfg, repo_cfg, 'repo')
    if differ:
        raise UsageError(printable(f"{name} scored the images with other preprocessing than the repo would get "
                                   f"({'; '.join(differ)}): {validate_again}."))


def _validate_record(summary: Optional[Dict[str, Any]]) -> bool:
    """Whether a results file is timm-cra validate's record of the weights it scored (a digest or a checkpoint's
    sha256), whose answers :func:`_check_scored_answers` holds to the repo."""
    return isinstance(summary, dict) and any(k in summary for k in ('state_dict_sha256', 'checkpoint_sha256'))


def _trainer_record(summary: Optional[Dict[str, Any]]) -> bool:
    """Whether a results file is the trainer's ``results.json`` recording what its evals scored with (the class names
    and preprocessing, as validate's record; a trainer before them recorded neither, and its results are taken as
    before)."""
    return isinstance(summary, dict) and 'optimizer_steps' in summary and summary.get('data_config') is not None


def _results(results, ckpt: Dict[str, Any], ema: bool, args: Dict[str, Any], checkpoint: Union[str, Path] = '',
             model: Optional[torch.nn.Module] = None):
    if results is None:
        return results
    # a BOM (Windows editors) is read, as in a --label-names file
    summary = results if isinstance(results, dict) else _json(Path(results), '--results', bom=True)
    name = "The trainer's results.json" if isinstance(results, dict) else str(results)
    if summary is not None and 'final' in summary and 'optimizer_steps' in summary:
        if checkpoint:
            _check_same_run(summary, checkpoint, ckpt, name)
        # checked here, where the file is known, so its errors name it
        return load_eval_results(trainer_results(summary, ckpt, ema, args, name), name=name)
    if summary is None:  # unreadable: load_eval_results names the problem
        return results
    loaded = load_eval_results(summary, name=None if isinstance(results, dict) else name)  # the schema first
    if checkpoint and model is not None:
        _check_scored_weights(summary, checkpoint, ema, name if not isinstance(results, dict) else 'The eval results',
                              model)
    return loaded


def build_repo_folder(
        model_name: str,
        checkpoint: Union[str, Path],
        out_dir: Union[str, Path],
        *,
        results: Optional[Union[str, Path, Dict[str, Any]]] = None,
        recipe: Optional[str] = None,
        num_classes: Optional[int] = None,
        use_ema: bool = True,
        overwrite: bool = False,
        model_kwargs: Optional[Dict[str, Any]] = None,
        repo_id: Optional[str] = None,
        label_names: Optional[Sequence[str]] = None,
) -> Path:
    """Load ``checkpoint`` into ``model_name`` (``<arch>.<tag>``) strictly and export the repo folder.

    ``results``: eval JSON (timm ``validate.py`` / timm-cra schema) or the trainer's ``results.json``.
    Model kwargs recorded with the weights are used; ``model_kwargs`` / ``num_classes`` override them.
    ``label_names``: the class names, when the run records none (timm ``train.py``); the run's own win
    otherwise. Without either, the repo has no class names (never the architecture's default ones).
    """
    import timm
    from .. import models  # registers cra_*

    arch = model_name.split('.', 1)[0]
    state, ckpt = read_weights(str(checkpoint), use_ema=use_ema)
    used_ema = (use_ema and isinstance(ckpt.get('state_dict_ema'), dict) and bool(ckpt['state_dict_ema'])) \
        or Path(checkpoint).name == 'model_ema.safetensors'  # the trainer's EMA export
    trained_arch, kwargs = model_kwargs_for(checkpoint, ckpt)
    if trained_arch and ':' not in trained_arch and trained_arch != arch:
        raise UsageError(f"'{checkpoint}' was trained as {trained_arch}, not {arch}: publish it as "
                         f"{trained_arch}.<tag>.")
    kwargs.update(model_kwargs or {})
    if num_classes is not None:
        kwargs['num_classes'] = num_classes
    try:
        models.check_model_name(arch)  # an unknown name is an UnknownModelError naming the closest ones
        model = timm.create_model(arch, **kwargs)  # no tag: the weights define it, it need not be registered
    except (TimmCraError, TypeError) as e:  # TypeError: model kwargs the architecture does not take
        raise UsageError(f"Cannot build {arch} with {kwargs}: {e}") from e
    load_state_checked(model, state, str(checkpoint),
                       hint=f'{arch}{" with " + str(kwargs) if kwargs else ""}: pass the architecture and '
                            f'--num-classes the checkpoint was trained with')
    provenance = run_provenance(checkpoint, ckpt)
    source = results
    record = _json(Path(source), '--results', bom=True) if isinstance(source, (str, Path)) else source
    results = _results(results, ckpt, used_ema, _run_args(checkpoint, ckpt), checkpoint, model)
    if label_names is not None:
        recorded = provenance['label_names']
        # '0'..'K-1' are what a repo without names records (numbered_classes): names given now are not a change
        if recorded and list(recorded) != list(label_names) and not numbered_classes(recorded):
            raise UsageError(f"'{checkpoint}' records its class names ({', '.join(recorded[:5])}"
                             f"{', ...' if len(recorded) > 5 else ''}): drop --label-names.")
        provenance['label_names'] = list(label_names)
    check_config = None
    if results is not None and (_validate_record(record) or _trainer_record(record)):  # held to the repo as
        # written, before it is in place
        name = str(source) if not isinstance(source, dict) else \
            "The trainer's results.json" if _trainer_record(record) else 'The eval results'
        check_config = lambda config: _check_scored_answers(record, config, checkpoint, name,  # noqa: E731
                                                            label_names is not None)
    try:
        return export_repo(model.eval(), out_dir, model_name=model_name, repo_id=repo_id, results=results,
                           recipe=recipe, overwrite=overwrite, check_config=check_config, **provenance)
    except FileExistsError as e:  # atomic_folder's "pass overwrite=True" (bad content is a RepoContentError)
        raise UsageError(str(e).replace('timm_cra: ', '')) from e


#: Seconds any one request of a push may take, headers and body (:func:`bounded_hub_requests`): huggingface_hub's
#: shared client sets no time-out, so a Hub that never answered, or trickled its answer, hung ``--push`` forever.
PUSH_TIMEOUT_S = 60.0


def push_repo_folder(
        folder: Union[str, Path],
        repo_id: str,
        *,
        token: Optional[str] = None,
        private: bool = False,
        commit_message: Optional[str] = None,
        timeout: Optional[float] = None,
) -> str:
    """Create/update ``repo_id`` on the Hub with the folder's files, deleting the repo's other files (but
    ``.gitattributes``) in the same commit; returns the commit URL.

    The token comes from ``token``, ``HF_TOKEN`` or the ``hf auth login`` store; without one this fails
    before any network request. Every request huggingface_hub makes for the push completes within ``timeout`` seconds
    (default :data:`PUSH_TIMEOUT_S`), headers and body: a Hub that accepts the connection and never answers, or
    trickles its answer, is one line. File bytes sent through Xet (``hf_xet``, used when installed) go through
    hf_xet's own client, which this does not bound (its own connect / read time-outs; none for a shard upload's
    answer); ``HF_HUB_DISABLE_XET=1`` avoids it.
    """
    from huggingface_hub import HfApi, constants, get_token
    from huggingface_hub.errors import HfHubHTTPError
    folder = Path(folder)
    files = sorted(p.name for p in folder.iterdir())
    for required in ('config.json', 'model.safetensors', 'README.md'):
        if required not in files:
            raise UsageError(f'{folder} has no {required}; build it with {CLI} (without --push) first.')
    token = token or get_token()
    if not token:
        raise UsageError('Pushing needs a Hugging Face token with write access: run `hf auth login` or set HF_TOKEN '
                         '(the dry run without --push needs none).')
    if constants.HF_HUB_OFFLINE:
        raise UsageError('HF_HUB_OFFLINE=1 is set; unset it to push to the Hub.')
    endpoint = constants.ENDPOINT
    if not endpoint.strip():
        raise UsageError('HF_ENDPOINT is set but empty: unset it (to push to https://huggingface.co) or set it to '
                         "your Hub's URL.")
    timeout = PUSH_TIMEOUT_S if timeout is None else timeout
    api = HfApi(token=token)
    rerun = f'the repo folder {folder} is complete: rerun with --overwrite --push'
    try:
        with bounded_hub_requests(timeout):
            api.create_repo(repo_id, repo_type='model', private=private, exist_ok=True)
            # The commit the folder replaces: the Hub refuses ours (412) if another lands before it, whose files
            # the deletions below, listed earlier, would have left beside the folder's
            head = api.repo_info(repo_id, repo_type='model').sha
            ignored = _files_the_hub_ignores(api, repo_id, folder)
            # named once pushed: another's file (a NOTES.md added on the Hub since the last publish) goes too
            removed = sorted(set(api.list_repo_files(repo_id, repo_type='model', revision=head)) - set(files)
                             - {'.gitattributes'})
            # the card a colleague may have edited on the Hub: replaced whole by the one built here, said below
            card_replaced = _card_differs(api, repo_id, head, folder / 'README.md')
            if ignored:  # the commit would skip them: the Hub would serve the new card over the old weights
                raise UsageError(f"{repo_id} at {endpoint} would ignore {', '.join(ignored)} (its .gitignore matches "
                                 f"them), so the push would leave the repo's old files under the new card; nothing "
                                 f"was committed: remove those patterns from the Hub repo's .gitignore, then {rerun}.")
            # delete_patterns: the repo's files the folder does not hold (an old alt.safetensors, a stale
            # preprocessor_config.json) go in the same commit, so the repo serves what the folder holds and nothing
            # else, as --overwrite does locally (huggingface_hub always keeps .gitattributes).
            info = api.upload_folder(
                repo_id=repo_id, folder_path=str(folder), repo_type='model', delete_patterns='*',
                commit_message=commit_message or f'Upload {repo_id.split("/")[-1]} (timm-cra)', parent_commit=head)
            if card_replaced:
                logging.getLogger('timm_cra.publish').warning(
                    f"The push replaced the README.md of {repo_id}, which was not this card (an earlier publish's, or "
                    f"edited on the Hub: edits are not merged), with the card built here; the previous one stays in "
                    f"the repo's history, at commit {head}.")
            if removed:
                logging.getLogger('timm_cra.publish').warning(printable(
                    f"The push removed from {repo_id} the file(s) the folder does not hold: "
                    f"{', '.join(removed[:10])}{f' and {len(removed) - 10} more' if len(removed) > 10 else ''}; "
                    f"they stay in the repo's history, at commit {head}."))
    except HfHubHTTPError as e:
        status = getattr(e.response, 'status_code', None)
        if status == 412:  # parent_commit: no longer the head
            raise UsageError(f"Pushing {folder} to {repo_id} at {endpoint} failed: another commit landed on {repo_id} "
                             f"during the push, so this one was not committed (the repo would not have held exactly "
                             f"the folder's files); {rerun}.") from e
        if status is not None and status >= 500:
            advice = f'a server error, not yours: retry later; {rerun}'
        elif status == 403 and endpoint.rstrip('/') != PUBLIC_HUB_ENDPOINT:  # a mirror, not the token's fault
            advice = f'the endpoint {endpoint} refused writes: HF_ENDPOINT points at it; unset HF_ENDPOINT to push to ' \
                     f'huggingface.co'
        else:
            advice = "check the token's write access and the repo id"
        # huggingface_hub ends the server's message with a period of its own: one is enough.
        raise UsageError(f"Pushing {folder} to {repo_id} at {endpoint} failed: "
                         f"{str(e).splitlines()[0].rstrip('.')} ({advice}).") from e
    except Exception as e:  # noqa: BLE001  (the HTTP library's own error classes; only transport failures and
        # answers that are not the Hub API's are ours)
        kind = hub_failure(e)
        if kind is None:
            raise
        reason = f'{type(e).__name__}: {str(e).splitlines()[0]:.150}' if str(e) else type(e).__name__
        if kind == NOT_A_HUB:
            raise UsageError(f"Pushing to {repo_id} failed: the endpoint {endpoint} answered, but not as a Hugging "
                             f"Face Hub does ({reason}); check that HF_ENDPOINT points at a Hub (not a proxy's or a "
                             f"web site's page); {rerun} once it does.") from e
        # No connection, or one closed before any answer: nothing reached the Hub. A time-out or a connection that
        # broke mid-request may have: told apart so the advice fits.
        if kind == NO_ANSWER and not never_connected(e):  # the request was read: it may have been carried out
            raise UsageError(f"Pushing to {repo_id} failed: the Hub endpoint {endpoint} closed the connection without "
                             f"answering ({reason}), so the push may have landed (look at {repo_id} on the Hub); "
                             f"{rerun} (check HF_ENDPOINT and the network).") from e
        if kind == NO_ANSWER:
            raise UsageError(f"Pushing to {repo_id} failed: cannot connect to the Hub endpoint {endpoint} "
                             f"({str(e).splitlines()[0] if str(e) else type(e).__name__}); nothing was uploaded and "
                             f"the repo folder {folder} is complete: check HF_ENDPOINT and the network, then rerun "
                             f"with --overwrite --push.") from e
        if kind == TIMED_OUT:
            raise UsageError(f"Pushing to {repo_id} failed: the Hub endpoint {endpoint} did not answer within "
                             f"{timeout:g} s ({reason}); {rerun} once it answers (check HF_ENDPOINT; a slow link: "
                             f"raise --timeout).") from e
        raise UsageError(f"Pushing to {repo_id} failed: the connection to the Hub endpoint {endpoint} broke "
                         f"({reason}); {rerun} (check HF_ENDPOINT and the network).") from e
    return str(getattr(info, 'commit_url', info))


#: A Hub card larger than this is not read to compare it with the folder's (it differs: ours are a few KB).
_MAX_CARD_BYTES = 1 << 20


def _card_differs(api, repo_id: str, head: str, card: Path) -> bool:
    """Whether the repo's ``README.md`` at ``head`` exists and is not ``card``'s bytes (read within the push's
    bounded requests; an oversized one is not downloaded)."""
    import tempfile
    from huggingface_hub.hf_api import RepoFile
    entry = next((e for e in api.list_repo_tree(repo_id, repo_type='model', revision=head)
                  if isinstance(e, RepoFile) and e.path == 'README.md'), None)
    if entry is None:
        return False
    ours = card.read_bytes()
    if entry.size != len(ours) or entry.size > _MAX_CARD_BYTES:
        return True
    with tempfile.TemporaryDirectory() as cache:
        theirs = Path(api.hf_hub_download(repo_id, 'README.md', repo_type='model', revision=head, cache_dir=cache))
        return theirs.read_bytes() != ours


def _files_the_hub_ignores(api, repo_id: str, folder: Path) -> List[str]:
    """The folder's files (a repo folder holds files only, beside ``.git``) that the Hub answers ``shouldIgnore`` for at
    preupload (its ``.gitignore`` matches them): ``create_commit`` leaves those out of the commit without a word.
    Asked before the commit, through the preupload huggingface_hub itself makes (LFS files are uploaded then, and
    not again by the commit)."""
    from huggingface_hub import CommitOperationAdd
    additions = [CommitOperationAdd(path_in_repo=p.name, path_or_fileobj=str(p))
                 for p in sorted(folder.iterdir()) if p.is_file()]
    api.preupload_lfs_files(repo_id, additions=additions, repo_type='model')
    return [a.path_in_repo for a in additions if a._should_ignore]


def default_repo_id(model_name: str) -> str:
    return hub_id(model_name)


def create_parser() -> argparse.ArgumentParser:
    p = CommandParser(prog=CLI, description=__doc__.splitlines()[0],
                                epilog='The folder loads with timm.create_model("local-dir:<folder>", pretrained=True).')
    p.add_argument('model_name', help='<arch>.<tag> the weights are published as, e.g. cra_resnet18.a1_in1k')
    p.add_argument('checkpoint', help="trainer last.pth or model.safetensors, or timm train.py's model_best.pth.tar")
    p.add_argument('--results', help="eval results JSON: the trainer's results.json, timm validate.py output, or "
                                     "the timm_cra schema")
    p.add_argument('--recipe', help='training recipe text for the model card')
    p.add_argument('--num-classes', type=int, help='classes of the checkpoint (default: as recorded with it)')
    p.add_argument('--model-kwargs', nargs='*', default={}, action=keyword_args_action(), metavar='K=V',
                   help='create_model kwargs (default: as recorded with the weights)')
    p.add_argument('--no-ema', action='store_true', help="use 'state_dict' even if 'state_dict_ema' exists")
    p.add_argument('--label-names', metavar='NAMES|FILE',
                   help='class names in class-index order, comma-separated or a file with one per line; only for '
                        "checkpoints that record none (timm train.py); the trainer's runs record their data's")
    p.add_argument('--repo-id', help='Hub repo id (default: timm-cra/<model_name>)')
    p.add_argument('--out', required=True, help='repo folder to write (e.g. hub/timm-cra/<model_name>)')
    p.add_argument('--overwrite', action='store_true',
                   help='replace an existing repo folder (its .git and .gitattributes are kept: a clone stays one)')
    p.add_argument('--push', action='store_true', help='upload the folder to the Hub (needs a token)')
    p.add_argument('--private', action='store_true', help='create the Hub repo as private')
    p.add_argument('--timeout', type=float, default=PUSH_TIMEOUT_S, metavar='SECONDS',
                   help='longest time any one request huggingface_hub makes for --push may take, answer included '
                        "(default: %(default)g); file bytes sent through Xet (hf_xet, used when installed) go through hf_xet's "
                        'own client, which this does not bound: set HF_HUB_DISABLE_XET=1 for a push bounded throughout')
    return p


def check_inputs(checkpoint: str, out: str, results: Optional[str] = None,
                 label_names: Optional[str] = None) -> None:
    """Before any work: every file publish reads is a regular file (a FIFO would block it forever), and none lies
    inside ``out``, which ``--overwrite`` replaces whole (the run folder as ``--out`` would lose its weights)."""
    inputs = [('checkpoint', checkpoint)]
    if results is not None:
        inputs.append(('--results', results))
    if label_names is not None and _label_names_file(label_names) is not None:
        inputs.append(('--label-names file', label_names))
    for what, path in inputs:
        if what == 'checkpoint':
            check_file(path)  # the weights reader's own check: missing, a folder, a FIFO
        else:
            check_regular_file(path, what)
    check_repo_output(out, '--out', inputs)


def main(argv: Optional[Sequence[str]] = None) -> Path:
    args = create_parser().parse_args(argv)
    if not 0 < args.timeout < float('inf'):  # nan too; inf would wait forever again
        raise UsageError(f'--timeout must be a positive, finite number of seconds, not {args.timeout:g}.')
    repo_id = check_repo_name(args.model_name, args.repo_id)
    warn_registered_tag(args.model_name, repo_id)
    check_inputs(args.checkpoint, args.out, args.results, args.label_names)
    folder = build_repo_folder(
        args.model_name, args.checkpoint, Path(args.out), results=args.results, recipe=args.recipe,
        num_classes=args.num_classes, use_ema=not args.no_ema, overwrite=args.overwrite,
        model_kwargs=args.model_kwargs, repo_id=repo_id,
        label_names=read_label_names(args.label_names) if args.label_names else None)
    shown = printable(folder)  # a name holding a newline cannot forge an output line
    print(f'Wrote {shown} (load it with timm.create_model("local-dir:{shown}", pretrained=True))')
    if args.push:
        print(f'Pushed: {push_repo_folder(folder, repo_id, private=args.private, timeout=args.timeout)}')
    else:
        print(f'Dry run: not pushed. Add --push to upload to {repo_id}.')
    return folder


if __name__ == '__main__':
    run_cli(main)
