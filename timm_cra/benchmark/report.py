"""Markdown tables of benchmark results: one row per (model, setting, mode, batch), one column per variant."""
import dataclasses
import json
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from .runner import BenchResult

__all__ = ['markdown_summary', 'load_run', 'group_results']


def _variants(results: Sequence[BenchResult]) -> List[str]:
    out: List[str] = []
    for r in results:
        if r.variant not in out:
            out.append(r.variant)
    return out


def group_results(results: Sequence[BenchResult]) -> Dict[tuple, Dict[str, BenchResult]]:
    """``{(name, setting, mode, batch_size): {variant: result}}``: one table row per key."""
    groups: Dict[tuple, Dict[str, BenchResult]] = {}
    for r in results:
        groups.setdefault((r.name, r.setting, r.mode, r.batch_size), {})[r.variant] = r
    return groups


def _model_tables(results: Sequence[BenchResult]) -> List[str]:
    variants = [v for v in _variants(results) if v != 'base']
    lines = [
        'Models: base img/s, then each variant\'s time ratio to the base model (min over rounds, median in brackets).',
        '',
        '| model | setting | mode | batch | base img/s | ' + ' | '.join(variants) + ' |',
        '|---|---|---|---:|---:|' + '---:|' * len(variants),
    ]
    for (name, setting, mode, bs), row in group_results(results).items():
        base = row.get('base')
        cells = [f'{r.ratio_min:.3f} ({r.ratio_median:.3f})' if (r := row.get(v)) else '' for v in variants]
        lines.append(f"| {name} | {setting} | {mode} | {bs} | {base.img_per_s:.1f} | " if base else
                     f"| {name} | {setting} | {mode} | {bs} | | ")
        lines[-1] += ' | '.join(cells) + ' |'
    mem: Dict[str, Dict[str, BenchResult]] = {}
    for r in results:
        mem.setdefault(r.name, {})[r.variant] = r
    lines += ['', 'Training memory: activations saved for backward in one forward at the train batch size '
                  '(ratio to base); parameters; multiply-accumulates per image.', '',
              '| model | ' + ' | '.join(['base'] + variants) + ' |', '|---|' + '---:|' * (len(variants) + 1)]
    for name, row in mem.items():
        base = row.get('base')
        cells = []
        for v in ['base'] + variants:
            r = row.get(v)
            ratio = f' ({r.saved_mb / base.saved_mb:.3f}x)' if base and r else ''
            cells.append(f'{r.saved_mb:.0f} MB{ratio}, {r.params / 1e6:.2f} M, {r.macs / 1e9:.4f} GMACs' if r else '')
        lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
    return lines


def _layer_tables(results: Sequence[BenchResult]) -> List[str]:
    variants = _variants(results)
    lines = [
        'Layers alone: ms per call (min over rounds), ratio to the naive CRA in brackets. Shape: C x H x W.',
        '',
        '| shape | setting | mode | batch | ' + ' | '.join(variants) + ' |',
        '|---|---|---|---:|' + '---:|' * len(variants),
    ]
    for (name, setting, mode, bs), row in group_results(results).items():
        cells = [f'{r.min_s * 1e3:.2f} ({r.ratio_min:.2f})' if (r := row.get(v)) else '' for v in variants]
        lines.append(f'| {name} | {setting} | {mode} | {bs} | ' + ' | '.join(cells) + ' |')
    return lines


def _primitive_tables(results: Sequence[BenchResult]) -> List[str]:
    columns = list(dict.fromkeys((r.name, r.batch_size) for r in results))  # one per (shape, batch)
    lines = ['Single operations: ms per call (min over rounds), ratio to the mean (SE squeeze) in brackets.', '',
             '| operation | ' + ' | '.join(f'{s} (N={n})' for s, n in columns) + ' |',
             '|---|' + '---:|' * len(columns)]
    by_op: Dict[str, Dict[tuple, BenchResult]] = {}
    for r in results:
        by_op.setdefault(r.variant, {})[(r.name, r.batch_size)] = r
    for op, row in by_op.items():
        cells = [f'{r.min_s * 1e3:.2f} ({r.ratio_min:.1f})' if (r := row.get(c)) else '' for c in columns]
        lines.append(f'| {op} | ' + ' | '.join(cells) + ' |')
    return lines


def markdown_summary(results: Sequence[BenchResult], meta: Dict) -> str:
    lines = [
        f"Measured {meta['date']} on {meta['device']}, torch {meta['torch']}"
        f"{', bf16 autocast' if meta.get('bf16') else ', fp32'}; {meta['rounds']} interleaved rounds.",
        '',
    ]
    models = [r for r in results if r.params]
    primitives = [r for r in results if r.setting == 'primitive']
    layers = [r for r in results if not r.params and r.setting != 'primitive']
    if models:
        lines += _model_tables(models) + ['']
    if layers:
        lines += _layer_tables(layers) + ['']
    if primitives:
        lines += _primitive_tables(primitives) + ['']
    return '\n'.join(lines)


def load_run(path: Path) -> Tuple[Dict, List[BenchResult]]:
    """(meta, results) of a JSON written by ``tools/benchmark.py``."""
    data = json.loads(Path(path).read_text())
    fields = {f.name for f in dataclasses.fields(BenchResult)}
    return data['meta'], [BenchResult(**{k: v for k, v in r.items() if k in fields}) for r in data['results']]

