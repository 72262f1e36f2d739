#!/usr/bin/env python
"""How much accuracy the JPEG re-encoding of the CIFAR-10 copy may cost, measured as far as it can be here.

The copy in ``../shared/data/cifar10`` holds every image as a baseline JPEG (quality 75 tables, 4:2:0 chroma:
PIL's defaults); the lossless originals are not on this machine, so the loss against them cannot be measured
directly. This tool measures the two things that can be:

1. **Test-time sensitivity of a trained model**: the same weights validated on the copy's 10k test images
   as they are and after one more JPEG generation at several qualities (each written as a parquet split and
   read by the package's own validate path), with the PSNR of each version against the copy (of the mean
   squared error over the split; a new generation at the copy's own settings gives back nearly the same pixels).
2. **What the copy's generation costs in PSNR**: natural photos (``imagenet_val_sample``) reduced to 32x32
   play the originals; the mean PSNR of their q75 4:2:0 encoding is what the copy's own generation is
   expected to have cost against the lost originals, to be read against the PSNRs in 1.

  python tools/cifar_jpeg_gap.py --model local-dir:output/cifar10-e50/resnet20-s0 \
      --out results/cifar10-e50/jpeg-gap.json
"""
import argparse
import io
import json
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import timm_cra  # noqa: E402,F401  (registers the models)
from timm_cra.eval.validate import create_parser, validate  # noqa: E402
from tools.doc_blocks import ROOT  # noqa: E402

#: one more generation: (label, PIL save kwargs); ``None`` keeps the copy's bytes
GENERATIONS = [
    ('copy', None),
    ('q95_444', dict(quality=95, subsampling=0)),
    ('q75_420', dict(quality=75, subsampling=2)),
    ('q50_420', dict(quality=50, subsampling=2)),
    ('q30_420', dict(quality=30, subsampling=2)),
]


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert('RGB'), dtype=np.uint8)


def _encode(pixels: np.ndarray, **save_kwargs) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format='JPEG', **save_kwargs)
    return buf.getvalue()


def mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))


def psnr_db(mean_squared_error: float) -> Optional[float]:
    """PSNR of a mean squared error over 8-bit pixels; ``None`` for identical pixels."""
    return None if mean_squared_error == 0 else float(10 * np.log10(255.0 ** 2 / mean_squared_error))


def _quality_tables(data: bytes) -> Dict[int, List[int]]:
    return {k: list(v[:4]) for k, v in Image.open(io.BytesIO(data)).quantization.items()}


def regenerations(test_parquet: Path, model: str, workdir: Path, batch_size: int) -> List[Dict]:
    table = pq.read_table(test_parquet)
    images = table.column('img').to_pylist()
    copy_pixels = [_decode(img['bytes']) for img in images]
    rows = []
    for label, save_kwargs in GENERATIONS:
        if save_kwargs is None:
            new_bytes = [img['bytes'] for img in images]
            mean_psnr = None  # the copy itself: no PSNR against itself
        else:
            new_bytes = [_encode(p, **save_kwargs) for p in copy_pixels]
            # PSNR of the mean MSE over the split (one number; per-image PSNRs are infinite where unchanged)
            mean_psnr = psnr_db(float(np.mean([mse(p, _decode(b)) for p, b in zip(copy_pixels, new_bytes)])))
        split_dir = workdir / label
        split_dir.mkdir()
        img_col = pa.array([{'bytes': b, 'path': img.get('path')} for b, img in zip(new_bytes, images)],
                           type=table.schema.field('img').type)
        pq.write_table(table.set_column(table.schema.get_field_index('img'), 'img', img_col),
                       split_dir / 'test-00000-of-00001.parquet')
        val = validate(create_parser().parse_args([
            '--model', model, '--pretrained', '--data-dir', str(split_dir), '--split', 'test',
            '--batch-size', str(batch_size), '--workers', '0', '--no-progress']))
        rows.append(dict(version=label, reencode=save_kwargs, psnr_vs_copy_db=mean_psnr,
                         mean_bytes=float(np.mean([len(b) for b in new_bytes])),
                         top1=val['top1'], top5=val['top5']))
        print(json.dumps(rows[-1]))
    return rows


def first_generation_psnr(photo_root: Path, size: int = 32) -> Dict[str, float]:
    """PSNR of the q75 4:2:0 encoding of natural photos reduced to ``size`` (centre square, area average)."""
    errors = []
    for path in sorted(p for p in photo_root.rglob('*') if p.is_file()):
        with Image.open(path) as im:
            im = im.convert('RGB')
            side = min(im.size)
            left, top = (im.width - side) // 2, (im.height - side) // 2
            orig = np.asarray(im.crop((left, top, left + side, top + side)).resize((size, size), Image.BOX))
        errors.append(mse(orig, _decode(_encode(orig, quality=75, subsampling=2))))
    return dict(photos=len(errors), psnr_db=psnr_db(float(np.mean(errors))),
                per_photo_psnr_db_min=psnr_db(max(errors)), per_photo_psnr_db_max=psnr_db(min(errors)))


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', required=True, help='a trained model, e.g. local-dir:<run folder>')
    p.add_argument('--data-dir', type=Path, default=ROOT.parent / 'shared' / 'data' / 'cifar10')
    p.add_argument('--photos', type=Path, default=ROOT.parent / 'shared' / 'data' / 'imagenet_val_sample')
    p.add_argument('--batch-size', type=int, default=500)
    p.add_argument('--out', type=Path, help='write the record here (JSON)')
    args = p.parse_args(argv)

    test_parquet = args.data_dir / 'test-00000-of-00001.parquet'
    first_image = pq.read_table(test_parquet, columns=['img']).column('img')[0].as_py()['bytes']
    with tempfile.TemporaryDirectory() as tmp:
        rows = regenerations(test_parquet, args.model, Path(tmp), args.batch_size)
    record = dict(model=args.model, data=str(test_parquet.name),
                  copy_quantization_first_entries=_quality_tables(first_image),
                  regenerations=rows, natural_photos_32px=first_generation_psnr(args.photos))
    print(json.dumps(record['natural_photos_32px']))
    if args.out:
        args.out.write_text(json.dumps(record, indent=1, allow_nan=False) + '\n')
        print(f'Wrote {args.out}')


if __name__ == '__main__':
    main()
