#!/usr/bin/env python3
"""Train a timm / timm-cra classifier: thin CLI over ``timm_cra.train``.

    python scripts/train.py --config cifar --model cra_resnet18 --data-dir ../shared/data/cifar10
    torchrun --nproc_per_node 2 scripts/train.py --config cifar ...
"""
from timm_cra.utils.errors import run_cli
from timm_cra.train import main

if __name__ == '__main__':
    run_cli(main)
