"""Strange things in a dataset folder, through the real CLIs: a FIFO, a device node, dangling and looping
symlinks, a decompression bomb and a GIF are read or skipped and counted -- never a hang, never a traceback."""
import csv
import logging
import os
import re
import stat
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from timm_cra.data import DataError, UsageError, create_dataset, decode_to_memory, load_cifar_pickle

from .test_data_labels import _train, write_parquet

#: A regression (a blocking open) must fail the test, not hang the suite.
CLI_TIMEOUT = 240


def bomb_png(path, side=20000):
    """A valid 1-bit PNG of ``side`` x ``side`` pixels in a few KB: what PIL refuses as a decompression bomb."""
    def chunk(kind, data):
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    z = zlib.compressobj(9)
    row = b'\x00' * (1 + side // 8)  # filter byte + packed bits
    idat = b''.join(z.compress(row) for _ in range(side)) + z.flush()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', side, side, 1, 0, 0, 0, 0))
                     + chunk(b'IDAT', idat) + chunk(b'IEND', b''))
    return path


def _png(path, rng):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)


def strange_folder(root):
    """train/ and val/ with classes a, b of 32x32 images, plus one stranger's file of each kind in train/a."""
    rng = np.random.default_rng(0)
    for split, n in (('train', 4), ('val', 2)):
        for c in ('a', 'b'):
            for i in range(n):
                _png(root / split / c / f'{i}.png', rng)
        os.mkfifo(root / split / 'a' / 'pipe.jpg')  # opening it for reading blocks until a writer comes
    train_a = root / 'train' / 'a'
    bomb_png(train_a / 'bomb.png')
    Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8), mode='L').convert('P').save(train_a / 'g.gif')
    os.symlink(train_a / 'gone.png', train_a / 'dangling.png')
    os.symlink(train_a / 'loop.png', train_a / 'loop.png')
    os.symlink('.', train_a / 'here1')  # directory loops: walked once, not 2**40 times
    os.symlink('..', train_a / 'here2')
    (train_a / 'notes.txt').write_text('not an image')
    (train_a / 'x.eps').write_text('%!PS-Adobe-3.0 EPSF-3.0\n')  # a format PIL hands to Ghostscript
    os.symlink('loop', root / 'train' / 'loop')  # a looping symlink among the class folders: not a class
    (root / 'train' / '.cache').mkdir()  # a hidden folder is not a class
    (root / 'train' / '.cache' / '0.png').write_bytes((root / 'train' / 'a' / '0.png').read_bytes())
    return root


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _run(module, argv, cli_env, cwd):
    return subprocess.run([sys.executable, '-m', module] + [str(a) for a in argv], env=cli_env, cwd=str(cwd),
                          capture_output=True, text=True, timeout=CLI_TIMEOUT, umask=0o022)


@pytest.mark.parametrize('workers,eval_workers,in_memory', [  # the fast suite: both worker modes once
    (0, 2, False), pytest.param(2, 0, False, marks=pytest.mark.slow), pytest.param(0, 0, True, marks=pytest.mark.slow)])
@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_fifo_bomb_and_symlinks_are_counted_skips_in_train_and_eval(tmp_path, cli_env, workers, eval_workers,
                                                                     in_memory):
    data = strange_folder(tmp_path / 'data')
    out = tmp_path / 'runs'
    r = _run('timm_cra.train', ['--model', 'cra_cifar_resnet20', '--data-dir', data, '--dataset', 'folder',
                                '--val-split', 'val', '--batch-size', '4', '--epochs', '1', '--workers', workers,
                                '--no-plot', '--output', out, '--experiment', 'run']
             + (['--in-memory'] if in_memory else []), cli_env, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'Traceback' not in r.stderr
    row, = _rows(out / 'run' / 'metrics.csv')
    # train/a: pipe.jpg, bomb.png, dangling.png, loop.png skipped; the GIF is read; val/a: pipe.jpg.
    assert (int(row['train_skipped']), int(row['eval_skipped'])) == (4, 1)
    log = r.stderr
    for name in ('pipe.jpg', 'bomb.png', 'dangling.png', 'loop.png'):
        assert name in log
    assert 'is a FIFO, not a file' in log and 'over the decoding limit' in log
    assert 'hidden folder(s) (not classes): .cache' in log
    assert 'skipped 2 file(s) that are not images (1 .eps, 1 .txt)' in log

    v = _run('timm_cra.eval', ['--model', 'cra_cifar_resnet20', '--num-classes', '2', '--checkpoint',
                               out / 'run' / 'model.safetensors', '--data-dir', data / 'train', '--split', '',
                               '--dataset', 'folder', '--img-size', '32', '--workers', eval_workers,
                               '--results-file', tmp_path / 'r.json', '--no-progress'], cli_env, tmp_path)
    assert v.returncode == 0, v.stderr[-3000:]
    assert '4 unreadable image(s) skipped' in v.stderr and 'Traceback' not in v.stderr
    assert '"count": 9' in (tmp_path / 'r.json').read_text()  # 4 + 4 PNGs and the GIF
    # Every file written gets the mode open() gives (model.safetensors used to be 0600).
    modes = {p.name: p.stat().st_mode & 0o777 for p in [*(out / 'run').iterdir(), tmp_path / 'r.json']}
    assert set(modes.values()) == {0o644}, modes


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_directory_loops_with_the_default_dataset_kind_end(tmp_path, cli_env):
    """With ``--dataset ''`` the kind detection searched for parquet files with a recursive glob, which follows
    folder symlinks: two links to ``.`` in a class folder made ~2**40 paths (a hang). It uses the folder
    reader's loop-safe walk now, as does the parquet split discovery."""
    data = strange_folder(tmp_path / 'data')
    (data / 'train' / 'b' / 'deep').mkdir()
    os.symlink('..', data / 'train' / 'b' / 'deep' / 'up')
    os.symlink('.', data / 'train' / 'b' / 'deep' / 'here')
    v = _run('timm_cra.eval', ['--model', 'cra_cifar_resnet20', '--num-classes', '2', '--data-dir', data / 'train',
                               '--split', '', '--dataset', '', '--img-size', '32', '--workers', '0',
                               '--results-file', tmp_path / 'r.json', '--no-progress'], cli_env, tmp_path)
    assert v.returncode == 0 and 'Traceback' not in v.stderr, v.stderr[-3000:]
    assert '"count": 9' in (tmp_path / 'r.json').read_text()  # 4 + 4 PNGs and the GIF, each once
    (data / 'train' / 'b' / 'x.parquet').symlink_to(data / 'train' / 'b' / 'deep')  # a folder named x.parquet
    write_parquet(data / 'train' / 'a' / 'here1' / 'here1' / 'train-0.parquet', [0, 1])
    from timm_cra.data import detect_source
    assert detect_source(str(data)) == 'hfds'
    assert len(create_dataset('hfds', str(data), 'train')) == 2  # found once, through the loops


def _saved_dict(root):
    """A save_to_disk DatasetDict (train, test) of 4 tiny images each, read back once to prove it loads."""
    import datasets
    feats = datasets.Features(image=datasets.Image(), label=datasets.ClassLabel(names=['a', 'b']))
    rng = np.random.default_rng(0)
    split = {'image': [Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)) for _ in range(4)],
             'label': [0, 1, 0, 1]}
    datasets.DatasetDict(train=datasets.Dataset.from_dict(split, features=feats),
                         test=datasets.Dataset.from_dict(split, features=feats)).save_to_disk(str(root))
    assert len(create_dataset('', str(root), 'test')) == 4
    return root


