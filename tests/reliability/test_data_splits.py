"""Splits read separately are matched to the training split by class name, in every data format and with
``--in-memory``; a split whose layout or classes do not fit is one line. Real CLIs on tiny real data."""
import json
import os
import pickle

import numpy as np
import pytest
from PIL import Image

from .test_data_cifar_pickle import write_cifar10
from .test_data_labels import _png
from .test_data_strangers import _run

TRAIN_ARGS = ['--model', 'cra_cifar_resnet20', '--batch-size', '4', '--workers', '0', '--img-size', '32', '--no-plot']


def _classlabel_split(names, n=8):
    """Dark images of 'cat', bright ones of 'dog', their labels given as indices into this split's ``names``."""
    import datasets
    names = list(names)
    feats = datasets.Features(image=datasets.Image(), label=datasets.ClassLabel(names=list(names)))
    kinds = ['cat' if i % 2 == 0 else 'dog' for i in range(n)]
    return datasets.Dataset.from_dict({'image': [{'bytes': _png(10 if k == 'cat' else 240), 'path': None}
                                                 for k in kinds],
                                       'label': [names.index(k) if k in names else i % 2 for i, k in enumerate(kinds)]},
                                      features=feats)


def _write_splits(root, fmt, test_names):
    import datasets
    splits = {'train': _classlabel_split(['cat', 'dog']), 'test': _classlabel_split(test_names)}
    if fmt == 'parquet':
        root.mkdir(parents=True)
        for name, ds in splits.items():
            ds.to_parquet(str(root / f'{name}-00000-of-00001.parquet'))
    else:
        datasets.DatasetDict(splits).save_to_disk(str(root))
    return root


