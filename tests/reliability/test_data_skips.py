"""Unreadable and unusual images: skips counted into metrics.csv and named in the log; 16-bit PNGs scaled."""
import csv
import logging

import numpy as np
import pytest
from PIL import Image

from timm_cra.data import create_dataset, decode_to_memory
from timm_cra.train import train

from .test_data_labels import write_parquet


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _folder(root, corrupt=True):
    rng = np.random.default_rng(0)
    for split, n in (('train', 4), ('val', 2)):
        for c in ('a', 'b'):
            for i in range(n):
                p = root / split / c / f'{i}.png'
                p.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(p)
        if corrupt:
            (root / split / 'a' / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n not really a png')
    return root


@pytest.mark.parametrize('in_memory', [True, False])
def test_skipped_images_reach_metrics_csv(tmp_path, caplog, in_memory):
    """The in-memory loader used to record train_skipped = eval_skipped = 0 although it dropped images."""
    data = _folder(tmp_path / 'data')
    with caplog.at_level(logging.WARNING):
        train(['--model', 'cra_cifar_resnet20', '--data-dir', str(data), '--dataset', 'folder', '--val-split', 'val',
               '--batch-size', '4', '--epochs', '2', '--workers', '0', '--no-plot', '--output', str(tmp_path),
               '--experiment', 'run'] + (['--in-memory'] if in_memory else []))
    rows = _rows(tmp_path / 'run' / 'metrics.csv')
    assert [int(r['train_skipped']) for r in rows] == [1, 1]  # once per epoch, as the folder loader counts
    assert [int(r['eval_skipped']) for r in rows] == [1, 1]
    assert str(data / 'train' / 'a' / 'broken.png') in caplog.text


def test_in_memory_hf_log_names_the_row(tmp_path, caplog):
    path = write_parquet(tmp_path / 'd' / 'train-00000-of-00001.parquet', [0, 1, 0, 1])
    import datasets
    ds = datasets.load_dataset('parquet', data_files=str(path), split='train')
    ds = ds.cast_column('image', datasets.Image(decode=False))
    rows = ds.to_dict()
    rows['image'][2] = {'bytes': b'garbage', 'path': None}
    datasets.Dataset.from_dict(rows, features=ds.features).to_parquet(str(path))
    with caplog.at_level(logging.WARNING):
        mem = create_dataset('', str(tmp_path / 'd'), 'train', in_memory=True)
    assert len(mem) == 3 and mem.num_skipped == 1
    assert 'row 2' in caplog.text and 'rows 2' in caplog.text


def _png16(path):
    a = (np.arange(32 * 32, dtype=np.uint32).reshape(32, 32) * 64).astype(np.uint16)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)
    with Image.open(path) as img:
        assert img.mode in ('I;16', 'I')  # what PIL makes of a 16-bit greyscale PNG
    return np.rint(a / 257.0).astype(np.uint8)


@pytest.mark.parametrize('in_chans', [1, 3])
def test_16bit_png_is_scaled_not_white(tmp_path, in_chans):
    """PIL's convert clips 16-bit values at 255: the image used to come out (almost) all white."""
    expected = _png16(tmp_path / 'train' / 'x' / 'deep.png')
    _png16(tmp_path / 'train' / 'y' / 'deep.png')
    folder = create_dataset('folder', str(tmp_path), 'train', in_chans=in_chans)
    img = np.asarray(folder.load_image(0))
    assert img.shape == ((32, 32) if in_chans == 1 else (32, 32, 3))
    planes = [img] if in_chans == 1 else [img[..., c] for c in range(3)]
    assert all(np.array_equal(p, expected) for p in planes)
    mem = decode_to_memory(folder)
    assert mem.num_skipped == 0 and mem.images.shape == (2, 32, 32, in_chans)
    assert np.array_equal(mem.images[0, ..., 0].numpy(), expected)


def test_16bit_pgm_scales_like_the_16bit_png_of_its_pixels(tmp_path):
    """Pillow opens a PGM of maxval 65535 as 32-bit 'I', and the 32-bit rule (values decide the scale) read dark
    pixels 200/65535 as 8-bit 200 where the 16-bit PNG of the same pixels reads 1. PGMs (binary P5, plain P2, any
    maxval over 255, which Pillow scales to 0..65535) decode exactly as the 16-bit PNG does, in memory too."""
    a = (np.arange(32 * 32, dtype=np.uint32).reshape(32, 32) * 7 % 256).astype(np.uint16)  # dark: all <= 255
    header = b'32 32\n'
    files = {'png/0.png': None,
             'p5/0.pgm': b'P5\n' + header + b'65535\n' + a.astype('>u2').tobytes(),
             'p5_1023/0.pgm': b'P5\n' + header + b'1023\n' + a.astype('>u2').tobytes(),
             'p2/0.pgm': b'P2\n' + header + b'65535\n' + ' '.join(map(str, a.ravel())).encode() + b'\n'}
    for name, data in files.items():
        (tmp_path / 'train' / name).parent.mkdir(parents=True)
        if data is None:
            Image.fromarray(a).save(tmp_path / 'train' / name)
        else:
            (tmp_path / 'train' / name).write_bytes(data)
    with Image.open(tmp_path / 'train' / 'p5' / '0.pgm') as img:
        assert img.mode == 'I' and np.asarray(img).max() == 255  # no bit depth in the mode: the values misled
    expected = np.rint(a / 257.0).astype(np.uint8)
    folder = create_dataset('folder', str(tmp_path), 'train', in_chans=1)
    got = {p[len(str(tmp_path / 'train')) + 1:]: np.asarray(folder.load_image(i))
           for i, (p, _) in enumerate(folder.samples)}
    assert np.array_equal(got['png/0.png'], expected) and expected.max() == 1
    assert np.array_equal(got['p5/0.pgm'], expected) and np.array_equal(got['p2/0.pgm'], expected)
    assert np.array_equal(got['p5_1023/0.pgm'], np.rint(a / 1023 * 255).astype(np.uint8))  # maxval is full scale
    mem = decode_to_memory(folder)
    assert mem.num_skipped == 0
    for i, (p, _) in enumerate(folder.samples):
        assert np.array_equal(mem.images[i, ..., 0].numpy(), got[p[len(str(tmp_path / 'train')) + 1:]])