def _fault(path, kind):
    if path.is_dir():
        import shutil
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    if kind == 'fifo':
        os.mkfifo(path)
    else:
        path.mkdir()


@pytest.mark.parametrize('name,kind', [
    ('test/data-00000-of-00001.arrow', 'fifo'),  # blocked datasets.load_from_disk forever
    ('dataset_dict.json', 'fifo'), ('dataset_dict.json', 'folder'), ('test/state.json', 'fifo'),
    ('test/dataset_info.json', 'folder'), ('test/dataset_info.json', 'fifo'), ('test', 'fifo')])
def test_save_to_disk_file_that_is_a_fifo_or_folder_is_one_line(tmp_path, name, kind):
    """Each file load_from_disk opens is stat-checked first: a FIFO arrow shard was a hang, a FIFO / folder json file
    a traceback; now one line naming the file (checked on the single-split folder too)."""
    root = _saved_dict(tmp_path / 'saved')
    _fault(root / name, kind)
    with pytest.raises(DataError, match=r"is not a usable save_to_disk folder: .*" + re.escape(name) +
                       r" is a (FIFO|folder), not a (file|folder); save the dataset again") as e:
        create_dataset('', str(root), 'test')
    assert '\n' not in str(e.value)
    if name.startswith('test/'):
        with pytest.raises(DataError, match=re.escape(name.split('/')[1]) + r" is a (FIFO|folder), not a file"):
            create_dataset('hfds', str(root / 'test'), '')


@pytest.mark.parametrize('splits', ['"test"', '["../outside"]', '["test", 3]', '["/etc"]', '["."]'])
def test_save_to_disk_splits_that_are_not_plain_names_are_one_line(tmp_path, splits):
    """``"splits": "test"`` was iterated letter by letter (a traceback); ``"../x"`` read a folder outside the data."""
    root = _saved_dict(tmp_path / 'saved')
    outside = _saved_dict(tmp_path / 'outside')  # a loadable dataset that must never be read through root
    assert outside.is_dir()
    (root / 'dataset_dict.json').write_text('{"splits": %s}' % splits)
    with pytest.raises(DataError, match=r"dataset_dict.json must list its splits as names of its sub-folders"):
        create_dataset('hfds', str(root), 'test')
    (root / 'dataset_dict.json').write_text('{"splits": ["test"]}')
    state = root / 'test' / 'state.json'
    state.write_text(state.read_text().replace('"data-00000-of-00001.arrow"', '"../../outside/test/data-00000-of-00001.arrow"'))
    with pytest.raises(DataError, match=r"state.json must name its arrow files in _data_files as file names"):
        create_dataset('hfds', str(root), 'test')


def test_device_node_named_like_an_image_is_skipped(tmp_path, make_image):
    for c in ('a', 'b'):
        make_image(tmp_path / c / '0.png')
    try:
        os.mknod(tmp_path / 'a' / 'zero.jpg', 0o644 | 0o020000, os.makedev(1, 5))  # like /dev/zero: endless
    except PermissionError:
        pytest.skip('creating a device node needs root (CAP_MKNOD)')
    ds = create_dataset('folder', str(tmp_path), '')
    assert [os.path.basename(p) for p, _ in ds.samples] == ['0.png', 'zero.jpg', '0.png']
    assert ds.load_image(1) is None and ds.load_image(0) is not None
    assert decode_to_memory(ds).num_skipped == 1


def test_parquet_bomb_and_path_to_a_fifo_are_skipped_in_memory_and_not(tmp_path, caplog):
    path = write_parquet(tmp_path / 'd' / 'train-00000-of-00001.parquet', [0, 1, 0, 1])
    import datasets
    ds = datasets.load_dataset('parquet', data_files=str(path), split='train')
    ds = ds.cast_column('image', datasets.Image(decode=False))
    rows = ds.to_dict()
    rows['image'][1] = {'bytes': bomb_png(tmp_path / 'bomb.png').read_bytes(), 'path': None}
    os.mkfifo(tmp_path / 'd' / 'pipe.png')
    rows['image'][2] = {'bytes': None, 'path': 'pipe.png'}  # relative to the parquet folder
    stored = datasets.Features(image={'bytes': datasets.Value('binary'), 'path': datasets.Value('string')},
                               label=ds.features['label'])  # to_parquet would read the paths into bytes
    datasets.Dataset.from_dict(rows, features=stored).to_parquet(str(path))
    with caplog.at_level(logging.WARNING):
        hf = create_dataset('', str(tmp_path / 'd'), 'train')
        assert [hf.load_image(i) is None for i in range(4)] == [False, True, True, False]
        mem = create_dataset('', str(tmp_path / 'd'), 'train', in_memory=True)
    assert len(mem) == 2 and mem.num_skipped == 2
    assert 'over the decoding limit' in caplog.text and 'is a FIFO, not a file' in caplog.text


