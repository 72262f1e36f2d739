#!/usr/bin/env python
"""Benchmark CRA models against base / SE / ECA / bare-gate variants, and the gate layers alone.

Interleaved rounds in one process, ratios to the base variant from the same run. Writes a JSON of every
measurement and a markdown summary to --out (default results/benchmark-<date>-<device>).

  python tools/benchmark.py                       # cra_resnet50 + cra_mobilenetv2_100, eager + channels_last
  python tools/benchmark.py --settings eager compile --models cra_resnet50
  python tools/benchmark.py --layers-only
  python tools/benchmark.py --layers-only --primitives --variants cra cra_naive se
  python tools/benchmark.py --variants base cra cra_reference   # CraAttn with / without its fast paths
  python tools/benchmark.py --primitives-only --batch-sizes 1 32
"""
import argparse
import dataclasses
import datetime
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402

import timm_cra  # noqa: E402,F401  (registers the models)
from timm_cra.benchmark import (ATTENTION_VARIANTS, benchmark_layers, benchmark_models,  # noqa: E402
                                benchmark_primitives, cpu_description)
from timm_cra.benchmark.report import markdown_summary  # noqa: E402

# ResNet-50 bottleneck outputs at 224, MobileNetV2-100 expanded maps, and sizes 7 does not divide.
LAYER_SHAPES = [
    (32, 256, 56, 56), (32, 512, 28, 28), (32, 1024, 14, 14), (32, 2048, 7, 7),
    (32, 144, 56, 56), (32, 192, 28, 28), (32, 384, 14, 14), (32, 960, 7, 7),
    (32, 256, 30, 30), (32, 512, 15, 15), (32, 1024, 10, 10),
]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--models', nargs='+', default=['cra_resnet50', 'cra_mobilenetv2_100'])
    p.add_argument('--variants', nargs='+', default=list(ATTENTION_VARIANTS), choices=list(ATTENTION_VARIANTS))
    p.add_argument('--settings', nargs='+', default=['eager', 'channels_last'],
                   choices=['eager', 'channels_last', 'compile'])
    p.add_argument('--modes', nargs='+', default=['infer', 'train'], choices=['infer', 'train'])
    p.add_argument('--batch-sizes', nargs='+', type=int, default=[1, 32])
    p.add_argument('--train-batch-size', type=int, default=32)
    p.add_argument('--img-size', type=int, default=224)
    p.add_argument('--rounds', type=int, default=5)
    p.add_argument('--threads', type=int, default=None, help='torch threads (default: torch default)')
    p.add_argument('--bf16', action='store_true', help='autocast to bfloat16')
    p.add_argument('--layers', action='store_true', help='also benchmark the gate layers alone')
    p.add_argument('--layers-only', action='store_true', help='only the gate layers (and --primitives)')
    p.add_argument('--primitives', action='store_true',
                   help="also time the single operations behind CraAttn's choices (ResNet-50 shapes, at each "
                        "--batch-sizes)")
    p.add_argument('--primitives-only', action='store_true', help='only the single operations')
    p.add_argument('--out', type=Path, default=None, help='output prefix (.json and .md are added)')
    args = p.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    cpu = cpu_description()
    device = f'{cpu}, {torch.get_num_threads()} threads'
    stamp = datetime.date.today().isoformat()
    out = args.out or Path('results') / f'benchmark-{stamp}-cpu{torch.get_num_threads()}'

    results = []
    if not (args.layers_only or args.primitives_only):
        for name in args.models:
            results += benchmark_models(
                name, variants=args.variants, batch_sizes=args.batch_sizes, modes=args.modes,
                settings=args.settings, img_size=args.img_size, rounds=args.rounds,
                autocast_dtype=torch.bfloat16 if args.bf16 else None, train_batch_size=args.train_batch_size)
    if (args.layers or args.layers_only) and not args.primitives_only:
        results += benchmark_layers(LAYER_SHAPES, variants=args.variants, modes=args.modes,
                                    settings=[s for s in args.settings if s != 'compile'])
    if args.primitives or args.primitives_only:
        results += benchmark_primitives([(bs, *shape[1:]) for bs in args.batch_sizes for shape in LAYER_SHAPES[:3]],
                                        rounds=args.rounds)

    meta = dict(date=stamp, device=device, torch=torch.__version__, bf16=args.bf16, rounds=args.rounds,
                cpu=cpu, threads=torch.get_num_threads())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix('.json.tmp')
    tmp.write_text(json.dumps(dict(meta=meta, results=[dataclasses.asdict(r) for r in results]), indent=1))
    tmp.replace(out.with_suffix('.json'))
    md = markdown_summary(results, meta)
    out.with_suffix('.md').write_text(md)
    print(md)


if __name__ == '__main__':
    main()
