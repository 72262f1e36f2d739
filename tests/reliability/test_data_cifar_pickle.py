"""CIFAR batch files are pickles: they are read with an unpickler that admits only what those files hold."""
import os
import pickle

import numpy as np
import pytest

from timm_cra.data import DataError, create_dataset, load_cifar_pickle

NAMES = [b'airplane', b'automobile', b'bird', b'cat', b'deer', b'dog', b'frog', b'horse', b'ship', b'truck']


def write_cifar10(root, protocol=pickle.DEFAULT_PROTOCOL, per_batch=4, labels=None, seed=0):
    """A ``cifar-10-batches-py`` folder in the real files' format: dicts with bytes keys, a uint8
    ``(N, 3072)`` array and a label list per batch, plus ``batches.meta``. Returns the folder."""
    rng = np.random.default_rng(seed)
    d = root / 'cifar-10-batches-py'
    d.mkdir(parents=True)
    for i, name in enumerate([f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']):
        batch_labels = list(labels[i]) if labels else [int(v) for v in rng.integers(0, 10, per_batch)]
        entry = {b'batch_label': f'batch {i}'.encode(), b'labels': batch_labels,
                 b'data': rng.integers(0, 256, (len(batch_labels), 3072), dtype=np.uint8),
                 b'filenames': [f'{i}_{j}.png'.encode() for j in range(len(batch_labels))]}
        with open(d / name, 'wb') as f:
            pickle.dump(entry, f, protocol=protocol)
    with open(d / 'batches.meta', 'wb') as f:
        pickle.dump({b'label_names': NAMES, b'num_vis': 3072, b'num_cases_per_batch': per_batch}, f,
                    protocol=protocol)
    return d


@pytest.mark.parametrize('protocol', [2, pickle.DEFAULT_PROTOCOL, pickle.HIGHEST_PROTOCOL])
def test_genuine_format_loads(tmp_path, protocol):
    d = write_cifar10(tmp_path, protocol)
    ds = create_dataset('', str(tmp_path), 'train')
    assert len(ds) == 20 and ds.num_classes == 10 and ds.class_names[0] == 'airplane'
    with open(d / 'data_batch_2', 'rb') as f:
        ref = pickle.load(f)  # the test's own file: the reference decoding
    img = ref[b'data'][1].reshape(3, 32, 32).transpose(1, 2, 0)
    assert np.array_equal(ds.images[5].numpy(), img) and int(ds.targets[5]) == ref[b'labels'][1]
    test = load_cifar_pickle(str(tmp_path), 'test')
    assert len(test) == 4


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


@pytest.mark.parametrize('where', ['data_batch_1', 'batches.meta'])
def test_code_in_a_batch_file_is_refused(tmp_path, where):
    d = write_cifar10(tmp_path)
    marker = tmp_path / 'pwned'
    with open(d / where, 'wb') as f:
        pickle.dump({b'data': np.zeros((4, 3072), np.uint8), b'labels': [0] * 4, b'label_names': _Payload(marker)},
                    f, protocol=2)
    with pytest.raises(DataError,
                       match=rf"/{where}' is not a plain CIFAR pickle .*'(posix|nt).mkdir' is not allowed.*refusing"):
        load_cifar_pickle(str(tmp_path), 'train')
    assert not marker.exists()


def test_object_arrays_are_refused(tmp_path):
    d = write_cifar10(tmp_path)
    with open(d / 'data_batch_1', 'wb') as f:
        pickle.dump({b'data': np.array([b'x'] * 4, dtype=object), b'labels': [0] * 4}, f, protocol=2)
    with pytest.raises(DataError, match='holds Python objects'):
        load_cifar_pickle(str(tmp_path), 'train')


def test_wrong_layout_is_a_data_error(tmp_path):
    d = write_cifar10(tmp_path)
    with open(d / 'data_batch_3', 'wb') as f:
        pickle.dump({b'data': np.zeros((4, 100), np.uint8), b'labels': [0] * 4}, f, protocol=2)
    with pytest.raises(DataError, match=r"data_batch_3' has an unexpected layout .*uint8 \(N, 3072\)"):
        load_cifar_pickle(str(tmp_path), 'train')


@pytest.mark.parametrize('names', [7, {'a': 1}, 'airplane', [b'cat', 3]])
def test_meta_label_names_that_are_not_a_list_of_strings_are_one_line(tmp_path, names):
    """``batches.meta`` label_names 7 was a TypeError traceback, {'a': 1} gave its keys as the classes silently, and
    'airplane' was refused for repeating the class 'a' (its letters): anything but a list of strings is one line
    naming the file and the key."""
    d = write_cifar10(tmp_path)
    with open(d / 'batches.meta', 'wb') as f:
        pickle.dump({b'label_names': names}, f)
    with pytest.raises(DataError) as e:
        create_dataset('', str(tmp_path), 'train')
    message = str(e.value)
    assert message.startswith(f"CIFAR meta file '{d / 'batches.meta'}' has label_names ") \
        and 'must be a list of class names (strings)' in message and '\n' not in message, message


def test_meta_label_names_that_are_not_utf8_are_one_line(tmp_path):
    """A name in ``batches.meta`` holding bytes that are not UTF-8 (``b'caf\\xe9'``, Latin-1) was decoded with
    'replace' into ``'caf\\ufffd'``: a class name nobody gave, trained and published. Refused naming the file."""
    d = write_cifar10(tmp_path)
    with open(d / 'batches.meta', 'wb') as f:
        pickle.dump({b'label_names': NAMES[:3] + [b'caf\xe9'] + NAMES[4:]}, f)
    with pytest.raises(DataError) as e:
        create_dataset('', str(tmp_path), 'train')
    assert str(e.value) == (f"CIFAR meta file '{d / 'batches.meta'}' has label_names b'caf\\xe9' that is not UTF-8 "
                            f"text (byte 0xe9 at 3): re-extract the archive or fix that name.")
    with open(d / 'batches.meta', 'wb') as f:  # UTF-8 bytes are names as given
        pickle.dump({b'label_names': NAMES[:3] + ['café'.encode()] + NAMES[4:]}, f)
    assert create_dataset('', str(tmp_path), 'train').class_names[3] == 'café'


def test_a_huge_batch_file_is_refused_before_it_is_read(tmp_path, cli_env):
    """A sparse 5 GB ``test_batch`` (no bytes on disk) was read whole: a MemoryError traceback under a 4 GB address
    space limit, a 5 GB read without one. validate now refuses it in one line from its size, before reading a byte;
    the cap is above the largest real batch file (CIFAR-100's train file: 50,000 images of 3,072 bytes, 155 MB)."""
    from .test_data_strangers import _run_memory_capped
    d = write_cifar10(tmp_path / 'data')
    with open(d / 'test_batch', 'r+b') as f:
        f.truncate(5 << 30)
    r = _run_memory_capped('timm_cra.eval', ['--model', 'cra_cifar_resnet20', '--data-dir', tmp_path / 'data',
                                             '--split', 'test', '--workers', '0', '--no-progress'], cli_env, tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]
    line = r.stderr.strip().splitlines()[-1]
    assert line == (f"error: CIFAR batch file {d / 'test_batch'} is over 256 MiB, more than any CIFAR batch file "
                    f"(CIFAR-100's train file is 155 MB) holds: it is not one (or is damaged); re-extract the "
                    f"official cifar-10/100-python archive."), r.stderr[-2000:]
    assert 'Traceback' not in r.stderr
    from timm_cra.data.cifar import MAX_BATCH_FILE_BYTES
    assert MAX_BATCH_FILE_BYTES > 50_000 * 3072 * 1.05