def test_fifo_named_like_a_parquet_or_cifar_file_is_refused_in_one_line(tmp_path):
    os.makedirs(tmp_path / 'p')
    os.mkfifo(tmp_path / 'p' / 'train-00000-of-00001.parquet')
    with pytest.raises(UsageError, match=r'parquet file .* is a FIFO, not a file'):
        create_dataset('', str(tmp_path / 'p'), 'train')
    cifar = tmp_path / 'cifar-10-batches-py'
    cifar.mkdir()
    os.mkfifo(cifar / 'test_batch')
    with pytest.raises(UsageError, match=r'CIFAR batch file .*test_batch is a FIFO, not a file'):
        load_cifar_pickle(str(tmp_path), 'test')


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_one_class_is_refused_and_empty_classes_warned(tmp_path, make_image, cli_env, caplog):
    data = tmp_path / 'data'  # the run folder goes beside the data: outputs inside it are refused
    make_image(data / 'train' / 'only' / '0.png')
    make_image(data / 'val' / 'only' / '0.png')
    r = _run('timm_cra.train', ['--model', 'cra_cifar_resnet20', '--data-dir', data, '--dataset', 'folder',
                                '--val-split', 'val', '--epochs', '1', '--output', tmp_path / 'runs'],
             cli_env, tmp_path)
    assert r.returncode == 2 and r.stderr.count('\n') == 1, r.stderr
    assert "has one class folder ('only'): a classifier needs at least two classes" in r.stderr
    (data / 'train' / 'empty').mkdir()
    with caplog.at_level(logging.WARNING):
        ds = create_dataset('folder', str(data), 'train')
    assert ds.num_classes == 2 and '1 class folder(s) hold no images: empty' in caplog.text
    with pytest.raises(DataError, match='one class folder'):
        create_dataset('folder', str(data), 'val')  # without the training split's class list
    assert create_dataset('folder', str(data), 'val', class_names=ds.class_names).targets == [1]


def test_image_formats_are_an_allowlist(tmp_path, make_image):
    """A GIF / WebP / TIFF is read; an EPS named .png is not handed to Ghostscript but skipped."""
    for ext in ('gif', 'webp', 'tif', 'png'):
        make_image(tmp_path / 'a' / f'x.{ext}')
    make_image(tmp_path / 'b' / 'y.png')
    (tmp_path / 'b' / 'z.png').write_bytes(b'%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n')
    ds = create_dataset('folder', str(tmp_path), '')
    loaded = [ds.load_image(i) is not None for i in range(len(ds))]
    assert loaded == [True, True, True, True, True, False]


@pytest.mark.parametrize('side', [10000, 20000])  # PIL warns over MAX_IMAGE_PIXELS and raises over twice it
def test_pixel_limit_is_the_data_contract(tmp_path, side):
    from timm_cra.data.images import UnreadableImage, decode_image
    path = bomb_png(tmp_path / 'bomb.png', side)
    assert path.stat().st_size < 200_000
    with pytest.raises(UnreadableImage, match='over the decoding limit of 89478485 pixels'):
        decode_image(path)
    with pytest.raises(UnreadableImage, match='over the decoding limit'):
        decode_image(path.read_bytes())



def test_resize_side_is_read_from_the_transform_timm_builds():
    """The short side each of timm's transforms resizes a decoded image to (None: it cannot blow one up)."""
    from timm.data import create_transform
    from timm_cra.data.images import UnreadableImage, decode_image, resize_short_side
    assert resize_short_side(create_transform(32, is_training=False, crop_pct=0.875)) == 36
    assert resize_short_side(create_transform((32, 48), is_training=False, crop_pct=1.0)) == 48
    assert resize_short_side(create_transform(32, is_training=True, no_aug=True)) == 32
    assert resize_short_side(create_transform(32, is_training=True)) is None  # RandomResizedCrop crops first
    assert resize_short_side(create_transform(32, is_training=False, crop_mode='squash')) is None
    assert resize_short_side(None) is None
    thin = Image.new('L', (1000, 10))  # resized to a short side of 945: 94500 x 945 = 89,302,500 pixels, under
    assert decode_image(thin, 1, resize_side=945).size == (1000, 10)
    with pytest.raises(UnreadableImage, match='would be 94600x946 after the resize of its short side to 946'):
        decode_image(thin, 1, resize_side=946)

def test_train_config_that_is_a_fifo_is_named_not_opened(tmp_path, monkeypatch):
    from timm_cra.train import load_config
    monkeypatch.chdir(tmp_path)
    os.mkfifo('recipe.yaml')
    with pytest.raises(UsageError, match='config recipe.yaml is a FIFO, not a file'):
        load_config('recipe.yaml')
    (tmp_path / 'ok.yaml').write_text('epochs: 3\n')
    assert load_config('ok.yaml') == {'epochs': 3}


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_a_one_split_source_is_never_validated_on_its_training_rows(tmp_path, cli_env, make_image):
    """A parquet file, a single-split save_to_disk folder or a folder of class folders is one split that every
    split name resolves to: training refuses to validate on it in one line naming --val-split ''; it trains
    without validation, and validate takes the file as the split asked for."""
    import datasets
    from timm_cra.eval import create_parser, validate
    pq = write_parquet(tmp_path / 'pq' / 'train-00000-of-00001.parquet', [0, 1, 2, 0, 1, 2, 0, 1])
    r = _run('timm_cra.train', ['--model', 'cra_cifar_resnet20', '--data-dir', pq, '--epochs', '1',
                                '--workers', '0', '--output', tmp_path / 'runs'], cli_env, tmp_path)
    assert r.returncode == 2 and r.stderr.count('\n') == 1 and 'Traceback' not in r.stderr, r.stderr
    assert f"error: --data-dir {pq} holds one split, so validation would run on the training rows" in r.stderr
    assert "--val-split '' to train without validation" in r.stderr
    datasets.load_dataset('parquet', data_files=str(pq), split='train').save_to_disk(str(tmp_path / 'saved'))
    for c in ('a', 'b'):
        make_image(tmp_path / 'flat' / c / '0.png')
    for one_split in (tmp_path / 'saved', tmp_path / 'flat'):
        with pytest.raises(DataError, match='holds one split'):
            _train(tmp_path, one_split)
    summary = _train(tmp_path, pq, '--val-split', '')
    assert summary['final'].get('eval_top1') is None
    res = validate(create_parser().parse_args(['--model', 'cra_cifar_resnet20', '--num-classes', '3', '--data-dir',
                                               str(pq), '--workers', '0', '--no-progress']))
    assert res['count'] == 8


