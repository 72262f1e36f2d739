"""Shared pieces of the CRA model families: pretrained-cfg defaults, the weights guard and the one place
CRA models are built (so every entrypoint gets the same pretrained checks and error messages)."""
import contextlib
import dataclasses
import enum
import logging
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from timm.models import generate_default_cfgs, get_arch_pretrained_cfgs, list_pretrained
from timm.models._builder import resolve_pretrained_cfg
from timm.models._pretrained import PretrainedCfg

from ..utils.errors import transport_failure
from ..utils.hub_session import bounded_hub_requests
from ..utils.labels import numbered_classes
from ._factory import read_model_config, weight_source_problem
from ._load_errors import (PretrainedWeightsError, cache_write_problem, check_pretrained_tag,
                           explain_pretrained_errors)
from ._weight_checks import (BUNDLED_WEIGHTS, PREPROCESSOR_FILENAMES, HubUnreachableError, bundled_weights,
                             cached_weights, check_finite_weights, check_hub_reachable, dtype_checked_filter,
                             hub_weights_location, other_weights_problem, repo_file, repo_files, split_revision,
                             verify_download, hub_differs_from_bundled)

__all__ = [
    'HUB_ORG', 'PAPER_CFG', 'PUBLIC_HUB_ENDPOINT',
    'WeightStatus', 'WeightState', 'WEIGHT_STATES',
    'WEIGHTS_PENDING', 'WEIGHTS_UPLOAD_PENDING', 'WEIGHTS_GATES_UNTRAINED',
    'weight_status_cfg', 'weight_status', 'weight_note', 'weight_status_tags', 'hub_id',
    'imagenet_cfg', 'imagenet_1k_labels', 'base_arch', 'default_cfgs_marked', 'gates_untrained_cfgs',
    'check_pretrained_available', 'create_cra_model', 'module_structure',
]

_logger = logging.getLogger(__name__)

#: Hugging Face organisation that holds every published timm-cra weight repo.
HUB_ORG = 'timm-cra'

#: Fields every CRA pretrained cfg carries (paper, code, licence of this package's weights).
PAPER_CFG: Dict[str, Any] = dict(
    paper_ids='arXiv:2010.05605',
    paper_name='Convolutional Neural Network optimization via Channel Reassessment Attention module',
    origin_url='https://github.com/syt2/CRA',
    license='apache-2.0',
)

class WeightStatus(str, enum.Enum):
    """Where a registered tag's weights stand, when that is not simply "published" (a ``str``: compares equal to
    its value).

    ``PENDING``: the Hub repo is prepared (config + card in ``hub/``) but its weights are not on huggingface.co
    yet; loading from the public Hub fails early with the tag's note (how to get them meanwhile) instead of a
    404, while a mirror (``HF_ENDPOINT``) or a local file still works.
    ``UPLOAD_PENDING``: the complete repo folder, weights included, is in this project's ``hub/`` but not on
    huggingface.co yet. Loads still go to the Hub; while the repo is missing there, the error names the copy, and
    a bundled repo's copy loads instead of other bytes the Hub serves under its name.
    ``GATES_UNTRAINED``: the base network's weights (another architecture's repo) with the CRA gates initialised
    at load (:mod:`.retrofit`); only loaded when the tag is asked for by name.
    """
    PENDING = 'pending'
    UPLOAD_PENDING = 'upload-pending'
    GATES_UNTRAINED = 'gates-untrained'

    def __str__(self) -> str:  # the value in text, on every Python (enum.StrEnum is 3.11+)
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


WEIGHTS_PENDING = WeightStatus.PENDING
WEIGHTS_UPLOAD_PENDING = WeightStatus.UPLOAD_PENDING
WEIGHTS_GATES_UNTRAINED = WeightStatus.GATES_UNTRAINED
WEIGHT_STATUSES = tuple(WeightStatus)


