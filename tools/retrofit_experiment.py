#!/usr/bin/env python3
"""CIFAR-10 retrofit experiment: CRA gates on the published ``cifar_resnet20.cifar10`` weights.

Steps (each writes its record to ``results/retrofit/`` and is skipped when the record exists, so a restart
resumes; an interrupted fine-tune resumes from its ``last.pth``):

1. ``init``: write the retrofitted ``cra_cifar_resnet20`` weights for each gate bias (zero kernel + bias b)
   and validate them, and the base, with the validate CLI on the test split (``data/cifar10``).
2. ``finetune``: the same fine-tuning recipe (trainer CLI, ``cifar`` recipe with the overrides in
   :data:`FINETUNE_ARGS`) for every arm and seed: the base network and each retrofitted init.

CRA trained from scratch is the 15-epoch campaign (``results/cifar10/cra_max4_resnet20-s*.json``).

    python tools/retrofit_experiment.py init
    python tools/retrofit_experiment.py finetune --seeds 0 1 2 --shard 0/2   # and 1/2 in a second process
    python tools/retrofit_experiment.py report      # -> results/retrofit/summary.json + curves.png
"""
import argparse
import csv
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BASE_WEIGHTS = ROOT / 'hub' / 'timm-cra' / 'cifar_resnet20.cifar10' / 'model.safetensors'
BASE_TOP1 = 84.40  # model card of cifar_resnet20.cifar10 (results/cifar_resnet20.cifar10.json)
TEST_DIR = ROOT / 'data' / 'cifar10'
TRAIN_DIR = ROOT.parent / 'shared' / 'data' / 'cifar10'
RESULTS = ROOT / 'results' / 'retrofit'
OUTPUT = ROOT / 'output' / 'retrofit'
BIASES = (2.0, 4.0, 8.0)
#: Biases fine-tuned. Bias 2 is more than 1 point below the base at init (init.json), so it cannot be the load-time
#: default; it runs last, as the unsaturated-gate comparison.
FINETUNE_BIASES = (4.0, 8.0, 2.0)
TRAIN_SUBSET = 10000
EPOCHS = 3
#: One recipe for every arm: the repo's ``cifar`` recipe (SGD, momentum 0.9, wd 5e-4, batch 128, crop + flip),
#: fine-tuning lr 0.01 with a cosine schedule stepped per update, no warm-up, on the first 10k training images.
FINETUNE_ARGS = [
    '--config', 'cifar', '--lr', '0.01', '--warmup-epochs', '0', '--sched-on-updates', '--channels-last',
    '--epochs', str(EPOCHS), '--train-num-samples', str(TRAIN_SUBSET), '--no-plot',
]
DATASET = 'CIFAR-10 (JPEG re-encoded copy): first 10k of the 50k train images, 10k test images'


def _machine() -> str:
    import torch
    return (f"{platform.machine()} CPU, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
            f"torch {torch.__version__}")


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_text(json.dumps(data, indent=1) + '\n')
    tmp.replace(path)


def _bias_name(b: float) -> str:
    return f'b{b:g}'


def init_weights_path(b: float) -> Path:
    return OUTPUT / f'init_{_bias_name(b)}.safetensors'


def write_init_weights(b: float) -> Path:
    """The retrofitted cra_cifar_resnet20 (base weights + gates zero kernel / bias b) as a safetensors file."""
    import timm
    from safetensors.torch import load_file, save_file
    import timm_cra  # noqa: F401
    from timm_cra.models.retrofit import retrofit_state_dict
    model = timm.create_model('cra_cifar_resnet20')
    sd = retrofit_state_dict(load_file(str(BASE_WEIGHTS)), model, gate_bias=b)
    model.load_state_dict(sd, strict=True)
    path = init_weights_path(b)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + '.tmp')
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    tmp.replace(path)
    return path