def test_a_validation_split_linked_to_the_training_split_is_never_validated_on(tmp_path, make_image):
    """A `val -> train` symlinked folder, or a `test-*.parquet` that is a symlink (or hard link) to the
    `train-*.parquet`, passed the one-split guard: training validated on its own rows (best top-1 100, exit 0). The
    guard compares the splits' files by identity; a real copy is a separate split and trains."""
    import shutil
    folders = tmp_path / 'folders'
    for c in ('a', 'b'):
        make_image(folders / 'train' / c / '0.png')
    os.symlink('train', folders / 'val')
    parquet = write_parquet(tmp_path / 'pq' / 'train-00000-of-00001.parquet', [0, 1, 0, 1])
    os.symlink(parquet.name, parquet.parent / 'test-00000-of-00001.parquet')
    hard = write_parquet(tmp_path / 'hard' / 'train-00000-of-00001.parquet', [0, 1, 0, 1])
    os.link(hard, hard.parent / 'test-00000-of-00001.parquet')
    for data_dir, val_split in ((folders, 'val'), (parquet.parent, 'test'), (hard.parent, 'test')):
        with pytest.raises(DataError, match=f'--data-dir {data_dir} holds one split, so validation would run on '
                                            f'the training rows'):
            _train(tmp_path, data_dir, '--val-split', val_split)
    (parquet.parent / 'test-00000-of-00001.parquet').unlink()
    shutil.copyfile(parquet, parquet.parent / 'test-00000-of-00001.parquet')
    assert _train(tmp_path, parquet.parent, '--val-split', 'test')['final']['eval_top1'] is not None
    # validating the linked folder alone is allowed, and its results name the split the images are: 'val' put the
    # training images' accuracy on a card as validation accuracy
    from timm_cra.eval import create_parser, validate
    res = validate(create_parser().parse_args(['--model', 'cra_cifar_resnet20', '--num-classes', '2', '--data-dir',
                                               str(folders), '--split', 'val', '--workers', '0', '--no-progress']))
    assert res['split'] == 'train' and res['count'] == 2
    # the split folder given as --data-dir is that split of its parent's data, and the link is seen the same way
    res = validate(create_parser().parse_args(['--model', 'cra_cifar_resnet20', '--num-classes', '2', '--data-dir',
                                               str(folders / 'val'), '--workers', '0', '--no-progress']))
    assert res['split'] == 'train' and res['count'] == 2
    os.unlink(folders / 'val')
    for c in ('a', 'b'):
        make_image(folders / 'val' / c / '0.png', color=(1, 2, 3))
    res = validate(create_parser().parse_args(['--model', 'cra_cifar_resnet20', '--num-classes', '2', '--data-dir',
                                               str(folders / 'val'), '--workers', '0', '--no-progress']))
    assert res['split'] == 'val'  # was none: the card read the data as a dataset called 'val'


def test_a_validation_split_of_linked_arrow_files_or_cifar_batches_is_never_validated_on(tmp_path):
    """A save_to_disk test/*.arrow hard-linked to train/'s, or a CIFAR test_batch hard-linked to data_batch_1, passed
    the guard (it compared the saved split folders, and no pickle files): training validated on its own rows with
    exit 0. The files each split reads are compared by identity; the same files named twice stay the user's."""
    import glob
    from timm_cra.data import split_overlap
    from .test_data_cifar_pickle import write_cifar10
    saved = _saved_dict(tmp_path / 'saved')
    test_arrow = glob.glob(str(saved / 'test' / '*.arrow'))[0]
    os.unlink(test_arrow)
    os.link(glob.glob(str(saved / 'train' / '*.arrow'))[0], test_arrow)
    batches = write_cifar10(tmp_path / 'pickles')
    os.unlink(batches / 'test_batch')
    os.link(batches / 'data_batch_1', batches / 'test_batch')
    for data_dir in (saved, tmp_path / 'pickles'):
        assert split_overlap('', str(data_dir), 'train', 'test').one_split, data_dir
        with pytest.raises(DataError, match=f'--data-dir {data_dir} holds one split, so validation would run on '
                                            f'the training rows'):
            _train(tmp_path, data_dir, '--val-split', 'test')
        assert not split_overlap('', str(data_dir), 'test', 'test').one_split  # one split named for both
    assert create_dataset('', str(saved), 'test').split == 'train'  # validate records the rows as they are
    (batches / 'test_batch').unlink()
    write_cifar10(tmp_path / 'fresh')
    os.rename(tmp_path / 'fresh' / 'cifar-10-batches-py' / 'test_batch', batches / 'test_batch')
    assert not split_overlap('', str(tmp_path / 'pickles'), 'train', 'test').one_split


def test_validate_names_a_parquet_split_linked_to_the_training_files_as_the_training_split(tmp_path, caplog):
    """A test-*.parquet hard-linked (or symlinked) to train-*.parquet: training refuses it, but validate recorded
    the rows as the 'test' split (and a card would say so), where a class folder of links is recorded as 'train'.
    Some linked shards of several: said, the split keeps its name; a real copy is its own split."""
    import logging
    import shutil
    from timm_cra.eval import create_parser, validate

    def split_recorded(data_dir):
        return validate(create_parser().parse_args(['--model', 'cra_cifar_resnet20', '--num-classes', '2',
                                                    '--data-dir', str(data_dir), '--split', 'test', '--workers', '0',
                                                    '--no-progress']))['split']

    data = tmp_path / 'pq'
    train_file = write_parquet(data / 'train-00000-of-00001.parquet', [0, 1, 0, 1])
    os.link(train_file, data / 'test-00000-of-00001.parquet')
    with caplog.at_level(logging.WARNING, logger='timm_cra'):
        assert split_recorded(data) == 'train'
    assert "every file of the 'test' split is a file of the 'train' split of" in caplog.text
    (data / 'test-00000-of-00001.parquet').unlink()
    os.symlink(train_file.name, data / 'test-00000-of-00001.parquet')
    assert split_recorded(data) == 'train'
    (data / 'test-00000-of-00001.parquet').unlink()
    (data / 'test-00000-of-00002.parquet').symlink_to(train_file.name)
    write_parquet(data / 'test-00001-of-00002.parquet', [1, 0])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger='timm_cra'):
        assert split_recorded(data) == 'test'
    assert "1 of the 2 files of the 'test' split are files of the 'train' split" in caplog.text
    assert "partly the 'train' split's" in caplog.text
    (data / 'test-00000-of-00002.parquet').unlink()
    shutil.copyfile(train_file, data / 'test-00000-of-00002.parquet')
    assert split_recorded(data) == 'test'
    # a split folder linked to the training one (DIR/test -> train): the walk visits it once, so 'train' was not
    # listed apart and the rows were recorded as 'test'
    folders = tmp_path / 'folders'
    write_parquet(folders / 'train' / '0.parquet', [0, 1, 0, 1])
    (folders / 'test').symlink_to('train')
    assert split_recorded(folders) == 'train'