@pytest.mark.parametrize('fmt', ['parquet', 'save_to_disk'])
@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_classlabel_names_in_another_order_are_matched_by_name(tmp_path, cli_env, fmt):
    """A test split with ClassLabel [dog, cat] against a training split's [cat, dog]: the trainer scored it by
    index (Acc@1 0.00 on separable data, exit 0) and `validate --checkpoint last.pth` gave 0% where
    `validate --model local-dir:` gave 100%. Now the training run, its last.pth and its exported folder agree."""
    data = _write_splits(tmp_path / 'data', fmt, ['dog', 'cat'])
    r = _run('timm_cra.train', TRAIN_ARGS + ['--data-dir', data, '--val-split', 'test', '--epochs', '4',
                                             '--output', tmp_path / 'out', '--experiment', 'run'], cli_env, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    run = tmp_path / 'out' / 'run'
    assert json.loads((run / 'results.json').read_text())['final']['eval_top1'] == 100.0
    base = ['--data-dir', data, '--split', 'test', '--batch-size', '4', '--workers', '0', '--no-progress']
    for model in (['--model', f'local-dir:{run}'],
                  ['--model', 'cra_cifar_resnet20', '--num-classes', '2', '--checkpoint', run / 'last.pth']):
        r = _run('timm_cra.eval', model + base + ['--results-file', tmp_path / 'r.json'], cli_env, tmp_path)
        assert r.returncode == 0, r.stderr[-2000:]
        assert json.loads((tmp_path / 'r.json').read_text())['top1'] == 100.0, model


@pytest.mark.parametrize('fmt', ['parquet', 'save_to_disk'])
@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_a_split_with_a_class_the_training_split_lacks_is_one_line(tmp_path, cli_env, fmt):
    data = _write_splits(tmp_path / 'data', fmt, ['cat', 'emu'])
    r = _run('timm_cra.train', TRAIN_ARGS + ['--data-dir', data, '--val-split', 'test', '--epochs', '1',
                                             '--output', tmp_path / 'out'], cli_env, tmp_path)
    assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith('error: ') and "has classes absent from the training split: 'emu'" in last, last
    assert not (tmp_path / 'out').exists()


@pytest.mark.slow  # over ~15 s on 2 cores (many processes or epochs): CI step 2
def test_parquet_shards_of_one_split_naming_classes_in_other_orders_are_mapped_by_name(tmp_path, cli_env):
    """train-00000-of-00002.parquet names [cat, dog] and train-00001-of-00002.parquet [dog, cat]: datasets gave every
    row the first file's names, so the second shard's labels were swapped (training exit 0 on half-wrong labels).
    Each shard's ids now go through its own names (in the folder and in-memory datasets, and the trainer learns the
    separable data); a shard naming a class the others lack is one line."""
    from timm_cra.data import DataError, create_dataset
    data = tmp_path / 'data'
    data.mkdir()
    _classlabel_split(['cat', 'dog']).to_parquet(str(data / 'train-00000-of-00002.parquet'))
    _classlabel_split(['dog', 'cat']).to_parquet(str(data / 'train-00001-of-00002.parquet'))
    _classlabel_split(['cat', 'dog']).to_parquet(str(data / 'test-00000-of-00001.parquet'))
    for in_memory in (False, True):
        ds = create_dataset('', str(data), 'train', in_memory=in_memory)
        assert ds.class_names == ['cat', 'dog'] and len(ds) == 16
        images = ds.images[..., 0].numpy() if in_memory else [np.asarray(ds.load_image(i)) for i in range(len(ds))]
        assert [int(t) for t in ds.targets] == [int(a.mean() > 128) for a in images]  # dark cat 0, bright dog 1
    r = _run('timm_cra.train', TRAIN_ARGS + ['--data-dir', data, '--val-split', 'test', '--epochs', '4',
                                             '--output', tmp_path / 'out', '--experiment', 'run'], cli_env, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'each file\'s labels are mapped by name' in r.stderr
    assert json.loads((tmp_path / 'out' / 'run' / 'results.json').read_text())['final']['eval_top1'] == 100.0

    _classlabel_split(['emu', 'cat']).to_parquet(str(data / 'train-00001-of-00002.parquet'))
    with pytest.raises(DataError) as e:
        create_dataset('', str(data), 'train')
    assert str(e.value) == (f"'{data / 'train-00001-of-00002.parquet'}' names classes 'emu' that the other parquet "
                            f"files of its split in '{data}' lack (label column 'label'): write every shard of a split "
                            f"with one ClassLabel feature.")


def test_plain_integer_val_labels_against_named_training_classes_are_said_to_be_taken_by_position(tmp_path, caplog):
    """A test parquet with plain int labels beside a training split with ClassLabel names was scored by position
    without a word: one warning now says so, naming what each position means."""
    import logging

    from timm_cra.data import create_dataset

    from .test_data_labels import write_parquet
    data = tmp_path / 'data'
    data.mkdir()
    _classlabel_split(['cat', 'dog']).to_parquet(str(data / 'train-00000-of-00001.parquet'))
    write_parquet(data / 'test-00000-of-00001.parquet', [1, 0, 1, 0])
    train_ds = create_dataset('', str(data), 'train')
    with caplog.at_level(logging.WARNING, logger='timm_cra'):
        val = create_dataset('', str(data), 'test', class_names=train_ds.class_names)
    assert list(val.targets) == [1, 0, 1, 0]
    said = [r.getMessage() for r in caplog.records if 'by position' in r.getMessage()]
    assert said == [f"'{data}' [test] has plain integer labels (no class names) while the training split names its "
                    f"classes: the labels are taken by position (0 = 'cat', 1 = 'dog')."]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger='timm_cra'):  # named val data is matched by name, no such word
        create_dataset('', str(data), 'train', class_names=train_ds.class_names)
    assert not [r for r in caplog.records if 'by position' in r.getMessage()]


def _class_folders(root, split, classes):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / split / c).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / split / c / f'{i}.png')


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_in_memory_class_folders_share_the_training_split_classes(tmp_path, cli_env):
    """--in-memory (the cifar recipe's) gave a val folder its own sorted indices: val [b, c, zz] against train
    [a, b, c] trained and scored b as a (exit 0), and val [b, c] was refused asking for --num-classes 2. Now both
    paths map by name and refuse the same line."""
    _class_folders(tmp_path / 'subset', 'train', 'abc')
    _class_folders(tmp_path / 'subset', 'val', 'bc')
    _class_folders(tmp_path / 'other', 'train', 'abc')
    _class_folders(tmp_path / 'other', 'val', ['b', 'c', 'zz'])
    refusals = []
    for in_memory in ([], ['--in-memory']):
        args = TRAIN_ARGS + ['--dataset', 'folder', '--epochs', '1', '--output', tmp_path / 'out'] + in_memory
        r = _run('timm_cra.train', args + ['--data-dir', tmp_path / 'subset', '--experiment', f'ok{len(in_memory)}'],
                 cli_env, tmp_path)
        assert r.returncode == 0, r.stderr[-2000:]
        assert '8 val examples, 3 classes' in r.stderr, r.stderr[-2000:]
        r = _run('timm_cra.train', args + ['--data-dir', tmp_path / 'other', '--experiment', 'bad'], cli_env, tmp_path)
        assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr[-2000:]
        refusals.append(r.stderr.strip().splitlines()[-1])
    assert refusals[0] == refusals[1] and "classes absent from the training split: 'zz'" in refusals[0], refusals
    assert not (tmp_path / 'out' / 'bad').exists()


