"""Convert the official CRA-ResNet-50 checkpoint (https://github.com/syt2/CRA) to ``cra_resnet50.paper_in1k``.

Paper: `Convolutional Neural Network optimization via Channel Reassessment Attention module`
    - YuTao Shen, Ying Wen, 2020 - https://arxiv.org/abs/2010.05605

The official file (released on Google Drive) is a torch pickle: ``{'epoch', 'recorder' (a
``metrics.RecorderMeter``), 'state_dict', 'optimizer', 'scheduler'}``. It is read with
:class:`RestrictedUnpickler`, which never imports or calls anything but tensor/storage rebuilders, containers
and numbers: unknown classes become inert :class:`UnknownObject` placeholders, and a pickle that tries to
*call* an unknown global (how a malicious ``__reduce__`` runs code) is refused.
"""
import collections
import pickle
import re
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch

__all__ = [
    'RestrictedUnpickler', 'UnknownObject', 'UnsafePickleError', 'load_official_checkpoint',
    'convert_official_state_dict', 'convert_official', 'OFFICIAL_MODEL_NAME',
]

OFFICIAL_MODEL_NAME = 'cra_resnet50.paper_in1k'


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle tried to call a function or class outside the allowed set."""


class _RefuseCall(type):
    # Calling the placeholder *class* is what REDUCE does with `os.system` & co: refuse it. Instances made the
    # way pickle rebuilds plain objects (NEWOBJ: cls.__new__, then BUILD: __setstate__) stay inert.
    def __call__(cls, *args, **kwargs):
        raise UnsafePickleError(
            f"timm_cra: refusing to call {cls.__module__}.{cls.__qualname__}{args!r:.80} while unpickling: "
            f"only tensors, containers and numbers are loaded from untrusted checkpoints.")


class UnknownObject(metaclass=_RefuseCall):
    """Inert stand-in for an instance of a class the restricted unpickler does not admit."""

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.args = args
        obj.state = None
        return obj

    def __setstate__(self, state):
        self.state = state

    def __repr__(self):
        return f'<UnknownObject {type(self).__module__}.{type(self).__qualname__}>'


_ALLOWED_GLOBALS = {
    ('collections', 'OrderedDict'): collections.OrderedDict,
    ('collections', 'Counter'): collections.Counter,  # LR scheduler milestones
    ('torch._utils', '_rebuild_tensor_v2'): torch._utils._rebuild_tensor_v2,
    ('torch._utils', '_rebuild_parameter'): torch._utils._rebuild_parameter,
    ('torch', 'Size'): torch.Size,
    ('torch', 'device'): torch.device,
    ('builtins', 'set'): set,
    ('builtins', 'frozenset'): frozenset,
    ('builtins', 'slice'): slice,
    ('builtins', 'complex'): complex,
}
_STORAGE_TYPES = {
    'FloatStorage', 'DoubleStorage', 'HalfStorage', 'BFloat16Storage', 'LongStorage', 'IntStorage',
    'ShortStorage', 'CharStorage', 'ByteStorage', 'BoolStorage', 'UntypedStorage',
}


def _allowed_global(module: str, name: str):
    if (module, name) in _ALLOWED_GLOBALS:
        return _ALLOWED_GLOBALS[(module, name)]
    if module == 'torch' and name in _STORAGE_TYPES:
        return getattr(torch, name)
    if module in ('numpy.core.multiarray', 'numpy._core.multiarray') and name in ('_reconstruct', 'scalar'):
        # Arrays/scalars in the training recorder; numpy rebuilds them from bytes without running user code.
        import numpy
        return getattr(numpy.core.multiarray if module == 'numpy.core.multiarray' else numpy._core.multiarray, name)
    if module == 'numpy' and name in ('ndarray', 'dtype'):
        import numpy
        return getattr(numpy, name)
    return None


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that admits only tensors/storages, containers and numbers; see the module docstring."""

    def find_class(self, module: str, name: str):
        allowed = _allowed_global(module, name)
        if allowed is not None:
            return allowed
        # Never import `module`: build a placeholder class named after the original.
        return _RefuseCall(name.rsplit('.', 1)[-1], (UnknownObject,), {'__module__': module, '__qualname__': name})


class _RestrictedPickleModule:
    """The ``pickle_module`` torch.load needs: our Unpickler, pickle's ``load`` built on it."""
    Unpickler = RestrictedUnpickler
    UnpicklingError = pickle.UnpicklingError
    __name__ = 'timm_cra_restricted_pickle'

    @staticmethod
    def load(file, **kwargs):
        return RestrictedUnpickler(file, **kwargs).load()


