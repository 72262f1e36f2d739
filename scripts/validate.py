#!/usr/bin/env python3
"""Validate a timm / timm-cra classifier: thin CLI over ``timm_cra.eval.validate``.

    python scripts/validate.py --model cra_resnet50 --data-dir ../shared/data/imagenet_val_sample
"""
import sys

from timm_cra.data import UsageError
from timm_cra.eval.validate import main

if __name__ == '__main__':
    try:
        main()
    except UsageError as e:  # bad input: one clear message, no traceback
        print(f'error: {e}', file=sys.stderr)
        sys.exit(2)
