"""Labels outside 0..num_classes-1 are refused when the dataset is checked, naming the bad label and the fix."""
import io
import json
import re

import numpy as np
import pytest
from PIL import Image

from timm_cra.data import DataError, check_num_classes, create_dataset
from timm_cra.train import train

from .test_data_cifar_pickle import NAMES, write_cifar10


def _png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), value, np.uint8)).save(buf, format='PNG')
    return buf.getvalue()


def write_parquet(path, labels):
    """A parquet split with an image column and a plain int label column (no ClassLabel names)."""
    import datasets
    feats = datasets.Features(image=datasets.Image(), label=datasets.Value('int64'))
    ds = datasets.Dataset.from_dict({'image': [{'bytes': _png(10 * i), 'path': None} for i in range(len(labels))],
                                     'label': list(labels)}, features=feats)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(path))
    return path


def _train(tmp_path, data_dir, *extra):
    return train(['--model', 'cra_cifar_resnet20', '--data-dir', str(data_dir), '--batch-size', '4', '--epochs', '1',
                  '--workers', '0', '--no-plot', '--output', str(tmp_path / 'out'), *extra])


def test_label_minus_one_refused_before_training(tmp_path):
    """It used to pass the check and crash mid-run with IndexError in the loss."""
    data = tmp_path / 'data'
    write_parquet(data / 'train-00000-of-00001.parquet', [0, 1, 2, -1, 1, 0, 2, 1])
    with pytest.raises(DataError, match=r'training split has label -1 at example 3 \(1 example\(s\) outside 0\.\.2 '
                                        r'.*unlabelled examples.*use a labelled split'):
        _train(tmp_path, data, '--val-split', '')
    assert not (tmp_path / 'out').exists()


def test_label_equal_to_class_count_names_the_label(tmp_path):
    """It used to say 'the training split has 10 classes but the model head has 10 outputs'."""
    labels = [[0, 1, 2, 3]] * 2 + [[4, 10, 5, 6]] + [[7, 8, 9, 0]] * 3
    write_cifar10(tmp_path / 'data', labels=labels)
    with pytest.raises(DataError) as e:
        _train(tmp_path, tmp_path / 'data', '--val-split', 'test', '--in-memory')
    msg = str(e.value)
    assert 'training split has label 10 at example 9' in msg and 'outside 0..9 for its 10 classes' in msg
    assert 'model head has 10 outputs' not in msg


def test_validation_split_labels_checked_too(tmp_path):
    data = tmp_path / 'data'
    write_parquet(data / 'train-00000-of-00001.parquet', [0, 1, 2, 1])
    write_parquet(data / 'test-00000-of-00001.parquet', [0, -1])
    ds = create_dataset('', str(data), 'test')
    with pytest.raises(DataError, match='validation split has label -1 at example 1'):
        check_num_classes(ds, 3, 'validation split')


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_repeated_class_names_from_the_data_are_refused(tmp_path, cli_env):
    """CIFAR meta with 10 x 'cat' trained and published label_names of 10 x cat; 'cat' and 'cat ', or 'café' as NFC
    and NFD folders, gave two classes that look the same. Refused as publish --label-names refuses repeats (one
    check)."""
    import pickle
    import subprocess
    import sys
    import unicodedata
    d = write_cifar10(tmp_path / 'cifar')
    with open(d / 'batches.meta', 'wb') as f:
        pickle.dump({b'label_names': [b'cat'] * 10, b'num_vis': 3072}, f)
    with pytest.raises(DataError, match=r"give 'cat' more than once .*fix the label names in batches.meta"):
        create_dataset('', str(tmp_path / 'cifar'), 'train')
    with open(d / 'batches.meta', 'wb') as f:  # 'cat' and 'cat ' look the same on every card: two classes were kept
        pickle.dump({b'label_names': [b'cat ', b'dog'] + [b'cat'] + [f'c{i}'.encode() for i in range(7)]}, f)
    with pytest.raises(DataError, match=r"give 'cat' more than once \(compared after Unicode NFC normalisation, "
                                        r"surrounding whitespace aside\): fix the label names in batches.meta"):
        create_dataset('', str(tmp_path / 'cifar'), 'train')
    folders = tmp_path / 'folders'
    for split in ('train', 'val'):
        for name in (unicodedata.normalize('NFC', 'café'), unicodedata.normalize('NFD', 'café'), 'tea'):
            (folders / split / name).mkdir(parents=True)
            (folders / split / name / '0.png').write_bytes(_png(len(name) * 20))
    proc = subprocess.run([sys.executable, '-m', 'timm_cra.train', '--model', 'cra_cifar_resnet20', '--epochs', '1',
                           '--batch-size', '2', '--img-size', '32', '-j', '0', '--data-dir', str(folders),
                           '--dataset', 'folder', '--output', str(tmp_path / 'out')],
                          env=cli_env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith('error: The class names of ') and "give 'café' more than once" in last, last
    assert 'rename or merge those class folders' in last and not (tmp_path / 'out').exists()


def _parquet_labels(path, labels, dtype):
    import datasets
    feats = datasets.Features(image=datasets.Image(), label=datasets.Value(dtype))
    ds = datasets.Dataset.from_dict({'image': [{'bytes': _png(10 * i), 'path': None} for i in range(len(labels))],
                                     'label': list(labels)}, features=feats)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(path))


