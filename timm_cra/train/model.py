"""The model a training run starts from: random init, pretrained (Hub / local) or ``--initial-checkpoint``
weights, with the classifier and first conv fitted to the data's classes and channels."""
import logging
import os
from typing import List, Optional

import torch.nn as nn

from ..data import model_in_chans
from ..utils.errors import TimmCraError, UsageError, printable
from ..utils.labels import index_by_name, same_names
from ..utils.weights import load_state_checked, read_weights

__all__ = ['create_train_model']

_logger = logging.getLogger('timm_cra.train')


def _head_keys(model: nn.Module) -> List[str]:
    """State-dict keys of the classifier named by the model's pretrained cfg (e.g. ``fc.weight``, ``fc.bias``)."""
    names = model.pretrained_cfg.get('classifier') or []
    names = [names] if isinstance(names, str) else list(names)
    own = model.state_dict()
    return [f'{n}.{p}' for n in names for p in ('weight', 'bias') if f'{n}.{p}' in own]


def create_train_model(args, num_classes: int, label_names: Optional[List[str]] = None) -> nn.Module:
    """``timm.create_model`` with the weights the flags ask for, logging where they came from.

    ``--initial-checkpoint`` wins over ``--pretrained`` (nothing is downloaded then); ``--in-chans`` reaches
    timm, which adapts pretrained RGB first-conv weights; ``--reset-head`` re-initialises the classifier even
    when its class count matches the weights (timm already starts a fresh one when the count differs).
    ``label_names``: the data's classes, by which a kept head of an ``--initial-checkpoint`` that records its own
    (``last.pth``, the trainer's ``model.safetensors``) is matched.
    """
    import timm_cra  # registers the cra_* models
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
        model = timm_cra.create_model(args.model, pretrained=pretrained,
                                      allow_nonfinite=args.allow_nonfinite_weights, **kwargs)
    except TimmCraError as e:  # unknown model, no pretrained weights, ...
        raise UsageError(f"Cannot create model '{args.model}': {e}") from e
    head = _head_keys(model)
    # What the run starts from, recorded in the run's args (checkpoint, args.yaml) for the model card.
    args.initial_weights = None
    if args.initial_checkpoint:
        _load_initial_checkpoint(model, args.initial_checkpoint, head, args.reset_head, args.allow_nonfinite_weights,
                                 label_names)
        args.initial_weights = f'file {os.path.basename(args.initial_checkpoint)}'
    elif pretrained:
        cfg = model.pretrained_cfg
        source, loc = _resolve_pretrained_source(cfg)
        args.initial_weights = _pretrained_location(args.model, source, loc, cfg.get('hf_hub_id'))
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


def _pretrained_location(model_name: str, source: str, loc, hf_hub_id=None) -> str:
    """``<tag> (hf-hub <repo>@<commit>)``: the weights a pretrained run loaded, with the Hub commit the cached
    file belongs to (the revision actually downloaded). A local file is named by its basename only (the record
    goes on a public card), the copy bundled with timm-cra by the Hub repo it copies."""
    where = f'{source} {loc}' if isinstance(loc, str) else source
    if source == 'file' and isinstance(loc, str):
        from ..models._weight_checks import BUNDLED_DIR, WEIGHTS_FILENAME
        bundled = BUNDLED_DIR.joinpath(*hf_hub_id.split('/'), WEIGHTS_FILENAME) if hf_hub_id else None
        if bundled is not None and os.path.abspath(loc) == os.path.abspath(bundled):
            where = f'copy bundled with timm-cra of hf-hub {hf_hub_id}'
        else:
            where = f'file {os.path.basename(loc)}'
    if source == 'hf-hub' and isinstance(loc, str):
        from ..models._weight_checks import cached_weights, snapshot_commit, split_revision
        repo_id, revision = split_revision(loc)
        cached = cached_weights(repo_id, revision)
        commit = snapshot_commit(cached) if cached is not None else None
        if commit:
            where = f'hf-hub {repo_id}@{commit}'
    return f'{model_name} ({where})'


def _head_by_name(state, head: List[str], recorded, label_names: Optional[List[str]], path: str) -> None:
    """Reorder the head rows of ``state`` (one per class) from the ``recorded`` class order of the weights to the
    data's ``label_names`` when both name the same classes: by position, each class would start from another
    class's output (a run on ClassLabel [dog, cat] fine-tuned on folders cat/, dog/). Other names: a warning."""
    if not (isinstance(recorded, list) and all(isinstance(n, str) for n in recorded) and label_names and head) \
            or same_names(recorded, label_names):  # 'café' written decomposed (NFD, a macOS copy) is 'café'
        return
    order = index_by_name(label_names, recorded) if len(recorded) == len(label_names) else None
    if order is None:
        _logger.warning(f"'{printable(path)}' was trained on other classes ({printable(', '.join(recorded[:5]))}) "
                        f"than this data's: its head is kept by position; pass --reset-head for a fresh one.")
        return
    for k in head:
        state[k] = state[k][order]
    _logger.info(f"Head of '{printable(path)}' matched to the data's classes by name (its order: "
                 f"{printable(', '.join(recorded[:5]))})")


def _load_initial_checkpoint(model: nn.Module, path: str, head: List[str], reset_head: bool,
                             allow_nonfinite: bool = False, label_names: Optional[List[str]] = None) -> None:
    """Load ``path`` into ``model``: without the classifier when ``reset_head`` (or refuse a head that does not
    fit), with an RGB first conv adapted to the model's input channels; log what was left out. A kept head whose
    recorded class names are the data's in another order has its rows put in the data's order."""
    from timm.models import adapt_input_conv
    state, ckpt = read_weights(path)
    own = model.state_dict()
    dropped = [k for k in head if k in state and (reset_head or state[k].shape != own[k].shape)]
    if dropped and not reset_head:
        raise UsageError(f"The head of '{path}' ({tuple(state[dropped[0]].shape)}) does not fit {model.num_classes} "
                         f"classes: pass --reset-head to fine-tune a fresh head on the new classes.")
    if not reset_head:
        _head_by_name(state, [k for k in head if k in state], ckpt.get('label_names'), label_names, path)
    state.update({k: own[k] for k in dropped})  # the model's own fresh head
    first = model.pretrained_cfg.get('first_conv')
    for name in ([first] if isinstance(first, str) else list(first or [])):
        k = f'{name}.weight'
        if k in state and k in own and state[k].ndim == 4 and state[k].shape[1] != own[k].shape[1]:
            _logger.info(f'{k} adapted from {state[k].shape[1]} to {own[k].shape[1]} input channel(s)')
            state[k] = adapt_input_conv(own[k].shape[1], state[k])
    load_state_checked(model, state, path, hint='check --model and --model-kwargs', allow_nonfinite=allow_nonfinite)
    if reset_head:
        model.reset_classifier(model.num_classes)
    _logger.info(f"Weights: '{printable(path)}'"
                 + (f"; head re-initialised: {', '.join(dropped or head)}" if reset_head else ''))
