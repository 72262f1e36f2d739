#!/usr/bin/env python
"""The CIFAR-10 attention comparison: every variant trained with one recipe and epoch budget, several seeds.

  python tools/cifar_campaign.py --seeds 0 1 2                       # every ResNet-20 variant
  python tools/cifar_campaign.py --variants resnet20 cra_max4_resnet20 --seeds 0
  python tools/cifar_campaign.py --recipe e50 --variants resnet20 cra_max4_resnet20 --seeds 0 1 2

Each run trains through :func:`timm_cra.train.train` into ``<output>/<variant>-s<seed>/`` (resumable from its
``last.pth``) and, when done, writes one JSON record to ``<results>/<variant>-s<seed>.json``. Finished runs
are skipped, so the campaign can be stopped and continued across sessions and machines, run by run. Several
processes may share one campaign: a run another process is training (the trainer holds its run folder) is skipped,
and the first process to reach it writes its record. Summarise with tools/cifar_report.py.
"""
import argparse
import csv
import datetime
import json
import os
import platform
import shlex
import statistics
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

__all__ = ['CIFAR_VARIANTS', 'CAMPAIGN_EPOCHS', 'RECIPES', 'campaign_dirs', 'campaign_argv', 'run_campaign', 'run_one', 'main']

#: variant label -> model name and create_model kwargs
CIFAR_VARIANTS: Dict[str, Dict[str, Any]] = {
    'resnet20': dict(model='cifar_resnet20'),
    'se_resnet20': dict(model='se_cifar_resnet20'),
    'eca_resnet20': dict(model='eca_cifar_resnet20'),
    'cra_max7_resnet20': dict(model='cra_cifar_resnet20', model_kwargs=dict(cra_pool_size=7)),
    'cra_max4_resnet20': dict(model='cra_cifar_resnet20', model_kwargs=dict(cra_pool_size=4)),
    'resnet56': dict(model='cifar_resnet56'),
    'cra_max7_resnet56': dict(model='cra_cifar_resnet56', model_kwargs=dict(cra_pool_size=7)),
}

#: Campaign budgets, each one recipe for every variant, on top of the ``cifar`` recipe (nesterov SGD 0.1,
#: wd 5e-4, batch 128, crop + flip, one warm-up epoch then cosine stepped every update):
#: - ``e15``: the first comparison, fp32, plain cross-entropy (results/cifar10/);
#: - ``e50``: bfloat16 autocast where the CPU computes it, label smoothing 0.1 (results/cifar10-e50/); its
#:   twice-the-epochs check, ``e100``, gained 0.62 points (baseline seed 0): not converged;
#: - ``e100``: the same recipe over 100 epochs, the study's candidate; ``e200`` is its twice-the-epochs check.
RECIPES: Dict[str, Dict[str, Any]] = {
    'e15': dict(epochs=15, args=[]),
    **{f'e{n}': dict(epochs=n, args=['--amp', '--smoothing', '0.1']) for n in (50, 100, 200)},
}
CAMPAIGN_EPOCHS = RECIPES['e15']['epochs']


def campaign_dirs(recipe: str) -> Tuple[str, str]:
    """A recipe's run folders and results folder, relative to the repository: e15 (the first comparison) uses
    output/cifar10-campaign and results/cifar10, the others output/cifar10-<recipe> and results/cifar10-<recipe>."""
    if recipe not in RECIPES:
        raise ValueError(f'Unknown recipe {recipe!r}; choose from {list(RECIPES)}.')
    if recipe == 'e15':
        return 'output/cifar10-campaign', 'results/cifar10'
    return f'output/cifar10-{recipe}', f'results/cifar10-{recipe}'


def campaign_argv(variant: str, seed: int, data_dir: str, output: str, epochs: int = CAMPAIGN_EPOCHS,
                  recipe_args: Sequence[str] = ()) -> List[str]:
    """Trainer arguments of one run: the ``cifar`` recipe (SGD 0.1, wd 5e-4, batch 128, crop + flip) with a
    cosine schedule over ``epochs`` after one warm-up epoch, stepped every update (a per-epoch step would
    hold the whole first epoch at the warm-up lr), plus a recipe's own arguments."""
    spec = CIFAR_VARIANTS[variant]
    argv = [
        '--config', 'cifar', '--model', spec['model'], '--data-dir', data_dir,
        '--output', output, '--experiment', f'{variant}-s{seed}', '--seed', str(seed),
        '--epochs', str(epochs), '--warmup-epochs', '1', '--sched-on-updates', '--channels-last', '--no-plot',
        *recipe_args,
    ]
    if spec.get('model_kwargs'):
        argv += ['--model-kwargs'] + [f'{k}={v}' for k, v in spec['model_kwargs'].items()]
    return argv


def _write_json_atomic(path: Path, data: Dict[str, Any]) -> None:
    from timm_cra.utils.io import atomic_write
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(str(path)) as f:
        f.write(json.dumps(data, indent=1) + '\n')


