#!/usr/bin/env python
"""Summarise the CIFAR-10 campaign records (results/cifar10/*.json): the results table (printed, written to
results/cifar10/summary.md, and with --update-readme into README.md), the accuracy-curve plot, and the
learned CRA kernels of a trained model (--kernels-from: a run folder or Hub repo folder with config.json +
model.safetensors)."""
import argparse
import json
from pathlib import Path

import timm

import timm_cra  # noqa: F401  (registers the models)
from timm_cra.train.campaign_report import load_records, plot_curves, plot_kernels, results_markdown, summarize
from timm_cra.utils.tables import replace_marked_block

ROOT = Path(__file__).resolve().parents[1]


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument('--results', type=Path, default=ROOT / 'results' / 'cifar10')
    p.add_argument('--kernels-from', type=Path, default=None)
    p.add_argument('--update-readme', action='store_true')
    args = p.parse_args()

    records = load_records(str(args.results))
    if not records:
        raise SystemExit(f'No campaign records in {args.results}: run scripts/cifar_campaign.py first.')
    rows = summarize(records)
    table = results_markdown(rows)
    print(table, end='')
    (args.results / 'summary.md').write_text(table)
    (args.results / 'summary.json').write_text(json.dumps(rows, indent=1) + '\n')
    plot_curves(records, str(args.results / 'curves.png'))
    if args.kernels_from:
        model = timm.create_model(f'local-dir:{args.kernels_from}', pretrained=True)
        plot_kernels(model, str(args.results / 'cra_kernels.png'),
                     title=f'{args.kernels_from.name}: CRA depthwise kernels, mean over channels per stage')
    if args.update_readme:
        replace_marked_block(ROOT / 'README.md', 'cifar-table', table)


if __name__ == '__main__':
    main()