@pytest.mark.parametrize('labels, dtype, expected', [
    (['cat', 'dog', 'cat', 'dog'], 'string', r"has 'cat' at example 0: labels must be integer class indices \(class "
                                             r"names need a ClassLabel feature\); pass the label column with "
                                             r"--target-key, or cast it to a ClassLabel feature"),
    ([0.0, 1.0, float('nan'), 1.0], 'float64', r"has nan at example 2: labels must be integer class indices;"),
    ([0.0, 1.5, 0.0, 1.0], 'float64', r"has 1.5 at example 1: labels must be integer class indices;"),
])
def test_non_integer_parquet_labels_are_refused(tmp_path, labels, dtype, expected):
    """Strings and NaN were tracebacks (int() / int64 conversion); 1.5 was silently class 1."""
    _parquet_labels(tmp_path / 'data' / 'train-00000-of-00001.parquet', labels, dtype)
    with pytest.raises(DataError, match=r"Label column 'label' of .* \[train\] " + expected):
        _train(tmp_path, tmp_path / 'data', '--val-split', '')
    assert not (tmp_path / 'out').exists()
    _parquet_labels(tmp_path / 'whole' / 'train-00000-of-00001.parquet', [0.0, 1.0, 1.0, 0.0], 'float64')
    assert create_dataset('', str(tmp_path / 'whole'), 'train').targets.tolist() == [0, 1, 1, 0]


def test_fractional_cifar_labels_are_refused(tmp_path):
    """CIFAR labels 0.7, 1.7 were silently truncated to classes 0 and 1."""
    labels = [[0, 1, 2, 3]] * 5 + [[0.7, 1.7, 2, 3]]
    write_cifar10(tmp_path / 'data', labels=labels)
    with pytest.raises(DataError, match=r"test_batch' has an unexpected layout \(label 0.7 at example 0 is not a "
                                        r"class index \(an integer\)\)"):
        create_dataset('', str(tmp_path / 'data'), 'test')


