#!/usr/bin/env python
"""Regenerate ``hub/<org>/<repo>/`` (config.json + README.md) for every registered CRA weight tag.

The cards and configs in ``hub/`` are what the Hub repos hold (or will hold); they are derived only from the
registry (pretrained cfgs: class names, weight status), the architecture and
``results/<arch>.<tag>.json``, so regenerating them is the way to change them and a test checks they match.
Weights already in a repo folder (small models) are left in place. Repository tooling: not in the wheel.

    python tools/generate_hub.py [--out hub] [--results results] [--list]    # from the repository root
"""
import argparse
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Union

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import timm  # noqa: E402
from timm.models import get_arch_pretrained_cfgs  # noqa: E402

from timm_cra.models import list_package_models  # noqa: E402
from timm_cra.models._builder import (HUB_ORG, WEIGHTS_GATES_UNTRAINED, WEIGHTS_PENDING, weight_note,  # noqa: E402
                                      weight_status)
from timm_cra.hub.card import load_eval_results  # noqa: E402
from timm_cra.hub.repo import write_repo_metadata  # noqa: E402
from timm_cra.utils.cli import CommandParser  # noqa: E402
from timm_cra.utils.errors import UsageError, run_cli  # noqa: E402
from timm_cra.utils.io import check_output_folder  # noqa: E402

__all__ = ['weight_tags', 'generate_hub', 'create_parser', 'main']


def weight_tags() -> List[str]:
    """Every weight tag of this package's architectures that has its own ``timm-cra/`` Hub repo (tags with
    untrained gates load another tag's repo and have none)."""
    names = set()
    for arch in list_package_models():
        for name, cfg in get_arch_pretrained_cfgs(arch).items():
            if (cfg.hf_hub_id or '').startswith(f'{HUB_ORG}/') and weight_status(cfg) != WEIGHTS_GATES_UNTRAINED:
                names.add(name)
    return sorted(names)


def generate_hub(
        out_root: Union[str, Path] = 'hub',
        results_dir: Optional[Union[str, Path]] = 'results',
        names: Optional[List[str]] = None,
) -> List[Path]:
    """Write config.json + README.md of each weight tag's repo under ``out_root/<org>/<repo>``.

    Args:
        out_root: Root of the repo folders (the repository's ``hub/``).
        results_dir: Folder with ``<arch>.<tag>.json`` eval results (optional per tag).
        names: Weight tags to generate (default: :func:`weight_tags`).

    Returns:
        The repo folders written.
    """
    check_output_folder(out_root, '--out')  # '' wrote into the current folder, a file was a traceback
    out_root = Path(out_root)
    if results_dir and not Path(results_dir).is_dir():  # every card would silently lose its measured numbers
        raise UsageError(f'--results {results_dir} is not a folder: pass the folder of <arch>.<tag>.json results '
                         f'(the repository\'s results/).')
    plan = []
    for name in names or weight_tags():  # everything read and checked before the first file is written
        cfg = timm.get_pretrained_cfg(name)
        repo_id = cfg.hf_hub_id or f'{HUB_ORG}/{name}'
        results = Path(results_dir) / f'{name}.json' if results_dir else None
        results = load_eval_results(results) if results is not None and results.is_file() else None
        repo_dir = out_root.joinpath(*repo_id.split('/'))
        linked = [p for p in (repo_dir.parent, repo_dir, repo_dir / 'config.json', repo_dir / 'README.md')
                  if p.is_symlink()]
        if linked:  # the write would land outside --out
            raise UsageError(f'{linked[0]} is a symlink: generate writes only into --out {out_root}; remove the link.')
        plan.append((name, cfg, repo_id, results, repo_dir))
    written = []
    for name, cfg, repo_id, results, repo_dir in plan:
        model = timm.create_model(name, device='meta')  # shapes only: no weights needed for config and card
        repo_dir.mkdir(parents=True, exist_ok=True)
        write_repo_metadata(
            model, repo_dir, model_name=name, repo_id=repo_id,
            label_names=cfg.label_names, label_descriptions=cfg.label_descriptions,  # the tag's data, as registered
            results=results,
            weights_note=weight_note(cfg) if weight_status(cfg) == WEIGHTS_PENDING else None,
        )
        written.append(repo_dir)
    return written


def create_parser(root: Union[str, Path] = ROOT) -> argparse.ArgumentParser:
    """The generator's options; defaults are ``hub/`` and ``results/`` under ``root``."""
    root = Path(root)
    p = CommandParser(prog='python tools/generate_hub.py', allow_abbrev=False,
                                description='Regenerate hub/<org>/<repo>/{config.json,README.md} for every registered '
                                            'CRA weight tag.')
    p.add_argument('--out', default=str(root / 'hub'), help='root of the repo folders (default: %(default)s)')
    p.add_argument('--results', default=str(root / 'results'),
                   help='folder of <arch>.<tag>.json eval results (default: %(default)s)')
    p.add_argument('--list', action='store_true', help='only list the weight tags')
    return p


def main(argv: Optional[Sequence[str]] = None, root: Union[str, Path] = ROOT) -> List[Path]:
    """CLI: unknown options exit with status 2 and argparse's usage line."""
    args = create_parser(root).parse_args(argv)
    if args.list:
        print('\n'.join(weight_tags()))
        return []
    written = generate_hub(args.out, args.results)
    for repo_dir in written:
        print(repo_dir)
    return written


if __name__ == '__main__':
    run_cli(main, sys.argv[1:])
