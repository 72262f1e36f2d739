#!/usr/bin/env python
"""Summaries of one CIFAR campaign's records (results/cifar10/*.json, or results/cifar10-<recipe>/): the results
table with each variant's Welch t against the plain ResNet-20 (printed, written to <results>/summary.md and,
with --update-docs, into the doc block named after the results folder: cifar-table, cifar-e50-table, ...),
the accuracy-curve plot, the twice-the-epochs convergence check (from results/cifar10-e<2N>/ beside a
results/cifar10-e<N>/, when it holds records), and the learned CRA kernels of a trained model (--kernels-from: a run folder or Hub repo
folder with config.json + model.safetensors).

  python tools/cifar_report.py --kernels-from hub/timm-cra/cra_cifar_resnet20.cifar10 --update-docs
  python tools/cifar_report.py --results results/cifar10-e50 --update-docs
"""
import argparse
import json
import math
import re
import shlex
import statistics
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import timm  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import timm_cra  # noqa: E402,F401  (registers the models)
from timm_cra.layers import CraAttn  # noqa: E402
from timm_cra.utils.errors import UsageError  # noqa: E402
from timm_cra.utils.io import atomic_path, atomic_write, check_output_file  # noqa: E402
from timm_cra.utils.strict_json import is_count, is_number, read_json  # noqa: E402
from tools.cifar_campaign import CIFAR_VARIANTS  # noqa: E402
from tools.doc_blocks import ROOT, find_block_file, replace_marked_block  # noqa: E402

__all__ = ['BLOCK', 'block_name', 'double_budget_dir', 'read_record', 'recipe_of', 'load_records', 'summarize', 'welch_t', 'student_t_p',
           'results_markdown', 'convergence_checks', 'convergence_sentence', 'convergence_markdown', 'campaign_table',
           'campaign_context', 'plot_curves', 'stage_kernels', 'plot_kernels', 'main']

BLOCK = 'cifar-table'
BASELINE = 'resnet20'


def block_name(results_dir: Path) -> str:
    """The doc block a campaign's table goes to: results/cifar10 -> cifar-table, results/cifar10-e50 ->
    cifar-e50-table."""
    suffix = Path(results_dir).name[len('cifar10'):]
    return f'cifar{suffix}-table'


def double_budget_dir(results_dir: Path) -> Optional[Path]:
    """results/cifar10-e<2N> beside results/cifar10-e<N>: the same recipe at twice the epochs, if it exists."""
    m = re.fullmatch(r'cifar10-e(\d+)', Path(results_dir).name)
    double = Path(results_dir).parent / f'cifar10-e{2 * int(m.group(1))}' if m else None
    return double if double is not None and double.is_dir() else None


#: Far above any CIFAR network's params or MACs; a 401-digit count overflowed the table's float formatting.
_MAX_COUNT = 10 ** 15


def _is_training_command(value) -> bool:
    try:
        return isinstance(value, str) and any(w == '--seed' or w.startswith('--seed=') for w in shlex.split(value))
    except ValueError:  # unbalanced quotes
        return False


def _record_problem(record) -> Optional[str]:
    """What makes a campaign record unusable (the fields the tables, curves and cards read), or None."""
    if not isinstance(record, dict):
        return f'not a JSON object but {type(record).__name__}'

    def bad(key, ok, want):
        return None if key in record and ok(record[key]) else f"'{key}' must be {want}, not {record.get(key)!r:.40}"

    def percentage(v):
        return is_number(v) and 0 <= v <= 100

    def point(c):
        return (isinstance(c, dict) and is_count(c.get('epoch')) and percentage(c.get('eval_top1'))
                and is_number(c.get('train_loss')))

    def curve(v):  # one evaluated point per epoch, the last one the final top-1
        return (isinstance(v, list) and v and all(point(c) for c in v) and len(v) == record.get('epochs')
                and v[-1]['eval_top1'] == record.get('final_top1'))
    checks = [
        ('variant', lambda v: v in CIFAR_VARIANTS, f'a campaign variant ({", ".join(CIFAR_VARIANTS)})'),
        ('seed', is_count, 'a seed (an integer >= 0)'),
        ('model', lambda v: isinstance(v, str) and timm.is_model(v), 'a registered architecture name'),
        ('model_kwargs', lambda v: isinstance(v, dict), 'an object'),
        ('epochs', lambda v: is_count(v) and v > 0, 'a positive epoch count'),
        ('final_top1', percentage, 'a percentage'),
        ('params', lambda v: is_count(v) and v < _MAX_COUNT, 'a count (under 10**15)'),
        ('macs', lambda v: is_count(v) and v < _MAX_COUNT, 'a count (under 10**15)'),
        ('train_img_s_median', lambda v: is_number(v) and v > 0, 'a positive number'),
        ('command', _is_training_command, 'the training command'),
        ('curve', curve, "a list of {epoch, eval_top1, train_loss} points, one per epoch, the last at 'final_top1'"),
    ]
    return next((p for p in (bad(*c) for c in checks) if p), None)


