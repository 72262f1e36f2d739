"""Synthetic detection set: coloured squares, circles and triangles with exact boxes on noisy backgrounds.

Deterministic (image ``i`` of a split is drawn from ``numpy.random.default_rng([seed, split_id, i])``), so the same
arguments give the same files. Colour does not tell the class: every shape comes in every palette colour.

Writes ``<out>/<split>/NNNNNN.png`` and ``<out>/<split>/annotations.json``::

    {"classes": ["square", "circle", "triangle"],
     "images": [{"file": "000000.png", "boxes": [[x1, y1, x2, y2], ...], "labels": [1, ...]}, ...]}

Labels are 1-based (0 is torchvision's background); boxes are pixel corners (x2, y2 exclusive), taken from each
shape's drawn mask. Shapes never overlap. Each split is written to a temporary folder and renamed when complete.

    python tools/make_shapes_dataset.py --out data/shapes --n-train 400 --n-val 100
"""
import argparse
import json
import shutil
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ('square', 'circle', 'triangle')
PALETTE = ((230, 60, 50), (50, 170, 70), (60, 90, 220), (240, 200, 40), (200, 70, 200))
_SPLIT_IDS = {'train': 0, 'val': 1}


def _shape_mask(kind: str, size: int, x: int, y: int, rng: np.random.Generator, image_size: int) -> Image.Image:
    mask = Image.new('L', (image_size, image_size), 0)
    draw = ImageDraw.Draw(mask)
    if kind == 'square':
        draw.rectangle([x, y, x + size - 1, y + size - 1], fill=255)
    elif kind == 'circle':
        draw.ellipse([x, y, x + size - 1, y + size - 1], fill=255)
    else:  # triangle: apex somewhere on the top edge, base on the bottom edge
        apex = x + int(rng.integers(0, size))
        draw.polygon([(apex, y), (x, y + size - 1), (x + size - 1, y + size - 1)], fill=255)
    return mask


def make_image(rng: np.random.Generator, image_size: int = 128, max_shapes: int = 4,
               min_size: int = 14, max_size: int = 44) -> Tuple[Image.Image, List[List[int]], List[int]]:
    """One image and its boxes / labels."""
    base = rng.uniform(40, 200, size=3)
    ramp = np.linspace(-30, 30, image_size)[None, :, None] * rng.uniform(-1, 1)
    canvas = base + ramp + rng.normal(0, 18, size=(image_size, image_size, 3))
    boxes, labels = [], []
    for _ in range(int(rng.integers(1, max_shapes + 1))):
        for _attempt in range(20):
            size = int(rng.integers(min_size, max_size + 1))
            x, y = (int(v) for v in rng.integers(0, image_size - size, size=2))
            if all(x + size + 2 <= b[0] or b[2] + 2 <= x or y + size + 2 <= b[1] or b[3] + 2 <= y for b in boxes):
                break
        else:
            continue
        label = int(rng.integers(len(CLASSES)))
        mask = np.asarray(_shape_mask(CLASSES[label], size, x, y, rng, image_size)) > 0
        colour = np.asarray(PALETTE[int(rng.integers(len(PALETTE)))], dtype=np.float64)
        canvas[mask] = colour + rng.normal(0, 10, size=(int(mask.sum()), 3))
        ys, xs = np.nonzero(mask)
        boxes.append([int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1])
        labels.append(label + 1)
    image = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    return image, boxes, labels


def write_split(out: Path, split: str, n: int, seed: int = 0, image_size: int = 128) -> Path:
    """Write one split; returns its folder. An existing folder is replaced only once the new one is complete."""
    final = out / split
    tmp = out / f'.{split}.tmp'
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    records: List[Dict] = []
    for i in range(n):
        rng = np.random.default_rng([seed, _SPLIT_IDS[split], i])
        image, boxes, labels = make_image(rng, image_size)
        name = f'{i:06d}.png'
        image.save(tmp / name)
        records.append(dict(file=name, boxes=boxes, labels=labels))
    (tmp / 'annotations.json').write_text(json.dumps(dict(classes=list(CLASSES), images=records)))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


def make_shapes(out: str, n_train: int = 400, n_val: int = 100, seed: int = 0, image_size: int = 128) -> Path:
    root = Path(out)
    write_split(root, 'train', n_train, seed, image_size)
    write_split(root, 'val', n_val, seed, image_size)
    return root


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', required=True, help='output folder (train/ and val/ are written in it)')
    p.add_argument('--n-train', type=int, default=400)
    p.add_argument('--n-val', type=int, default=100)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--image-size', type=int, default=128)
    args = p.parse_args(argv)
    root = make_shapes(args.out, args.n_train, args.n_val, args.seed, args.image_size)
    print(f'Wrote {args.n_train} train / {args.n_val} val images to {root}')


if __name__ == '__main__':
    main()