def run_one(variant: str, seed: int, data_dir: str, output: str, results_dir: str,
            epochs: int = CAMPAIGN_EPOCHS, extra_args: Sequence[str] = (),
            recipe_args: Sequence[str] = ()) -> Optional[Dict[str, Any]]:
    """Train one (variant, seed) unless its record exists; resume an interrupted run. Returns the record.

    ``extra_args`` are appended to the trainer arguments (tests use them to train on a slice).
    """
    import timm
    from timm_cra.train import parse_args, train
    from timm_cra.utils import model_complexity

    from timm_cra.utils.io import OutputPathError

    record_path = Path(results_dir) / f'{variant}-s{seed}.json'
    run_dir = Path(output) / f'{variant}-s{seed}'
    if record_path.exists() or _trained_elsewhere(run_dir):
        return None
    argv = campaign_argv(variant, seed, data_dir, output, epochs, recipe_args) + list(extra_args)
    last = run_dir / 'last.pth'
    try:
        summary = train(parse_args(argv + (['--resume', str(last)] if last.exists() else [])))
    except OutputPathError:
        if _trained_elsewhere(run_dir):  # another process took the run between the check and the trainer's lock
            return None
        raise

    with open(Path(summary['output_dir']) / 'metrics.csv') as f:
        history = [{k: float(v) if v not in ('', None) else None for k, v in row.items()} for row in csv.DictReader(f)]
    spec = CIFAR_VARIANTS[variant]
    model = timm.create_model(spec['model'], **spec.get('model_kwargs', {}))
    cx = model_complexity(model, (3, 32, 32))
    record = dict(
        variant=variant, seed=seed, model=spec['model'], model_kwargs=spec.get('model_kwargs', {}),
        epochs=len(history), optimizer_steps=summary['optimizer_steps'],
        final_top1=history[-1]['eval_top1'], final_top5=history[-1]['eval_top5'],
        best_top1=summary.get('best_top1'), params=cx['params'], macs=int(round(cx['gmacs'] * 1e9)),
        train_img_s_median=statistics.median(r['train_img_s'] for r in history),
        curve=[dict(epoch=int(r['epoch']), eval_top1=r['eval_top1'], train_loss=r['train_loss']) for r in history],
        command='timm-cra-train ' + ' '.join(shlex.quote(a) for a in argv),
        dataset='CIFAR-10 (JPEG re-encoded copy, 50k train / 10k test)',
        date=datetime.date.today().isoformat(),
        machine=f'{platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}',
    )
    _write_json_atomic(record_path, record)
    return record


def _trained_elsewhere(run_dir: Path) -> bool:
    """Whether another process is training in ``run_dir`` now: the trainer holds its run folder's lock for the
    whole run (the kernel drops it with the process, so a killed run is resumed, not skipped). Said on stderr."""
    from timm_cra.utils.io import OutputPathError, locked_folder
    if not run_dir.is_dir():
        return False
    try:
        with locked_folder(str(run_dir), wait=False):
            return False
    except OutputPathError as e:
        print(f'{run_dir.name}: skipped, {e}', file=sys.stderr)
        return True


def run_campaign(variants: Sequence[str], seeds: Sequence[int], data_dir: str, output: str, results_dir: str,
                 epochs: int = CAMPAIGN_EPOCHS, recipe_args: Sequence[str] = ()) -> List[Dict[str, Any]]:
    """Run every (seed, variant) in seed-major order, so each seed completes a full comparison first."""
    unknown = [v for v in variants if v not in CIFAR_VARIANTS]
    if unknown:
        raise ValueError(f'Unknown campaign variants {unknown}; choose from {list(CIFAR_VARIANTS)}.')
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(f"CIFAR-10 data folder '{data_dir}' not found; pass --data-dir "
                                f"(e.g. ../shared/data/cifar10 with the parquet files).")
    records = []
    for seed in seeds:
        for v in variants:
            rec = run_one(v, seed, data_dir, output, results_dir, epochs, recipe_args=recipe_args)
            if rec is not None:
                records.append(rec)
    return records


def main(argv=None):
    resnet20 = [v for v in CIFAR_VARIANTS if v.endswith('resnet20')]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--variants', nargs='+', default=resnet20, choices=list(CIFAR_VARIANTS))
    p.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    p.add_argument('--data-dir', default='../shared/data/cifar10')
    p.add_argument('--recipe', default='e15', choices=list(RECIPES),
                   help='epoch budget and recipe arguments (see RECIPES); e15 writes to results/cifar10, '
                        'the others to results/cifar10-<recipe>')
    p.add_argument('--output', default=None, help='run folders (checkpoints, logs); '
                   'default output/cifar10-campaign (e15) or output/cifar10-<recipe>')
    p.add_argument('--results', default=None, help='one JSON record per finished run (default: see --recipe)')
    args = p.parse_args(argv)
    recipe = RECIPES[args.recipe]
    default_output, default_results = campaign_dirs(args.recipe)
    output = args.output or default_output
    results = args.results or default_results
    run_campaign(args.variants, args.seeds, args.data_dir, output, results, recipe['epochs'], recipe['args'])


if __name__ == '__main__':
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
    main()