@dataclasses.dataclass(frozen=True)
class WeightState:
    """A registered tag's :class:`WeightStatus` and the note for its users (what to do meanwhile)."""
    status: WeightStatus
    note: str = ''

    def human_note(self) -> str:
        """The line written into the tag's pretrained cfg ``notes`` for people reading it (never parsed back)."""
        return f'timm_cra weights: {self.status.value}' + (f' -- {self.note}' if self.note else '')


#: ``<arch>.<tag>`` -> :class:`WeightState` of each registered tag that has one (plain weights have none), filled
#: by :func:`default_cfgs_marked` from the cfg tables. A registry fact: it names the tag, not a built model.
WEIGHT_STATES: Dict[str, WeightState] = {}
#: The cfg-table field :func:`default_cfgs_marked` moves into :data:`WEIGHT_STATES` (timm's ``PretrainedCfg``
#: refuses unknown fields, so it never reaches timm).
_STATE_FIELD = 'timm_cra_weight_state'


def weight_status_cfg(status: str, note: str = '') -> Dict[str, Any]:
    """The cfg-table field recording a weight status (and a note for users) of the tag it is given to.

    :func:`default_cfgs_marked` moves it into :data:`WEIGHT_STATES` and writes a human-readable line, derived from
    it, into the cfg's ``notes``; a built model's cfg drops that line (see :func:`create_cra_model`), so configs
    exported from a model never carry it."""
    if status not in WEIGHT_STATUSES:
        raise ValueError(f'weight status must be one of {tuple(s.value for s in WEIGHT_STATUSES)}, got {status!r}')
    return {_STATE_FIELD: WeightState(WeightStatus(status), note)}


def _registry_name(cfg: Any) -> Optional[str]:
    """``<arch>.<tag>`` of a registry cfg (``PretrainedCfg`` or dict); ``None`` for one read from a Hub or local
    folder (``source``), which no registry entry describes."""
    get = cfg.get if isinstance(cfg, dict) else lambda k: getattr(cfg, k, None)
    if get('source') or not get('architecture'):
        return None
    return f"{get('architecture')}.{get('tag')}" if get('tag') else get('architecture')


def _weight_state(cfg: Any) -> Optional[WeightState]:
    name = _registry_name(cfg)
    return WEIGHT_STATES.get(name) if name else None


#: The fields of a cfg that say where its weights come from.
_WEIGHT_SOURCE_FIELDS = ('hf_hub_id', 'url', 'file', 'state_dict')


def _tag_weight_source(cfg: PretrainedCfg) -> bool:
    """Whether ``cfg`` takes its weights from where its registered tag's come from (a pinned revision of the tag's
    repo included): a ``pretrained_cfg_overlay=dict(hf_hub_id=<your repo>)`` loads other weights, which the tag's
    publication status (not published yet) does not describe."""
    import timm
    registered = timm.models.get_pretrained_cfg(_registry_name(cfg))

    def source(value, field):
        return split_revision(value)[0] if field == 'hf_hub_id' and isinstance(value, str) else value

    return all(source(getattr(cfg, k), k) == source(getattr(registered, k), k) for k in _WEIGHT_SOURCE_FIELDS)


def weight_status(cfg: Any) -> Optional[WeightStatus]:
    """The weight status of the registered tag a pretrained cfg (``PretrainedCfg`` or dict) names, ``None`` for
    plain weights."""
    state = _weight_state(cfg)
    return state.status if state is not None else None


def weight_note(cfg: Any) -> Optional[str]:
    """The user-facing note recorded with the weight status (what to do meanwhile), if any."""
    state = _weight_state(cfg)
    return state.note or None if state is not None else None


def _drop_status(model: Any) -> None:
    cfg = getattr(model, 'pretrained_cfg', None)
    state = _weight_state(cfg) if isinstance(cfg, dict) else None
    if state is not None and cfg.get('notes'):
        notes = tuple(n for n in cfg['notes'] if n != state.human_note()) or None
        model.pretrained_cfg = dict(cfg, notes=notes)
        if getattr(model, 'default_cfg', None) is cfg:
            model.default_cfg = model.pretrained_cfg


