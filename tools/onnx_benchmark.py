#!/usr/bin/env python3
"""onnxruntime CPU latency of CRA and reference models, as ratios to a base model measured in one interleaved run.

    python tools/onnx_benchmark.py                      # cra_resnet50, resnet50, seresnet50 at batch 1 and 32
    python tools/onnx_benchmark.py --rounds 3 --threads 2 --out-dir results

Each model is exported with ``timm_cra.export.export_onnx`` (random weights, verified in onnxruntime at
batch 1) and run in an onnxruntime ``CPUExecutionProvider`` session with ``intra_op_num_threads=--threads``.
Every (model, batch) pair is warmed up, then timed once per round, models interleaved within each round, so
load from other processes hits all models alike. Reported: ms per batch (min and median over rounds), images/s
from the min, and the ratio of each model's time to the base model's (min over rounds, median in brackets).
Writes ``OUT_DIR/onnx-<date>-cpu<threads>.json`` and ``.md`` (temp file + rename).
"""
import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from typing import Dict, List

import numpy as np
import torch

import timm_cra
from timm_cra.export import export_onnx, require_onnx
from timm_cra.utils.errors import UsageError, run_cli


def create_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0], allow_abbrev=False)
    add = p.add_argument
    add('--models', nargs='+', default=['cra_resnet50', 'resnet50', 'seresnet50'])
    add('--base', default='resnet50', help='ratios are to this model (must be in --models)')
    add('--batch-sizes', type=int, nargs='+', default=[1, 32])
    add('--img-size', type=int, default=224)
    add('--threads', type=int, default=2, help='onnxruntime intra-op threads')
    add('--rounds', type=int, default=5)
    add('--warmup', type=int, default=2, help='untimed runs per (model, batch) before the rounds')
    add('--min-time', type=float, default=0.5, help='seconds of runs per timed measurement (sets the run count)')
    add('--out-dir', default='results')
    add('--note', default='', help='free text stored with the results (e.g. machine shared with other jobs)')
    return p


def _cpu_name() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _write_atomic(path: str, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp', dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, 'w') as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _sessions(models: List[str], img_size: int, threads: int, tmp_dir: str) -> Dict[str, object]:
    import onnxruntime as ort
    sessions = {}
    for name in models:
        torch.manual_seed(0)
        model = timm_cra.create_model(name).eval()
        path = os.path.join(tmp_dir, f'{name}.onnx')
        export_onnx(model, path, input_size=(3, img_size, img_size), verify_batch_sizes=(1,))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        sessions[name] = ort.InferenceSession(path, opts, providers=['CPUExecutionProvider'])
    return sessions


def benchmark(args) -> dict:
    require_onnx('onnx', 'onnxruntime')
    if args.base not in args.models:
        raise UsageError(f'--base {args.base} must be one of --models {args.models}.')
    if args.rounds < 1 or args.threads < 1 or min(args.batch_sizes) < 1:
        raise UsageError('--rounds, --threads and --batch-sizes must be positive.')
    import onnxruntime as ort
    with tempfile.TemporaryDirectory() as tmp_dir:
        sessions = _sessions(args.models, args.img_size, args.threads, tmp_dir)
        rng = np.random.default_rng(0)
        inputs = {b: rng.standard_normal((b, 3, args.img_size, args.img_size), dtype=np.float32)
                  for b in args.batch_sizes}
        runs, times = {}, {}
        for b in args.batch_sizes:
            for name, sess in sessions.items():
                feed = {sess.get_inputs()[0].name: inputs[b]}
                t = time.perf_counter()
                for _ in range(max(1, args.warmup)):
                    sess.run(None, feed)
                per_run = (time.perf_counter() - t) / max(1, args.warmup)
                runs[name, b] = max(1, math.ceil(args.min_time / per_run))
                times[name, b] = []
        for _ in range(args.rounds):
            for b in args.batch_sizes:
                for name, sess in sessions.items():  # interleaved: every model once per round
                    feed = {sess.get_inputs()[0].name: inputs[b]}
                    t = time.perf_counter()
                    for _ in range(runs[name, b]):
                        sess.run(None, feed)
                    times[name, b].append((time.perf_counter() - t) / runs[name, b] * 1000)
    rows = []
    for b in args.batch_sizes:
        base = times[args.base, b]
        for name in args.models:
            ms = times[name, b]
            rows.append({
                'model': name, 'batch': b, 'runs_per_round': runs[name, b],
                'ms_min': min(ms), 'ms_median': statistics.median(ms), 'img_per_s': b * 1000 / min(ms),
                'ratio_min': min(ms) / min(base), 'ratio_median': statistics.median(ms) / statistics.median(base),
                'ms_rounds': ms,
            })
    meta = {
        'date': datetime.date.today().isoformat(), 'cpu': _cpu_name(), 'threads': args.threads,
        'rounds': args.rounds, 'warmup': args.warmup, 'min_time_s': args.min_time, 'img_size': args.img_size,
        'base': args.base, 'dtype': 'float32', 'provider': 'CPUExecutionProvider',
        'onnxruntime': ort.__version__, 'torch': torch.__version__, 'timm_cra': timm_cra.__version__,
        'command': ' '.join([os.path.basename(sys.argv[0])] + sys.argv[1:]), 'note': args.note,
    }
    return {'meta': meta, 'results': rows}


def to_markdown(report: dict) -> str:
    m = report['meta']
    lines = [
        f"Measured {m['date']} on {m['cpu']}, onnxruntime {m['onnxruntime']} {m['provider']}, "
        f"{m['threads']} intra-op threads, {m['dtype']}, {m['img_size']}x{m['img_size']}; {m['rounds']} interleaved "
        f"rounds after warm-up." + (f" {m['note']}" if m['note'] else ''),
        '',
        f"ms per batch (min over rounds, median in brackets); ratio: time relative to {m['base']} "
        f"(min over rounds, median in brackets).",
        '',
        '| model | batch | ms per batch | img/s | ratio to ' + m['base'] + ' |',
        '|---|---:|---:|---:|---:|',
    ]
    for r in report['results']:
        lines.append(f"| {r['model']} | {r['batch']} | {r['ms_min']:.1f} ({r['ms_median']:.1f}) | {r['img_per_s']:.1f} "
                     f"| {r['ratio_min']:.3f} ({r['ratio_median']:.3f}) |")
    return '\n'.join(lines) + '\n'


def main(argv=None) -> dict:
    args = create_parser().parse_args(argv)
    if not os.path.isdir(args.out_dir):
        raise UsageError(f"--out-dir '{args.out_dir}' does not exist: create it first.")
    report = benchmark(args)
    stem = os.path.join(args.out_dir, f"onnx-{report['meta']['date']}-cpu{args.threads}")
    _write_atomic(stem + '.json', json.dumps(report, indent=1) + '\n')
    _write_atomic(stem + '.md', to_markdown(report))
    print(to_markdown(report))
    print(f'wrote {stem}.json and {stem}.md')
    return report


if __name__ == '__main__':
    run_cli(main)
