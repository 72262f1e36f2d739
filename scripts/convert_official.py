#!/usr/bin/env python3
"""Convert the official CRA-ResNet-50 checkpoint (syt2/CRA) into the cra_resnet50.paper_in1k repo folder:
thin CLI over ``timm_cra.hub.convert_official`` (the checkpoint is read with weights_only=True: nothing in it runs).

    python scripts/convert_official.py cra_resnet50_best.pth.tar --out hub/timm-cra/cra_resnet50.paper_in1k --overwrite
"""
from timm_cra.utils.errors import run_cli
from timm_cra.hub.convert_official import main

if __name__ == '__main__':
    run_cli(main)
