"""``timm_cra.create_model``: ``timm.create_model`` with this package's error contract for every name form.

The ``cra_*`` entrypoints explain their own weight failures (:func:`._builder.create_cra_model`), but some
failures happen in timm before an entrypoint runs: fetching ``config.json`` for an ``hf-hub:`` name, reading a
``local-dir:`` folder, resolving the architecture name. This wrapper raises those as the same error classes.

timm reads a ``config.json`` without checking it (a list for ``architecture`` or ``"ten"`` for ``num_classes``
ends in an ``AttributeError`` / ``TypeError`` deep inside timm): :func:`check_model_config` checks it first
against the types of timm's ``PretrainedCfg`` and by building the architecture with its ``model_args`` on the
meta device.
"""
import contextlib
import dataclasses
import difflib
import json
import logging
import os
import re
import typing
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

from timm.models import PretrainedCfg

from ..utils.labels import repeated_names, unusable_name
from ..utils.errors import UsageError
from ..utils.io import earlier_run_note
from ._load_errors import PretrainedWeightsError, _local_weights, check_pretrained_tag, explain_pretrained_errors
from ..utils.input_limits import (CROP_MODES, INTERPOLATIONS, MAX_CROP_PCT, MAX_INPUT_CHANS, MAX_INPUT_PIXELS,
                                  MAX_INPUT_SIDE, MAX_NORM_VALUE, MIN_INPUT_SIDE, MIN_STD, crop_resize_problem)
from ._weight_checks import (PREPROCESSOR_FILENAMES, allow_nonfinite_weights, check_file_dtypes, check_file_fits,
                             check_finite_weights, check_hub_reachable, other_weights_problem, repo_file, repo_files,
                             snapshot_commit, split_revision, HubUnreachableError)

__all__ = ['create_model', 'check_model_name', 'UnknownModelError', 'close_model_names', 'check_model_config',
           'read_model_config', 'label_count_problem', 'repeated_names', 'weight_source_problem',
           'pretrained_cfg_problem']

_logger = logging.getLogger(__name__)


class UnknownModelError(UsageError, RuntimeError):
    """No architecture of that name is registered with timm (the message names the closest ones)."""

    def __init__(self, name: str, close: List[str], flag: Optional[str] = None):
        self.name, self.close = name, close
        super().__init__(f"Unknown {flag} '{name}'. {self.hint}" if flag
                         else f"timm_cra: unknown model '{name}'. {self.hint}")

    @property
    def hint(self) -> str:
        return (f"Did you mean: {', '.join(self.close)}?" if self.close
                else "timm.list_models('cra_*') lists the CRA models.")


def close_model_names(name: str, n: int = 5) -> List[str]:
    """Registered architecture (and ``<arch>.<tag>``) names closest to ``name``."""
    import timm
    arch, _, tag = name.partition('.')
    candidates = timm.list_models() + (timm.list_pretrained() if tag else [])
    return difflib.get_close_matches(name, candidates, n=n, cutoff=0.6)


#: PretrainedCfg fields whose annotation is narrower than what timm reads (timm's own cfgs use lists there).
_CFG_TYPES = {'first_conv': Optional[typing.Union[str, typing.Tuple[str, ...]]],
              'classifier': Optional[typing.Union[str, typing.Tuple[str, ...]]]}
#: Root keys of a timm ``config.json`` (``save_for_hf``) and their types; the rest of a legacy flat config is
#: the pretrained cfg itself.
_ROOT_TYPES = {'architecture': str, 'num_classes': int, 'num_features': Optional[int], 'global_pool': Optional[str],
               'label_names': Optional[typing.Tuple[str, ...]], 'label_descriptions': Optional[Dict[str, str]],
               'model_args': Dict[str, Any], 'pretrained_cfg': Dict[str, Any]}


def _fits(value: Any, hint: Any) -> bool:
    """Whether a JSON value matches a type annotation (JSON arrays stand for tuples; ``Tuple[X]`` is any length)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if origin is typing.Union:
        return any(_fits(value, a) for a in args)
    if origin is tuple:
        if not isinstance(value, list):
            return False
        if len(args) == 1 or (len(args) == 2 and args[1] is Ellipsis):
            return all(_fits(v, args[0]) for v in value)
        return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args))
    if origin is dict:
        return isinstance(value, dict) and all(_fits(v, args[1]) for v in value.values())
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, hint) if isinstance(hint, type) else True


_TYPE_NAMES = {str: 'a string', int: 'an integer', float: 'a number', bool: 'true or false', type(None): 'null'}


def _type_name(hint: Any) -> str:
    """A type annotation in JSON words: ``Optional[Tuple[int, int, int]]`` -> 'an array of 3 integers or null'."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:
        return ' or '.join(_type_name(a) for a in args)
    if origin is tuple:
        fixed = not (len(args) == 1 or (len(args) == 2 and args[1] is Ellipsis))
        item = _type_name(args[0]).split(' ', 1)[-1]
        return f'an array of {len(args)} {item}s' if fixed else f'an array of {item}s'
    if origin is dict:
        return 'an object'
    return _TYPE_NAMES.get(hint, str(hint))


