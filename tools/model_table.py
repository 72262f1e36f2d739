#!/usr/bin/env python
"""Print the params / GMACs table of every cra_* model and its base model; --update-docs writes it into
the doc file holding the model-table block (README.md or docs/*.md).

    python tools/model_table.py --update-docs
"""
import argparse
import sys
from pathlib import Path
from typing import List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import timm  # noqa: E402

import timm_cra  # noqa: E402,F401  (registers the models)
from timm_cra.utils import model_complexity  # noqa: E402
from tools.doc_blocks import find_block_file, replace_marked_block  # noqa: E402

__all__ = ['BLOCK', 'complexity_rows', 'complexity_markdown', 'main']

BLOCK = 'model-table'


def complexity_rows(model_names: Optional[Sequence[str]] = None) -> List[dict]:
    """Params and GMACs of each ``cra_*`` model and of the model it adds CRA to (``cra_`` removed), at the
    input size of the model's pretrained cfg."""
    rows = []
    for name in model_names or timm.list_models('cra_*'):
        base_name = name[len('cra_'):]
        input_size = timm.get_pretrained_cfg(name).input_size
        cra = model_complexity(timm.create_model(name), input_size)
        base = model_complexity(timm.create_model(base_name), input_size)
        rows.append(dict(
            model=name, input=input_size[-1], params=cra['params'], gmacs=cra['gmacs'],
            base_model=base_name, base_params=base['params'], base_gmacs=base['gmacs'],
        ))
    return rows


def complexity_markdown(rows: Sequence[dict]) -> str:
    lines = [
        '| model | input | params | GMACs | base model | base params | base GMACs | CRA params | CRA MMACs |',
        '|---|---:|---:|---:|---|---:|---:|---:|---:|',
    ]
    for r in rows:
        lines.append(
            f"| `{r['model']}` | {r['input']} | {r['params']:,} | {r['gmacs']:.3f} | `{r['base_model']}` | {r['base_params']:,} "
            f"| {r['base_gmacs']:.3f} | +{r['params'] - r['base_params']:,} "
            f"| +{(r['gmacs'] - r['base_gmacs']) * 1e3:.2f} |")
    return '\n'.join(lines) + '\n'


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--update-docs', action='store_true', help=f'write the table into the {BLOCK} block')
    parser.add_argument('--models', nargs='*', help='model names (default: every cra_* model)')
    args = parser.parse_args(argv)
    table = complexity_markdown(complexity_rows(args.models))
    print(table, end='')
    if args.update_docs:
        path = find_block_file(BLOCK)
        changed = replace_marked_block(path, BLOCK, table)
        print(f"{path.name} {'updated' if changed else 'already up to date'}")


if __name__ == '__main__':
    main()
