"""Hugging Face sources: local parquet, save_to_disk, column detection, split errors, corrupt rows."""
import io

import datasets
import numpy as np
import pytest
from PIL import Image

from timm_cra.data import DataError, HFImageDataset, check_num_classes, create_dataset, decode_to_memory


def _png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)).save(buf, format='PNG')
    return buf.getvalue()


def test_cifar_parquet_slice(cifar10_test):
    ds = create_dataset('', str(cifar10_test), 'test', num_samples=50)
    assert isinstance(ds, HFImageDataset)
    assert (ds.image_key, ds.label_key) == ('img', 'label')
    assert len(ds) == 50 and ds.num_classes == 10 and ds.class_names[0] == 'airplane'
    img, target = ds[3]
    assert img.size == (32, 32) and img.mode == 'RGB' and target == int(ds.targets[3])
    # A single parquet file is a split on its own.
    one = create_dataset('hfds', str(cifar10_test / 'test-00000-of-00001.parquet'), 'train', num_samples=5)
    assert len(one) == 5


def test_missing_split_lists_available(cifar10_test, tmp_path):
    with pytest.raises(DataError, match="Split 'validation' not found.*test.*--val-split test"):
        create_dataset('', str(cifar10_test), 'validation', split_flag='--val-split')
    # every split is listed: a train split beside the test split
    for split in ('train', 'test'):
        (tmp_path / f'{split}-00000-of-00001.parquet').symlink_to(cifar10_test / 'test-00000-of-00001.parquet')
    with pytest.raises(DataError, match="Split 'validation' not found.*test, train.*--val-split test"):
        create_dataset('', str(tmp_path), 'validation', split_flag='--val-split')


def test_missing_split_hint_names_the_callers_flag(cifar10_test):
    """validate.py has --split, not --train-split/--val-split: the hint names the caller's flag or none."""
    with pytest.raises(DataError, match=r'set --split to one of them, e\.g\. --split test') as e:
        create_dataset('', str(cifar10_test), 'validation', split_flag='--split')
    assert '--val-split' not in str(e.value) and '--train-split' not in str(e.value)
    with pytest.raises(DataError) as e:
        create_dataset('', str(cifar10_test), 'validation')
    assert '--' not in str(e.value).split('):')[-1]


@pytest.mark.parametrize('image_key,label_key', [('image', 'labels'), ('img', 'fine_label')])
def test_save_to_disk_and_column_detection(tmp_path, image_key, label_key):
    features = datasets.Features({image_key: datasets.Image(), label_key: datasets.ClassLabel(names=['a', 'b', 'c'])})
    rows = {image_key: [{'bytes': _png(v), 'path': None} for v in (10, 20, 30, 40)], label_key: [0, 1, 2, 1]}
    dd = datasets.DatasetDict(train=datasets.Dataset.from_dict(rows, features=features))
    dd.save_to_disk(str(tmp_path / 'saved'))
    ds = create_dataset('', str(tmp_path / 'saved'), 'train')
    assert (ds.image_key, ds.label_key) == (image_key, label_key)
    assert ds.num_classes == 3 and list(ds.targets) == [0, 1, 2, 1]
    assert np.asarray(ds[2][0])[0, 0, 0] == 30


def test_corrupt_row_skipped_in_memory(tmp_path):
    features = datasets.Features({'image': datasets.Image(), 'label': datasets.Value('int64')})
    rows = {'image': [{'bytes': _png(1), 'path': None}, {'bytes': b'garbage', 'path': None},
                      {'bytes': _png(3), 'path': None}], 'label': [0, 1, 1]}
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(tmp_path / 'train-00000-of-00001.parquet'))
    ds = create_dataset('', str(tmp_path), 'train')
    assert ds[1][0] is None  # per-sample path: a counted skip via skip_collate
    mem = decode_to_memory(ds)
    assert mem.num_skipped == 1 and len(mem) == 2 and mem.targets.tolist() == [0, 1]
    assert mem.images[1, 0, 0, 0] == 3


def test_label_count_mismatch_message(cifar10_test):
    ds = create_dataset('', str(cifar10_test), 'test', num_samples=10)
    check_num_classes(ds, 10)
    with pytest.raises(DataError, match='10 classes but the model head has 1000.*--num-classes 10'):
        check_num_classes(ds, 1000)


def test_unknown_dataset_name(tmp_path):
    with pytest.raises(DataError, match="Unknown --dataset 'bogus'"):
        create_dataset('bogus', str(tmp_path), 'train')