def _json_type(value: Any) -> str:
    return {dict: 'an object', list: 'an array', str: 'a string', bool: 'a boolean', type(None): 'null'}.get(
        type(value), 'a number')


def label_count_problem(label_names: Any, num_classes: Any) -> Optional[str]:
    """Why class names do not fit a ``num_classes``-class head, or None: one name per class (the one check of
    published configs and of what the publisher writes; timm and transformers take any count silently and
    transformers then shows LABEL_n)."""
    if label_names is None or not isinstance(num_classes, int) or isinstance(num_classes, bool):
        return None
    if len(label_names) != num_classes:
        return f'{len(label_names)} label names for a {num_classes}-class head'
    return None


#: Ceiling on a config.json's head, far above every timm model (largest head: vit_base_patch16_224.bamboo, 115217
#: classes) and below what would allocate tens of GB before any check (num_classes 10**9 asked 256 GB).
MAX_NUM_CLASSES = 200_000
#: Ceilings on ``model_args`` that size the model, checked before anything is built (the check's own build on the
#: meta device took ~8 ms a block here, 70 s for ``blocks_per_stage: 3000``; a real build then allocates): blocks
#: per stage (timm's deepest stage has 36, ResNet-1202 for CIFAR 200), CRA's pooled size (the paper's is 7, the
#: largest map of a 224 px ResNet 56; ``cra_pool_size: 1000`` took 2 GB, 3000 over 12.5 GB) and, measured on the
#: meta build, parameters (``widths: [16, 32, 200000]`` asked 1.4 TB): at most 1e9 (4 GB in float32), or twice
#: the architecture's own count for the few larger ones.
MAX_BLOCKS_PER_STAGE = 256
MAX_CRA_POOL_SIZE = 64
MAX_MODEL_PARAMS = 1_000_000_000
#: ``model_args`` names of blocks per stage (this package's CIFAR ResNets, timm's ResNets / ViTs / Swins).
_DEPTH_ARGS = ('blocks_per_stage', 'layers', 'depth', 'depths')

#: ``pretrained_cfg`` fields that say where the weights come from. In a repo's ``config.json`` they would point
#: timm's ``hf-hub:`` load at another file (``hf_hub_filename``) or loader (``custom_load``) than the
#: ``model.safetensors`` that transformers, ``local-dir:`` and the registered tag read: one repo, two answers. timm
#: overrides the others for ``hf-hub:`` / ``local-dir:`` but they still misdescribe the repo; ``save_for_hf`` writes
#: none of them (``custom_load`` only as false), so a repo holding one was edited to. Refused, not ignored: nothing
#: the loader could pick would match what the repo claims.
_WEIGHT_SOURCE_FIELDS = ('hf_hub_filename', 'hf_hub_id', 'url', 'file', 'source', 'state_dict', 'custom_load')


#: ``create_model`` keywords that say what to load, not how to build: in a ``config.json``'s ``model_args`` they
#: would be acted on while the config is read (a file named there opened) and when timm builds the model.
_LOADING_ARGS = ('pretrained', 'pretrained_cfg', 'pretrained_cfg_overlay', 'checkpoint_path', 'cache_dir',
                 'pretrained_strict', 'pretrained_filter_fn', 'pretrained_model_args')

#: What transformers reads at a ``config.json``'s root, and the values it must hold in a timm repo: transformers builds
#: the architecture ``model_type`` names (``timm_wrapper``, or none: a timm layout; ``bert`` built a BERT),
#: loads the weights as ``dtype`` / ``torch_dtype`` (its ``dtype="auto"`` default: ``float16`` ran the model in half
#: precision while timm ran float32, the weights' dtype as publish writes them) and imports code ``auto_map`` names
#: (asking for ``trust_remote_code``). timm ignores all three, so one repo would give two models. ``save_for_hf`` and
#: publish write none of them; transformers' own ``save_pretrained`` writes the accepted values. Also
#: ``problem_type`` (``multi_label_classification``: the pipeline scores with a sigmoid, timm with a softmax) and
#: ``transformers_weights`` (transformers loads the file it names instead of ``model.safetensors``). And the keys
#: that pick transformers' processor class (``models/auto/image_processing_auto.py``, ``processing_auto.py``): the
#: image processor's ``image_processor_type`` and its older form ``feature_extractor_type`` (``ViTImageProcessor``:
#: the pipeline resized to 224 px with mean 0.5 instead of the timm fields; top-1 *cat* where timm said *airplane*),
#: ``processor_class`` and ``tokenizer_class`` (``AutoProcessor`` builds that class, or returns a tokenizer).
#: key -> (the values it may hold, what any other value makes transformers do; ``{arch}``: the config's architecture).
_FLOAT32_ONLY = (('float32',), "makes transformers load the weights in another precision than timm's float32")
_OTHER_PROCESSOR = "makes transformers preprocess with another processor than the TimmWrapperImageProcessor that " \
                   "applies config.json's timm fields"
