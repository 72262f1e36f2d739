"""Labels outside 0..num_classes-1 are refused when the dataset is checked, naming the bad label and the fix."""
import io

import numpy as np
import pytest
from PIL import Image

from timm_cra.data import DataError, check_num_classes, create_dataset
from timm_cra.train import train

from .test_data_cifar_pickle import write_cifar10


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
