#!/usr/bin/env python
"""Print the params / GMACs table of every cra_* model and its base model, and the table of the
``*_gates_untrained`` tags; --update-docs writes them into the doc files holding the model-table and
gates-untrained-table blocks (README.md or docs/*.md). Both are read from timm's registry.

    python tools/model_table.py --update-docs
"""
import argparse
import sys
from pathlib import Path
from typing import List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import timm  # noqa: E402

import timm_cra  # noqa: E402,F401  (registers the models)
from timm_cra.models import WEIGHTS_GATES_UNTRAINED, list_package_models, weight_status  # noqa: E402
from timm_cra.models._builder import base_arch  # noqa: E402
from timm_cra.utils import model_complexity  # noqa: E402
from tools.doc_blocks import find_block_file, replace_marked_block  # noqa: E402

__all__ = ['BLOCK', 'TAGS_BLOCK', 'UPDATE_COMMAND', 'cra_archs', 'complexity_rows', 'complexity_markdown',
           'gates_untrained_markdown', 'main']

BLOCK = 'model-table'
TAGS_BLOCK = 'gates-untrained-table'
#: The command that rewrites both blocks (named by the test that finds them stale).
UPDATE_COMMAND = 'python tools/model_table.py --update-docs'


def cra_archs() -> List[str]:
    """Every CRA architecture of this package, in timm's name order."""
    return [name for name in list_package_models() if name.startswith('cra_')]


def complexity_rows(model_names: Optional[Sequence[str]] = None) -> List[dict]:
    """Params and GMACs of each ``cra_*`` model and of the model it adds CRA to (``cra_`` removed), at the
    input size of the model's pretrained cfg."""
    rows = []
    for name in model_names or cra_archs():
        base_name = base_arch(name)
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


def gates_untrained_markdown(model_names: Optional[Sequence[str]] = None) -> str:
    """One row per ``<arch>.<base tag>_gates_untrained`` tag: the base weights' repo and eval transform, licence
    (bold when non-commercial)."""
    lines = ['| tag | weights (Hub repo) | input | crop | interp. | licence |', '|---|---|---|---|---|---|']
    for arch in model_names or cra_archs():
        for name, cfg in timm.models.get_arch_pretrained_cfgs(arch).items():
            if weight_status(cfg) != WEIGHTS_GATES_UNTRAINED:
                continue
            size = f'{cfg.input_size[-1]}' + (f' (test {cfg.test_input_size[-1]})' if cfg.test_input_size else '')
            licence = f'**{cfg.license}**' if '-nc' in (cfg.license or '') else cfg.license
            lines.append(f'| `{name}` | `{cfg.hf_hub_id}` | {size} | {cfg.crop_pct} | {cfg.interpolation} | {licence} |')
    return '\n'.join(lines) + '\n'


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--update-docs', action='store_true',
                        help=f'write the tables into the {BLOCK} and {TAGS_BLOCK} blocks')
    parser.add_argument('--models', nargs='*', help='model names (default: every cra_* model)')
    args = parser.parse_args(argv)
    tables = {BLOCK: complexity_markdown(complexity_rows(args.models)),
              TAGS_BLOCK: gates_untrained_markdown(args.models)}
    for block, table in tables.items():
        print(table)
        if args.update_docs:
            path = find_block_file(block)
            changed = replace_marked_block(path, block, table)
            print(f"{path.name} {'updated' if changed else 'already up to date'}")


if __name__ == '__main__':
    main()
