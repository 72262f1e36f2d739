"""Convert the official CRA-ResNet-50 checkpoint (https://github.com/syt2/CRA) to ``cra_resnet50.paper_in1k``.

Paper: `Convolutional Neural Network optimization via Channel Reassessment Attention module`
    - YuTao Shen, Ying Wen, 2020 - https://arxiv.org/abs/2010.05605

    python -m timm_cra.hub.convert_official cra_resnet50_best.pth.tar --out hub/timm-cra/cra_resnet50.paper_in1k

The official file (released on Google Drive) is what the official ``train.py`` saves: ``{'epoch', 'recorder' (a
``metrics.RecorderMeter`` holding numpy arrays), 'state_dict' ('module.' prefixed), 'optimizer', 'scheduler'}``.
It is read by the package's one checkpoint reader (:mod:`timm_cra.utils.weights`, ``torch.load(weights_only=True)``)
with ``metrics.RecorderMeter`` allowlisted by name as the inert :class:`RecorderMeter` stand-in; numpy arrays
come through numpy's rebuilders restricted to numeric dtypes. Nothing in the file is executed: a pickle that
needs any other global is refused.
"""
import argparse
import collections
import re
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import torch

from ..utils.errors import UsageError, printable, run_cli
from ..utils.weights import PickledNamespace, load_checkpoint_file
from ..utils.cli import CommandParser

__all__ = ['RecorderMeter', 'load_official_checkpoint', 'convert_official_state_dict', 'convert_official',
           'OFFICIAL_MODEL_NAME', 'OFFICIAL_GLOBALS', 'main']

OFFICIAL_MODEL_NAME = 'cra_resnet50.paper_in1k'


class RecorderMeter(PickledNamespace):
    """Inert stand-in for the official ``metrics.RecorderMeter`` (training curves as numpy arrays): data only."""


#: The globals an official checkpoint needs beyond tensors / containers / numeric numpy arrays.
OFFICIAL_GLOBALS = [(RecorderMeter, 'metrics.RecorderMeter')]


def load_official_checkpoint(path: Union[str, Path]) -> Dict[str, Any]:
    """Read an official CRA checkpoint without executing code from it (tensors end up on CPU)."""
    return load_checkpoint_file(str(path), extra_safe_globals=OFFICIAL_GLOBALS)


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
        label_names=model.pretrained_cfg.get('label_names'),  # the registered tag's (ImageNet-1k) classes
        label_descriptions=model.pretrained_cfg.get('label_descriptions'),
        recipe='Trained on ImageNet-1k by the paper\'s authors with the official code (https://github.com/syt2/CRA); '
               'converted to timm with timm_cra.hub.convert_official (key mapping only, values unchanged).')


def main(argv: Optional[Sequence[str]] = None) -> Path:
    parser = CommandParser(prog='timm-cra-convert', description=__doc__.splitlines()[0])
    parser.add_argument('checkpoint', help='official checkpoint file (torch pickle; read with weights_only=True)')
    parser.add_argument('--out', required=True, help='repo folder to write')
    parser.add_argument('--results', default=None,
                        help=f'eval results JSON for the card, e.g. the paper\'s numbers in a checkout: '
                             f'results/{OFFICIAL_MODEL_NAME}.json (default: a card without numbers)')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing folder')
    args = parser.parse_args(argv)
    results = args.results  # never a file found in the current folder: a stray one put its numbers on the card
    from .repo import check_repo_output
    check_repo_output(args.out, '--out', [('checkpoint', args.checkpoint)]
                      + ([('--results', results)] if results is not None else []))
    try:
        out = convert_official(args.checkpoint, args.out, results=results, overwrite=args.overwrite)
    except (FileExistsError, ValueError) as e:
        raise UsageError(str(e).replace('timm_cra: ', '')) from e
    print(f'Wrote {printable(out)}; load it with timm.create_model("local-dir:{printable(out)}", pretrained=True)')
    print(f'Its card quotes the results in {printable(results)}.' if results is not None else
          'Its card has no accuracy numbers: pass --results FILE to quote some.')
    return out


if __name__ == '__main__':
    run_cli(main)