def read_record(path: Path) -> Dict:
    """One run's campaign record, as tools/cifar_campaign.py wrote it; anything else is one ValueError line naming
    the file (an edited or truncated record would otherwise surface as a traceback deep in a table)."""
    try:
        record = read_json(path, 'campaign record')
    except UsageError as e:
        raise ValueError(f'{e} Re-run tools/cifar_campaign.py for this run (or restore the file from git).') from e
    problem = _record_problem(record)
    if not problem and Path(path).name != f"{record['variant']}-s{record['seed']}.json":  # counted under its content
        problem = f"it records {record['variant']} seed {record['seed']}, not what its name says"
    if problem:
        raise ValueError(f'{path} is not a campaign record: {problem}. Re-run tools/cifar_campaign.py for this run '
                         f'(or restore the file from git).')
    return record


#: The trainer flags that differ between a campaign's runs; everything else is the recipe, one per campaign.
_RUN_FLAGS = {'--experiment', '--seed', '--model', '--model-kwargs'}


def recipe_of(command: str, also: Sequence[str] = ()) -> Tuple[str, ...]:
    """A run's training command less the program and the flags that name the run (variant, seed): the recipe
    every run of one campaign shares; ``also``: more flags to leave out (a budget's ``--epochs`` and
    ``--output``)."""
    words = shlex.split(command)
    words = words[next((i for i, w in enumerate(words) if w.startswith('--')), len(words)):]
    kept, skipping = [], False
    for word in words:
        if word.startswith('--'):
            skipping = word in _RUN_FLAGS or word in also
        if not skipping:
            kept.append(word)
    return tuple(kept)


