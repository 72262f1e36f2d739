"""Small end-to-end detection fit: Faster R-CNN with a CRA-ResNet vs a plain ResNet FPN backbone.

Same recipe, data and seeds for every backbone: the synthetic shapes set of ``tools/make_shapes_dataset.py``
(generated into ``--data`` when missing), random-init backbones (every layer trainable, live BatchNorm: the
torchvision defaults without weights), SGD with warm-up + cosine, then mAP@0.5 (``torchmetrics``
``MeanAveragePrecision``, ``iou_thresholds=[0.5]``) on the held-out split. CPU-sized: 128 px images, a 64-channel
FPN and small RPN / RoI sample sizes.

    OMP_NUM_THREADS=1 python tools/detection_experiment.py --data data/shapes \\
        --models resnet18 cra_resnet18 --seeds 0 1 --epochs 8 --out results/detection/shapes-fasterrcnn.json

Needs the ``detection`` extra (``pip install timm-cra[detection]``: torchmetrics + pycocotools).
"""
import argparse
import json
import math
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_shapes_dataset import make_shapes  # noqa: E402

Sample = Tuple[torch.Tensor, Dict[str, torch.Tensor]]


def load_split(folder: Path) -> List[Sample]:
    meta = json.loads((folder / 'annotations.json').read_text())
    out = []
    for rec in meta['images']:
        img = np.asarray(Image.open(folder / rec['file']).convert('RGB'), dtype=np.float32) / 255.
        out.append((torch.from_numpy(img).permute(2, 0, 1).contiguous(),
                    dict(boxes=torch.tensor(rec['boxes'], dtype=torch.float32).reshape(-1, 4),
                         labels=torch.tensor(rec['labels'], dtype=torch.int64))))
    return out


def build(model_name: str, num_classes: int, image_size: int):
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from timm_cra.detection import create_fasterrcnn
    anchors = AnchorGenerator(sizes=((16,), (32,), (64,), (128,), (256,)), aspect_ratios=((0.5, 1.0, 2.0),) * 5)
    return create_fasterrcnn(
        model_name, num_classes=num_classes, min_size=image_size, max_size=image_size, out_channels=64,
        rpn_anchor_generator=anchors, rpn_pre_nms_top_n_train=600, rpn_post_nms_top_n_train=300,
        rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_test=150, rpn_batch_size_per_image=128,
        box_batch_size_per_image=128, box_detections_per_img=50)


def _flip(sample: Sample, width: int) -> Sample:
    img, t = sample
    boxes = t['boxes'].clone()
    boxes[:, [0, 2]] = width - t['boxes'][:, [2, 0]]
    return img.flip(-1), dict(boxes=boxes, labels=t['labels'])


@torch.no_grad()
def evaluate(model, data: List[Sample], batch_size: int) -> Dict[str, float]:
    from timm_cra.detection import mean_average_precision
    model.eval()
    metric = mean_average_precision()
    for i in range(0, len(data), batch_size):
        chunk = data[i:i + batch_size]
        preds = model([s[0] for s in chunk])
        metric.update(preds, [s[1] for s in chunk])
    res = metric.compute()
    return dict(map_50=float(res['map_50']), recall_50=float(res['mar_100']))


def run(model_name: str, seed: int, train: List[Sample], val: List[Sample], args) -> Dict:
    torch.manual_seed(seed)
    model = build(model_name, num_classes=4, image_size=args.image_size)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=1e-4)
    steps_per_epoch = math.ceil(len(train) / args.batch_size)
    total, warmup = steps_per_epoch * args.epochs, steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / warmup if s < warmup else
                                              0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total - warmup))))
    g = torch.Generator().manual_seed(seed)
    history, t0 = [], time.time()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(train), generator=g).tolist()
        flips = torch.rand(len(train), generator=g) < 0.5
        sums: Dict[str, float] = {}
        for s in range(steps_per_epoch):
            idx = order[s * args.batch_size:(s + 1) * args.batch_size]
            chunk = [_flip(train[i], args.image_size) if flips[i] else train[i] for i in idx]
            losses = model([c[0] for c in chunk], [c[1] for c in chunk])
            loss = sum(losses.values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            opt.step()
            sched.step()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.) + v.item()
            sums['loss'] = sums.get('loss', 0.) + loss.item()
        row = dict(epoch=epoch + 1, **{k: round(v / steps_per_epoch, 4) for k, v in sums.items()})
        history.append(row)
        print(f"{model_name} seed {seed} epoch {epoch + 1}: loss {row['loss']:.4f} ({time.time() - t0:.0f}s)",
              flush=True)
    train_s = time.time() - t0
    t1 = time.time()
    metrics = evaluate(model, val, args.batch_size)
    print(f'{model_name} seed {seed}: mAP@0.5 {metrics["map_50"]:.4f}', flush=True)
    return dict(model=model_name, seed=seed, **metrics, history=history, train_s=round(train_s, 1),
                eval_s=round(time.time() - t1, 1),
                params=sum(p.numel() for p in model.backbone.body.parameters()))


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_text(json.dumps(obj, indent=1) + '\n')
    os.replace(tmp, path)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--data', required=True, help='shapes folder (train/, val/); generated when missing')
    p.add_argument('--n-train', type=int, default=400)
    p.add_argument('--n-val', type=int, default=100)
    p.add_argument('--image-size', type=int, default=128)
    p.add_argument('--models', nargs='+', default=['resnet18', 'cra_resnet18'])
    p.add_argument('--seeds', nargs='+', type=int, default=[0])
    p.add_argument('--epochs', type=int, default=8)
    p.add_argument('--batch-size', type=int, default=8)
    p.add_argument('--lr', type=float, default=0.02)
    p.add_argument('--out', required=True, help='results JSON (rewritten after every run)')
    args = p.parse_args(argv)

    data = Path(args.data)
    if not (data / 'val' / 'annotations.json').is_file():
        make_shapes(str(data), args.n_train, args.n_val, image_size=args.image_size)
    train, val = load_split(data / 'train'), load_split(data / 'val')
    result = dict(
        experiment='Faster R-CNN (timm_cra.detection.create_fasterrcnn) on synthetic shapes, random-init backbones',
        command=' '.join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
        date=datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
        machine=dict(platform=platform.platform(), cpus=os.cpu_count(), torch_threads=torch.get_num_threads(),
                     torch=torch.__version__),
        config=dict(vars(args), n_train=len(train), n_val=len(val)), runs=[])
    for seed in args.seeds:
        for name in args.models:  # interleaved: both backbones see the same machine load per seed
            result['runs'].append(run(name, seed, train, val, args))
            _write_json(Path(args.out), result)
    summary = {}
    for name in args.models:
        maps = [r['map_50'] for r in result['runs'] if r['model'] == name]
        summary[name] = dict(map_50_mean=round(float(np.mean(maps)), 4), map_50=[round(m, 4) for m in maps],
                             final_loss=[r['history'][-1]['loss'] for r in result['runs'] if r['model'] == name],
                             first_loss=[r['history'][0]['loss'] for r in result['runs'] if r['model'] == name])
    result['summary'] = summary
    _write_json(Path(args.out), result)
    print(json.dumps(summary, indent=1))


if __name__ == '__main__':
    main()