def _write_cifar100(root, n=12):
    """A ``cifar-100-python`` folder in the real files' format (``fine_labels``, ``meta``)."""
    rng = np.random.default_rng(1)
    d = root / 'cifar-100-python'
    d.mkdir(parents=True)
    for name in ('train', 'test'):
        with open(d / name, 'wb') as f:
            pickle.dump({b'data': rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         b'fine_labels': [int(v) for v in rng.integers(0, 100, n)]}, f)
    with open(d / 'meta', 'wb') as f:
        pickle.dump({b'fine_label_names': [f'c{i}'.encode() for i in range(100)]}, f)
    return d


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_the_dataset_name_chooses_the_cifar_layout(tmp_path, cli_env):
    """`--dataset torch/cifar100` on a folder holding both layouts read CIFAR-10 (the first found), and
    `torch/cifar10` on a CIFAR-100-only folder trained 100 classes: the name now chooses the layout, and a name
    the folder does not hold is one line naming the one it does."""
    write_cifar10(tmp_path / 'both')  # 4 test rows
    _write_cifar100(tmp_path / 'both')  # 12 test rows
    for name, classes, count in [('torch/cifar10', 10, 4), ('torch/cifar100', 100, 12)]:
        r = _run('timm_cra.eval', ['--model', 'cra_cifar_resnet20', '--num-classes', classes, '--dataset', name,
                                   '--data-dir', tmp_path / 'both', '--split', 'test', '--batch-size', '4',
                                   '--workers', '0', '--no-progress', '--results-file', tmp_path / 'r.json'],
                 cli_env, tmp_path)
        assert r.returncode == 0, r.stderr[-2000:]
        assert json.loads((tmp_path / 'r.json').read_text())['count'] == count, name
    _write_cifar100(tmp_path / 'only100')
    r = _run('timm_cra.train', TRAIN_ARGS + ['--dataset', 'torch/cifar10', '--data-dir', tmp_path / 'only100',
                                             '--epochs', '1', '--output', tmp_path / 'out'], cli_env, tmp_path)
    assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith('error: --dataset torch/cifar10 reads ') and '--dataset torch/cifar100' in last, last
    assert not (tmp_path / 'out').exists()