@pytest.mark.parametrize('link', ['hard', 'class-symlinks', 'file-symlinks', 'train-links-to-val'])
def test_a_validation_folder_of_the_training_files_is_caught_file_by_file(tmp_path, make_image, caplog, link):
    """val/ made of hard links, per-class symlinks or per-file symlinks into train/ (or train/ of links to val/)
    passed the split-folder check: training validated on its own images (exit 0), validate recorded 'val' and a card
    said so. The files are compared by device and inode."""
    import logging
    from timm_cra.eval import create_parser, validate
    root = tmp_path / 'data'
    for c in ('a', 'b'):
        for i in range(2):
            make_image(root / ('val' if link == 'train-links-to-val' else 'train') / c / f'{i}.png')
    for c in ('a', 'b'):
        src, dst = (root / 'val' / c, root / 'train' / c) if link == 'train-links-to-val' else \
            (root / 'train' / c, root / 'val' / c)
        if link == 'class-symlinks':
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(src, dst)
            continue
        dst.mkdir(parents=True)
        for f in src.iterdir():
            (os.link if link == 'hard' else os.symlink)(f, dst / f.name)
    # files the reader does not take count for neither split: a README in val/, a hard-linked note, hidden images
    (root / 'val' / 'README.txt').write_text('made by hand')
    os.link(root / 'val' / 'README.txt', root / 'train' / 'notes.txt')
    hidden = root / ('train' if link == 'train-links-to-val' else 'val') / 'a' / '.backup'
    hidden.mkdir(parents=True, exist_ok=True)
    os.link(next((root / 'train' / 'a').glob('*.png')), hidden / 'copy.png')
    with pytest.raises(DataError, match=r'^4 of the 4 images of --val-split val in .* are images of the training '
                                        r'split \(hard links or symlinks to them\), so validation would score '
                                        r"training images: .*--val-split ''"):
        _train(tmp_path, root, '--val-split', 'val')
    for data_dir, split in ((root, 'val'), (root / 'val', 'validation')):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger='timm_cra'):
            res = validate(create_parser().parse_args(['--model', 'cra_cifar_resnet20', '--num-classes', '2',
                                                       '--data-dir', str(data_dir), '--split', split, '--workers',
                                                       '0', '--no-progress']))
        assert res['split'] == 'train' and "recorded as the 'train' split" in caplog.text, data_dir
    # one image of its own: a partial overlap still refuses training, and validate says so, keeping 'val'
    if link != 'class-symlinks':
        make_image(root / 'val' / 'a' / 'own.png', color=(9, 9, 9))
        with pytest.raises(DataError, match=r'^4 of the 5 images'):
            _train(tmp_path, root, '--val-split', 'val')
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger='timm_cra'):
            res = validate(create_parser().parse_args(['--model', 'cra_cifar_resnet20', '--num-classes', '2',
                                                       '--data-dir', str(root), '--split', 'val', '--workers', '0',
                                                       '--no-progress']))
        assert res['split'] == 'val' and "4 of the 5 images of" in caplog.text


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_parquet_data_under_a_folder_recipe_names_the_dataset_flag(tmp_path, cli_env):
    """`--config finetune` pins `dataset: folder`; parquet data under it used to get folder-worded errors
    (split folder not found): the one line now names --dataset hfds / ''."""
    pq = write_parquet(tmp_path / 'pq' / 'train-00000-of-00001.parquet', [0, 1, 0, 1])
    for data_dir in (pq.parent, pq):
        r = _run('timm_cra.train', ['--config', 'finetune', '--model', 'cra_cifar_resnet20', '--data-dir', data_dir,
                                    '--val-split', '', '--epochs', '1', '--output', tmp_path / 'runs'],
                 cli_env, tmp_path)
        assert r.returncode == 2 and r.stderr.count('\n') == 1 and 'Traceback' not in r.stderr, r.stderr
        assert (f"error: --dataset folder reads class folders, but '{data_dir}' is parquet / save_to_disk data: "
                f"pass --dataset hfds (or --dataset '' to detect the kind).") in r.stderr


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_hostile_file_names_cannot_forge_log_or_error_lines(tmp_path, cli_env, make_image):
    """A file name holding a newline or an ANSI escape code is logged escaped (``\\n``, ``\\x1b``), so it can
    neither forge a log line nor drive the terminal; an error naming such a class stays one line."""
    for c in ('a', 'b'):
        make_image(tmp_path / 'data' / c / '0.png')
    (tmp_path / 'data' / 'a' / 'x\nINFO Done: forged.png').write_bytes(b'not an image')
    (tmp_path / 'data' / 'b' / '\x1b[31mred.png').write_bytes(b'not an image')
    (tmp_path / 'data' / 'b' / 'notes\n.txt').write_text('x')
    r = _run('timm_cra.eval', ['--model', 'cra_cifar_resnet20', '--num-classes', '2', '--data-dir', tmp_path / 'data',
                               '--dataset', 'folder', '--split', '', '--img-size', '32', '--workers', '0',
                               '--no-progress'], cli_env, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert '2 unreadable image(s) skipped' in r.stderr and '\x1b' not in r.stderr
    assert not any(line.startswith('INFO Done: forged') for line in r.stderr.splitlines())
    assert 'x\\nINFO Done: forged.png' in r.stderr and '\\x1b[31mred.png' in r.stderr
    assert "skipped 1 file(s) that are not images (1 .txt)" in r.stderr
    os.rename(tmp_path / 'data' / 'b', tmp_path / 'data' / 'b\nerror: forged\x1b[0m')
    r = _run('timm_cra.train', ['--model', 'cra_cifar_resnet20', '--data-dir', tmp_path / 'data', '--dataset',
                                'imagenet', '--val-split', '', '--output', tmp_path / 'runs'], cli_env, tmp_path)
    assert r.returncode == 2 and r.stderr.count('\n') == 1 and '\x1b' not in r.stderr, r.stderr
    assert 'b\\nerror: forged\\x1b[0m' in r.stderr


def test_a_data_dir_that_is_a_fifo_or_a_file_says_what_it_is(tmp_path, capsys):
    """--data-dir naming a FIFO was reported as *does not exist*: the one line says what it is."""
    from timm_cra.eval.validate import main as validate_main
    from timm_cra.train import main as train_main
    from timm_cra.utils.errors import run_cli
    os.mkfifo(tmp_path / 'pipe')
    (tmp_path / 'notes.txt').write_text('x')
    for main, extra in [(validate_main, ['--num-classes', '2', '-j', '0']),  # source detected
                        (train_main, ['--dataset', 'folder', '--output', tmp_path / 'runs', '--device', 'cpu'])]:
        for name, says in [('pipe', 'is a FIFO, not a folder'), ('missing', 'does not exist')]:
            with pytest.raises(SystemExit) as e:
                run_cli(main, [str(a) for a in ['--model', 'cra_cifar_resnet20', '--data-dir', tmp_path / name]
                               + extra])
            err = capsys.readouterr().err
            assert e.value.code == 2 and err.count('\n') == 1, err
            assert f"Dataset folder '{tmp_path / name}' {says}. Pass an existing folder with --data-dir." in err
    assert 'is a regular file, not a folder' in str(pytest.raises(DataError, create_dataset, 'folder',
                                                                  str(tmp_path / 'notes.txt'), 'train').value)
    assert stat.S_ISFIFO(os.lstat(tmp_path / 'pipe').st_mode)


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_train_config_with_a_repeated_key_or_non_utf8_bytes(tmp_path, cli_env):
    """lr: 0.1 then lr: 5 trained silently at 5 (YAML keeps the last); Latin-1 bytes read as a cryptic reader error;
    a python/object tag was refused naming the file descriptor ('in "3"'), not the file; nesting 50,000 deep was a
    RecursionError traceback."""
    import subprocess
    import sys
    (tmp_path / 'dup.yaml').write_text('lr: 0.1\nepochs: 1\nlr: 5\n')
    (tmp_path / 'latin1.yaml').write_bytes('experiment: café\n'.encode('latin-1'))
    (tmp_path / 'code.yaml').write_text(f'!!python/object/apply:os.system ["touch {tmp_path / "ran"}"]\n')
    (tmp_path / 'deep.yaml').write_text('model_kwargs: ' + '[' * 50_000 + ']' * 50_000 + '\n')  # a RecursionError
    for name, expected in (('dup.yaml', "key 'lr' is given twice (line 3): keep one"),
                           ('deep.yaml', 'is nested too deeply for a YAML reader'),
                           ('latin1.yaml', 'is not UTF-8 text (byte 15: invalid continuation byte); save it as UTF-8'),
                           ('code.yaml', f'python/object/apply:os.system\' in "{tmp_path / "code.yaml"}", line 1')):
        proc = subprocess.run([sys.executable, '-m', 'timm_cra.train', '--config', str(tmp_path / name), '--model',
                               'cra_cifar_resnet20', '--output', str(tmp_path / 'out')],
                              env=cli_env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith(f"error: Config '{tmp_path / name}'") and expected in last, last
    assert not (tmp_path / 'out').exists() and not (tmp_path / 'ran').exists()


def _saved_split(path, names=('cat', 'dog')):
    """A ``save_to_disk`` split: an image column and a ClassLabel label column (4 rows)."""
    import datasets
    from .test_data_labels import _png
    feats = datasets.Features(image=datasets.Image(), label=datasets.ClassLabel(names=list(names)))
    datasets.Dataset.from_dict({'image': [{'bytes': _png(40 * i), 'path': None} for i in range(4)],
                                'label': [0, 1, 0, 1]}, features=feats).save_to_disk(str(path))
    return path


def _arrow(folder):
    return next(p for p in folder.iterdir() if p.suffix == '.arrow')


def _edit_json(path, edit):
    import json
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


SAVED_DAMAGE = {  # what a damaged save_to_disk folder gave: a traceback from datasets / pyarrow / json
    'state_json_cut': (lambda d: (d / 'state.json').write_text('{"_data_files": ['), 'state.json'),
    'state_json_no_keys': (lambda d: (d / 'state.json').write_text('{}'), 'save_to_disk'),
    'state_json_deep': (lambda d: (d / 'state.json').write_text('[' * 100_000 + ']' * 100_000), 'nested too deeply'),
    'arrow_truncated': (lambda d: _arrow(d).write_bytes(_arrow(d).read_bytes()[:300]), 'save_to_disk'),
    'arrow_garbage': (lambda d: _arrow(d).write_bytes(os.urandom(2000)), 'save_to_disk'),
    'info_json_cut': (lambda d: (d / 'dataset_info.json').write_text('{"features": {'), 'dataset_info.json'),
    'info_json_bad_feature': (lambda d: _edit_json(d / 'dataset_info.json', lambda i: i['features'].update(
        label={'_type': 'NoSuchFeature'})), 'save_to_disk'),
    'classlabel_repeated': (lambda d: _edit_json(d / 'dataset_info.json', lambda i: i['features']['label'].update(
        names=['cat', 'cat'])), "give 'cat' more than once (compared after Unicode NFC normalisation, surrounding "
                                "whitespace aside): fix the names of the label column's ClassLabel feature"),
}


@pytest.mark.parametrize('damage', SAVED_DAMAGE)
def test_a_damaged_save_to_disk_folder_is_one_line(tmp_path, damage):
    """A damaged ``state.json`` / ``dataset_info.json``, a truncated or garbage ``.arrow`` file, ClassLabel names
    given twice (routed through repeated_names, as for parquet and folders): one DataError line naming the folder
    and the fix, before anything is trained on it."""
    edit, expected = SAVED_DAMAGE[damage]
    folder = _saved_split(tmp_path / 'saved')
    edit(folder)
    with pytest.raises(DataError) as e:
        create_dataset('', str(folder), 'train')
    message = str(e.value)
    assert str(folder) in message and expected in message and '\n' not in message, message


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_damaged_save_to_disk_and_parquet_through_the_clis(tmp_path, cli_env):
    """Through train and validate: one ``error:`` line, exit 2, nothing written; a 0-row and a truncated parquet
    file the same."""
    import datasets
    saved = _saved_split(tmp_path / 'saved')
    _arrow(saved).write_bytes(_arrow(saved).read_bytes()[:300])
    path = write_parquet(tmp_path / 'p' / 'train-00000-of-00001.parquet', [0, 1, 0, 1])
    path.write_bytes(path.read_bytes()[:-100])  # the footer cut off
    empty = tmp_path / 'e' / 'train-00000-of-00001.parquet'
    empty.parent.mkdir()
    datasets.Dataset.from_dict({'image': [], 'label': []}, features=datasets.Features(
        image=datasets.Image(), label=datasets.ClassLabel(names=['cat', 'dog']))).to_parquet(str(empty))
    for data, expected in [(saved, 'save_to_disk'), (tmp_path / 'p', 'parquet'), (tmp_path / 'e', 'no rows')]:
        for module, argv in [('timm_cra.train', ['--val-split', '', '--epochs', '1', '--output', tmp_path / 'out']),
                             ('timm_cra.eval', ['--split', 'train', '--results-file', tmp_path / 'r.json'])]:
            r = _run(module, ['--model', 'cra_cifar_resnet20', '--data-dir', data, '--batch-size', '2',
                              '--workers', '0'] + argv, cli_env, tmp_path)
            assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr[-2000:]
            last = r.stderr.strip().splitlines()[-1]
            assert last.startswith('error: ') and expected in last, last
    assert not (tmp_path / 'out').exists() and not (tmp_path / 'r.json').exists()


def test_parquet_classlabel_names_given_twice_are_refused(tmp_path):
    """ClassLabel names from a parquet file's ``huggingface`` metadata given twice: datasets refused them with a
    ValueError traceback; now the one repeated-names check names the name and the fix."""
    import json
    import pyarrow.parquet as pq
    path = write_parquet(tmp_path / 'p' / 'train-00000-of-00001.parquet', [0, 1, 0, 1])
    table = pq.read_table(path)
    meta = json.loads(table.schema.metadata[b'huggingface'])
    meta['info']['features']['label'] = {'_type': 'ClassLabel', 'names': ['cat', 'cat']}
    pq.write_table(table.replace_schema_metadata({b'huggingface': json.dumps(meta)}), path)
    with pytest.raises(DataError, match=r"give 'cat' more than once .*: fix the names of the label column's "
                                        r"ClassLabel feature"):
        create_dataset('', str(tmp_path / 'p'), 'train')


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_an_unwritable_datasets_cache_is_one_line_naming_hf_datasets_cache(tmp_path, cli_env, cifar10_test):
    """HF_DATASETS_CACHE naming a file (or a path under one; a read-only place is refused alike): the parquet load
    failed inside datasets (a traceback, or a line advising to write the parquet file again). One line naming the
    variable, exit 2, before the data is read."""
    (tmp_path / 'file').write_bytes(b'not a folder')
    for cache in (tmp_path / 'file', tmp_path / 'file' / 'sub'):
        r = _run('timm_cra.eval', ['--model', 'cra_cifar_resnet20', '--data-dir', cifar10_test, '--split', 'test',
                                   '--num-samples', '4', '--workers', '0', '--no-progress'],
                 dict(cli_env, HF_DATASETS_CACHE=str(cache)), tmp_path)
        last = (r.stderr.strip().splitlines() or [''])[-1]
        assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr[-2000:]
        assert last.startswith(f'error: The datasets cache folder {cache} cannot be written: ') \
            and last.endswith('set HF_DATASETS_CACHE to a writable folder.'), last


def test_exif_orientation_is_applied_as_transformers_does(tmp_path):
    """A JPEG stored sideways with EXIF Orientation 6 (as phones write them): transformers' load_image turns it
    upright (PIL.ImageOps.exif_transpose), timm-cra's loaders decoded the stored pixels, so one photo scored
    differently in the two tools. Every loader (class folders, parquet bytes, in memory) now gives load_image's
    array."""
    import datasets
    from transformers.image_utils import load_image
    rng = np.random.default_rng(0)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to view
    files = []
    for c in ('a', 'b'):
        path = tmp_path / 'folder' / c / '0.jpg'
        path.parent.mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)).save(path, 'JPEG', exif=exif, quality=95)
        files.append(path)
    expected = [np.asarray(load_image(str(p))) for p in files]
    assert expected[0].shape == (24, 16, 3)  # upright: the stored 24 x 16 pixels turned
    feats = datasets.Features(image=datasets.Image(), label=datasets.ClassLabel(names=['a', 'b']))
    datasets.Dataset.from_dict({'image': [{'bytes': p.read_bytes(), 'path': None} for p in files], 'label': [0, 1]},
                               features=feats).to_parquet(str(tmp_path / 'data.parquet'))
    for root in (tmp_path / 'folder', tmp_path / 'data.parquet'):
        for in_memory in (False, True):
            ds = create_dataset('', str(root), 'train', in_memory=in_memory)
            for i in range(2):
                assert np.array_equal(np.asarray(ds[i][0]), expected[i]), (root, in_memory, i)


