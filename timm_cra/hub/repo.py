"""Export a CRA model as a Hugging Face Hub repo folder: ``config.json``, ``model.safetensors``, ``README.md``.

The folder is what timm's ``push_to_hf_hub`` uploads (``save_for_hf(..., safe_serialization=True)``, no pickle
files) plus a model card, and loads back with ``timm.create_model('local-dir:<folder>', pretrained=True)``
or, once uploaded, ``timm.create_model('hf-hub:<org>/<repo>', pretrained=True)``; after ``import timm_cra``,
transformers reads the same folder (``AutoModelForImageClassification``, ``pipeline('image-classification')``).

``config.json`` has one layout, written only by :func:`write_config`: timm's ``save_for_hf`` layout (root
``architecture``, ``num_classes``, ``num_features``, ``global_pool``), the class names as root ``label_names``
(and ``label_descriptions``), and ``model_args`` holding only what the architecture needs beyond those.
transformers passes ``num_classes`` to ``timm.create_model`` itself and reads labels only from the root.
Folders are written atomically (:func:`timm_cra.utils.io.atomic_folder`): built in a hidden temp folder next
to the target, renamed into place.
"""
import inspect
import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from torch import nn

from timm.models import PretrainedCfg, is_model, model_entrypoint
from timm.models._hub import save_config_for_hf

from ..models._builder import hub_id, module_structure
from ..models._factory import label_count_problem
from ..utils import count_macs, count_params
from ..utils.errors import UsageError
from ..utils.io import atomic_folder, atomic_path, atomic_write, check_output_folder
from ..utils.labels import label_name_problem
from ..utils.weights import safetensors_metadata
from .card import EvalResults, RepoContentError, load_eval_results, render_model_card

__all__ = ['export_repo', 'write_repo_metadata', 'write_config', 'save_model_files', 'check_label_names',
           'atomic_folder', 'model_name_with_tag', 'check_repo_output', 'RUN_FILES', 'CHECKPOINT_NAME',
           'EARLIER_RUN_FILES']

CONFIG_NAME = 'config.json'
WEIGHTS_NAME = 'model.safetensors'
CARD_NAME = 'README.md'
#: What an overwritten repo folder keeps: a local clone of a Hub repo stays one (its history, remote and LFS rules),
#: so publishing into it and then ``git push`` works.
KEPT_ON_OVERWRITE = ('.git', '.gitattributes')
#: Files of a trainer's run folder written by :func:`timm_cra.utils.io.atomic_write` (their stale temp files are
#: cleaned); its checkpoint is :data:`CHECKPOINT_NAME`. Here, below the trainer, so that a repo writer tells a run
#: folder from a repo folder by the same list.
RUN_FILES = ('args.yaml', 'metrics.csv', 'results.json', 'summary.png', 'model_ema.safetensors', CONFIG_NAME,
             WEIGHTS_NAME)
CHECKPOINT_NAME = 'last.pth'
#: Files that show a folder holds an earlier run (``args.yaml`` alone: a run killed before its first epoch ended).
EARLIER_RUN_FILES = (CHECKPOINT_NAME,) + tuple(f for f in RUN_FILES if f != 'args.yaml')
#: What only a run folder holds (a repo folder has config.json and weights too): such a folder is never a repo's.
_RUN_ONLY_FILES = tuple(f for f in (CHECKPOINT_NAME,) + RUN_FILES if f not in (CONFIG_NAME, WEIGHTS_NAME))
_RUN_FOLDER = "it is a training run's folder"


def _repo_metadata(folder: Path, name: str) -> bool:
    """Whether hidden entry ``name`` is a repo folder's own: what ``--overwrite`` keeps (a clone's ``.git``,
    ``.gitattributes``) or the ``.cache/huggingface`` of ``hf download --local-dir``. Any other hidden entry
    (``.env``, ``.data/``) is someone's file and counts like a visible one."""
    if name in KEPT_ON_OVERWRITE:
        return True
    try:
        return name == '.cache' and os.listdir(folder / name) == ['huggingface']
    except OSError:
        return False