def _cut_arrow_cache(cache, extra):
    """Truncate the parquet arrow cache under ``cache`` after half its record batches (+ ``extra`` bytes)."""
    import pyarrow as pa
    arrow = next(cache.glob('parquet-by-stat/*/**/*-train.arrow'))
    with pa.memory_map(str(arrow)) as stream:
        reader, ends = pa.ipc.open_stream(stream), []
        for _ in reader:
            ends.append(stream.tell())
    os.truncate(arrow, ends[len(ends) // 2] + extra)


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_a_cut_parquet_arrow_cache_is_built_again(tmp_path, cli_env):
    """The arrow cache of a parquet split cut at a record-batch boundary was read as fewer rows (validated on 5100
    of 10000, exit 0, on every later run); cut mid-batch it blamed the intact parquet file forever. The rows read
    are checked against the footers' count: a bad cache is removed and built again once, with one warning line."""
    import datasets
    names = ['cat', 'dog']
    data = tmp_path / 'data' / 'test-00000-of-00001.parquet'
    data.parent.mkdir()
    datasets.Dataset.from_dict({'image': [{'bytes': _png(4 * i), 'path': None} for i in range(64)],
                                'label': [i % 2 for i in range(64)]}, features=datasets.Features(
        image=datasets.Image(), label=datasets.ClassLabel(names=names))).to_parquet(str(data), batch_size=8)
    env = dict(cli_env, HF_DATASETS_CACHE=str(tmp_path / 'cache'))
    argv = ['--model', 'cra_cifar_resnet20', '--num-classes', '2', '--data-dir', data.parent, '--split', 'test',
            '--batch-size', '32', '--workers', '0', '--no-progress', '--results-file', tmp_path / 'r.json']
    for cut in (None, 0, 100):  # first run builds the cache; then cut at a batch boundary, then mid-batch
        if cut is not None:
            _cut_arrow_cache(tmp_path / 'cache', cut)
        r = _run('timm_cra.eval', argv, env, tmp_path)
        assert r.returncode == 0, r.stderr[-2000:]
        assert json.loads((tmp_path / 'r.json').read_text())['count'] == 64, cut
        rebuilt = [line for line in r.stderr.splitlines() if 'arrow cache' in line]
        assert len(rebuilt) == (cut is not None) and ('building it again' in rebuilt[0] if rebuilt else True), rebuilt


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_train_num_samples_keeping_one_class_is_warned(tmp_path, cli_env):
    """`--train-num-samples 4` on sorted class folders kept the 4 images of the first class, without a word (a
    one-class folder is refused: a classifier learns nothing from one class)."""
    _class_folders(tmp_path / 'data', 'train', 'abc')
    argv = TRAIN_ARGS + ['--data-dir', tmp_path / 'data', '--dataset', 'folder', '--val-split', '', '--epochs', '1',
                         '--output', tmp_path / 'out']
    for n, warned in ((4, True), (5, False)):
        r = _run('timm_cra.train', argv + ['--train-num-samples', n, '--experiment', str(n)], cli_env, tmp_path)
        assert r.returncode == 0, r.stderr[-2000:]
        assert ('keeps examples of one class only' in r.stderr) == warned, r.stderr[-2000:]


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_parquet_image_paths_are_read_inside_the_parquet_folder(tmp_path, cli_env):
    """Parquet rows naming their image by `path` (bytes null) were read relative to the working directory, and
    absolute or `..` paths from anywhere. Relative paths now resolve against the parquet data's folder; an absolute
    one or one leaving it is a counted skip naming why."""
    import datasets
    data = tmp_path / 'data'
    (data / 'img').mkdir(parents=True)
    for name, value in (('a.png', 10), ('b.png', 240)):
        (data / 'img' / name).write_bytes(_png(value))
    (tmp_path / 'outside.png').write_bytes(_png(100))
    paths = ['img/a.png', 'img/b.png', '../outside.png', str(tmp_path / 'outside.png')]
    datasets.Dataset.from_dict({'image': [{'bytes': None, 'path': p} for p in paths], 'label': [0, 1, 0, 1]},
                               features=datasets.Features(image={'bytes': datasets.Value('binary'),  # as stored
                                                                 'path': datasets.Value('string')},
                                                          label=datasets.ClassLabel(names=['cat', 'dog']))
                               ).to_parquet(str(data / 'test-00000-of-00001.parquet'))
    (tmp_path / 'cwd').mkdir()
    r = _run('timm_cra.eval', ['--model', 'cra_cifar_resnet20', '--num-classes', '2', '--data-dir', data, '--split',
                               'test', '--batch-size', '4', '--workers', '0', '--no-progress', '--results-file',
                               tmp_path / 'r.json'], cli_env, tmp_path / 'cwd')
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads((tmp_path / 'r.json').read_text())
    assert (result['count'], result['skipped']) == (2, 2), result
    assert "path '../outside.png' leaves the data's folder" in r.stderr, r.stderr[-2000:]
    assert f"path '{tmp_path / 'outside.png'}' is absolute" in r.stderr, r.stderr[-2000:]
