#!/usr/bin/env python
"""Regenerate hub/<org>/<repo>/{config.json,README.md} for every registered CRA weight tag.

    python tools/generate_hub.py            # from the repository root
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from timm_cra.hub.generate import main  # noqa: E402
from timm_cra.utils.errors import run_cli  # noqa: E402

if __name__ == '__main__':
    run_cli(lambda argv: main(argv, root=Path(__file__).resolve().parents[1]), sys.argv[1:])