def test_16bit_png_conversion_for_other_clients_matches_the_loader(tmp_path, monkeypatch):
    """The same 16-bit PNG was mid-grey to timm-cra and white to PIL's convert('RGB') (the card's code,
    transformers' pipeline). The conversion docs/training.md gives, run as written on a real file, yields what
    timm-cra's loader feeds the model, and the card's one-line pointer (convert_image) does too."""
    from pathlib import Path

    from timm_cra.data.images import convert_image
    from timm_cra.hub.card import usage_section
    _png16(tmp_path / 'train' / 'x' / 'deep.png')
    _png16(tmp_path / 'train' / 'y' / 'deep.png')
    loaded = np.asarray(create_dataset('folder', str(tmp_path), 'train').load_image(0))
    with Image.open(tmp_path / 'train' / 'x' / 'deep.png') as img:
        clipped = np.asarray(img.convert('RGB'))
    assert clipped.mean() > 250 and abs(loaded.mean() - 127.5) < 1  # the two tools' inputs differ
    doc = (Path(__file__).resolve().parents[2] / 'docs' / 'training.md').read_text(encoding='utf-8')
    (block,) = [b for b in doc.split('```python\n')[1:] if "Image.open('deep.png')" in b]
    monkeypatch.chdir(tmp_path / 'train' / 'x')
    exec(compile(block.split('```')[0], 'docs/training.md', 'exec'), {})  # noqa: S102  (the docs' own code)
    with Image.open('deep8.png') as img:
        assert img.mode == 'L' and np.array_equal(np.asarray(img.convert('RGB')), loaded)
    card = '\n'.join(usage_section('org/repo', (3, 32, 32), None))
    assert 'timm_cra.data.images.convert_image(Image.open(path), 3)' in card
    with Image.open('deep.png') as img:
        assert np.array_equal(np.asarray(convert_image(img, 3)), loaded)


def test_the_cards_advice_for_16bit_and_float_images_reads_a_sideways_file_as_the_loader(tmp_path):
    """The card's advice for wide images, `convert_image(Image.open(path), C)` as a published card prints it,
    skipped the EXIF Orientation the loaders apply: a 16-bit PNG or float TIFF stored sideways (Orientation 6)
    reached the model turned a quarter. It now gives the folder loader's exact pixels at 1 and 3 channels, and the
    card names float (mode F) images beside 16-bit ones."""
    import re
    from pathlib import Path

    import timm_cra.data.images  # the card's code names timm_cra.data.images.convert_image
    from timm_cra.hub.card import usage_section
    rng = np.random.default_rng(0)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to view
    wide = {'a/deep.png': rng.integers(0, 65536, (8, 12)).astype(np.uint16),
            'b/float.tif': rng.random((8, 12)).astype(np.float32)}
    for name, a in wide.items():
        (tmp_path / name).parent.mkdir(parents=True)
        Image.fromarray(a).save(tmp_path / name, exif=exif)
    published = (Path(__file__).resolve().parents[2] / 'hub' / 'timm-cra' / 'cra_cifar_resnet20.cifar10'
                 / 'README.md').read_text()
    for in_chans, card in ((3, published), (1, '\n'.join(usage_section('org/grey', (1, 32, 32), None)))):
        (line,) = [ln for ln in card.splitlines() if 'float TIFF (mode `F`' in ln and '16-bit' in ln]
        (advice,) = re.findall(r'`(timm_cra\.data\.images\.convert_image\(Image\.open\(path\), \d\))`', line)
        ds = create_dataset('folder', str(tmp_path), '', in_chans=in_chans)
        for i, (path, _) in enumerate(ds.samples):
            loaded = np.asarray(ds.load_image(i))
            assert loaded.shape[:2] == (12, 8)  # upright: the stored 12 x 8 turned
            with Image.open(path) as img:
                assert not np.array_equal(np.asarray(img.convert(ds.load_image(i).mode)), loaded)
                got = eval(advice, {'timm_cra': timm_cra, 'Image': Image, 'path': path})  # noqa: S307 (the card's)
            assert np.array_equal(np.asarray(got), loaded), (path, in_chans)