def weight_status_tags(*statuses: str) -> List[str]:
    """Registered ``<arch>.<tag>`` of this package whose weight status is one of ``statuses``."""
    from . import list_package_models
    return sorted(name for arch in list_package_models() for name, cfg in get_arch_pretrained_cfgs(arch).items()
                  if weight_status(cfg) in statuses)


def imagenet_cfg(url: str = '', **kwargs) -> Dict[str, Any]:
    """Pretrained-cfg defaults of the ImageNet CRA models: the paper's eval transform (resize 256, bicubic,
    centre crop 224) and ImageNet mean/std; families add first_conv / classifier."""
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    return {
        'url': url,
        'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (7, 7),
        'crop_pct': 0.875, 'interpolation': 'bicubic',
        'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        **PAPER_CFG,
        **kwargs,
    }


def imagenet_1k_labels() -> Dict[str, Any]:
    """Pretrained-cfg label fields of weights trained on ImageNet-1k: timm's WordNet synsets as ``label_names``
    (timm's convention for ImageNet) and their descriptions, from timm's ``ImageNetInfo``."""
    from timm.data import ImageNetInfo
    info = ImageNetInfo('imagenet-1k')
    return dict(label_names=tuple(info.label_names()), label_descriptions=info.label_descriptions(as_dict=True))


def hub_id(model_name_with_tag: str) -> str:
    """Full Hub repo id of a weight tag: one repo per ``<arch>.<tag>`` under :data:`HUB_ORG`."""
    return f'{HUB_ORG}/{model_name_with_tag}'


def base_arch(cra_arch: str) -> str:
    """The architecture a CRA architecture adds CRA to: its name without ``cra_`` (``cra_resnet50`` is timm's
    ``resnet50`` with CRA in every block), the naming rule of every ``cra_*`` model."""
    if not cra_arch.startswith('cra_'):
        raise ValueError(f'{cra_arch!r} is not a CRA architecture name (cra_<base architecture>)')
    return cra_arch[len('cra_'):]


def default_cfgs_marked(cfgs: Dict[str, Dict[str, Any]], base_weights: bool = False):
    """timm's ``generate_default_cfgs`` where a tag ending in '*' stays its architecture's default even when a
    later tag has weights (timm would promote that one): ``pretrained=True`` on a bare name never picks up a
    gates-untrained tag.

    ``base_weights``: every architecture of the table also gets the tag of timm's default weights of its
    :func:`base_arch` with untrained gates (:func:`gates_untrained_cfgs`), after its own tags; families built on
    timm's ImageNet networks set it, so a new architecture is one table row and one entrypoint. A tag's weight status
    (:func:`weight_status_cfg`) goes into :data:`WEIGHT_STATES`."""
    if base_weights:
        archs = dict.fromkeys(key.partition('.')[0] for key in cfgs)
        cfgs = {**cfgs, **{f'{arch}.{tag}': cfg for arch in archs
                           for tag, cfg in gates_untrained_cfgs(base_arch(arch)).items()}}
    cfgs = dict(cfgs)
    for key, cfg in cfgs.items():
        if _STATE_FIELD in cfg:
            cfg = dict(cfg)
            state = cfg.pop(_STATE_FIELD)
            WEIGHT_STATES[key.rstrip('*')] = state
            cfgs[key] = dict(cfg, notes=(state.human_note(),))
    out = generate_default_cfgs(cfgs)
    for key in cfgs:
        arch, _, tag = key.partition('.')
        if tag.endswith('*'):
            tags = out[arch].tags
            tags.remove(tag[:-1])
            tags.appendleft(tag[:-1])
    return out