def _not_a_repo(folder: Path) -> Optional[str]:
    """What an existing ``folder`` holds that a repo folder does not (one holds plain files, ``config.json`` or
    weights among them, no subfolders, none of a training run's own files), in words; None when it is empty or such
    a repo."""
    entries = sorted(p.name for p in folder.iterdir() if not _repo_metadata(folder, p.name))
    run = [n for n in _RUN_ONLY_FILES if n in entries]
    if run:  # the trainer's run folder (config.json + weights too): replacing it deletes the run, live or done
        return f"{_RUN_FOLDER}: it holds {', '.join(run[:4])}"
    folders = [n for n in entries if (folder / n).is_dir()]
    if not entries or (not folders and {CONFIG_NAME, WEIGHTS_NAME, 'pytorch_model.bin'} & set(entries)):
        return None
    shown = ', '.join(entries[:5]) + (f' and {len(entries) - 5} more' if len(entries) > 5 else '')
    return f'holds {shown}' + (f'; folders {", ".join(folders[:5])}' if folders else f'; no {CONFIG_NAME} or weights')


def check_repo_output(out: Union[str, Path], what: str = '--out',
                      inputs: Sequence[Sequence[str]] = ()) -> None:
    """Before any work, a one-line :class:`UsageError` unless ``out`` is a folder a repo may be written to (it is
    then replaced whole, with ``--overwrite``): writable (:func:`check_output_folder`), not the current folder or
    one holding it, not a mount point (no rename replaces one), none of ``inputs`` (``(what, path)`` pairs) inside
    it, and absent, empty or a model repo (never an org folder of repos or someone's files), or a symlink
    (:func:`atomic_folder` replaces the link only)."""
    check_output_folder(out, what)  # a file, device, symlink loop (Path.resolve: RuntimeError), unwritable
    out_dir = Path(out).resolve()
    replaced = not Path(out).is_symlink()  # else the link is replaced, not the folder it points at
    if replaced and (out_dir == Path.cwd().resolve() or out_dir in Path.cwd().resolve().parents):
        raise UsageError(f'{what} {out} is the current folder or holds it, and writing the repo replaces that '
                         f'folder: choose a new folder for the repo (e.g. hub/<model_name>).')
    if replaced and os.path.ismount(out_dir):  # the final rename of the folder would fail (EBUSY), after all the work
        raise UsageError(f'{what} {out} is a mount point, and writing the repo replaces that folder, which a mount '
                         f'point cannot be: publish into a folder inside it (e.g. {Path(out) / "<model_name>"}).')
    for input_what, path in inputs:
        resolved = Path(path).resolve()
        if out_dir == resolved or out_dir in resolved.parents:
            raise UsageError(f'{what} {out} holds the {input_what} {path}, and writing the repo replaces that folder: '
                             f'choose an {what} outside it (e.g. hub/<model_name>).')
    _check_replaceable(out_dir if replaced else Path(out), what, out)


def _check_replaceable(out_dir: Path, what: str, out: Union[str, Path]) -> None:
    """The part of :func:`check_repo_output` that :func:`~timm_cra.utils.io.atomic_folder` runs again right before
    it replaces ``out_dir`` (what is there may have changed while the repo was written)."""
    problem = _not_a_repo(out_dir) if out_dir.is_dir() and not out_dir.is_symlink() else None
    if problem:
        example = 'hub/<model_name>' if problem.startswith(_RUN_FOLDER) else Path(out) / '<model_name>'
        raise UsageError(f'{what} {out} is not a model repo folder ({problem}), and writing the repo replaces that '
                         f'folder: choose a new folder for the repo (e.g. {example}).')


def model_name_with_tag(model: nn.Module) -> str:
    """``<arch>.<tag>`` of a timm model, from its pretrained cfg."""
    cfg = model.pretrained_cfg
    arch = cfg.get('architecture')
    if not arch:
        raise RepoContentError('model has no pretrained_cfg architecture; build it with timm.create_model.')
    return f"{arch}.{cfg['tag']}" if cfg.get('tag') else arch


def _cra_pool(model: nn.Module):
    """(pool_size, pool_type) of the model's CRA modules, or None for a model without CRA."""
    from ..layers import CraAttn
    cra = next((m for m in model.modules() if isinstance(m, CraAttn)), None)
    return None if cra is None else (cra.pool_size, cra.pool_type)


def _cfg_overrides(tag: Optional[str], license: Optional[str]) -> Dict[str, Any]:
    overrides = {}
    if tag is not None:
        overrides['tag'] = tag
    if license is not None:
        overrides['license'] = license
    return overrides


#: The fix for an unusable class name given with ``publish --label-names`` (the trainer names its data instead).
LABEL_NAMES_FIX = 'rename that class (--label-names)'


