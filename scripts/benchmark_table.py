#!/usr/bin/env python
"""Render the README's speed and memory tables from benchmark JSONs written by scripts/benchmark.py.

  python scripts/benchmark_table.py results/benchmark-2026-11-25-cpu2.json \
      results/benchmark-2026-11-25-cpu2-compile-fp32.json --update-readme
  python scripts/benchmark_table.py results/benchmark-2026-11-26-cpu2.json --block speed-table-epyc --update-readme
"""
import argparse
from pathlib import Path

from timm_cra.benchmark.report import DEFAULT_README_BLOCK, load_run, readme_tables
from timm_cra.utils.tables import replace_marked_block

ROOT = Path(__file__).resolve().parents[1]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('runs', nargs='+', type=Path, help='benchmark JSON files, in table order')
    p.add_argument('--update-readme', action='store_true', help='fill the --block of README.md')
    p.add_argument('--block', default=DEFAULT_README_BLOCK,
                   help='marked README block (<!-- NAME:start --> ... <!-- NAME:end -->); one per machine measured')
    args = p.parse_args()
    missing = [str(r) for r in args.runs if not r.is_file()]
    if missing:
        raise SystemExit(f'No such benchmark file: {", ".join(missing)} (run scripts/benchmark.py first).')
    table = readme_tables([(r.name, *load_run(r)) for r in args.runs], block=args.block)
    print(table, end='')
    if args.update_readme:
        replace_marked_block(ROOT / 'README.md', args.block, table)


if __name__ == '__main__':
    main()