def gates_untrained_cfgs(base_arch: str, **kwargs) -> Dict[str, Dict[str, Any]]:
    """``{'<base_tag>_gates_untrained': cfg}`` for a CRA architecture built on ``base_arch``: the pretrained cfg
    of timm's default weights for ``base_arch`` (Hub repo, eval transform, licence, origin), marked
    :data:`WEIGHTS_GATES_UNTRAINED`. ``kwargs`` override fields (e.g. the CRA model's ``first_conv``)."""
    from timm.models import get_pretrained_cfg
    base = get_pretrained_cfg(base_arch)
    if base is None or not base.has_weights:
        raise ValueError(f'timm registers no pretrained weights for {base_arch!r}.')
    cfg = {k: v for k, v in base.to_dict(remove_source=True, remove_null=True).items()
           if k not in ('architecture', 'tag', 'url', 'notes', 'description')}
    base_name = f'{base.architecture}.{base.tag}'
    cfg.update(
        hf_hub_id=base.hf_hub_id,
        description=f"{base_name} weights with CRA gates added, untrained (initialised at load).",
        **weight_status_cfg(
            WEIGHTS_GATES_UNTRAINED,
            f"Weights of {base_name} ({base.hf_hub_id}, its own card and licence) with every CRA gate initialised "
            f"at load (zero kernel + constant bias): the gates are untrained, fine-tune before use."),
        **kwargs,
    )
    return {f'{base.tag}_gates_untrained': cfg}


def _local_copy_hint(name: str, cfg: PretrainedCfg) -> Optional[str]:
    if weight_status(cfg) != WEIGHTS_UPLOAD_PENDING:
        return None
    folder = f'hub/{hub_id(name)}'
    return (f"The '{name}' repo may not be uploaded yet: the timm-cra source tree holds it in {folder}. From a "
            f"clone, load timm.create_model('local-dir:{folder}', pretrained=True), or serve it with "
            f"`timm-cra-hub-mirror --root hub` and point HF_ENDPOINT at that server.")


def _name(variant: str, cfg: PretrainedCfg) -> str:
    """The name errors give the weights: a ``local-dir:`` folder by its path and an ``hf-hub:`` repo by its id (the
    config's tag is not what the user typed and says nothing of which folder or repo failed), else
    ``<arch>.<tag>``."""
    if cfg.source == 'local-dir' and cfg.file:
        return f'local-dir:{cfg.file}'
    if cfg.source == 'hf-hub' and cfg.hf_hub_id:
        return f'hf-hub:{cfg.hf_hub_id}'
    return f'{variant}.{cfg.tag}' if cfg.tag else variant


def _tags(variant: str, with_status: bool):
    cfgs = get_arch_pretrained_cfgs(variant)
    names = [n for n in list_pretrained(f'{variant}.*') if n in cfgs]
    if with_status:
        return [n for n in names if weight_status(cfgs[n]) == WEIGHTS_GATES_UNTRAINED]
    return [n for n in names if weight_status(cfgs[n]) not in (WEIGHTS_PENDING, WEIGHTS_GATES_UNTRAINED)]


def _gates_untrained_hint(variant: str) -> str:
    tags = _tags(variant, with_status=True)
    if not tags:
        return ''
    return (f" For pretrained features now, ask for a tag with the base network's weights and untrained CRA gates "
            f"(fine-tune before use): {', '.join(tags)}.")