_TRANSFORMERS_KEYS = {
    'model_type': (('timm_wrapper',), "makes transformers build another model than timm's {arch} (it reads "
                                      "'timm_wrapper', or none)"),
    'dtype': _FLOAT32_ONLY,
    'torch_dtype': _FLOAT32_ONLY,
    'auto_map': ((), 'names code for transformers to import (it would ask for trust_remote_code); timm builds this '
                     'model'),
    'problem_type': (('single_label_classification',), "makes transformers' pipeline score with a sigmoid, timm with "
                                                       "a softmax"),
    'transformers_weights': (('model.safetensors',), 'makes transformers load another file than the model.safetensors '
                                                     'timm reads'),
    'image_processor_type': (('TimmWrapperImageProcessor',), _OTHER_PROCESSOR),
    'feature_extractor_type': ((), _OTHER_PROCESSOR),
    'processor_class': ((), _OTHER_PROCESSOR),
    'tokenizer_class': ((), "makes transformers' AutoProcessor return a tokenizer instead of the "
                            "TimmWrapperImageProcessor that applies config.json's timm fields"),
}


def _transformers_key_problem(cfg: Dict[str, Any]) -> Optional[str]:
    """Why a ``config.json``'s root would make transformers load another model than timm does, or None
    (:data:`_TRANSFORMERS_KEYS`)."""
    for key, (allowed, effect) in _TRANSFORMERS_KEYS.items():
        value = cfg.get(key)
        if value is not None and not (isinstance(value, str) and value in allowed):
            fix = f"remove '{key}'" + (f' (or set it to "{allowed[0]}")' if _TRANSFORMERS_KEYS[key] is _FLOAT32_ONLY
                                        else '')
            return f"'{key}' {value!r:.60} {effect.format(arch=repr(cfg.get('architecture'))[:40])}: {fix}"
    return None


def _label_map_problem(cfg: Dict[str, Any], label_names: Optional[Sequence[str]]) -> Optional[str]:
    """Why a root ``id2label`` / ``label2id`` would make transformers name classes otherwise than timm, or None:
    ``TimmWrapperConfig`` replaces them with ``label_names`` when those are at the root, and uses them as they are
    when not (timm then answers class indices); so they may only say what ``label_names`` says."""
    names = list(label_names or [])
    expected = {'id2label': {str(i): n for i, n in enumerate(names)}, 'label2id': {n: i for i, n in enumerate(names)}}
    for key in ('id2label', 'label2id'):
        value = cfg.get(key)
        if value is None:
            continue
        given = {str(k): v for k, v in value.items()} if isinstance(value, dict) else value
        if given != expected[key]:
            return f"'{key}' names the classes unlike 'label_names' " + \
                   ("(absent: timm answers class indices, transformers these names)" if not names else
                    "(transformers reads label_names then, but the repo says two things)") + \
                   f": remove '{key}' and give the names as 'label_names', in class-index order"
    return None


def pretrained_cfg_problem(pretrained: Dict[str, Any], model_args: Dict[str, Any]) -> Optional[str]:
    """Why a ``pretrained_cfg`` (config.json's, or preprocessing recorded beside weights) cannot be used, or None:
    a key unknown to timm's ``PretrainedCfg``, a value of the wrong type, a weight source
    (:func:`weight_source_problem`), preprocessing that describes no input (:func:`preprocessing_problem`)."""
    fields = {f.name: f.type for f in dataclasses.fields(PretrainedCfg)}
    hints = typing.get_type_hints(PretrainedCfg)
    for key, value in pretrained.items():
        if key not in fields:
            return f"pretrained_cfg key '{key}' is unknown to timm's PretrainedCfg (remove it)"
        hint = _CFG_TYPES.get(key, hints[key])
        if not _fits(value, hint):
            return f"pretrained_cfg '{key}' must be {_type_name(hint)}, not {_json_type(value)} ({value!r:.60})"
    return weight_source_problem(pretrained) or preprocessing_problem(pretrained, model_args)


