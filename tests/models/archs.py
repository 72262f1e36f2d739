"""The architectures the model tests run on, read from timm's registry: adding an architecture (one cfg-table row
and one entrypoint) adds it to every parametrised model test, with nothing to edit here."""
from collections import defaultdict
from typing import Dict, List

import timm
from timm.models import model_entrypoint

import timm_cra  # noqa: F401  (registers the models)
from timm_cra.models import WEIGHTS_GATES_UNTRAINED, list_package_models, weight_status_tags
from timm_cra.models._builder import base_arch

#: Every CRA architecture this package registers (``cra_<base>``).
CRA_ARCHS: List[str] = [n for n in list_package_models() if n.startswith('cra_')]
#: Those built on one of timm's ImageNet networks (the base is timm's, not one of this package's models).
IMAGENET_ARCHS: List[str] = [n for n in CRA_ARCHS if base_arch(n) not in list_package_models()]


def _params(name: str) -> int:
    return sum(p.numel() for p in timm.create_model(name, device='meta').parameters())


def _smallest_per_module(names: List[str]) -> List[str]:
    by_module: Dict[str, List[str]] = defaultdict(list)
    for name in names:
        by_module[model_entrypoint(name).__module__].append(name)
    return sorted(min(group, key=_params) for group in by_module.values())


#: The smallest CRA architecture of each model module: the forward / backward / export tests run on these.
SMALL_ARCHS: List[str] = _smallest_per_module(CRA_ARCHS)
#: Every ``<arch>.<base tag>_gates_untrained`` tag, by architecture.
GATES_UNTRAINED_TAGS: Dict[str, str] = {
    timm.models.get_arch_name(n): n for n in weight_status_tags(WEIGHTS_GATES_UNTRAINED)}
#: The smallest architecture with a gates-untrained tag of each model module (the Hub loading tests).
SMALL_GATES_UNTRAINED_ARCHS: List[str] = _smallest_per_module(list(GATES_UNTRAINED_TAGS))