def load_official_checkpoint(path: Union[str, Path]) -> Dict[str, Any]:
    """Read an official CRA checkpoint without executing code from it (tensors end up on CPU)."""
    return torch.load(str(path), map_location='cpu', weights_only=False, pickle_module=_RestrictedPickleModule)


_KEY_RULES = [
    (re.compile(r'^basic_conv\.0\.(.+)$'), r'conv1.\1'),
    (re.compile(r'^basic_conv\.1\.(.+)$'), r'bn1.\1'),
    (re.compile(r'^stage_(\d+)\.(\d+)\.conv(\d)\.0\.(.+)$'), r'layer\1.\2.conv\3.\4'),
    (re.compile(r'^stage_(\d+)\.(\d+)\.conv(\d)\.1\.(.+)$'), r'layer\1.\2.bn\3.\4'),
    (re.compile(r'^stage_(\d+)\.(\d+)\.shortcut\.([01])\.(.+)$'), r'layer\1.\2.downsample.\3.\4'),
    # CraAttn in timm's block attribute `se`; its depthwise conv is `conv`.
    (re.compile(r'^stage_(\d+)\.(\d+)\.cra\.conv_cra\.(weight|bias)$'), r'layer\1.\2.se.conv.\3'),
    (re.compile(r'^classifier\.(weight|bias)$'), r'fc.\1'),
]


def _map_key(key: str) -> Optional[str]:
    for pattern, repl in _KEY_RULES:
        if pattern.match(key):
            return pattern.sub(repl, key)
    return None


def convert_official_state_dict(
        checkpoint: Dict[str, Any],
        target_keys,
) -> 'collections.OrderedDict[str, torch.Tensor]':
    """Map an official CRA-ResNet state dict (or a checkpoint holding one) onto timm ``cra_resnet*`` keys.

    Every source key must be consumed and every key in ``target_keys`` filled (BatchNorm
    ``num_batches_tracked`` may be absent in old checkpoints and is then set to 0); otherwise one
    ``ValueError`` lists the leftovers.
    """
    state = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError("timm_cra: not an official CRA checkpoint: expected a dict with a 'state_dict' of tensors.")
    target_keys = list(target_keys)
    converted, unconsumed = collections.OrderedDict(), []
    for key, value in state.items():
        bare = key[len('module.'):] if key.startswith('module.') else key  # DataParallel prefix
        new_key = _map_key(bare)
        if new_key is None or new_key not in target_keys or new_key in converted:
            unconsumed.append(key)
        else:
            converted[new_key] = value
    for key in target_keys:
        if key not in converted and key.endswith('num_batches_tracked'):
            converted[key] = torch.tensor(0, dtype=torch.long)
    missing = [k for k in target_keys if k not in converted]
    if unconsumed or missing:
        raise ValueError(
            'timm_cra: the checkpoint does not map onto the architecture. '
            f'Source keys not consumed ({len(unconsumed)}): {unconsumed[:20]}{" ..." if len(unconsumed) > 20 else ""}; '
            f'target keys not filled ({len(missing)}): {missing[:20]}{" ..." if len(missing) > 20 else ""}. '
            'Check that the file is the official CRA-ResNet-50 ImageNet checkpoint.')
    return collections.OrderedDict((k, converted[k]) for k in target_keys)


def convert_official(
        checkpoint_path: Union[str, Path],
        out_dir: Union[str, Path],
        *,
        model_name: str = OFFICIAL_MODEL_NAME,
        results: Optional[Union[str, Path, Dict[str, Any]]] = None,
        overwrite: bool = False,
) -> Path:
    """Official checkpoint -> Hub repo folder for ``model_name`` (config.json, model.safetensors, README.md)."""
    import timm
    from .. import models  # noqa: F401  (registers cra_*)
    from .repo import export_repo

    model = timm.create_model(model_name)
    state = convert_official_state_dict(load_official_checkpoint(checkpoint_path), model.state_dict().keys())
    model.load_state_dict(state, strict=True)
    model.eval()
    return export_repo(
        model, out_dir, model_name=model_name, results=results, overwrite=overwrite,
        recipe='Trained on ImageNet-1k by the paper\'s authors with the official code (https://github.com/syt2/CRA); '
               'converted to timm with timm_cra.hub.convert_official (key mapping only, values unchanged).')