def check_pretrained_available(variant: str, pretrained: bool, kwargs: Dict[str, Any]) -> Optional[PretrainedCfg]:
    """Refuse early and clearly instead of building a model with the wrong (or random) weights.

    timm only warns for an unknown tag and for a cfg without a weight source. Resolve the cfg exactly as
    ``build_model_with_cfg`` will (tag, ``pretrained_cfg``, ``pretrained_cfg_overlay``) and raise for an
    unknown tag, for ``pretrained=True`` without a weight source (naming the tags that have weights), and
    for weights registered but not yet published on the public Hub (status :data:`WEIGHTS_PENDING`).

    Returns the resolved cfg when ``pretrained`` is set, else ``None``.
    """
    tag = kwargs.get('pretrained_cfg')
    if isinstance(tag, str):
        check_pretrained_tag(variant, tag)
    if not pretrained:
        return None
    cfg = resolve_pretrained_cfg(
        variant,
        pretrained_cfg=kwargs.get('pretrained_cfg'),
        pretrained_cfg_overlay=kwargs.get('pretrained_cfg_overlay'),
    )
    name = _name(variant, cfg)
    if cfg.source in ('hf-hub', 'local-dir'):  # the cfg is the repo's config.json (timm sets the source fields)
        ours = ('source', 'hf_hub_id' if cfg.source == 'hf-hub' else 'file',
                *(kwargs.get('pretrained_cfg_overlay') or ()))
        problem = weight_source_problem(dataclasses.asdict(cfg), ignore=ours)
        if problem:
            raise PretrainedWeightsError(f"timm_cra: '{name}': {problem}. Fix config.json.")
    if cfg.state_dict is not None or cfg.file:
        return cfg
    if cfg.hf_hub_id and weight_status(cfg) == WEIGHTS_PENDING and _public_hub() and _tag_weight_source(cfg):
        raise PretrainedWeightsError(
            f"timm_cra: the weights of '{name}' are not published on the Hugging Face Hub yet "
            f"({cfg.hf_hub_id}). {weight_note(cfg) or ''}{_gates_untrained_hint(variant)}")
    if cfg.has_weights:
        return cfg
    with_weights = _tags(variant, with_status=False)
    if with_weights:
        hint = 'Tags with published weights: ' + ', '.join(with_weights) + '.'
    else:
        hint = f'No trained weights are published for {variant} yet.'
    raise PretrainedWeightsError(
        f"timm_cra: no pretrained weights exist for '{name}'. {hint}{_gates_untrained_hint(variant)} "
        f"Use pretrained=False for random init, or load your own file with "
        f"pretrained_cfg_overlay=dict(file='path/to/model.safetensors')."
    )


#: huggingface.co, where weights of status :data:`WEIGHTS_PENDING` are known to be missing (a mirror may
#: hold them).
PUBLIC_HUB_ENDPOINT = 'https://huggingface.co'


def _public_hub() -> bool:
    from huggingface_hub import constants
    return constants.ENDPOINT.rstrip('/') == PUBLIC_HUB_ENDPOINT


#: Seconds the Hub may take to serve a repo this package bundles (the whole download, every retry included) before
#: the bundled copy loads instead: a download trickled a byte at a time resumed after each time-out, for ever.
BUNDLED_DOWNLOAD_TIMEOUT_S = 60.0

_OFFLINE = 'was not asked (HF_HUB_OFFLINE=1) and the weights are not cached'


def _hub_cannot_serve(err: BaseException) -> Optional[str]:
    """Why the Hub could not serve a repo (offline, unreachable, no such repo or file, an HTTP error after
    huggingface_hub's retries, a download cut or stalled after the probe answered), ``None`` for other failures
    (altered or corrupt bytes stay errors)."""
    from huggingface_hub import constants
    from huggingface_hub import errors as hf_errors
    if isinstance(err, HubUnreachableError):
        return str(err)
    if transport_failure(err) is not None:
        return f'broke off the download ({type(err).__name__})'
    full = cache_write_problem(err)
    if full:
        return f'was asked, but {full}'

    if constants.HF_HUB_OFFLINE or isinstance(err, hf_errors.OfflineModeIsEnabled):
        return _OFFLINE
    if isinstance(err, hf_errors.RepositoryNotFoundError):
        return 'has no such repo'
    if isinstance(err, (hf_errors.LocalEntryNotFoundError, hf_errors.HfHubHTTPError)):
        return f'could not serve it ({type(err).__name__})'
    return None


