#!/usr/bin/env python
"""Summaries of the CIFAR campaign records (results/cifar10/*.json): the results table (printed, written to
results/cifar10/summary.md and, with --update-docs, into the doc's cifar-table block), the accuracy-curve
plot, and the learned CRA kernels of a trained model (--kernels-from: a run folder or Hub repo folder with
config.json + model.safetensors).

  python tools/cifar_report.py --kernels-from hub/timm-cra/cra_cifar_resnet20.cifar10 --update-docs
"""
import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import timm  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import timm_cra  # noqa: E402,F401  (registers the models)
from timm_cra.layers import CraAttn  # noqa: E402
from tools.cifar_campaign import CIFAR_VARIANTS  # noqa: E402
from tools.doc_blocks import ROOT, find_block_file, replace_marked_block  # noqa: E402

__all__ = ['BLOCK', 'load_records', 'summarize', 'results_markdown', 'campaign_context', 'plot_curves',
           'stage_kernels', 'plot_kernels', 'main']

BLOCK = 'cifar-table'


def load_records(results_dir: str) -> List[Dict]:
    return [json.loads(p.read_text()) for p in sorted(Path(results_dir).glob('*-s*.json'))]


def summarize(records: Sequence[Dict]) -> List[Dict]:
    """One row per variant (campaign order): top-1 mean and sample std over seeds, params, MACs, img/s."""
    by_variant: Dict[str, List[Dict]] = {}
    for r in records:
        by_variant.setdefault(r['variant'], []).append(r)
    rows = []
    for variant in [v for v in CIFAR_VARIANTS if v in by_variant]:
        rs = sorted(by_variant[variant], key=lambda r: r['seed'])
        top1 = [r['final_top1'] for r in rs]
        rows.append(dict(
            variant=variant, model=rs[0]['model'], model_kwargs=rs[0]['model_kwargs'], seeds=[r['seed'] for r in rs],
            top1_mean=statistics.mean(top1), top1_std=statistics.stdev(top1) if len(top1) > 1 else math.nan,
            top1=top1, params=rs[0]['params'], macs=rs[0]['macs'], epochs=rs[0]['epochs'],
            train_img_s=statistics.median(r['train_img_s_median'] for r in rs),
        ))
    return rows


def _model_label(row: Dict) -> str:
    kw = ', '.join(f'{k}={v}' for k, v in row['model_kwargs'].items())
    return f"`{row['model']}`" + (f" ({kw})" if kw else '')


def _mean_std(row: Dict) -> str:
    std = f" ± {row['top1_std']:.2f}" if not math.isnan(row['top1_std']) else ' (1 seed)'
    return f"{row['top1_mean']:.2f}{std}"


def _per_seed(row: Dict) -> str:
    return ', '.join(f'{t:.2f}' for t in row['top1'])


def results_markdown(rows: Sequence[Dict]) -> str:
    lines = [
        '| variant | model | top-1 % (mean ± std) | seeds | per seed | params | MMACs | epochs | train img/s |',
        '|---|---|---:|---:|---|---:|---:|---:|---:|',
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {_model_label(r)} | {_mean_std(r)} | {len(r['seeds'])} | {_per_seed(r)} "
            f"| {r['params']:,} | {r['macs'] / 1e6:.2f} | {r['epochs']} | {r['train_img_s']:.0f} |")
    return '\n'.join(lines) + '\n'


