"""Retrofit CRA onto a network with pretrained weights: every base weight kept, one new gate per block.

A CRA network is its base network plus a ``CraAttn`` gate in each block's attention slot (``attn_layer`` of
timm's ResNet blocks, ``se_layer`` of the EfficientNet-family blocks). Two entry points:

* :func:`retrofit_cra` inserts the gates into a model the user already has (any timm ResNet / EfficientNet /
  MobileNet, or this package's CIFAR ResNets). Where the base has SE (``seresnet*``, ``efficientnet_*``),
  CRA *replaces* it: the SE weights are dropped and the network no longer computes what the base did.
* :func:`retrofit_state_dict` maps a base checkpoint onto a ``cra_*`` model (the load hook of the
  ``<cra_arch>.<base_tag>_gates_untrained`` tags): every base key must land on a model key, and only the
  CRA gate parameters may be missing; they are initialised here.

A gate starts at :meth:`CraAttn.constant_gate_state <timm_cra.layers.CraAttn.constant_gate_state>`: zero kernel
and bias ``b`` scale every channel by the constant ``gate(b)`` (``sigmoid(b)`` by default), so the network starts
close to the base (exact pass-through is impossible with a sigmoid). :data:`DEFAULT_GATE_BIAS` was chosen by
fine-tuning on CIFAR-10 (``docs/retrofit.md``).
"""
from typing import Dict, Iterable, Iterator, Optional, Tuple, Type

import torch
from torch import nn
from timm.models._efficientnet_blocks import (CondConvResidual, DepthwiseSeparableConv, EdgeResidual,
                                              InvertedResidual)
from timm.models.resnet import BasicBlock, Bottleneck

from ..layers import CraAttn
from ._weight_checks import WeightsCheckError

__all__ = ['ATTN_SLOTS', 'DEFAULT_GATE_BIAS', 'RetrofitKeyError', 'retrofit_cra', 'init_cra_gates',
           'cra_gate_keys', 'retrofit_state_dict', 'retrofit_filter_fn']

#: Load-time gate init: zero kernel, this bias (``sigmoid(4) = 0.982``). Chosen from the CIFAR-10 fine-tuning
#: runs recorded in ``results/retrofit/``.
DEFAULT_GATE_BIAS = 4.0

#: Block classes with an attention slot ``block.se`` and the norm whose output that slot gates (its
#: ``num_features`` is the gate's channel count).
ATTN_SLOTS: Dict[Type[nn.Module], str] = {
    BasicBlock: 'bn2',
    Bottleneck: 'bn3',
    DepthwiseSeparableConv: 'bn1',
    InvertedResidual: 'bn2',
    CondConvResidual: 'bn2',
    EdgeResidual: 'bn1',
}


class RetrofitKeyError(WeightsCheckError, ValueError):
    """A base checkpoint does not map onto the CRA model key for key (wrong base architecture)."""


def _slot_blocks(model: nn.Module) -> Iterator[Tuple[str, nn.Module, nn.Module]]:
    for name, module in model.named_modules():
        norm = ATTN_SLOTS.get(type(module))
        if norm is not None and hasattr(module, 'se'):
            yield name, module, getattr(module, norm)


@torch.no_grad()
def init_cra_gates(model: nn.Module, gate_bias: float = DEFAULT_GATE_BIAS) -> int:
    """Set every ``CraAttn`` gate of ``model`` to zero kernel + ``gate_bias`` (gate = ``sigmoid(gate_bias)``).
    Returns the number of gates set."""
    n = 0
    for m in model.modules():
        if isinstance(m, CraAttn):
            for k, v in m.constant_gate_state(gate_bias).items():
                m.get_parameter(k).copy_(v)
            n += 1
    return n