def preprocessing_problem(pretrained: Dict[str, Any], model_args: Dict[str, Any]) -> Optional[str]:
    """Why the preprocessing fields of a (type-checked) ``pretrained_cfg`` cannot describe an input, or None: timm
    uses them unchecked (a NaN mean normalises every image to NaN and scores chance, a zero std or size is a raw
    traceback, an unknown interpolation a ``KeyError``)."""
    import math
    sizes = {k: pretrained[k] for k in ('input_size', 'test_input_size', 'min_input_size') if pretrained.get(k)}
    for key, size in sizes.items():
        if not all(isinstance(v, int) and v > 0 for v in size):
            return f"pretrained_cfg '{key}' {size} must be positive integers (channels, height, width)"
        if any(v < MIN_INPUT_SIDE for v in size[1:]):
            return f"pretrained_cfg '{key}' {size} is too small: at least {MIN_INPUT_SIDE} px a side (an image " \
                   f"that small holds no picture)"
        if size[0] > MAX_INPUT_CHANS or any(v > MAX_INPUT_SIDE for v in size[1:]) or \
                size[1] * size[2] > MAX_INPUT_PIXELS:
            return f"pretrained_cfg '{key}' {size} is too large: at most {MAX_INPUT_CHANS} channels, " \
                   f"{MAX_INPUT_SIDE} px a side and {MAX_INPUT_PIXELS} pixels (4096 x 4096)"
    in_chans = model_args.get('in_chans') if isinstance(model_args.get('in_chans'), int) else None
    in_chans = in_chans or (sizes['input_size'][0] if 'input_size' in sizes else 3)
    for key in ('mean', 'std'):
        values = pretrained.get(key)
        if values is None:
            continue
        if not values or len(values) not in (1, in_chans):
            return f"pretrained_cfg '{key}' has {len(values)} values: give one per input channel ({in_chans}), or one"
        if not all(math.isfinite(v) and (key == 'mean' or v > 0) for v in values):
            return f"pretrained_cfg '{key}' {values} must be finite numbers" + (' above 0' if key == 'std' else '')
        if not all((0 if key == 'mean' else MIN_STD) <= v <= MAX_NORM_VALUE for v in values):
            return f"pretrained_cfg '{key}' {values} must be from {0 if key == 'mean' else MIN_STD} to " \
                   f"{MAX_NORM_VALUE}: timm normalises images scaled to [0, 1] (ImageNet's {key} is " \
                   f"{'[0.485, 0.456, 0.406]' if key == 'mean' else '[0.229, 0.224, 0.225]'}; one on the 0-255 " \
                   f"scale is divided by 255)"
    for key in ('crop_pct', 'test_crop_pct'):
        value = pretrained.get(key)
        if value is not None and not (math.isfinite(value) and 0 < value <= MAX_CROP_PCT):
            return f"pretrained_cfg '{key}' must be a number in (0, {MAX_CROP_PCT}] (the crop's share of the resized " \
                   f"image), not {value}"
        size = sizes.get('test_input_size' if key == 'test_crop_pct' else 'input_size') or PretrainedCfg.input_size
        if value is not None and crop_resize_problem(size[1:], value):
            return f"pretrained_cfg '{key}' {value}: {crop_resize_problem(size[1:], value)}"
    if pretrained.get('interpolation') not in (None, '', *INTERPOLATIONS):
        return f"pretrained_cfg 'interpolation' {pretrained['interpolation']!r:.40} is not one timm knows " \
               f"({', '.join(INTERPOLATIONS)})"
    if pretrained.get('crop_mode') not in (None, *CROP_MODES):
        return f"pretrained_cfg 'crop_mode' {pretrained['crop_mode']!r:.40} is not one timm knows " \
               f"({', '.join(CROP_MODES)})"
    return None


def weight_source_problem(pretrained: Dict[str, Any], ignore: Sequence[str] = ()) -> Optional[str]:
    """Why a repo's pretrained cfg must not be loaded as it is, or None: it holds :data:`_WEIGHT_SOURCE_FIELDS`
    (``ignore``: those timm or the caller set)."""
    redirects = [key for key in _WEIGHT_SOURCE_FIELDS if key not in ignore and pretrained.get(key)]
    if not redirects:
        return None
    return (f"pretrained_cfg '{redirects[0]}' ({pretrained[redirects[0]]!r:.60}) says where to load weights from: a "
            f"repo's weights are its model.safetensors, which transformers, local-dir: and the registered tag read; "
            f"remove {', '.join(map(repr, redirects))}")


#: The most values (numbers, strings, lists, dicts) a model_args mapping may hold: real ones hold a few dozen. A
#: 600-byte YAML of aliases holds 10**10, which any walk of it would visit for hours.
MAX_MODEL_ARGS_VALUES = 100_000


def _values(value: Any) -> Iterator[Any]:
    """Every value nested in a JSON / YAML value, without recursion; past :data:`MAX_MODEL_ARGS_VALUES` a
    ``ValueError``."""
    stack, count = [value], 0
    while stack:
        v = stack.pop()
        count += 1
        if count > MAX_MODEL_ARGS_VALUES:
            raise ValueError(f'more than {MAX_MODEL_ARGS_VALUES} values')
        yield v
        if isinstance(v, (list, tuple)):
            stack.extend(v)
        elif isinstance(v, dict):
            stack.extend(v.values())


def _non_finite(value: Any) -> bool:
    """Whether a JSON value holds NaN or Inf (Python's ``json`` reads ``NaN`` / ``Infinity``)."""
    import math
    return any(isinstance(v, float) and not math.isfinite(v) for v in _values(value))