def campaign_context(rows: Sequence[Dict], variant: str, seed: int, baseline: str = 'resnet20') -> str:
    """A published run's place in the campaign, for its model card: its seed among the variant's seeds and
    every variant's top-1 under the same recipe (mean ± sample std over seeds), so one seed is not read
    alone."""
    by_variant = {r['variant']: r for r in rows}
    if variant not in by_variant:
        raise ValueError(f'No campaign records for {variant!r}; run tools/cifar_campaign.py first.')
    own = by_variant[variant]
    others = '; '.join(f'{_model_label(r)} {_mean_std(r)}' for r in rows if r['variant'] != variant)
    text = (f"This is seed {seed} of {len(own['seeds'])} runs of the same recipe ({_model_label(own)}: "
            f"{_mean_std(own)}% top-1, mean ± sample std over seeds; per seed {_per_seed(own)}). The other variants "
            f"of the comparison, same recipe: {others}.")
    if variant != baseline and baseline in by_variant:
        diff = own['top1_mean'] - by_variant[baseline]['top1_mean']
        text += f" Against the ungated {_model_label(by_variant[baseline])}: {diff:+.2f} points (means)."
    return text + ' Full table and plots: docs/cifar10.md in the timm-cra repository.'


def _pyplot():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def plot_curves(records: Sequence[Dict], path: str) -> None:
    """Test top-1 vs epoch per variant: mean over seeds (line) and the seeds' range (band)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for variant in [v for v in CIFAR_VARIANTS if any(r['variant'] == v for r in records)]:
        curves = [[c['eval_top1'] for c in r['curve']] for r in records if r['variant'] == variant]
        n = min(len(c) for c in curves)
        epochs = list(range(1, n + 1))
        mean = [statistics.mean(c[i] for c in curves) for i in range(n)]
        line, = ax.plot(epochs, mean, label=f'{variant} ({len(curves)} seed{"s" if len(curves) > 1 else ""})')
        if len(curves) > 1:
            ax.fill_between(epochs, [min(c[i] for c in curves) for i in range(n)],
                            [max(c[i] for c in curves) for i in range(n)], color=line.get_color(), alpha=0.15)
    ax.set_xlabel('epoch')
    ax.set_ylabel('CIFAR-10 test top-1 (%)')
    ax.set_ylim(bottom=50)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title('CIFAR-10 (JPEG copy), ResNet-20 variants, same recipe')
    fig.tight_layout()
    _save(fig, path)


def stage_kernels(model: nn.Module) -> Dict[str, torch.Tensor]:
    """Mean CRA spatial kernel (k x k) over all channels of all CRA modules of each stage (``layerN``)."""
    kernels: Dict[str, List[torch.Tensor]] = {}
    for name, m in model.named_modules():
        if isinstance(m, CraAttn):
            kernels.setdefault(name.split('.')[0], []).append(m.conv.weight.detach()[:, 0])
    return {stage: torch.cat(ks).mean(0) for stage, ks in kernels.items()}


def plot_kernels(model: nn.Module, path: str, title: Optional[str] = None) -> None:
    """Heat maps of :func:`stage_kernels`: where in the pooled map CRA looks, per stage.

    SE's squeeze is a plain spatial mean, i.e. a constant kernel; any structure here is what CRA adds.
    """
    plt = _pyplot()
    kernels = stage_kernels(model)
    fig, axes = plt.subplots(1, len(kernels), figsize=(3.2 * len(kernels), 3.3))
    axes = axes if len(kernels) > 1 else [axes]
    for ax, (stage, k) in zip(axes, kernels.items()):
        lim = float(k.abs().max())
        im = ax.imshow(k.numpy(), cmap='RdBu_r', vmin=-lim, vmax=lim)
        ax.set_title(f'{stage}: mean kernel')
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, fraction=0.046)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def _save(fig, path: str) -> None:
    plt = _pyplot()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(path).with_suffix('.tmp.png')
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--results', type=Path, default=ROOT / 'results' / 'cifar10')
    p.add_argument('--kernels-from', type=Path, default=None)
    p.add_argument('--update-docs', action='store_true', help=f'write the table into the {BLOCK} block')
    args = p.parse_args(argv)

    records = load_records(str(args.results))
    if not records:
        raise SystemExit(f'No campaign records in {args.results}: run tools/cifar_campaign.py first.')
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
    if args.update_docs:
        replace_marked_block(find_block_file(BLOCK), BLOCK, table)


if __name__ == '__main__':
    main()
