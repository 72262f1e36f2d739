"""Markdown tables of benchmark results: one row per (model, setting, mode, batch), one column per variant."""
import dataclasses
import json
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from .runner import BenchResult

__all__ = ['markdown_summary', 'load_run', 'readme_tables']

#: README columns: the variants a reader compares, in this order (others stay in the full results files)
README_VARIANTS = ('cra', 'cra_naive', 'se', 'eca', 'gate_floor')
_README_LABELS = {'cra': 'CRA', 'cra_naive': 'naive CRA', 'se': 'SE', 'eca': 'ECA', 'gate_floor': 'bare gate'}


def _variants(results: Sequence[BenchResult]) -> List[str]:
    out: List[str] = []
    for r in results:
        if r.variant not in out:
            out.append(r.variant)
    return out


def _groups(results: Sequence[BenchResult]) -> Dict[tuple, Dict[str, BenchResult]]:
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
    for (name, setting, mode, bs), row in _groups(results).items():
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
    for (name, setting, mode, bs), row in _groups(results).items():
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
    """(meta, results) of a JSON written by ``scripts/benchmark.py``."""
    data = json.loads(Path(path).read_text())
    fields = {f.name for f in dataclasses.fields(BenchResult)}
    return data['meta'], [BenchResult(**{k: v for k, v in r.items() if k in fields}) for r in data['results']]


#: The README's marked block that ``readme_tables`` fills unless told another (``--block``).
DEFAULT_README_BLOCK = 'speed-table'


def readme_tables(runs: Sequence[Tuple[str, Dict, List[BenchResult]]], block: str = DEFAULT_README_BLOCK) -> str:
    """The README's speed and memory tables from several runs ``(file name, meta, results)``: time ratios
    to the base model (min over rounds, median in brackets) and saved activations, with each row's source.

    Where runs time the same row (model, setting, precision, mode, batch), the later run's measurement is
    shown, in the place of the row's first appearance. Memory rows come from the first run that has the model
    (every run measures it the same way, fp32, untouched by autocast). The tables end with the command that
    renders them into the README's ``block``.
    """
    labels = [_README_LABELS[v] for v in README_VARIANTS]
    speed: Dict[tuple, str] = {}
    memory: Dict[str, str] = {}
    for source, meta, results in runs:
        precision = 'bf16' if meta.get('bf16') else 'fp32'
        for (name, setting, mode, bs), row in _groups([r for r in results if r.params]).items():
            base = row.get('base')
            cells = [f'{r.ratio_min:.3f} ({r.ratio_median:.3f})' if (r := row.get(v)) else '' for v in README_VARIANTS]
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
            cells = [f'{r.saved_mb / base.saved_mb:.3f}x' if (r := row.get(v)) else '' for v in README_VARIANTS]
            memory[name] = f'| {name} | {base.saved_mb:.0f} MB | ' + ' | '.join(cells) + f' | {source} |'
    command = ' '.join(['python scripts/benchmark_table.py'] + [f'results/{source}' for source, _, _ in runs]
                       + ([] if block == DEFAULT_README_BLOCK else ['--block', block]) + ['--update-readme'])
    return '\n'.join(
        ['| model | setting | mode | batch | base img/s | ' + ' | '.join(labels) + ' | file |',
         '|---|---|---|---:|---:|' + '---:|' * len(labels) + '---|'] + list(speed.values())
        + ['', 'Activations saved for backward (one training forward, fp32, batch of the training rows), ratio '
               'to the base model:', '',
           '| model | base | ' + ' | '.join(labels) + ' | file |', '|---|---:|' + '---:|' * len(labels) + '---|']
        + list(memory.values())
        + ['', f'Rendered by `{command}` (a later file\'s speed row replaces an earlier one\'s).']) + '\n'