def load_records(results_dir: str) -> List[Dict]:
    """The campaign's run records (``<variant>-s<seed>.json``). Refused in one line: a record whose content is not
    what its name says (a copy, ``resnet20-s0-copy.json``, counted as one more seed), and a record of another
    recipe or budget than the campaign's first (averaged in, it read as one more seed of the same recipe)."""
    records, first = [], None
    for path in sorted(Path(results_dir).glob('*-s*.json')):
        record = read_record(path)  # named <variant>-s<seed>.json: one record per run
        first = first or (path, record)
        differ = [what for what, ours, theirs in (
            ('epochs', record['epochs'], first[1]['epochs']),
            ('training command', recipe_of(record['command']), recipe_of(first[1]['command'])))
            if ours != theirs]
        same_variant = next((r for r in records if r['variant'] == record['variant']), None)
        if same_variant and (record['model'], record['model_kwargs']) != (same_variant['model'],
                                                                          same_variant['model_kwargs']):
            differ.append(f"model of {record['variant']}")
        if differ:
            raise ValueError(f"{path} is not of the campaign of {first[0]} (its {' and '.join(differ)} differ): one "
                             f"results folder holds one recipe's runs; move it to its own campaign's folder.")
        records.append(record)
    return records


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


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b), by its continued fraction (modified Lentz)."""
    if x <= 0.0 or x >= 1.0:
        return min(max(x, 0.0), 1.0)
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast only below the mean; use the symmetry
        return 1.0 - _betainc(b, a, 1.0 - x)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)) / a
    tiny = 1e-300
    c, d, f = 1.0, 0.0, 1.0
    for i in range(400):
        m = i // 2
        if i == 0:
            num = 1.0
        elif i % 2 == 0:
            num = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        else:
            num = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1.0 + num * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + num / c
        c = c if abs(c) > tiny else tiny
        f *= c * d
        if abs(c * d - 1.0) < 1e-14:
            break
    return front * (f - 1.0)


def welch_t(a: Sequence[float], b: Sequence[float]) -> Dict[str, float]:
    """Welch's unequal-variance t test of mean(a) - mean(b): t, the Welch-Satterthwaite degrees of freedom and
    the two-sided p value (Student's t distribution). Needs two or more values on each side."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError('Welch t needs at least two seeds on each side.')
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    diff = statistics.mean(a) - statistics.mean(b)
    if va + vb == 0:
        return dict(diff=diff, t=math.copysign(math.inf, diff) if diff else math.nan, df=math.nan,
                    p=0.0 if diff else 1.0)
    t = diff / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return dict(diff=diff, t=t, df=df, p=student_t_p(t, df))


def student_t_p(t: float, df: float) -> float:
    """Two-sided p value of ``t`` under Student's t distribution with ``df`` (not necessarily whole) degrees
    of freedom."""
    return _betainc(df / 2, 0.5, df / (df + t * t))


def _model_label(row: Dict) -> str:
    kw = ', '.join(f'{k}={v}' for k, v in row['model_kwargs'].items())
    return f"`{row['model']}`" + (f" ({kw})" if kw else '')


def _mean_std(row: Dict) -> str:
    std = f" ± {row['top1_std']:.2f}" if not math.isnan(row['top1_std']) else ' (1 seed)'
    return f"{row['top1_mean']:.2f}{std}"


def _per_seed(row: Dict) -> str:
    return ', '.join(f'{t:.2f}' for t in row['top1'])


def _against_baseline(row: Dict, base: Optional[Dict]) -> str:
    if base is None or row is base:
        return '—'
    if len(row['top1']) < 2 or len(base['top1']) < 2:
        return f"{row['top1_mean'] - base['top1_mean']:+.2f} (t needs 2+ seeds)"
    w = welch_t(row['top1'], base['top1'])
    if not math.isfinite(w['t']):
        return f"{w['diff']:+.2f} (every seed alike on both sides: t undefined)"
    p = f"{w['p']:.3f}" if w['p'] >= 0.001 else f"{w['p']:.0e}"
    return f"{w['diff']:+.2f} (t = {w['t']:.1f}, df = {w['df']:.1f}, p = {p})"


def results_markdown(rows: Sequence[Dict], baseline: str = BASELINE) -> str:
    """The campaign table; each gated variant's column ``vs resnet20`` is its mean's difference from the plain
    network's with Welch's t over seeds (two-sided p)."""
    base = next((r for r in rows if r['variant'] == baseline), None)
    lines = [
        f'| variant | model | top-1 % (mean ± std) | seeds | per seed | vs {baseline}: points (Welch) | params | MMACs '
        '| epochs | train img/s |',
        '|---|---|---:|---:|---|---|---:|---:|---:|---:|',
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {_model_label(r)} | {_mean_std(r)} | {len(r['seeds'])} | {_per_seed(r)} "
            f"| {_against_baseline(r, base)} | {r['params']:,} | {r['macs'] / 1e6:.2f} | {r['epochs']} "
            f"| {r['train_img_s']:.0f} |")
    return '\n'.join(lines) + '\n'


def convergence_checks(records: Sequence[Dict], double: Sequence[Dict]) -> List[Tuple[Dict, Dict, float]]:
    """Each run of ``double`` (twice the epochs) with the run of the same variant and seed in ``records`` and
    the points it gains over it."""
    by_key = {(r['variant'], r['seed']): r for r in records}
    checks = [(by_key[(d['variant'], d['seed'])], d, d['final_top1'] - by_key[(d['variant'], d['seed'])]['final_top1'])
              for d in sorted(double, key=lambda r: (r['variant'], r['seed'])) if (d['variant'], d['seed']) in by_key]
    budget = ('--epochs', '--output')
    for r, d, _ in checks:  # a record of another budget or recipe there read as "converged"
        differ = [what for what, ok in (
            (f"epochs {d['epochs']} (twice {r['epochs']} is {2 * r['epochs']})", d['epochs'] == 2 * r['epochs']),
            ('model', (d['model'], d['model_kwargs']) == (r['model'], r['model_kwargs'])),
            ('training command', recipe_of(d['command'], budget) == recipe_of(r['command'], budget))) if not ok]
        if differ:
            raise ValueError(f"the {d['variant']} seed {d['seed']} record of {d['epochs']} epochs is not the same "
                             f"recipe at twice the epochs of its {r['epochs']}-epoch run ({', '.join(differ)} "
                             f"differ): the twice-the-epochs check compares one recipe at two budgets; move it out "
                             f"of that campaign's folder.")
    return checks


def convergence_sentence(records: Sequence[Dict], double: Sequence[Dict], limit: float = 0.3) -> str:
    """The twice-the-epochs check in a sentence, for a card ('' when no run was checked)."""
    checks = convergence_checks(records, double)
    if not checks:
        return ''
    runs = ', '.join(f"{_model_label(r)} seed {r['seed']} {r['final_top1']:.2f}% -> {d['final_top1']:.2f}% "
                     f"({gain:+.2f})" for r, d, gain in checks)
    converged = all(gain < limit for _, _, gain in checks)
    return (f"The same recipe at twice the epochs ({checks[0][1]['epochs']}): {runs}; a gain under {limit} points "
            f"counts as converged, so {checks[0][0]['epochs']} epochs {'are' if converged else 'are not'} converged.")


def convergence_markdown(records: Sequence[Dict], double: Sequence[Dict], limit: float = 0.3) -> str:
    """The twice-the-epochs check: each run of ``double`` against the run of the same variant and seed in
    ``records``; the recipe counts as converged where the longer run gains under ``limit`` points."""
    lines = []
    for r, d, gain in convergence_checks(records, double):
        verdict = 'converged' if gain < limit else 'not converged'
        lines.append(f"| {d['variant']} | {d['seed']} | {r['epochs']} | {r['final_top1']:.2f} | {d['epochs']} "
                     f"| {d['final_top1']:.2f} | {gain:+.2f} | {verdict} (gain {'<' if gain < limit else '≥'} {limit}) |")
    if not lines:
        return ''
    head = ['', 'Twice-the-epochs check (same recipe, same seed):', '',
            '| variant | seed | epochs | top-1 % | epochs | top-1 % | gain | verdict |',
            '|---|---:|---:|---:|---:|---:|---:|---|']
    return '\n'.join(head + lines) + '\n'


def campaign_table(results_dir: Path) -> str:
    """What the campaign's doc block holds: the results table and, where the twice-the-epochs records exist,
    the convergence check."""
    records = load_records(str(results_dir))
    if not records:
        raise SystemExit(f'No campaign records in {results_dir}: run tools/cifar_campaign.py first.')
    table = results_markdown(summarize(records))
    double = double_budget_dir(results_dir)
    return table + (convergence_markdown(records, load_records(str(double))) if double else '')


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


def plot_curves(records: Sequence[Dict], path: str, double: Sequence[Dict] = ()) -> None:
    """Test top-1 vs epoch per variant: mean over seeds (line) and the seeds' range (band); each run at twice
    the epochs (``double``) dashed."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for d in double:
        ax.plot([c['epoch'] + 1 for c in d['curve']], [c['eval_top1'] for c in d['curve']], linestyle='--',
                color='grey', label=f"{d['variant']} seed {d['seed']}, {d['epochs']} epochs")
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
    try:
        with atomic_path(path) as tmp:  # a FIFO or folder there is one line, never written through
            fig.savefig(tmp, dpi=110, format=Path(path).suffix[1:] or 'png')
    finally:
        plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--results', type=Path, default=ROOT / 'results' / 'cifar10')
    p.add_argument('--kernels-from', type=Path, default=None)
    p.add_argument('--update-docs', action='store_true',
                   help=f'write the table into the doc block named after --results ({BLOCK}, cifar-e50-table, ...)')
    args = p.parse_args(argv)
    outputs = [args.results / name for name in ('summary.md', 'summary.json', 'curves.png')]
    try:  # before anything is written: the doc block must exist to take the table, every record must read, every
        # output must be a file that can be replaced (a FIFO there blocked the report after a first file was written)
        doc = find_block_file(block_name(args.results)) if args.update_docs else None
        table = campaign_table(args.results)
        records = load_records(str(args.results))
        double = double_budget_dir(args.results)
        double_records = load_records(str(double)) if double else ()
        for path in outputs:
            check_output_file(path, path.name)
    except (ValueError, UsageError) as e:
        p.error(str(e))
    print(table, end='')
    plot_curves(records, str(outputs[2]), double_records)
    with atomic_write(str(outputs[0])) as f:
        f.write(table)
    with atomic_write(str(outputs[1])) as f:
        f.write(json.dumps(summarize(records), indent=1) + '\n')
    if args.kernels_from:
        model = timm.create_model(f'local-dir:{args.kernels_from}', pretrained=True)
        plot_kernels(model, str(args.results / 'cra_kernels.png'),
                     title=f'{args.kernels_from.name}: CRA depthwise kernels, mean over channels per stage')
    if doc is not None:
        replace_marked_block(doc, block_name(args.results), table)


if __name__ == '__main__':
    main()
