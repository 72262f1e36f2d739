#!/usr/bin/env python
"""Print the params / GMACs table of every cra_* model and its base model; --update-readme writes it
into README.md between the model-table markers."""
import argparse
from pathlib import Path

import timm_cra  # noqa: F401  (registers the models)
from timm_cra.utils.tables import complexity_markdown, complexity_rows, replace_marked_block

README = Path(__file__).resolve().parents[1] / 'README.md'


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--update-readme', action='store_true', help=f'write the table into {README}')
    parser.add_argument('--models', nargs='*', help='model names (default: every cra_* model)')
    args = parser.parse_args()
    table = complexity_markdown(complexity_rows(args.models))
    print(table, end='')
    if args.update_readme:
        changed = replace_marked_block(README, 'model-table', table)
        print(f"README.md {'updated' if changed else 'already up to date'}")


if __name__ == '__main__':
    main()