#: Pretrained-cfg fields that change a model's answers: the class count and names, the eval preprocessing.
_ANSWER_FIELDS = ('num_classes', 'label_names', 'mean', 'std', 'input_size', 'crop_pct', 'crop_mode', 'interpolation')


def module_structure(model: Any) -> List[Tuple[str, str, str, Tuple[Tuple[int, ...], ...]]]:
    """What of a model's structure decides its answers: each module's name, class, settings (``extra_repr``: CRA's
    pool size and type, conv kernels) and tensor shapes; dropout left out (identity at eval, a caller's choice)."""
    from timm.layers import DropBlock2d, DropPath
    from torch import nn
    dropout = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout, DropPath,
               DropBlock2d)
    return [(n, type(m).__name__, m.extra_repr(),
             tuple(tuple(t.shape) for t in (*m.parameters(recurse=False), *m.buffers(recurse=False))))
            for n, m in model.named_modules() if not isinstance(m, dropout)]


#: ``create_model`` keywords that are the caller's to choose when loading a tag (a new head, input channels,
#: pooling, a feature extractor, its dilation): the repo's architecture is compared with them applied (a
#: ``features_only`` tag, a ``FeatureListNet``, was compared with the repo's classifier and refused).
_CALLER_ARGS = ('num_classes', 'in_chans', 'global_pool', 'features_only', 'out_indices', 'feature_cls', 'feature_cfg',
                'output_stride')


def _model_args_difference(variant: str, model_args: Dict[str, Any], model: Any,
                           kwargs: Dict[str, Any]) -> Optional[str]:
    """How the architecture a repo's ``model_args`` build differs from the tag's ``model``, or ``None``."""
    import itertools
    import json
    import timm
    ours = module_structure(model)
    theirs = module_structure(timm.create_model(variant, device='meta', **{
        **model_args, **{k: kwargs[k] for k in _CALLER_ARGS if k in kwargs}}))
    missing = ('', 'nothing', '', ())
    for repo, registered in itertools.zip_longest(theirs, ours, fillvalue=missing):
        if repo != registered:
            return (f"model_args ({json.dumps(model_args)[:80]} in the repo build {registered[0] or repo[0]} as "
                    f"{repo[1]}({repo[2]}), the registered tag as {registered[1]}({registered[2]}))")
    return None


