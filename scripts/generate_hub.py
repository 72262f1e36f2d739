#!/usr/bin/env python
"""Regenerate hub/<org>/<repo>/{config.json,README.md} for every registered CRA weight tag.

    python scripts/generate_hub.py            # from the repository root
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from timm_cra.hub.generate import generate_hub, weight_tags  # noqa: E402


def main(argv=None):
    root = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default=str(root / 'hub'), help='root of the repo folders (default: hub/)')
    parser.add_argument('--results', default=str(root / 'results'), help='folder of <arch>.<tag>.json results')
    parser.add_argument('--list', action='store_true', help='only list the weight tags')
    args = parser.parse_args(argv)
    if args.list:
        print('\n'.join(weight_tags()))
        return
    for repo_dir in generate_hub(args.out, args.results):
        print(repo_dir)


if __name__ == '__main__':
    main()
