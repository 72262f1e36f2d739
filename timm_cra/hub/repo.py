"""Export a CRA model as a Hugging Face Hub repo folder: ``config.json``, ``model.safetensors``, ``README.md``.

The folder is what timm's ``push_to_hf_hub`` uploads (``save_for_hf(..., safe_serialization=True)``, no pickle
files) plus a model card, and loads back with ``timm.create_model('local-dir:<folder>', pretrained=True)``
or, once uploaded, ``timm.create_model('hf-hub:<org>/<repo>', pretrained=True)``.
Folders are written atomically (:func:`timm_cra.utils.io.atomic_folder`): built in a hidden temp folder next
to the target, renamed into place.
"""
import json
from pathlib import Path
from typing import Any, Dict, Optional, Union

from torch import nn

from timm.models import PretrainedCfg
from timm.models._hub import save_config_for_hf, save_for_hf

from ..models._builder import hub_id
from ..utils import count_macs, count_params
from ..utils.io import atomic_folder, atomic_path, atomic_write
from .card import EvalResults, load_eval_results, render_model_card

__all__ = ['export_repo', 'write_repo_metadata', 'atomic_folder', 'model_name_with_tag']

CONFIG_NAME = 'config.json'
WEIGHTS_NAME = 'model.safetensors'
CARD_NAME = 'README.md'


def model_name_with_tag(model: nn.Module) -> str:
    """``<arch>.<tag>`` of a timm model, from its pretrained cfg."""
    cfg = model.pretrained_cfg
    arch = cfg.get('architecture')
    if not arch:
        raise ValueError('timm_cra: model has no pretrained_cfg architecture; build it with timm.create_model.')
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


def _check_config(path: Path) -> Dict[str, Any]:
    """The config must be plain JSON that timm's ``PretrainedCfg`` accepts, or ``hf-hub:`` loading breaks."""
    cfg = json.loads(path.read_text(encoding='utf-8'))
    try:
        PretrainedCfg(**cfg['pretrained_cfg'])
    except TypeError as e:
        raise ValueError(f'timm_cra: exported pretrained_cfg has fields timm cannot read back: {e}') from e
    return cfg


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
) -> None:
    """Write ``config.json`` and ``README.md`` of a repo into an existing folder (weights untouched).

    ``model`` may live on the ``meta`` device: config and card need shapes, not values.
    """
    repo_dir = Path(repo_dir)
    model_name = model_name or model_name_with_tag(model)
    tag = model_name.split('.', 1)[1] if '.' in model_name else None
    repo_id = repo_id or hub_id(model_name)
    if results is not None and not isinstance(results, EvalResults):
        results = load_eval_results(results)

    overrides = _cfg_overrides(tag, license)
    with atomic_path(repo_dir / CONFIG_NAME) as tmp_config:
        save_config_for_hf(model, tmp_config, model_config={'pretrained_cfg': overrides})
        config = _check_config(Path(tmp_config))

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
    )
    with atomic_write(repo_dir / CARD_NAME, newline='\n', perms=0o644) as f:
        f.write(card)


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
        overwrite: Replace an existing ``out_dir``.

    Returns:
        ``out_dir`` as a ``Path``.
    """
    out_dir = Path(out_dir)
    model_name = model_name or model_name_with_tag(model)
    tag = model_name.split('.', 1)[1] if '.' in model_name else None
    with atomic_folder(out_dir, overwrite=overwrite) as tmp:
        # safetensors only: nothing in a published repo is a pickle.
        save_for_hf(model, str(tmp), safe_serialization=True,
                    model_config={'pretrained_cfg': _cfg_overrides(tag, license)})
        write_repo_metadata(
            model, tmp, model_name=model_name, repo_id=repo_id, results=results, recipe=recipe,
            license=license, license_note=license_note)
    return out_dir