def _check_repo_config(name: str, variant: str, cfg: PretrainedCfg, location: Tuple[str, Optional[str]],
                       model: Any, kwargs: Dict[str, Any]) -> None:
    """Refuse weights whose repo describes them unlike the registered cfg the tag loads them with: ``hf-hub:`` and
    transformers read the repo's ``config.json`` (classes, preprocessing, ``model_args``) and transformers a
    ``preprocessor_config.json``, the tag the package's cfg, so one repo would give two answers. Fields the caller
    set (``pretrained_cfg_overlay``) and the head / input they asked for (:data:`_CALLER_ARGS`) are theirs."""
    import copy
    from timm.models._hub import _parse_model_cfg
    repo_id = location[0]
    for filename in PREPROCESSOR_FILENAMES:
        if repo_file(location, filename) is not None:
            raise PretrainedWeightsError(
                f"timm_cra: Hub repo '{repo_id}' holds {filename}: transformers' pipeline preprocesses "
                f"with it, the registered '{name}' with its own cfg, so one repo would give two answers (timm-cra "
                f"never publishes that file). Remove it from the repo, or load the repo as "
                f"timm.create_model('hf-hub:{cfg.hf_hub_id}', pretrained=True).")
    problem, _ = other_weights_problem(repo_files(location) or [])
    if problem:  # timm-cra publishes model.safetensors only: any other weight file was added to the repo
        raise PretrainedWeightsError(f"timm_cra: Hub repo '{repo_id}' (registered '{name}') {problem}.")
    path = repo_file(location, 'config.json')
    if path is None:
        return
    overlaid = list(kwargs.get('pretrained_cfg_overlay') or ())
    config = read_model_config(Path(path), f"config.json of Hub repo '{repo_id}'")
    fields, arch, _ = _parse_model_cfg(copy.deepcopy(config), {})  # as timm reads it for hf-hub:
    repo = PretrainedCfg(**fields)  # timm's defaults for what the file leaves out, as hf-hub: gets them

    def value(v):
        return tuple(v) if isinstance(v, (list, tuple)) else v

    differences = [] if arch == variant else [f'architecture ({arch!r} in the repo)']
    for field in (f for f in _ANSWER_FIELDS if f not in overlaid):
        theirs, ours = value(getattr(repo, field)), value(getattr(cfg, field))
        if theirs == ours or (field == 'label_names' and not ours and theirs and numbered_classes(theirs)):
            continue  # publish names unnamed classes by their index: the same answers as no names
        if field == 'label_names' and theirs and ours and len(theirs) == len(ours):
            i = next(i for i, (a, b) in enumerate(zip(theirs, ours)) if a != b)
            differences.append(f'label_names (class {i}: {theirs[i]!r:.40} in the repo, {ours[i]!r:.40} registered)')
        else:
            differences.append(f'{field} ({theirs!r:.60} in the repo, {ours!r:.60} registered)')
    difference = _model_args_difference(variant, config['model_args'], model, kwargs) \
        if config.get('model_args') and arch == variant else None
    if difference:
        differences.append(difference)
    if differences:
        raise PretrainedWeightsError(
            f"timm_cra: the config.json of Hub repo '{repo_id}' disagrees with the registered '{name}' on "
            f"{'; '.join(differences)}: loaded by this name, its weights would be labelled or preprocessed unlike "
            f"hf-hub: and transformers read them. Upgrade timm-cra (pip install -U timm-cra) if the repo changed, or "
            f"load the repo by its own config: timm.create_model('hf-hub:{cfg.hf_hub_id}', pretrained=True).")


def _repo_upload_pending(repo_id: str) -> bool:
    """Whether timm-cra has not published ``repo_id`` yet: a registered tag loading it has status
    :data:`WEIGHTS_UPLOAD_PENDING` (a gates-untrained tag reads its base tag's repo, whose status that is)."""
    import timm
    return any(split_revision(timm.models.get_pretrained_cfg(name).hf_hub_id or '')[0] == repo_id
               for name in weight_status_tags(WEIGHTS_UPLOAD_PENDING))


def _warn_bundled_not_served(name: str, location: Tuple[str, Optional[str]], served: Optional[str]) -> None:
    """Warn when the Hub served other weights (sha256 ``served``) for a bundled repo than this release bundles: the
    online and the offline answers of one tag would differ without a word."""
    if served:
        _logger.warning(f"timm_cra: {name}: the Hub's model.safetensors of '{location[0]}' (sha256 {served}) is not "
                        f"the copy this release of timm-cra bundles (sha256 {BUNDLED_WEIGHTS[location[0]]}), which "
                        f"loads offline; the Hub's is loaded. Upgrade timm-cra (pip install -U timm-cra) if the repo "
                        f"was updated; otherwise check that HF_ENDPOINT serves the project's repo.")


