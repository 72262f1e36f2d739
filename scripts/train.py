#!/usr/bin/env python3
"""Train a timm / timm-cra classifier: thin CLI over ``timm_cra.train``.

    python scripts/train.py --config cifar --model cra_resnet18 --data-dir ../shared/data/cifar10
    torchrun --nproc_per_node 2 scripts/train.py --config cifar ...
"""
from timm_cra.utils.errors import run_cli


def main(argv=None):
    from timm_cra.train import main as train  # inside run_cli: a missing [train] extra is one error line
    return train(argv)


if __name__ == '__main__':
    run_cli(main)
