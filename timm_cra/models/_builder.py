"""Shared pieces of the CRA model families: pretrained-cfg defaults, the weights guard and the one place
CRA models are built (so every entrypoint gets the same pretrained checks and error messages)."""
from typing import Any, Callable, Dict, Optional, Set

from timm.models import get_arch_pretrained_cfgs, list_pretrained
from timm.models._builder import resolve_pretrained_cfg
from timm.models._pretrained import PretrainedCfg

from ._load_errors import PretrainedWeightsError, UnknownPretrainedTagError, explain_pretrained_errors
from ._weight_checks import (cached_weights, check_hub_reachable, check_weight_dtypes, hub_weights_location,
                             verify_download, weights_file)

__all__ = [
    'HUB_ORG', 'PAPER_CFG', 'PUBLIC_HUB_ENDPOINT', 'PENDING_WEIGHTS', 'HUB_UPLOAD_PENDING', 'hub_id', 'imagenet_cfg', 'check_pretrained_available', 'create_cra_model',
]

#: Hugging Face organisation that holds every published timm-cra weight repo.
HUB_ORG = 'timm-cra'

#: Fields every CRA pretrained cfg carries (paper, code, licence of this package's weights).
PAPER_CFG: Dict[str, Any] = dict(
    paper_ids='arXiv:2010.05605',
    paper_name='Convolutional Neural Network optimization via Channel Reassessment Attention module',
    origin_url='https://github.com/syt2/CRA',
    license='apache-2.0',
)

#: Registered ``<arch>.<tag>`` whose Hub repo is prepared (config + card in ``hub/``) but whose weights are
#: not uploaded to huggingface.co yet, with how to get them meanwhile. Loading these from the public Hub
#: fails early with that text instead of a 404; a mirror (``HF_ENDPOINT``) or a local file still works.
PENDING_WEIGHTS: Dict[str, str] = {}

#: Registered ``<arch>.<tag>`` whose complete repo folder, weights included, is in this project's ``hub/``
#: but not uploaded to huggingface.co yet. Loads still go to the Hub (so they work as soon as the repo is
#: pushed); while the repo is missing there, the error names the local copy and how to load it.
HUB_UPLOAD_PENDING: Set[str] = set()


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


def hub_id(model_name_with_tag: str) -> str:
    """Full Hub repo id of a weight tag: one repo per ``<arch>.<tag>`` under :data:`HUB_ORG`."""
    return f'{HUB_ORG}/{model_name_with_tag}'


def _local_copy_hint(name: str) -> Optional[str]:
    if name not in HUB_UPLOAD_PENDING:
        return None
    folder = f'hub/{hub_id(name)}'
    return (f"The '{name}' repo may not be uploaded yet: the timm-cra source tree holds it in {folder}. From a "
            f"clone, load timm.create_model('local-dir:{folder}', pretrained=True), or serve it with "
            f"`python -m timm_cra.hub.server --root hub` and point HF_ENDPOINT at that server.")


def _name(variant: str, cfg: PretrainedCfg) -> str:
    return f'{variant}.{cfg.tag}' if cfg.tag else variant


def _published_tags(variant: str):
    return [n for n in list_pretrained(f'{variant}.*') if n not in PENDING_WEIGHTS]


def check_pretrained_available(variant: str, pretrained: bool, kwargs: Dict[str, Any]) -> Optional[PretrainedCfg]:
    """Refuse early and clearly instead of building a model with the wrong (or random) weights.

    timm only warns for an unknown tag and for a cfg without a weight source. Resolve the cfg exactly as
    ``build_model_with_cfg`` will (tag, ``pretrained_cfg``, ``pretrained_cfg_overlay``) and raise for an
    unknown tag, for ``pretrained=True`` without a weight source (naming the tags that have weights), and
    for weights registered but not yet published on the public Hub (:data:`PENDING_WEIGHTS`).

    Returns the resolved cfg when ``pretrained`` is set, else ``None``.
    """
    tag = kwargs.get('pretrained_cfg')
    known = list(get_arch_pretrained_cfgs(variant))
    if isinstance(tag, str) and f'{variant}.{tag}' not in known:
        raise UnknownPretrainedTagError(
            f"timm_cra: unknown pretrained tag '{variant}.{tag}'. Use one of the registered names: "
            f"{', '.join(known) or variant} (timm.list_pretrained('{variant}*') lists those with weights).")
    if not pretrained:
        return None
    cfg = resolve_pretrained_cfg(
        variant,
        pretrained_cfg=kwargs.get('pretrained_cfg'),
        pretrained_cfg_overlay=kwargs.get('pretrained_cfg_overlay'),
    )
    if cfg.state_dict is not None or cfg.file:
        return cfg
    name = _name(variant, cfg)
    if cfg.hf_hub_id and name in PENDING_WEIGHTS and _public_hub():
        raise PretrainedWeightsError(
            f"timm_cra: the weights of '{name}' are not published on the Hugging Face Hub yet "
            f"({cfg.hf_hub_id}). {PENDING_WEIGHTS[name]}")
    if cfg.has_weights:
        return cfg
    with_weights = _published_tags(variant)
    if with_weights:
        hint = 'Tags with published weights: ' + ', '.join(with_weights) + '.'
    else:
        hint = f'No weights are published for {variant} yet.'
    raise PretrainedWeightsError(
        f"timm_cra: no pretrained weights exist for '{name}'. {hint} "
        f"Use pretrained=False for random init, or load your own file with "
        f"pretrained_cfg_overlay=dict(file='path/to/model.safetensors')."
    )


#: huggingface.co, where :data:`PENDING_WEIGHTS` are known to be missing (a mirror may hold them).
PUBLIC_HUB_ENDPOINT = 'https://huggingface.co'


def _public_hub() -> bool:
    from huggingface_hub import constants
    return constants.ENDPOINT.rstrip('/') == PUBLIC_HUB_ENDPOINT


def create_cra_model(create_fn: Callable[..., Any], variant: str, pretrained: bool = False, **kwargs):
    """Build a CRA model via ``create_fn(variant, pretrained, **kwargs)`` (a timm builder).

    Every CRA entrypoint goes through here: the pretrained guard runs first, and failures while fetching or
    loading weights (Hub unreachable, repo / file / revision missing, corrupt or altered file, integer
    weights, shape mismatch) are re-raised as one :class:`PretrainedWeightsError` naming the fix.
    """
    cfg = check_pretrained_available(variant, pretrained, kwargs)
    if cfg is None:
        return create_fn(variant, pretrained, **kwargs)
    name = _name(variant, cfg)
    location = hub_weights_location(cfg)
    with explain_pretrained_errors(name, cfg, hint=_local_copy_hint(name)):
        downloading = location is not None and cached_weights(*location) is None
        if downloading:
            check_hub_reachable(*location)
        model = create_fn(variant, pretrained, **kwargs)
        if downloading:
            verify_download(*location)
        path = weights_file(cfg)
        if path is not None:
            check_weight_dtypes(model, path)
    return model
