#!/usr/bin/env python3
"""The README's main job, from a clone: ``timm-cra-validate`` (``python -m timm_cra.eval``) with this repository's
files as the default arguments.

With no arguments it validates the published CIFAR-10 CRA-ResNet-20 weights (this repository's ``hub/`` folder)
on the CIFAR-10 test split shipped in ``data/cifar10``: no network needed. Arguments, if any, go to
``timm-cra-validate`` unchanged (use that command itself).

    python scripts/validate.py
"""
import sys
from pathlib import Path

from timm_cra.utils.errors import run_cli

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = 'cra_cifar_resnet20.cifar10'
DEFAULT_ARGS = [
    '--model', f"local-dir:{ROOT / 'hub' / 'timm-cra' / DEFAULT_MODEL}", '--pretrained',
    '--data-dir', str(ROOT / 'data' / 'cifar10'), '--split', 'test', '--batch-size', '500', '--workers', '0',
]


def main(argv=None):
    from timm_cra.eval.validate import main as validate  # inside run_cli: a missing [train] extra is one error line
    return validate(argv)


if __name__ == '__main__':
    run_cli(main, sys.argv[1:] or DEFAULT_ARGS)
