#!/usr/bin/env python
"""Render the docs' speed and memory tables from benchmark JSONs written by tools/benchmark.py.

  python tools/benchmark_table.py results/benchmark-2026-11-25-cpu2.json \
      results/benchmark-2026-11-25-cpu2-compile-fp32.json --update-docs
  python tools/benchmark_table.py results/benchmark-2026-11-26-cpu2.json --block speed-table-epyc --update-docs
"""
import argparse
import sys
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from timm_cra.benchmark.report import group_results, load_run  # noqa: E402
from timm_cra.benchmark.runner import BenchResult  # noqa: E402
from tools.doc_blocks import find_block_file, replace_marked_block  # noqa: E402

__all__ = ['DEFAULT_BLOCK', 'VARIANTS', 'speed_tables', 'main']

#: Columns: the variants a reader compares, in this order (others stay in the full results files)
VARIANTS = ('cra', 'cra_naive', 'se', 'eca', 'gate_floor')
_LABELS = {'cra': 'CRA', 'cra_naive': 'naive CRA', 'se': 'SE', 'eca': 'ECA', 'gate_floor': 'bare gate'}

#: The marked doc block that ``speed_tables`` fills unless told another (``--block``).
DEFAULT_BLOCK = 'speed-table'


def speed_tables(runs: Sequence[Tuple[str, Dict, List[BenchResult]]], block: str = DEFAULT_BLOCK) -> str:
    """The speed and memory tables from several runs ``(file name, meta, results)``: time ratios to the
    base model (min over rounds, median in brackets) and saved activations, with each row's source.

    Where runs time the same row (model, setting, precision, mode, batch), the later run's measurement is
    shown, in the place of the row's first appearance. Memory rows come from the first run that has the model
    (every run measures it the same way, fp32, untouched by autocast). The tables end with the command that
    renders them into ``block``.
    """
    labels = [_LABELS[v] for v in VARIANTS]
    speed: Dict[tuple, str] = {}
    memory: Dict[str, str] = {}
    for source, meta, results in runs:
        precision = 'bf16' if meta.get('bf16') else 'fp32'
        for (name, setting, mode, bs), row in group_results([r for r in results if r.params]).items():
            base = row.get('base')
            cells = [f'{r.ratio_min:.3f} ({r.ratio_median:.3f})' if (r := row.get(v)) else '' for v in VARIANTS]
            speed[(name, setting, precision, mode, bs)] = (
                f"| {name} | {setting}, {precision} | {mode} | {bs} | "
                f"{f'{base.img_per_s:.1f}' if base else ''} | " + ' | '.join(cells) + f' | {source} |')
        by_model: Dict[str, Dict[str, BenchResult]] = {}
        for r in results:
            if r.params:
                by_model.setdefault(r.name, {})[r.variant] = r
        for name, row in by_model.items():
            base = row.get('base')
            if name in memory or base is None:
                continue
            cells = [f'{r.saved_mb / base.saved_mb:.3f}x' if (r := row.get(v)) else '' for v in VARIANTS]
            memory[name] = f'| {name} | {base.saved_mb:.0f} MB | ' + ' | '.join(cells) + f' | {source} |'
    command = ' '.join(['python tools/benchmark_table.py'] + [f'results/{source}' for source, _, _ in runs]
                       + ([] if block == DEFAULT_BLOCK else ['--block', block]) + ['--update-docs'])
    return '\n'.join(
        ['| model | setting | mode | batch | base img/s | ' + ' | '.join(labels) + ' | file |',
         '|---|---|---|---:|---:|' + '---:|' * len(labels) + '---|'] + list(speed.values())
        + ['', 'Activations saved for backward (one training forward, fp32, batch of the training rows), ratio '
               'to the base model:', '',
           '| model | base | ' + ' | '.join(labels) + ' | file |', '|---|---:|' + '---:|' * len(labels) + '---|']
        + list(memory.values())
        + ['', f'Rendered by `{command}` (a later file\'s speed row replaces an earlier one\'s).']) + '\n'


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('runs', nargs='+', type=Path, help='benchmark JSON files, in table order')
    p.add_argument('--update-docs', action='store_true', help='fill the --block in README.md / docs/*.md')
    p.add_argument('--block', default=DEFAULT_BLOCK,
                   help='marked block (<!-- NAME:start --> ... <!-- NAME:end -->); one per machine measured')
    args = p.parse_args(argv)
    missing = [str(r) for r in args.runs if not r.is_file()]
    if missing:
        raise SystemExit(f'No such benchmark file: {", ".join(missing)} (run tools/benchmark.py first).')
    table = speed_tables([(r.name, *load_run(r)) for r in args.runs], block=args.block)
    print(table, end='')
    if args.update_docs:
        replace_marked_block(find_block_file(args.block), args.block, table)


if __name__ == '__main__':
    main()