def _validate(model: str, checkpoint: Path, out_json: Path) -> dict:
    argv = [sys.executable, '-m', 'timm_cra.eval', '--model', model, '--checkpoint', str(checkpoint),
            '--data-dir', str(TEST_DIR), '--split', 'test', '--batch-size', '500', '--workers', '0',
            '--no-progress', '--results-file', str(out_json)]
    subprocess.run(argv, check=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    res = json.loads(out_json.read_text())
    res['command'] = ' '.join(shlex.quote(a) for a in ['python'] + argv[1:]).replace(str(ROOT) + '/', '')
    return res


def run_init() -> None:
    """Accuracy at init of the base and of each retrofitted gate bias (validate CLI, test split)."""
    OUTPUT.mkdir(parents=True, exist_ok=True)
    record = RESULTS / 'init.json'
    if record.exists():
        return
    rows = [dict(arm='base', gate_bias=None, **_validate('cifar_resnet20', BASE_WEIGHTS, OUTPUT / 'val_base.json'))]
    for b in BIASES:
        path = write_init_weights(b)
        out = OUTPUT / f'val_{_bias_name(b)}.json'
        rows.append(dict(arm=f'retrofit_{_bias_name(b)}', gate_bias=b, **_validate('cra_cifar_resnet20', path, out)))
    _write_json(record, dict(rows=rows, dataset='CIFAR-10 test split (JPEG re-encoded copy, data/cifar10)',
                             base_published_top1=BASE_TOP1, date=datetime.date.today().isoformat(),
                             machine=_machine()))


def arms():
    yield 'base_ft', 'cifar_resnet20', BASE_WEIGHTS
    for b in FINETUNE_BIASES:
        yield f'retrofit_{_bias_name(b)}_ft', 'cra_cifar_resnet20', init_weights_path(b)


def run_finetune(arm: str, model: str, init: Path, seed: int) -> None:
    name = f'{arm}-s{seed}'
    record = RESULTS / f'{name}.json'
    if record.exists():
        return
    if not init.exists():
        write_init_weights(float(arm.split('_b')[1].split('_')[0]))
    argv = FINETUNE_ARGS + ['--model', model, '--initial-checkpoint', str(init), '--data-dir', str(TRAIN_DIR),
                            '--output', str(OUTPUT), '--experiment', name, '--seed', str(seed)]
    last = OUTPUT / name / 'last.pth'
    resume = ['--resume', str(last)] if last.exists() else []
    cmd = [sys.executable, '-m', 'timm_cra.train'] + argv + resume
    subprocess.run(cmd, check=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    with open(OUTPUT / name / 'metrics.csv') as f:
        history = [{k: float(v) if v not in ('', None) else None for k, v in r.items()} for r in csv.DictReader(f)]
    _write_json(record, dict(
        arm=arm, seed=seed, model=model, init=str(init.relative_to(ROOT)), epochs=len(history),
        final_top1=history[-1]['eval_top1'], best_top1=max(r['eval_top1'] for r in history),
        curve=[dict(epoch=int(r['epoch']), eval_top1=r['eval_top1'], train_loss=r['train_loss']) for r in history],
        train_img_s_median=statistics.median(r['train_img_s'] for r in history),
        command='timm-cra-train ' + ' '.join(shlex.quote(a) for a in argv).replace(str(ROOT) + '/', ''),
        dataset=DATASET, date=datetime.date.today().isoformat(), machine=_machine(),
    ))


SCRATCH_GLOB = 'cra_max4_resnet20-s*.json'  # results/cifar10: cra_cifar_resnet20 trained from scratch, 15 epochs


def _mean_std(values):
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(with_gates: bool = False) -> dict:
    """Table rows (mean / std / per seed of the final top-1) of every arm, plus the at-init accuracies;
    ``with_gates``: the gate statistics of the fine-tuned weights (needs the runs' ``output/`` folders)."""
    init = json.loads((RESULTS / 'init.json').read_text())
    rows = []
    for arm, _, _ in arms():
        recs = sorted((json.loads(p.read_text()) for p in RESULTS.glob(f'{arm}-s*.json')), key=lambda r: r['seed'])
        if not recs:
            continue
        finals = [r['final_top1'] for r in recs]
        m, sd = _mean_std(finals)
        row = dict(arm=arm, seeds=[r['seed'] for r in recs], final_top1=finals, mean=round(m, 2),
                   std=round(sd, 2), images_seen=EPOCHS * TRAIN_SUBSET)
        weights = [OUTPUT / f"{arm}-s{r['seed']}" / 'model.safetensors' for r in recs]
        if with_gates and arm != 'base_ft' and all(w.exists() for w in weights):
            row['gates_after'] = [gate_stats(w) for w in weights]
        rows.append(row)
    scratch = sorted((json.loads(p.read_text()) for p in (ROOT / 'results' / 'cifar10').glob(SCRATCH_GLOB)),
                     key=lambda r: r['seed'])
    if scratch:
        finals = [r['final_top1'] for r in scratch]
        m, sd = _mean_std(finals)
        rows.append(dict(arm='cra_scratch_15ep', seeds=[r['seed'] for r in scratch], final_top1=finals,
                         mean=round(m, 2), std=round(sd, 2), images_seen=scratch[0]['epochs'] * 50000,
                         source='results/cifar10/' + SCRATCH_GLOB))
    summary = dict(init=[dict(arm=r['arm'], gate_bias=r['gate_bias'], top1=r['top1']) for r in init['rows']],
                   finetune=rows, recipe=' '.join(FINETUNE_ARGS), dataset=DATASET)
    return summary


def gate_stats(weights: Path, num_images: int = 500) -> dict:
    """How far the trained gates moved: mean and spread of the gate values (``CraAttn.channel_gates``) over the first
    ``num_images`` test images, all gates pooled (at init every gate is the constant sigmoid(b))."""
    from io import BytesIO
    import numpy as np
    import pyarrow.parquet as pq
    import timm
    import torch
    from PIL import Image
    from safetensors.torch import load_file
    from timm_cra.layers import CraAttn
    model = timm.create_model('cra_cifar_resnet20')
    model.load_state_dict(load_file(str(weights)))
    model.eval()
    rows = pq.read_table(TEST_DIR / 'test-00000-of-00001.parquet').slice(0, num_images).to_pydict()['img']
    x = torch.stack([torch.from_numpy(np.array(Image.open(BytesIO(r['bytes'])).convert('RGB'))).permute(2, 0, 1)
                     for r in rows]).float().div(255)
    cfg = model.pretrained_cfg
    x = (x - torch.tensor(cfg['mean'])[:, None, None]) / torch.tensor(cfg['std'])[:, None, None]
    gates = []

    def hook(module, inputs):  # the gate, from the input before the (in-place) product
        gates.append(module.channel_gates(inputs[0]).flatten())
    handles = [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, CraAttn)]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    g = torch.cat(gates)
    return dict(gate_mean=round(g.mean().item(), 4), gate_std=round(g.std().item(), 4),
                gate_min=round(g.min().item(), 4))


def plot_curves(path: Path) -> None:
    """Test top-1 per fine-tuning epoch (epoch 0 = at init), one line per run."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    init = {r['arm']: r['top1'] for r in json.loads((RESULTS / 'init.json').read_text())['rows']}
    fig, ax = plt.subplots(figsize=(6, 4))
    colours = {}
    for arm, _, _ in arms():
        start = init['base'] if arm == 'base_ft' else init[arm[:-len('_ft')]]
        for p in sorted(RESULTS.glob(f'{arm}-s*.json')):
            rec = json.loads(p.read_text())
            ys = [start] + [c['eval_top1'] for c in rec['curve']]
            line, = ax.plot(range(len(ys)), ys, marker='o', color=colours.get(arm), alpha=0.8,
                            label=None if arm in colours else arm)
            colours[arm] = line.get_color()
    ax.set_xlabel('fine-tuning epoch (0 = at init)')
    ax.set_ylabel('CIFAR-10 test top-1 (%)')
    ax.set_title('Retrofit CRA on cifar_resnet20.cifar10: fine-tuning')
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name('.' + path.name)
    fig.savefig(tmp, dpi=100, format='png')
    tmp.replace(path)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('step', choices=['init', 'finetune', 'report'])
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--arms', nargs='+', default=None, help='subset of the arms (default: all)')
    p.add_argument('--shard', default='0/1', help='i/n: run every n-th job starting at i (parallel processes)')
    args = p.parse_args(argv)
    if args.step == 'init':
        run_init()
        return
    if args.step == 'report':
        summary = summarize(with_gates=True)
        _write_json(RESULTS / 'summary.json', summary)
        print(json.dumps(summary, indent=1))
        plot_curves(RESULTS / 'curves.png')
        return
    i, n = (int(x) for x in args.shard.split('/'))
    jobs = [(a, m, w, s) for s in args.seeds for a, m, w in arms() if args.arms is None or a in args.arms]
    for a, m, w, s in jobs[i::n]:
        run_finetune(a, m, w, s)


if __name__ == '__main__':
    main()