def test_a_lab_tiff_reads_at_one_channel_as_the_greyscale_of_its_three_channel_reading(tmp_path):
    """A LAB TIFF read at 3 channels but was unreadable at 1 ("conversion from LAB to RGB not supported": Pillow
    converts LAB to RGB only): at 1 channel it is now the greyscale of the RGB reading."""
    lab = Image.frombytes('LAB', (12, 8), np.random.default_rng(0).integers(0, 256, 8 * 12 * 3, np.uint8).tobytes())
    for c in ('a', 'b'):  # a classifier's folders: two classes
        (tmp_path / c).mkdir()
        lab.save(tmp_path / c / 'lab.tif')
    rgb = create_dataset('folder', str(tmp_path), '', in_chans=3).load_image(0)
    grey = create_dataset('folder', str(tmp_path), '', in_chans=1).load_image(0)
    assert grey is not None and grey.mode == 'L' and rgb.mode == 'RGB'
    assert np.array_equal(np.asarray(grey), np.asarray(rgb.convert('L')))


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_32bit_integer_and_float_images_are_scaled_by_a_known_rule(tmp_path, cli_env):
    """32-bit integer TIFFs (mode I) used to be taken as 16-bit and came out nearly black, float TIFFs (mode F)
    were clipped to black: they are scaled by the documented rule, and an image with no known scale is a
    counted skip naming the reason, through the validate CLI."""
    import json
    import subprocess
    import sys
    ramp = np.arange(32 * 32, dtype=np.int64).reshape(32, 32) % 256
    images = {'a/i8.tif': ramp.astype(np.int32), 'a/i16.tif': (ramp * 257).astype(np.int32),
              'b/f.tif': (ramp / 255).astype(np.float32), 'b/f_over_1.tif': (ramp / 85).astype(np.float32),
              'b/i_huge.tif': (ramp * 1000).astype(np.int32)}
    data = tmp_path / 'data'  # the results file goes beside the data: outputs inside it are refused
    for name, a in images.items():
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(a).save(data / name)
        with Image.open(data / name) as img:
            assert img.mode == ('F' if a.dtype == np.float32 else 'I')
    ds = create_dataset('folder', str(data), '', in_chans=1)
    got = {p[len(str(data)) + 1:]: ds.load_image(i) for i, (p, _) in enumerate(ds.samples)}
    for name in ('a/i8.tif', 'a/i16.tif', 'b/f.tif'):
        assert np.array_equal(np.asarray(got[name]), ramp.astype(np.uint8)), name
    assert got['b/f_over_1.tif'] is None and got['b/i_huge.tif'] is None
    r = subprocess.run([sys.executable, '-m', 'timm_cra.eval', '--model', 'cra_cifar_resnet20', '--num-classes', '2',
                        '--data-dir', str(data), '--dataset', 'folder', '--split', '', '--img-size', '32',
                        '--workers', '0', '--no-progress', '--results-file', str(tmp_path / 'r.json')],
                       env=cli_env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((tmp_path / 'r.json').read_text())
    assert (res['count'], res['skipped']) == (3, 2)
    assert 'float image with values outside [0, 1] (min 0, max 3)' in r.stderr
    assert '32-bit integer image with values 0..255000' in r.stderr


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_a_split_with_no_readable_image_is_refused(tmp_path, cli_env):
    """Every image unreadable used to train '0 optimizer steps', export a random-init model and exit 0; validate
    exited 0 with count 0 and top1 null. Both are one line naming the skip count, and nothing is written."""
    import subprocess
    import sys
    data = tmp_path / 'data'
    for split in ('train', 'val'):
        for c in ('a', 'b'):
            for i in range(4):
                p = data / split / c / f'{i}.png'
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(b'\x89PNG\r\n\x1a\n not really a png')
    common = ['--model', 'cra_cifar_resnet20', '--data-dir', str(data), '--dataset', 'folder', '-j', '0',
              '--batch-size', '4', '--img-size', '32']
    train_cmd = [sys.executable, '-m', 'timm_cra.train', *common, '--epochs', '1', '--val-split', 'val',
                 '--output', str(tmp_path / 'out')]
    val_cmd = [sys.executable, '-m', 'timm_cra.eval', *common, '--split', 'val', '--no-progress', '--num-classes', '2',
               '--results-file', str(tmp_path / 'r.json')]
    for cmd, expected in ((train_cmd, 'error: Epoch 0 read no training image: all 8 were skipped as unreadable'),
                          (val_cmd, 'error: Validate cra_cifar_resnet20: no readable image to evaluate: all 8 were '
                                    'skipped')):
        proc = subprocess.run(cmd, env=cli_env, capture_output=True, text=True, timeout=180)
        assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
        assert proc.stderr.strip().splitlines()[-1].startswith(expected), proc.stderr[-600:]
    assert not list(tmp_path.rglob('model.safetensors')) and not list(tmp_path.rglob('last.pth'))
    assert not (tmp_path / 'r.json').exists()