def _model_args_problem(model_args: Dict[str, Any], pretrained: Dict[str, Any]) -> Optional[str]:
    """Why ``model_args`` cannot be built, before building them: a NaN / Inf (a raw torch error), a depth or CRA
    pool size past its ceiling (gigabytes allocated before any error)."""
    try:
        for _ in _values(model_args):
            pass
    except ValueError as e:
        return f"model_args values: {e} (lists nested in one another, or one repeated many times); give plain settings"
    for key, value in model_args.items():
        if _non_finite(value):
            return f"model_args '{key}' {value!r:.60} must be finite numbers"
    for key, most in (('num_classes', MAX_NUM_CLASSES), ('in_chans', MAX_INPUT_CHANS)):
        value = model_args.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and not 0 <= value <= most:
            return f"model_args '{key}' {value} must be 0 to {most}"
    for key in _DEPTH_ARGS:
        value = model_args.get(key)
        values = value if isinstance(value, list) else [value]
        if value is not None and any(isinstance(v, int) and not isinstance(v, bool) and v > MAX_BLOCKS_PER_STAGE
                                     for v in values):
            return f"model_args '{key}' {value!r:.60} is too deep: at most {MAX_BLOCKS_PER_STAGE} blocks a stage"
    if 'cra_pool_size' in model_args:
        value = model_args['cra_pool_size']
        values = value if isinstance(value, list) else [value]
        side = min((pretrained.get('input_size') or PretrainedCfg.input_size)[1:])
        ceiling = min(side, MAX_CRA_POOL_SIZE)
        if not (values and len(values) <= 2 and all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= ceiling
                                                    for v in values)):
            return f"model_args 'cra_pool_size' {value!r:.60} must be an integer (or two) from 1 to {ceiling} (at " \
                   f"most the input side, {side} px, and {MAX_CRA_POOL_SIZE})"
    return None


def _model_size_problem(arch: str, model: Any) -> Optional[str]:
    """Why a model built on the meta device is too large to build for real, or None (:data:`MAX_MODEL_PARAMS`)."""
    import timm

    def size(m) -> int:
        return sum(t.numel() for t in (*m.parameters(), *m.buffers()))

    count = size(model)
    if count <= MAX_MODEL_PARAMS:
        return None
    default = size(timm.create_model(arch, device='meta'))
    if count <= 2 * default:
        return None
    return f"'model_args' make {arch} {count:.3g} parameters, more than {MAX_MODEL_PARAMS:.0e} (4 GB) and twice its " \
           f"default {default:.3g}: make the model smaller"


def _forward_problem(model: Any, model_args: Dict[str, Any], pretrained: Dict[str, Any]) -> Optional[str]:
    """Why a model built on the meta device from ``model_args`` cannot classify its input, or None: one forward of
    the config's ``input_size`` on the meta device (shapes only). ``global_pool: ""`` (no pooling) built, then
    every validate died in a ``mat1 and mat2 shapes`` traceback. An operation without a meta kernel proves
    nothing and passes."""
    import torch
    chans, height, width = pretrained.get('input_size') or PretrainedCfg.input_size
    chans = model_args.get('in_chans', chans) if isinstance(model_args.get('in_chans'), int) else chans
    try:
        with torch.no_grad():
            out = model.eval()(torch.empty(1, chans, height, width, device='meta'))
    except NotImplementedError:
        return None
    except Exception as e:  # noqa: BLE001  (a shape error of any layer: RuntimeError, AssertionError, ValueError)
        first = (str(e).strip().splitlines() or [''])[0]
        return f"'model_args' {json.dumps(model_args)[:120]} build a model that cannot classify a {chans} x " \
               f"{height} x {width} input ({type(e).__name__}: {first:.120}); fix or remove them"
    if isinstance(out, torch.Tensor) and out.ndim != 2 and getattr(model, 'num_classes', 1):  # 0: a feature map
        return f"'model_args' {json.dumps(model_args)[:120]} build a model whose output has shape " \
               f"{tuple(out.shape)}, not (batch, classes): fix or remove them"
    return None