def retrofit_cra(model: nn.Module, gate_bias: float = DEFAULT_GATE_BIAS, **cra_kwargs) -> nn.Module:
    """Insert a ``CraAttn`` gate into the attention slot of every block of ``model`` (in place; returned).

    Every existing weight is kept; an existing SE / ECA / other attention module in the slot is replaced
    (its weights are dropped). Gates start at zero kernel + ``gate_bias``. ``cra_kwargs`` go to ``CraAttn``
    (e.g. ``pool_size=4`` as in ``cra_cifar_resnet20``).

    Raises:
        ValueError: the model has no block with an attention slot this function knows (:data:`ATTN_SLOTS`).
    """
    blocks = list(_slot_blocks(model))
    if not blocks:
        known = ', '.join(sorted(c.__name__ for c in ATTN_SLOTS))
        raise ValueError(f'retrofit_cra: {type(model).__name__} has no block with an attention slot ({known}).')
    cra_kwargs.setdefault('inplace', True)
    for _, block, norm in blocks:
        weight = norm.weight
        block.se = CraAttn(norm.num_features, device=weight.device, dtype=weight.dtype, **cra_kwargs)
    init_cra_gates(model, gate_bias)
    return model


def cra_gate_keys(model: nn.Module) -> Dict[str, torch.Tensor]:
    """State-dict entries (key -> tensor) of the ``CraAttn`` gates of ``model``."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, CraAttn):
            for k, v in m.state_dict().items():
                out[f'{name}.{k}' if name else k] = v
    return out


def _is_optional(key: str) -> bool:
    # BatchNorm fills in a missing counter itself (old checkpoints omit it).
    return key.endswith('num_batches_tracked')


def retrofit_state_dict(
        state_dict: Dict[str, torch.Tensor],
        model: nn.Module,
        gate_bias: float = DEFAULT_GATE_BIAS,
        skip_prefixes: Iterable[str] = (),
) -> Dict[str, torch.Tensor]:
    """``state_dict`` of the base network plus initialised CRA gates for ``model`` (a CRA model).

    Checked strictly by key: a base key the model lacks, or a model key that is neither a CRA gate parameter
    nor in the base, raises :class:`RetrofitKeyError` (shapes are left to ``load_state_dict``).
    ``skip_prefixes``: keys the caller handles itself (timm drops a classifier whose class count changes).
    """
    own = model.state_dict()
    gates = cra_gate_keys(model)
    skip = tuple(skip_prefixes)
    unexpected = [k for k in state_dict if k not in own and not k.startswith(skip)]
    missing = [k for k in own if k not in state_dict and k not in gates and not _is_optional(k)
               and not k.startswith(skip)]
    clash = [k for k in gates if k in state_dict]
    if unexpected or missing or clash:
        parts = []
        for label, keys in (('unexpected base keys', unexpected), ('model keys missing from the base', missing),
                            ('gate keys already in the base', clash)):
            if keys:
                parts.append(f"{label}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''} ({len(keys)})")
        raise RetrofitKeyError(
            f'the base checkpoint does not map onto {type(model).__name__} with CRA gates ('
            f"{'; '.join(parts)}): load the base weights of the same architecture without attention")
    out = dict(state_dict)
    for name, m in model.named_modules():
        if isinstance(m, CraAttn):
            out.update((f'{name}.{k}' if name else k, v) for k, v in m.constant_gate_state(gate_bias).items())
    return out


def retrofit_filter_fn(gate_bias: float = DEFAULT_GATE_BIAS, classifier: Optional[str] = None):
    """A timm ``pretrained_filter_fn`` that maps a base checkpoint onto a CRA model (see
    :func:`retrofit_state_dict`). The classifier is exempt from the key check (timm drops it itself when
    ``num_classes`` differs), and base keys of top-level modules the model does not build (the head of a
    ``features_only`` model) are left out; every key of the model is still checked."""
    skip = (f'{classifier}.',) if classifier else ()

    def _filter(state_dict, model):
        children = {name for name, _ in model.named_children()}
        absent = {k.split('.', 1)[0] for k in state_dict} - children
        if absent:
            state_dict = {k: v for k, v in state_dict.items() if k.split('.', 1)[0] not in absent}
        return retrofit_state_dict(state_dict, model, gate_bias, skip_prefixes=skip)
    return _filter