def _run_memory_capped(module, argv, cli_env, cwd, limit=4 << 30):  # torch's import alone maps ~3 GB
    """``_run`` with the address space capped: code that resizes a bomb fails with MemoryError, not the machine."""
    import resource
    return subprocess.run([sys.executable, '-m', module] + [str(a) for a in argv], env=cli_env, cwd=str(cwd),
                          capture_output=True, text=True, timeout=CLI_TIMEOUT, umask=0o022,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)))


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_thin_image_that_the_resize_would_blow_up_is_a_counted_skip(tmp_path, cli_env, make_image):
    """A 2 KB PNG of 2,000,000 x 1 pixels is under the pixel limit as stored, but timm's eval resize of its short
    side to 32 made it 64,000,000 x 32 (6 GB: MemoryError, exit 1). validate on class folders and on parquet, and
    the trainer's evaluation, skip and count it, naming the resize; the 32 x 32 images are still scored."""
    import datasets
    wide = tmp_path / 'wide.png'
    Image.new('L', (2_000_000, 1)).save(wide)
    assert wide.stat().st_size < 10_000
    data = tmp_path / 'data'
    for split in ('train', 'val'):
        for c in ('a', 'b'):
            make_image(data / split / c / '0.png')
    (data / 'val' / 'a' / 'wide.png').write_bytes(wide.read_bytes())
    reason = 'would be 64000000x32 after the resize of its short side to 32 the model needs, over the decoding limit'

    pq = write_parquet(tmp_path / 'pq' / 'test-00000-of-00001.parquet', [0, 1, 0])
    ds = datasets.load_dataset('parquet', data_files=str(pq), split='train').cast_column(
        'image', datasets.Image(decode=False))
    rows = ds.to_dict()
    rows['image'][1] = {'bytes': wide.read_bytes(), 'path': None}
    datasets.Dataset.from_dict(rows, features=ds.features).to_parquet(str(pq))
    for data_dir, split, count in ((data, 'val', 2), (pq.parent, 'test', 2)):
        r = _run_memory_capped('timm_cra.eval', ['--model', 'cra_cifar_resnet20', '--num-classes', '2', '--data-dir',
                                                 data_dir, '--split', split, '--img-size', '32', '--crop-pct', '1.0',
                                                 '--workers', '0', '--batch-size', '2', '--results-file',
                                                 tmp_path / 'r.json', '--no-progress'], cli_env, tmp_path)
        assert r.returncode == 0 and 'Traceback' not in r.stderr, r.stderr[-3000:]
        assert reason in r.stderr and '1 unreadable image(s) skipped' in r.stderr
        assert f'"count": {count}' in (tmp_path / 'r.json').read_text()

    out = tmp_path / 'runs'
    r = _run_memory_capped('timm_cra.train', ['--model', 'cra_cifar_resnet20', '--data-dir', data, '--dataset',
                                              'folder', '--val-split', 'val', '--batch-size', '2', '--epochs', '1',
                                              '--workers', '0', '--no-plot', '--output', out, '--experiment', 'run'],
                           cli_env, tmp_path)
    assert r.returncode == 0 and 'Traceback' not in r.stderr, r.stderr[-3000:]
    assert reason in r.stderr
    row, = _rows(out / 'run' / 'metrics.csv')
    assert (int(row['train_skipped']), int(row['eval_skipped'])) == (0, 1)