def check_model_config(cfg: Any, where: str) -> None:
    """Raise :class:`PretrainedWeightsError` (one line naming the key and the fix) for a ``config.json`` that timm
    would fail on or misread: not an object, ``architecture`` missing / not a string / not registered, a root
    or ``pretrained_cfg`` value of the wrong type or unknown to timm's ``PretrainedCfg``, preprocessing fields that
    describe no input (:func:`pretrained_cfg_problem`), ``model_args`` that do not build the architecture."""
    import timm

    def bad(problem: str) -> PretrainedWeightsError:
        return PretrainedWeightsError(f"timm_cra: {where}: {problem}. Fix config.json (timm's save_for_hf and "
                                      f"python -m timm_cra.hub.publish write valid ones).")

    if not isinstance(cfg, dict):
        raise bad(f'it must be a JSON object, not {_json_type(cfg)}')
    problem = _transformers_key_problem(cfg)
    if problem:
        raise bad(problem)
    if 'architecture' not in cfg:
        raise bad("'architecture' is missing (the registered model name, e.g. \"cra_cifar_resnet20\")")
    legacy = 'pretrained_cfg' not in cfg  # timm's older flat layout: the pretrained cfg at the root
    for key, hint in _ROOT_TYPES.items():
        if key in cfg and not (legacy and key not in ('architecture', 'num_features')) and not _fits(cfg[key], hint):
            raise bad(f"'{key}' must be {_type_name(hint)}, not {_json_type(cfg[key])} ({cfg[key]!r:.60})")
    loading = [key for key in cfg.get('model_args') or {} if key in _LOADING_ARGS]
    if loading:
        raise bad(f"'model_args' holds {', '.join(map(repr, loading))}, which tell create_model what to load, not how "
                  f"to build the architecture: remove them")
    arch = cfg['architecture']
    if not timm.is_model(arch):
        close = close_model_names(arch)
        raise bad(f"'architecture' '{arch}' is not a registered model"
                  + (f" (did you mean: {', '.join(close)}?)" if close else " (timm.list_models() lists them)"))
    for where_, counts in (('', cfg), ('model_args ', cfg.get('model_args') or {}),
                           ('pretrained_cfg ', cfg.get('pretrained_cfg') or {})):
        count = counts.get('num_classes') if isinstance(counts, dict) else None
        if isinstance(count, int) and not 0 <= count <= MAX_NUM_CLASSES:
            raise bad(f"{where_}'num_classes' must be 0 to {MAX_NUM_CLASSES} (the largest timm head has 115217), "
                      f"not {count}")
    pretrained = {k: v for k, v in cfg.items() if k not in ('architecture', 'num_features', 'labels')} if legacy \
        else cfg['pretrained_cfg']
    problem = pretrained_cfg_problem(pretrained, cfg.get('model_args') or {})
    if problem:
        raise bad(problem)
    if not legacy and 'num_classes' in pretrained and cfg.get('num_classes', pretrained['num_classes']) != \
            pretrained['num_classes']:  # timm and transformers take the root's, silently
        raise bad(f"'num_classes' {cfg['num_classes']} and pretrained_cfg 'num_classes' {pretrained['num_classes']} "
                  f"disagree (timm and transformers use the root's): give the head's class count in both")
    num_classes = cfg.get('num_classes', pretrained.get('num_classes'))
    label_names = cfg.get('label_names', pretrained.get('label_names'))
    problem = label_count_problem(label_names, num_classes)
    if problem:
        raise bad(f"'label_names' has {problem}: give exactly one name per class, in class-index order")
    unusable = unusable_name(label_names or [])
    if unusable:
        raise bad(f"'label_names' {unusable[0]!r:.60} {unusable[1]}: rename that class to printable text")
    twice = repeated_names(label_names or [])
    if twice:  # transformers maps names to class ids: a repeated name loses a class
        raise bad(f"'label_names' gives {', '.join(map(repr, twice[:5]))} more than once (compared after Unicode NFC "
                  f"normalisation, surrounding whitespace aside): give each class its own name, in class-index order")
    problem = _label_map_problem(cfg, label_names)
    if problem:
        raise bad(problem)
    descriptions = cfg.get('label_descriptions', pretrained.get('label_descriptions'))
    if descriptions and label_names:  # timm's CustomDatasetInfo refuses names without a description
        missing = [n for n in label_names if n not in descriptions]
        if missing:
            raise bad(f"'label_descriptions' has no entry for {len(missing)} of the label names "
                      f"({', '.join(map(repr, missing[:3]))}{', ...' if len(missing) > 3 else ''}): give one per name")
    model_args = cfg.get('model_args') or {}
    if model_args:
        problem = _model_args_problem(model_args, pretrained)
        if problem:
            raise bad(problem)
        try:  # shapes only, no memory, no weights: the kwargs either build the architecture or they do not
            model = timm.create_model(arch, device='meta', **model_args)
        except Exception as e:  # noqa: BLE001  (a model constructor rejects bad kwargs with any error type)
            first = (str(e).strip().splitlines() or [''])[0]
            raise bad(f"'model_args' {json.dumps(model_args)[:120]} do not build {arch} "
                      f"({type(e).__name__}: {first:.150}); fix or remove them") from None
        problem = _model_size_problem(arch, model) or _forward_problem(model, model_args, pretrained)
        if problem:
            raise bad(problem)


def read_model_config(path: Path, where: str) -> Dict[str, Any]:
    """The ``config.json`` at ``path``, checked (a regular file, valid JSON, :func:`check_model_config`)."""
    from ..utils.strict_json import read_json
    try:
        cfg = read_json(path, 'config.json')
    except UsageError as e:  # a FIFO, not UTF-8, not JSON, nested too deep
        raise PretrainedWeightsError(f"timm_cra: {where}: {str(e).rstrip('.')}. Fix it or re-export the folder "
                                     f"(python -m timm_cra.hub.publish writes valid ones).") from None
    check_model_config(cfg, where)
    return cfg


def _described(cfg: PretrainedCfg, config: Dict[str, Any]) -> PretrainedCfg:
    """``cfg`` (the weight source of an ``hf-hub:`` / ``local-dir:`` load, for its error messages) given the
    architecture and classifier its ``config.json`` names (a mismatch was said to be the architecture 'None's)."""
    cfg.architecture = config.get('architecture')
    pretrained_cfg = config.get('pretrained_cfg')
    cfg.classifier = pretrained_cfg.get('classifier') if isinstance(pretrained_cfg, dict) else None
    return cfg


