"""Publish CRA weights: checkpoint + eval results -> Hub repo folder (dry run) -> optional push to the Hub.

The folder is written by :func:`timm_cra.hub.repo.export_repo`; pushing uploads it with ``huggingface_hub``
(``HfApi.create_repo`` + ``upload_folder``), authenticated by ``HF_TOKEN`` or ``hf auth login``.
"""
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch

from ..models._builder import hub_id
from .repo import export_repo

__all__ = ['load_checkpoint_state_dict', 'build_repo_folder', 'push_repo_folder', 'default_repo_id']


def load_checkpoint_state_dict(path: Union[str, Path], use_ema: bool = True) -> Dict[str, torch.Tensor]:
    """State dict from a ``.safetensors`` file or a timm trainer checkpoint (``.pth.tar``).

    Trainer checkpoints are read with ``torch.load(weights_only=True)`` and prefer ``state_dict_ema`` (the
    weights timm's trainer evaluates as best) over ``state_dict`` unless ``use_ema=False``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'timm_cra: checkpoint {path} does not exist.')
    if path.suffix == '.safetensors':
        from safetensors.torch import load_file
        return load_file(str(path), device='cpu')
    ckpt = torch.load(str(path), map_location='cpu', weights_only=True)
    if not isinstance(ckpt, dict):
        raise ValueError(f'timm_cra: {path} holds a {type(ckpt).__name__}, not a state dict or checkpoint dict.')
    keys = (['state_dict_ema'] if use_ema else []) + ['state_dict', 'model']
    for key in keys:
        if isinstance(ckpt.get(key), dict):
            state = ckpt[key]
            break
    else:
        state = ckpt
    state = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}
    if not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"timm_cra: no tensors found in {path} (looked for {', '.join(keys)} or a flat state dict).")
    return state


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
) -> Path:
    """Load ``checkpoint`` into ``model_name`` (``<arch>.<tag>``) strictly and export the repo folder."""
    import timm
    from .. import models  # noqa: F401  (registers cra_*)

    arch = model_name.split('.', 1)[0]
    state = load_checkpoint_state_dict(checkpoint, use_ema=use_ema)
    kwargs = dict(model_kwargs or {})
    if num_classes is not None:
        kwargs['num_classes'] = num_classes
    # Build without a tag: the weights define the tag, which need not be registered yet.
    model = timm.create_model(arch, **kwargs)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(
            f"timm_cra: {checkpoint} does not fit {arch}{' with ' + str(kwargs) if kwargs else ''}: "
            f"{str(e).splitlines()[1] if len(str(e).splitlines()) > 1 else e}. Pass the architecture and "
            f"--num-classes the checkpoint was trained with.") from e
    return export_repo(model.eval(), out_dir, model_name=model_name, results=results, recipe=recipe,
                       overwrite=overwrite)


def push_repo_folder(
        folder: Union[str, Path],
        repo_id: str,
        *,
        token: Optional[str] = None,
        private: bool = False,
        commit_message: Optional[str] = None,
) -> str:
    """Create/update ``repo_id`` on the Hub with the folder's files; returns the commit URL.

    The token comes from ``token``, ``HF_TOKEN`` or the ``hf auth login`` store; without one this fails
    before any network request.
    """
    from huggingface_hub import HfApi, constants, get_token
    folder = Path(folder)
    files = sorted(p.name for p in folder.iterdir())
    for required in ('config.json', 'model.safetensors', 'README.md'):
        if required not in files:
            raise FileNotFoundError(f'timm_cra: {folder} has no {required}; build it with the dry run first.')
    token = token or get_token()
    if not token:
        raise RuntimeError(
            'timm_cra: pushing needs a Hugging Face token with write access: run `hf auth login` or set HF_TOKEN '
            '(the dry run without --push needs none).')
    if constants.HF_HUB_OFFLINE:
        raise RuntimeError('timm_cra: HF_HUB_OFFLINE=1 is set; unset it to push to the Hub.')
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type='model', private=private, exist_ok=True)
    info = api.upload_folder(
        repo_id=repo_id, folder_path=str(folder), repo_type='model',
        commit_message=commit_message or f'Upload {repo_id.split("/")[-1]} (timm-cra)')
    return str(getattr(info, 'commit_url', info))


def default_repo_id(model_name: str) -> str:
    return hub_id(model_name)