@pytest.mark.parametrize('names', [('cifar10-train.parquet', 'cifar10-test.parquet'),
                                   ('train_cifar10.parquet', 'test_cifar10.parquet'),
                                   ('data/train-00000-of-00001.parquet', 'data/test-00000-of-00001.parquet'),
                                   ('training/0.parquet', 'eval/0.parquet')])
def test_parquet_splits_are_the_ones_datasets_infers(tmp_path, names):
    """cifar10-test.parquet / test_cifar10.parquet went into train (our own file-name rule) while
    datasets.load_dataset(folder) puts them in test: training silently took in the test rows."""
    features = datasets.Features({'image': datasets.Image(), 'label': datasets.ClassLabel(names=['a', 'b'])})
    for name, n in zip(names, (6, 2)):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        rows = {'image': [{'bytes': _png(v), 'path': None} for v in range(n)], 'label': [v % 2 for v in range(n)]}
        datasets.Dataset.from_dict(rows, features=features).to_parquet(str(tmp_path / name))
    theirs = datasets.load_dataset(str(tmp_path))
    assert {k: len(v) for k, v in theirs.items()} == {'train': 6, 'test': 2}
    assert [len(create_dataset('', str(tmp_path), s)) for s in ('train', 'test')] == [6, 2]
    (tmp_path / 'extra.parquet').write_bytes((tmp_path / names[1]).read_bytes())  # datasets drops it silently
    with pytest.raises(DataError, match=r"1 parquet file\(s\) belong to no split .*\(extra.parquet; splits: train, "
                                        r"test\): name each file"):
        create_dataset('', str(tmp_path), 'train')


def test_parquet_replaced_with_the_same_mtime_is_read_anew(tmp_path):
    """datasets keys its arrow cache on path + mtime: a parquet file replaced by one with other rows and the same
    mtime and size (cp -p, rsync -t) was read from the old rows. The cache is keyed on the files' stat identity
    now, whose ctime (and inode) no such replacement keeps."""
    features = datasets.Features({'image': datasets.Image(), 'label': datasets.ClassLabel(names=['a', 'b'])})
    data, cache = tmp_path / 'data' / 'test-00000-of-00001.parquet', tmp_path / 'cache'
    data.parent.mkdir()

    def write(path, labels):
        rows = {'image': [{'bytes': _png(v), 'path': None} for v in range(len(labels))], 'label': labels}
        datasets.Dataset.from_dict(rows, features=features).to_parquet(str(path))

    write(data, [0, 0, 1, 1])
    assert list(create_dataset('', str(data.parent), 'test', cache_dir=str(cache)).targets) == [0, 0, 1, 1]
    new = tmp_path / 'new.parquet'
    write(new, [1, 1, 0, 1])
    st = data.stat()
    import os
    os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns))  # what cp -p / rsync -t keep
    os.replace(new, data)
    assert (data.stat().st_mtime_ns, data.stat().st_size) == (st.st_mtime_ns, st.st_size)  # path+mtime+size: stale
    for source in (data.parent, data):  # a folder of parquet files and a single file
        assert list(create_dataset('', str(source), 'test', cache_dir=str(cache)).targets) == [1, 1, 0, 1]


def test_parquet_cache_key_reads_no_file_content(tmp_path, monkeypatch):
    """The cache key is the files' stat identity: computed with every way of opening a file failing (a content digest
    read every file on every load), the same for untouched files, another after a same-mtime replacement."""
    import builtins
    import os
    from timm_cra.data.hf import parquet_cache_key
    files = []
    for i in range(2):
        files.append(str(tmp_path / f'train-0000{i}-of-00002.parquet'))
        datasets.Dataset.from_dict({'label': [i] * 3}).to_parquet(files[-1])
    key = parquet_cache_key(files)

    def no_read(*args, **kwargs):
        raise AssertionError('the cache key opened a file')
    with monkeypatch.context() as m:
        for module, name in ((builtins, 'open'), (io, 'open'), (os, 'open')):
            m.setattr(module, name, no_read)
        assert parquet_cache_key(files) == key
    st = os.stat(files[1])
    copy = tmp_path / 'copy.parquet'
    copy.write_bytes(open(files[1], 'rb').read())
    os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns))  # cp -p
    os.replace(copy, files[1])
    assert parquet_cache_key(files) != key
