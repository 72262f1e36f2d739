#!/usr/bin/env python3
"""Export a timm / timm-cra model to ONNX, verified in onnxruntime: thin CLI over ``timm_cra.export.cli``
(same as ``python -m timm_cra.export``).

    python scripts/export_onnx.py --model cra_resnet50 --img-size 288 --output cra_resnet50-288.onnx
"""
from timm_cra.utils.errors import run_cli
from timm_cra.export.cli import main

if __name__ == '__main__':
    run_cli(main)