@pytest.mark.parametrize('big', [1_000_000, 2 ** 62])
@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_sparse_parquet_labels_do_not_size_the_head(tmp_path, cli_env, big):
    """Without a ClassLabel the head had max label + 1 outputs: 1000000 trained a 761 MB model (exit 0) and 2**62
    got the process OOM-killed. Refused in one line before anything is sized."""
    import subprocess
    import sys
    write_parquet(tmp_path / 'data' / 'train-00000-of-00001.parquet', [0, 1, 2, big, 1, 0, 2, 1])
    proc = subprocess.run([sys.executable, '-m', 'timm_cra.train', '--model', 'cra_cifar_resnet20', '--epochs', '1',
                           '--batch-size', '4', '-j', '0', '--data-dir', str(tmp_path / 'data'), '--val-split', '',
                           '--output', str(tmp_path / 'out')], env=cli_env, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: Label column 'label' of ") and f'max label {big} but only 4 distinct' in last
    assert 'ClassLabel feature' in last and '--target-key' in last and not (tmp_path / 'out').exists()
    # a dense labelling with a few gaps still infers max + 1 classes
    write_parquet(tmp_path / 'ok' / 'train-00000-of-00001.parquet', [0, 2, 5, 1])
    assert create_dataset('', str(tmp_path / 'ok'), 'train').num_classes == 6


@pytest.mark.parametrize('labels, arrow_type, shown', [
    ([0, 1, 0, 2 ** 64 - 1], 'uint64', '18446744073709551615'),
    ([0.0, 1.0, 0.0, 1e19], 'float64', '1e+19'),
    ([0.0, 1.0, 0.0, -1e19], 'float64', '-1e+19'),
])
@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_labels_outside_int64_are_one_line(tmp_path, cli_env, labels, arrow_type, shown):
    """A uint64 label of 2**64 - 1, or 1e19 / -1e19 in a float column, was an OverflowError traceback (the int64
    conversion): refused in one line naming the column, the file and the value; CIFAR batch files alike."""
    import subprocess
    import sys
    import pyarrow as pa
    import pyarrow.parquet as pq
    images = pa.array([{'bytes': _png(10 * i), 'path': None} for i in range(len(labels))],
                      pa.struct([('bytes', pa.binary()), ('path', pa.string())]))
    path = tmp_path / 'labels.parquet'
    pq.write_table(pa.table({'image': images, 'label': pa.array(labels, getattr(pa, arrow_type)())}), path)
    proc = subprocess.run([sys.executable, '-m', 'timm_cra.eval', '--model', 'cra_cifar_resnet20', '--data-dir',
                           str(path), '--split', 'test', '-j', '0', '--no-progress'], env=cli_env, capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last == (f"error: Label column 'label' of '{path}' [test] has {shown} at example 3: labels must be integer "
                    f"class indices (this one is outside int64); pass the label column with --target-key, or cast it "
                    f"to a ClassLabel feature."), last
    write_cifar10(tmp_path / 'cifar', labels=[[0, 1, 2, 3]] * 5 + [[0, 1, 2, labels[-1]]])
    with pytest.raises(DataError, match=rf"test_batch' has an unexpected layout \(label {re.escape(repr(labels[-1]))} "
                                        r"at example 3 is not a class index"):
        create_dataset('', str(tmp_path / 'cifar'), 'test')


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_cifar_label_names_without_images_are_warned_as_empty_class_folders(tmp_path, cli_env):
    """batches.meta with 12 names while the labels use 0..9 trained a 12-class head without a word. Such names are
    classes without images, treated as empty class folders are: kept (the head follows the data's layout), and
    warned in one line naming and counting them."""
    import pickle
    import subprocess
    import sys
    d = write_cifar10(tmp_path / 'data', labels=[list(range(10)) * 2] * 6)  # every split uses labels 0..9
    names = [n.decode() for n in NAMES] + ['unicorn', 'dragon']
    with open(d / 'batches.meta', 'wb') as f:
        pickle.dump({b'label_names': [n.encode() for n in names], b'num_vis': 3072}, f)
    proc = subprocess.run([sys.executable, '-m', 'timm_cra.train', '--model', 'cra_cifar_resnet20', '--epochs', '1',
                           '--batch-size', '20', '-j', '0', '--no-plot', '--data-dir', str(tmp_path / 'data'),
                           '--val-split', 'test', '--output', str(tmp_path / 'out'), '--experiment', 'run'],
                          env=cli_env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for split in ('train', 'test'):
        assert (f"batches.meta: 2 class name(s) of 12 in the '{split}' split hold no images: unicorn, dragon"
                in proc.stderr), proc.stderr[-2000:]
    config = json.loads((tmp_path / 'out' / 'run' / 'config.json').read_text())
    assert config['num_classes'] == 12 and config['label_names'] == names


def test_a_boolean_label_column_is_named_as_one(tmp_path):
    """A parquet label column of bools was refused saying True was "outside int64", which it is not: the line now
    says it is a boolean column and how to store the classes."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    images = pa.array([{'bytes': _png(10 * i), 'path': None} for i in range(4)],
                      pa.struct([('bytes', pa.binary()), ('path', pa.string())]))
    path = tmp_path / 'labels.parquet'
    pq.write_table(pa.table({'image': images, 'label': pa.array([True, False, True, False])}), path)
    with pytest.raises(DataError) as e:
        create_dataset('', str(path), 'test')
    assert str(e.value) == (f"Label column 'label' of '{path}' [test] has True at example 0: labels must be integer "
                            f"class indices (a boolean column: store the classes as integers 0 and 1); pass the label "
                            f"column with --target-key, or cast it to a ClassLabel feature.")