@pytest.mark.slow  # over ~15 s on 2 cores (many processes or epochs): CI step 2
def test_in_memory_training_keeps_the_pixel_limit_and_bounds_what_it_holds(tmp_path, cli_env):
    """`--in-memory` (the cifar recipe's) decoded class folders without the resize-aware pixel limit: 2,000,000 x 1
    PNGs of 2 KB were resized to 64,000,000 x 32 by fit_to_input (a MemoryError traceback), and six 8000 x 8000 PNGs
    (1.5 MB of files) decoded to 1.15 GB with no bound (a MemoryError traceback). Under a 4 GiB address-space cap the
    trainer stops in one line naming the resize it would need; the big images are refused after the first is decoded,
    in one line naming the bound and --no-in-memory (which the recipe takes)."""
    from timm_cra.data.in_memory import MAX_IN_MEMORY_BYTES
    assert 50_000 * 32 * 32 * 3 * 6 < MAX_IN_MEMORY_BYTES  # CIFAR-10's train split fits six times over
    thin, big = tmp_path / 'thin.png', tmp_path / 'big.png'
    Image.new('L', (2_000_000, 1)).save(thin)
    Image.new('RGB', (8000, 8000)).save(big)
    assert thin.stat().st_size < 10_000 and big.stat().st_size < 500_000
    for image, per_class in ((thin, 2), (big, 3)):
        data = tmp_path / image.stem
        for split in ('train', 'val'):
            for c in ('a', 'b'):
                for i in range(per_class if split == 'train' else 1):
                    (data / split / c).mkdir(parents=True, exist_ok=True)
                    (data / split / c / f'{i}.png').write_bytes(image.read_bytes())
    args = ['--config', 'cifar', '--model', 'cra_cifar_resnet20', '--dataset', 'folder', '--val-split', 'val',
            '--epochs', '1', '--batch-size', '2', '--workers', '0', '--no-plot', '--output', tmp_path / 'runs']
    r = _run_memory_capped('timm_cra.train', args + ['--data-dir', tmp_path / 'thin', '--experiment', 'thin'],
                           cli_env, tmp_path)
    assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr[-3000:]
    assert r.stderr.splitlines()[-1] == (
        f"error: No readable images in {tmp_path / 'thin'} [train]: its 4 images of 2000000x1 pixels would be "
        f"64000000x32 after the resize of its short side to 32 the model needs, over the decoding limit of 89478485 "
        f"pixels (PIL.Image.MAX_IMAGE_PIXELS); resize them nearer the model input size.")
    with pytest.raises(DataError) as e:  # the old code held 2.3 GB here (every image, then their stack)
        create_dataset('folder', str(tmp_path / 'big'), 'train', in_memory=True)
    assert str(e.value) == (
        f"{tmp_path / 'big'} [train] would hold 6 images of 8000x8000x3 in memory: 1099 MiB of decoded pixels, over "
        f"the in-memory limit of 1024 MiB (timm_cra.data.in_memory.MAX_IN_MEMORY_BYTES): pass --no-in-memory to "
        f"decode images one batch at a time.")


def test_a_training_split_of_another_name_is_found_by_validate(tmp_path, make_image, caplog):
    """Data in trn/ with val/<class> -> ../trn/<class>: training with --train-split trn refused it, validate --split val
    recorded 'val' (only a folder named train was compared). A dataset root holds splits only: all are compared."""
    import logging
    from timm_cra.eval import create_parser, validate
    root = tmp_path / 'data'
    for c in ('a', 'b'):
        make_image(root / 'trn' / c / '0.png')
        (root / 'val').mkdir(exist_ok=True)
        os.symlink(f'../trn/{c}', root / 'val' / c)
    with pytest.raises(DataError, match='2 of the 2 images of --val-split val'):
        _train(tmp_path, root, '--train-split', 'trn', '--val-split', 'val')
    with caplog.at_level(logging.WARNING, logger='timm_cra'):
        res = validate(create_parser().parse_args(['--model', 'cra_cifar_resnet20', '--num-classes', '2', '--data-dir',
                                                   str(root), '--split', 'val', '--workers', '0', '--no-progress']))
    assert res['split'] == 'trn' and "recorded as the 'trn' split" in caplog.text