def _checks_its_weights(arch: str) -> bool:
    """Whether ``arch``'s entrypoint is this package's: those load through ``create_cra_model``, which checks the
    weights itself; timm's own architectures are checked by :func:`create_model`."""
    from timm.models import model_entrypoint
    return model_entrypoint(arch).__module__.startswith(f'{__package__}.')


def _cached_hf_config(repo_id: str, revision) -> Optional[Path]:
    from huggingface_hub import try_to_load_from_cache
    cached = try_to_load_from_cache(repo_id, 'config.json', revision=revision)
    return Path(cached) if isinstance(cached, str) else None


def _hf_config(repo_id: str, revision, model_name: str) -> Path:
    """The repo's ``config.json``: from the Hub after the reachability probe, as huggingface_hub reads it (the cached
    copy when it is current); the cached copy alone offline, for a commit (which never changes), or when the Hub is
    unreachable. A repo without one is refused naming that file (huggingface_hub's error would read as a missing
    weights file)."""
    from huggingface_hub import constants, errors as hf_errors, hf_hub_download
    cached = _cached_hf_config(repo_id, revision)
    if cached is not None and (constants.HF_HUB_OFFLINE or snapshot_commit(cached) == revision):
        return cached
    try:
        check_hub_reachable(repo_id, revision)
    except HubUnreachableError:
        if cached is None:
            raise
        return cached  # as huggingface_hub falls back to its cache (a cached config was read so before, always)
    try:
        return Path(hf_hub_download(repo_id, 'config.json', revision=revision))
    except hf_errors.RemoteEntryNotFoundError:  # a 404; offline or unreachable is LocalEntryNotFoundError
        raise PretrainedWeightsError(
            f"timm_cra: '{model_name}': Hub repo '{repo_id}'{' at revision ' + revision if revision else ''} has no "
            f"config.json, which an hf-hub: name is built from (python -m timm_cra.hub.publish writes it beside "
            f"model.safetensors). Add one, or load its weights into an architecture you name: timm.create_model("
            f"'<arch>', pretrained=True, pretrained_cfg_overlay=dict(hf_hub_id='{repo_id}')).") from None