def check_label_names(label_names: Optional[Sequence[str]], num_classes: int,
                      rename: str = LABEL_NAMES_FIX) -> Optional[List[str]]:
    """The class names as a list of strings, or ``None``; a count that is not the head's size is refused, and so is
    a name that is not printable UTF-8 text; ``rename`` says where the names come from (the trainer checks its
    data's names with this before its first epoch, naming the class folders / ClassLabel names)."""
    if label_names is None:
        return None
    names = [str(n) for n in label_names]
    problem = label_count_problem(names, num_classes)  # the check every config.json read goes through
    if problem:
        raise RepoContentError(f'{problem}: give exactly one name per class, in class-index order.')
    problem = label_name_problem(names)  # a newline or escape code would forge lines of the card, logs, clients
    if problem:
        raise RepoContentError(f'{problem[0]}: {rename} to {problem[1]}.')
    return names


# Every architecture of this package pools with 'avg' unless asked otherwise; timm and transformers build the
# model from ``model_args`` (the root ``global_pool`` is informational), so another pool must stay there.
_DEFAULT_POOL = 'avg'


def _entrypoint_defaults(architecture: Any) -> Dict[str, Any]:
    """The keyword defaults of a registered architecture's entrypoint (``cra_pool_size=4`` of the CIFAR CRA nets)."""
    if not isinstance(architecture, str) or not is_model(architecture):
        return {}
    params = inspect.signature(model_entrypoint(architecture)).parameters.values()
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty and p.name != 'pretrained'}


def _one_layout(config: Dict[str, Any], label_names: Optional[List[str]],
                label_descriptions: Optional[Dict[str, str]]) -> Dict[str, Any]:
    """timm's exported config reduced to the layout timm and transformers both read (see the module doc)."""
    args = dict(config.pop('model_args', None) or {})
    args.pop('num_classes', None)  # root num_classes; transformers passes it again -> "multiple values"
    if args.get('in_chans') == 3:
        del args['in_chans']
    if args.get('global_pool') == config.get('global_pool') == _DEFAULT_POOL:
        del args['global_pool']
    for key, default in _entrypoint_defaults(config.get('architecture')).items():
        if key in args and args[key] == default:  # what the architecture builds anyway: one config per model
            del args[key]
    pretrained_cfg = config.pop('pretrained_cfg')
    for key in ('label_names', 'label_descriptions'):  # root only: timm moves them into the cfg on load
        pretrained_cfg.pop(key, None)
        config.pop(key, None)
    if label_names:
        config['label_names'] = label_names
        if label_descriptions:
            config['label_descriptions'] = label_descriptions
    elif config.get('num_classes'):
        # Unnamed classes are named by their index, the stand-ins data without names gets ('0'..'K-1'): without
        # label_names transformers names a head of an ImageNet size (1000, 11821, 21843...) with ImageNet's classes
        # (TimmWrapperConfig, timm's infer_imagenet_subset) and others LABEL_<i>, while timm answers the index.
        config['label_names'] = [str(i) for i in range(config['num_classes'])]
    if args:
        config['model_args'] = args
    config['pretrained_cfg'] = pretrained_cfg
    try:
        PretrainedCfg(**pretrained_cfg)
    except TypeError as e:
        raise RepoContentError(f'exported pretrained_cfg has fields timm cannot read back: {e}') from e
    return config


