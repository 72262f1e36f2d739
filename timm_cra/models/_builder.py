"""Shared pieces of the CRA model families: pretrained-cfg defaults and the weights guard."""
from typing import Any, Dict

from timm.models import get_pretrained_cfg, list_pretrained
from timm.models._builder import resolve_pretrained_cfg

__all__ = ['HUB_ORG', 'PAPER_CFG', 'hub_id', 'check_pretrained_available']

#: Hugging Face organisation that holds every published timm-cra weight repo.
HUB_ORG = 'timm-cra'

#: Fields every CRA pretrained cfg carries (paper, code, licence of this package's weights).
PAPER_CFG: Dict[str, Any] = dict(
    paper_ids='arXiv:2010.05605',
    paper_name='Convolutional Neural Network optimization via Channel Reassessment Attention module',
    origin_url='https://github.com/syt2/CRA',
    license='apache-2.0',
)


def hub_id(model_name_with_tag: str) -> str:
    """Full Hub repo id of a weight tag: one repo per ``<arch>.<tag>`` under :data:`HUB_ORG`."""
    return f'{HUB_ORG}/{model_name_with_tag}'


def check_pretrained_available(variant: str, pretrained: bool, kwargs: Dict[str, Any]) -> None:
    """Raise instead of silently returning random weights when ``pretrained=True`` has no source.

    timm only logs a warning when a pretrained cfg has no weight source. Resolve the cfg exactly as
    ``build_model_with_cfg`` will (tag, ``pretrained_cfg``, ``pretrained_cfg_overlay``) and refuse early,
    naming the tags that do have weights.
    """
    if not pretrained:
        return
    cfg = resolve_pretrained_cfg(
        variant,
        pretrained_cfg=kwargs.get('pretrained_cfg'),
        pretrained_cfg_overlay=kwargs.get('pretrained_cfg_overlay'),
    )
    if cfg.has_weights or cfg.state_dict is not None:
        return
    tag = cfg.tag or ''
    with_weights = list_pretrained(f'{variant}.*')
    if with_weights:
        hint = 'Tags with published weights: ' + ', '.join(with_weights) + '.'
    else:
        hint = f'No weights are published for {variant} yet.'
    raise RuntimeError(
        f"timm_cra: no pretrained weights exist for '{variant}{'.' + tag if tag else ''}'. {hint} "
        f"Use pretrained=False for random init, or load your own file with "
        f"pretrained_cfg_overlay=dict(file='path/to/model.safetensors')."
    )
