"""``timm_cra.create_model``: ``timm.create_model`` with this package's error contract for every name form.

The ``cra_*`` entrypoints explain their own weight failures (:func:`._builder.create_cra_model`), but some
failures happen in timm before an entrypoint runs: fetching ``config.json`` for an ``hf-hub:`` name, reading a
``local-dir:`` folder, resolving the architecture name. This wrapper raises those as the same error classes.
"""
import difflib
from pathlib import Path
from typing import Any, List

from timm.models import PretrainedCfg

from ._load_errors import PretrainedWeightsError, explain_pretrained_errors
from ._weight_checks import check_hub_reachable, split_revision

__all__ = ['create_model', 'check_model_name', 'UnknownModelError', 'close_model_names']


class UnknownModelError(RuntimeError):
    """No architecture of that name is registered with timm (the message names the closest ones)."""

    def __init__(self, name: str, close: List[str]):
        self.name, self.close = name, close
        super().__init__(f"timm_cra: unknown model '{name}'. {self.hint}")

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


def _hf_config_cached(repo_id: str, revision) -> bool:
    from huggingface_hub import try_to_load_from_cache
    return isinstance(try_to_load_from_cache(repo_id, 'config.json', revision=revision), str)


def check_model_name(name: str) -> None:
    """Raise :class:`UnknownModelError` for an unregistered architecture (``hf-hub:`` / ``local-dir:`` names
    are resolved by timm from their config)."""
    import timm
    if ':' not in name and not timm.is_model(name.partition('.')[0]):
        raise UnknownModelError(name, close_model_names(name))


def create_model(model_name: str, pretrained: bool = False, **kwargs: Any):
    """Same arguments and result as ``timm.create_model``; failures are one clear error naming the fix.

    Raises:
        UnknownModelError: no such architecture (with the closest registered names).
        PretrainedWeightsError: weights or an ``hf-hub:`` / ``local-dir:`` config could not be fetched or loaded.
    """
    import timm

    source, _, location = model_name.partition(':') if ':' in model_name else ('', '', model_name)
    if source == 'local-dir':
        if not (Path(location) / 'config.json').is_file():
            raise PretrainedWeightsError(
                f"timm_cra: '{location}' is not a model folder: it needs config.json and model.safetensors "
                f"(as written by the trainer or python -m timm_cra.hub.publish).")
        return timm.create_model(model_name, pretrained=pretrained, **kwargs)
    if source == 'hf-hub':
        cfg = PretrainedCfg(hf_hub_id=location, source='hf-hub')
        repo_id, revision = split_revision(location)
        with explain_pretrained_errors(model_name, cfg):
            if not _hf_config_cached(repo_id, revision):
                check_hub_reachable(repo_id, revision)
            return timm.create_model(model_name, pretrained=pretrained, **kwargs)
    check_model_name(model_name)
    return timm.create_model(model_name, pretrained=pretrained, **kwargs)