def write_config(
        model: nn.Module,
        path: Union[str, Path],
        *,
        tag: Optional[str] = None,
        license: Optional[str] = None,
        label_names: Optional[Sequence[str]] = None,
        label_descriptions: Optional[Dict[str, str]] = None,
        data_config: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Write ``config.json`` of ``model`` atomically in the one layout; returns it.

    ``label_names``: the classes the weights were trained on (never taken from the architecture's default cfg);
    ``None`` writes no labels. ``tag``: the name the weights are published under; ``None`` writes no tag (never the
    model's cfg's, which names the registered weights it was built with: a run from random init claimed ``cifar10``).
    ``data_config``: the preprocessing the weights were trained with (``input_size``,
    ``mean``, ``std``, ``interpolation``, ``crop_pct``), e.g. the fitted 1-channel mean/std of a greyscale run.
    """
    label_names = check_label_names(label_names, model.num_classes)
    with atomic_path(Path(path)) as tmp:
        save_config_for_hf(model, tmp, model_config={'pretrained_cfg': _cfg_overrides(tag, license)},
                           data_config=data_config)
        config = json.loads(Path(tmp).read_text(encoding='utf-8'))
        if tag is None:  # the model's cfg tag names the registry weights it was built with, not these weights
            config['pretrained_cfg'].pop('tag', None)
        config = _one_layout(config, label_names, label_descriptions)
        _check_config_rebuilds(model, config)
        Path(tmp).write_text(json.dumps(config, indent=2), encoding='utf-8')
    return config


def _check_config_rebuilds(model: nn.Module, config: Dict[str, Any]) -> None:
    """Refuse a ``config.json`` from which timm (``hf-hub:``, ``local-dir:``) and transformers would build other
    tensors than ``model`` holds: a model changed after it was built (``retrofit_cra`` on a ``resnet18``) keeps its
    base architecture's cfg, and no reader could load the repo. Built as timm builds a repo (its
    ``_parse_model_cfg``, on the meta device); an architecture not registered here is the reader's to import."""
    import copy
    import timm
    from timm.models._hub import _parse_model_cfg
    fields, arch, model_args = _parse_model_cfg(copy.deepcopy(config), {})
    if not is_model(arch):
        return
    rebuilt = timm.create_model(arch, device='meta', pretrained_cfg=PretrainedCfg(**fields), **model_args)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
    if ours == theirs:
        # the same tensors may still compute otherwise: a CRA gate's pooling or gate function, any module's settings
        built = {name: (kind, settings) for name, kind, settings, _ in module_structure(rebuilt)}
        other = next(((name, kind, settings) for name, kind, settings, _ in module_structure(model)
                      if built.get(name, (kind, settings)) != (kind, settings)), None)
        if other is None:
            return
        name, kind, settings = other
        raise RepoContentError(
            f"the model's module '{name}' is {kind}({settings[:80]}) but the architecture '{arch}' its config.json "
            f"names (model_args {json.dumps(model_args)[:80]}) builds {built[name][0]}({built[name][1][:80]}): every "
            f"reader would compute other outputs from these weights (a model changed after it was built, e.g. by "
            f"retrofit_cra): build it with timm.create_model and the keywords that make it, and save that model.")
    extra, missing = [k for k in ours if k not in theirs], [k for k in theirs if k not in ours]
    shapes = [k for k in ours if k in theirs and ours[k] != theirs[k]]
    what = '; '.join(f'{label}: {", ".join(keys[:3])}{" ..." if len(keys) > 3 else ""} ({len(keys)})'
                     for label, keys in (('not built by it', extra), ('missing', missing), ('other shapes', shapes))
                     if keys)
    twin = f'cra_{arch}'
    fix = (f"load the weights into the architecture they are (timm.create_model('{twin}', ...), load_state_dict) and "
           f"save that model" if extra and all('.se.' in k for k in extra) and is_model(twin) else
           'build the model with timm.create_model(<the architecture of these weights>) and save that')
    raise RepoContentError(f"the model's pretrained_cfg names architecture '{arch}' (model_args "
                           f"{json.dumps(model_args)[:80]}), which builds other weights than the model holds ({what}); "
                           f"no reader could load the repo (a model changed after it was built, e.g. by retrofit_cra): "
                           f"{fix}.")


def _save_weights(model: nn.Module, path: Union[str, Path], metadata: Optional[Dict[str, str]] = None) -> None:
    """``model.safetensors`` as timm's ``save_for_hf(safe_serialization=True)`` writes it: no pickle in a repo."""
    from safetensors.torch import save_file
    save_file(model.state_dict(), str(path), metadata=metadata)


def save_model_files(model: nn.Module, folder: Union[str, Path], **config_kwargs) -> Dict[str, Any]:
    """``model.safetensors`` and ``config.json`` (:func:`write_config` with ``config_kwargs``) into ``folder``,
    each written atomically; returns the config. The weights' header records the class names and the preprocessing
    too, so a ``model.safetensors`` read without its ``config.json`` (``validate --checkpoint``, publish) still maps
    classes by name and is scored / published with the preprocessing it was trained with."""
    folder = Path(folder)
    names = check_label_names(config_kwargs.get('label_names'), model.num_classes)
    config = write_config(model, folder / CONFIG_NAME, **config_kwargs)  # first: it refuses a model no reader builds
    with atomic_path(folder / WEIGHTS_NAME) as tmp:
        _save_weights(model, tmp, safetensors_metadata(names, config_kwargs.get('data_config')))
    return config


def write_repo_metadata(
        model: nn.Module,
        repo_dir: Union[str, Path],
        *,
        model_name: Optional[str] = None,
        repo_id: Optional[str] = None,
        results: Optional[Union[EvalResults, str, Path, Dict[str, Any]]] = None,
        recipe: Optional[str] = None,
        weights_note: Optional[str] = None,
        license: Optional[str] = None,
        license_note: Optional[str] = None,
        label_names: Optional[Sequence[str]] = None,
        label_descriptions: Optional[Dict[str, str]] = None,
        data_config: Optional[Dict[str, Any]] = None,
        base_weights: Optional[str] = None,
        trained_on: Optional[str] = None,
) -> Dict[str, Any]:
    """Write ``config.json`` and ``README.md`` of a repo into an existing folder (weights untouched); returns the
    config written.

    ``model`` may live on the ``meta`` device: config and card need shapes, not values. ``label_names``,
    ``label_descriptions`` and ``data_config`` go to :func:`write_config`; ``base_weights`` (what a fine-tune
    started from) and ``trained_on`` (its data) are stated on the card.
    """
    repo_dir = Path(repo_dir)
    model_name = model_name or model_name_with_tag(model)
    tag = model_name.split('.', 1)[1] if '.' in model_name else None
    repo_id = repo_id or hub_id(model_name)
    if results is not None and not isinstance(results, EvalResults):
        results = load_eval_results(results)

    config = write_config(model, repo_dir / CONFIG_NAME, tag=tag, license=license, label_names=label_names,
                          label_descriptions=label_descriptions, data_config=data_config)
    pretrained_cfg = dict(config['pretrained_cfg'], num_classes=config['num_classes'])
    card = render_model_card(
        model_name=model_name,
        repo_id=repo_id,
        pretrained_cfg=pretrained_cfg,
        num_params=count_params(model),
        macs=count_macs(model, tuple(pretrained_cfg['input_size'])),
        results=results,
        recipe=recipe,
        weights_note=weights_note,
        license_note=license_note,
        cra_pool=_cra_pool(model),
        label_names=config.get('label_names'),
        base_weights=base_weights,
        trained_on=trained_on,
    )
    with atomic_write(repo_dir / CARD_NAME, newline='\n', perms=0o644) as f:
        f.write(card)
    return config


def export_repo(
        model: nn.Module,
        out_dir: Union[str, Path],
        *,
        model_name: Optional[str] = None,
        repo_id: Optional[str] = None,
        results: Optional[Union[EvalResults, str, Path, Dict[str, Any]]] = None,
        recipe: Optional[str] = None,
        license: Optional[str] = None,
        license_note: Optional[str] = None,
        overwrite: bool = False,
        check_config: Optional[Callable[[Dict[str, Any]], None]] = None,
        **metadata,
) -> Path:
    """Write a complete Hub repo folder for ``model``'s current weights.

    Args:
        model: A timm model built by ``timm.create_model`` (its pretrained cfg supplies preprocessing).
        out_dir: Folder to create (replaced only with ``overwrite=True``; never left half-written).
        model_name: ``<arch>.<tag>`` the weights are published as (default: from the model's cfg).
        repo_id: Hub repo id (default ``timm-cra/<model_name>``).
        results: Eval results (an :class:`EvalResults`, a dict, or a JSON path) for the card's ``model-index``.
        recipe: Training recipe text for the card.
        license: Licence id written into the pretrained cfg and the card (default: the cfg's).
        license_note: Extra licence text for the card.
        overwrite: Replace an existing ``out_dir`` (its ``.git`` and ``.gitattributes`` are kept: a clone of a Hub
            repo stays one).
        check_config: Called with the ``config.json`` as written, before the folder is put in place: an error it
            raises leaves nothing written (publish holds validate's results to the repo's class names and
            preprocessing with it).
        **metadata: ``label_names``, ``label_descriptions``, ``data_config``, ``base_weights``, ``trained_on``
            (see :func:`write_repo_metadata`).

    Returns:
        ``out_dir`` as a ``Path``.
    """
    out_dir = Path(out_dir)
    model_name = model_name or model_name_with_tag(model)
    check_repo_output(out_dir, 'output folder')  # never replace an org folder, the current folder, an input's
    with atomic_folder(out_dir, overwrite=overwrite, keep=KEPT_ON_OVERWRITE,
                       check=lambda d: _check_replaceable(d, 'output folder', d)) as tmp:
        _save_weights(model, Path(tmp) / WEIGHTS_NAME)
        config = write_repo_metadata(
            model, tmp, model_name=model_name, repo_id=repo_id, results=results, recipe=recipe,
            license=license, license_note=license_note, **metadata)
        if check_config is not None:
            check_config(config)
    return out_dir
