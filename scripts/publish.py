#!/usr/bin/env python3
"""Build (and optionally push) the Hub repo of a CRA weight tag: thin CLI over ``timm_cra.hub.publish``.

    python scripts/publish.py cra_resnet18.my_tag output/train/run/last.pth --results output/train/run/results.json
    python scripts/publish.py ... --push        # also create/update timm-cra/<name> on the Hub
"""
from timm_cra.utils.errors import run_cli
from timm_cra.hub.publish import main

if __name__ == '__main__':
    run_cli(main)