def _load_hub_first(create_fn: Callable[..., Any], variant: str, kwargs: Dict[str, Any], name: str,
                    cfg: PretrainedCfg, location: Tuple[str, Optional[str]]):
    """Weights from the Hub (cache or ``HF_ENDPOINT``), the canonical home; when the Hub cannot serve a repo
    that this package bundles (default revision only), from the bundled copy. Logs which source was used."""
    from huggingface_hub import constants
    repo_id, revision = location
    where = f"Hub repo '{repo_id}' at {constants.ENDPOINT}"
    fallback = revision is None and repo_id in BUNDLED_WEIGHTS
    reason = None
    if cached_weights(*location) is not None:
        where = f"Hub repo '{repo_id}' (local cache)"
        model = create_fn(variant, True, **kwargs)
    elif fallback and constants.HF_HUB_OFFLINE:
        reason = _OFFLINE
    else:
        try:
            check_hub_reachable(*location)
            with (bounded_hub_requests(BUNDLED_DOWNLOAD_TIMEOUT_S, whole_block=True) if fallback
                  else contextlib.nullcontext()):
                model = create_fn(variant, True, **kwargs)
        except Exception as err:
            reason = _hub_cannot_serve(err) if fallback else None
            if reason is None:
                raise
        else:
            verify_download(*location)
    served = hub_differs_from_bundled(*location) if reason is None and fallback else None
    if served and _repo_upload_pending(repo_id):
        # not published by timm-cra yet: whoever serves the repo now is not the release's source of these weights
        reason = (f"serves other weights (sha256 {served}) than the copy this release bundles, and timm-cra has not "
                  f"published that repo yet")
    if reason is None:
        _warn_bundled_not_served(name, location, served)
        # hf-hub: cfgs are that config.json; gates-untrained tags load another architecture's repo by design
        if cfg.source != 'hf-hub' and weight_status(cfg) != WEIGHTS_GATES_UNTRAINED:
            _check_repo_config(name, variant, cfg, location, model, kwargs)
        _logger.info(f'timm_cra: {name}: weights from the {where}.')
        return model
    path = bundled_weights(repo_id)
    _logger.warning(f"timm_cra: {name}: the {where} {reason}; loading the copy bundled with timm-cra "
                    f"(the repo's model.safetensors as this release published it, sha256 checked): {path}")
    overlay = dict(kwargs.get('pretrained_cfg_overlay') or {}, file=str(path))
    # a failure now is the bundled file's, and its message names that file, not the Hub that was not reached
    with explain_pretrained_errors(name, dataclasses.replace(cfg, file=str(path))):
        return create_fn(variant, True, **dict(kwargs, pretrained_cfg_overlay=overlay))


def create_cra_model(create_fn: Callable[..., Any], variant: str, pretrained: bool = False, **kwargs):
    """Build a CRA model via ``create_fn(variant, pretrained, **kwargs)`` (a timm builder).

    Every CRA entrypoint goes through here: the pretrained guard runs first, and failures while fetching or
    loading weights (Hub unreachable, repo / file / revision missing, corrupt or altered file, integer
    weights, shape mismatch) are re-raised as one :class:`PretrainedWeightsError` naming the fix. A tag of
    status :data:`WEIGHTS_GATES_UNTRAINED` loads its base checkpoint through the strict retrofit key map.
    Weights from the Hub are tried first; repos whose weights ship inside this package (small ones,
    ``_weight_checks.BUNDLED_WEIGHTS``) load the bundled copy when the Hub cannot serve them.
    """
    cfg = check_pretrained_available(variant, pretrained, kwargs)
    if cfg is None:
        model = create_fn(variant, pretrained, **kwargs)
        _drop_status(model)
        return model
    name = _name(variant, cfg)
    if weight_status(cfg) == WEIGHTS_GATES_UNTRAINED:
        from .retrofit import retrofit_filter_fn
        kwargs['pretrained_filter_fn'] = retrofit_filter_fn(classifier=cfg.classifier)
    kwargs['pretrained_filter_fn'] = dtype_checked_filter(kwargs.get('pretrained_filter_fn'))
    location = hub_weights_location(cfg)
    with explain_pretrained_errors(name, cfg, hint=_local_copy_hint(name, cfg)):
        if location is not None:
            model = _load_hub_first(create_fn, variant, kwargs, name, cfg, location)
        else:
            model = create_fn(variant, pretrained, **kwargs)
        check_finite_weights(model)
    _drop_status(model)
    return model
