#!/usr/bin/env python3
"""Convert Fashion-MNIST idx files into class folders of 28x28 greyscale PNGs (a fine-tuning example).

    apt-get install dataset-fashion-mnist   # idx files in /usr/share/datasets/fashion-mnist
    python tools/fashion_mnist_to_folders.py --out data/fashion_mnist --train-per-class 500 --val-per-class 200

Writes ``OUT/train/<class>/<i>.png`` (from the idx train split) and ``OUT/val/<class>/<i>.png`` (from the
t10k split), the first N images of each class. The idx headers are checked (magic, sizes) before any
pixel is read; files may be gzip-compressed.
"""
import argparse
import gzip
import os
import struct
import sys

import numpy as np
from PIL import Image

CLASSES = ('t-shirt_top', 'trouser', 'pullover', 'dress', 'coat', 'sandal', 'shirt', 'sneaker', 'bag',
           'ankle_boot')
_U8 = 0x08


def read_idx(path: str, ndim: int) -> np.ndarray:
    """An idx file of unsigned bytes with ``ndim`` dimensions as a uint8 array (header-checked)."""
    opener = gzip.open if path.endswith('.gz') else open
    with opener(path, 'rb') as f:
        data = f.read()
    if len(data) < 4 + 4 * ndim:
        raise ValueError(f'{path}: too short for an idx header')
    zero, dtype, dims = struct.unpack('>HBB', data[:4])
    if zero != 0 or dtype != _U8 or dims != ndim:
        raise ValueError(f'{path}: not a uint8 idx file with {ndim} dimensions (header {data[:4].hex()})')
    shape = struct.unpack(f'>{ndim}I', data[4:4 + 4 * ndim])
    body = data[4 + 4 * ndim:]
    if len(body) != int(np.prod(shape)):
        raise ValueError(f'{path}: header says {shape} ({int(np.prod(shape))} bytes) but {len(body)} bytes follow')
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def write_split(images: np.ndarray, labels: np.ndarray, out: str, per_class: int) -> int:
    if len(images) != len(labels) or labels.max() >= len(CLASSES):
        raise ValueError('images and labels do not match')
    n = 0
    for c, name in enumerate(CLASSES):
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        for i, idx in enumerate(np.flatnonzero(labels == c)[:per_class]):
            tmp = os.path.join(d, f'.{i}.png.tmp')
            Image.fromarray(images[idx], mode='L').save(tmp, format='PNG')
            os.replace(tmp, os.path.join(d, f'{i}.png'))
            n += 1
    return n


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--src', default='/usr/share/datasets/fashion-mnist', help='folder of the idx(.gz) files')
    p.add_argument('--out', required=True)
    p.add_argument('--train-per-class', type=int, default=500)
    p.add_argument('--val-per-class', type=int, default=200)
    a = p.parse_args(argv)
    for split, prefix, per in (('train', 'train', a.train_per_class), ('val', 't10k', a.val_per_class)):
        def find(kind):
            for ext in ('.gz', ''):
                f = os.path.join(a.src, f'{prefix}-{kind}{ext}')
                if os.path.isfile(f):
                    return f
            sys.exit(f'error: {prefix}-{kind}[.gz] not found in {a.src} (apt-get install dataset-fashion-mnist)')
        images = read_idx(find('images-idx3-ubyte'), 3)
        labels = read_idx(find('labels-idx1-ubyte'), 1)
        n = write_split(images, labels, os.path.join(a.out, split), per)
        print(f'{split}: {n} images -> {os.path.join(a.out, split)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