def _check_repo_id(model_name: str, repo_id: str, empty_revision: bool = False) -> None:
    """Refuse an ``hf-hub:`` name whose repo id the Hub would not accept (``me/bad name``, ``a/b/c``, ``me/x..y``,
    empty, past 96 characters) in one line: huggingface_hub's ``HFValidationError`` came as a 41-line traceback.
    ``empty_revision``: the name ends in ``@`` (``hf-hub:org/repo@``, a revision left out by mistake was read as the
    default branch)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id
    from ..utils.errors import UsageError, printable
    if empty_revision:
        raise UsageError(f"timm_cra: '{printable(model_name)}' names no revision after '@': write "
                         f"hf-hub:{printable(repo_id)}@<branch, tag or commit>, or leave out the '@' for the default "
                         f"branch.")
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise UsageError(f"timm_cra: '{printable(model_name)}': '{printable(repo_id)}' is not a Hub repo id: write "
                         f"hf-hub:<org>/<name>[@<revision>], each part letters, digits, '-', '_' or '.' (neither "
                         f"'--' nor '..', not starting or ending with '-' or '.'), the name at most 96 characters."
                         ) from None


def check_model_name(name: str, flag: Optional[str] = None) -> None:
    """Raise :class:`UnknownModelError` for an unregistered architecture and :class:`UnknownPretrainedTagError` for
    an unregistered ``<arch>.<tag>`` (``hf-hub:`` / ``local-dir:`` names are resolved by timm from their config); a
    CLI names its ``flag`` (``--model``), so the refusal comes before any data is read and names what to change."""
    import timm
    if ':' in name:
        return
    arch, dot, tag = name.partition('.')
    if not timm.is_model(arch):
        raise UnknownModelError(name, close_model_names(name), flag)
    check_pretrained_tag(arch, tag if dot else None)  # 'cra_resnet50.' names the empty tag


@contextlib.contextmanager
def _unknown_kwarg_errors(model_name: str, kwargs: Dict[str, Any]) -> Iterator[None]:
    """A keyword argument of the caller's that the model's constructor does not take (``--model-kwargs bogus=1``)
    as one line naming it; other TypeErrors are bugs and pass unchanged."""
    from ..utils.errors import UsageError
    try:
        yield
    except TypeError as e:
        m = re.search(r"unexpected keyword argument '([^']*)'", str(e))
        if m is None or m.group(1) not in kwargs:
            raise
        raise UsageError(f"timm_cra: {model_name} takes no argument '{m.group(1)}' (--model-kwargs, create_model "
                         f"keywords): remove it or use one its constructor takes.") from None


def _warn_preprocessor(model_name: str, filename: str, path: Optional[str]) -> None:
    """One warning line for a repo holding transformers' image-processor file ``filename``: its pipeline
    preprocesses with that file, timm (and this load) with config.json, so the two can answer differently (the
    registered tags refuse such a repo)."""
    if path is not None:
        _logger.warning(f"timm_cra: '{model_name}' holds {filename}: transformers' pipeline preprocesses "
                        f"with it, timm with config.json, so their answers can differ; remove it unless they agree.")


def _check_weight_files(model_name: str, names: Optional[Sequence[str]]) -> None:
    """Refuse a repo (its file ``names``) whose weights some client reads from another file than
    ``model.safetensors``; warn in one line for other weight files beside it (:func:`other_weights_problem`)."""
    problem, refused = other_weights_problem(names or [])
    if problem and refused:
        raise PretrainedWeightsError(f"timm_cra: '{model_name}' {problem}.")
    if problem:
        _logger.warning(f"timm_cra: '{model_name}' {problem}.")


def create_model(model_name: str, pretrained: bool = False, allow_nonfinite: bool = False, **kwargs: Any):
    """Same arguments and result as ``timm.create_model``; failures are one clear error naming the fix.

    ``allow_nonfinite``: accept pretrained weights holding NaN / Inf (refused by default).

    Raises:
        UnknownModelError: no such architecture (with the closest registered names).
        PretrainedWeightsError: weights or an ``hf-hub:`` / ``local-dir:`` config could not be fetched, read or
            loaded, or the config is invalid (:func:`check_model_config`).
        UsageError: a keyword argument the architecture does not take.
    """
    import timm

    source, _, location = model_name.partition(':') if ':' in model_name else ('', '', model_name)
    if source == 'hf_hub':  # timm's alias of hf-hub:, spelled as timm's own code then uses it
        source, model_name = 'hf-hub', f'hf-hub:{location}'
    if not source:  # timm's refusals of a name are a RuntimeError naming nothing that exists
        check_model_name(model_name)
    registered = timm.models.get_pretrained_cfg(model_name) if not source else None  # its input side
    # the caller's keywords get a config's model_args ceilings
    problem = _model_args_problem(kwargs, registered.to_dict() if registered else {})
    if problem:
        from ..utils.errors import UsageError
        raise UsageError(f"timm_cra: {model_name}: keyword {problem[len('model_args '):]} (--model-kwargs, "
                         f"create_model keywords).")
    with allow_nonfinite_weights(allow_nonfinite), _unknown_kwarg_errors(model_name, kwargs):
        if source == 'local-dir':
            if not os.path.lexists(Path(location) / 'config.json'):
                raise PretrainedWeightsError(
                    f"timm_cra: '{location}' is not a model folder: it needs config.json and model.safetensors "
                    f"(as written by the trainer or python -m timm_cra.hub.publish){earlier_run_note(location)}.")
            config = read_model_config(Path(location) / 'config.json', model_name)
            arch = config['architecture']
            for filename in PREPROCESSOR_FILENAMES:
                preprocessor = Path(location) / filename
                _warn_preprocessor(model_name, filename, str(preprocessor) if os.path.lexists(preprocessor) else None)
            if pretrained:
                _check_weight_files(model_name, os.listdir(location))
            cfg = _described(PretrainedCfg(file=location, source='local-dir'), config)
            if not pretrained:  # without weights to load, the folder's weights file is not read (nor checked)
                return timm.create_model(model_name, pretrained=False, **kwargs)
            with explain_pretrained_errors(model_name, cfg):
                # the file holds the model its config describes (timm then adapts the head and first conv)
                check_file_fits(_local_weights(location), lambda: timm.create_model(model_name, **{
                    k: v for k, v in kwargs.items() if k not in ('num_classes', 'in_chans')}))
                model = timm.create_model(model_name, pretrained=True, **kwargs)
                if not _checks_its_weights(arch):  # any timm architecture: the checks CRA models get
                    check_file_dtypes(model, _local_weights(location))
                    check_finite_weights(model)
                return model
        if source == 'hf-hub':
            cfg = PretrainedCfg(hf_hub_id=location, source='hf-hub')
            repo_id, revision = split_revision(location)
            _check_repo_id(model_name, repo_id, location.endswith('@'))
            with explain_pretrained_errors(model_name, cfg):
                # fetched and checked before timm reads it: timm acts on its model_args while building
                config_path = _hf_config(repo_id, revision, model_name)
                _described(cfg, read_model_config(config_path, model_name))
                # The rest is read at the commit config.json came from (as transformers does): a repo changing
                # between the two downloads gave one commit's class names and preprocessing with another's weights.
                revision = snapshot_commit(config_path) or revision
                if pretrained:  # before timm picks a weights file among them
                    _check_weight_files(model_name, repo_files((repo_id, revision)))
                model = timm.create_model(f'hf-hub:{repo_id}@{revision}' if revision else model_name,
                                          pretrained=pretrained, **kwargs)
                model.pretrained_cfg['hf_hub_id'] = location  # the id asked for, as timm records it
                if pretrained and not _checks_its_weights(model.pretrained_cfg['architecture']):
                    check_finite_weights(model)
                for filename in PREPROCESSOR_FILENAMES:
                    _warn_preprocessor(model_name, filename, repo_file((repo_id, revision), filename))
                return model
        check_model_name(model_name)
        return timm.create_model(model_name, pretrained=pretrained, **kwargs)
