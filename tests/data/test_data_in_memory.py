"""In-memory uint8 datasets, CIFAR pickle layout, batched crop/flip, deterministic sharded loader."""
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from timm_cra.data import (DataError, TensorImageDataset, TensorLoader, create_dataset, decode_to_memory,
                           random_crop_flip)


def _write_cifar10(root, n_per_batch=4):
    d = root / 'cifar-10-batches-py'
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    all_data, all_labels = [], []
    for name in [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']:
        data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n_per_batch)]
        with open(d / name, 'wb') as f:
            pickle.dump({'data': data, 'labels': labels}, f)
        all_data.append(data)
        all_labels.append(labels)
    with open(d / 'batches.meta', 'wb') as f:
        pickle.dump({'label_names': [f'c{i}' for i in range(10)]}, f)
    return all_data, all_labels


def test_cifar10_pickle_layout(tmp_path):
    data, labels = _write_cifar10(tmp_path)
    train = create_dataset('torch/cifar10', str(tmp_path), 'train')
    assert isinstance(train, TensorImageDataset)
    assert train.images.shape == (20, 32, 32, 3) and train.class_names[3] == 'c3'
    assert train.targets.tolist() == sum(labels[:5], [])
    # torchvision layout: row = 1024 red, 1024 green, 1024 blue values, each row-major 32x32.
    row = data[0][1]
    assert train.images[1, 2, 5].tolist() == [row[2 * 32 + 5], row[1024 + 2 * 32 + 5], row[2048 + 2 * 32 + 5]]
    test = create_dataset('', str(tmp_path), 'test')  # auto-detected
    assert test.targets.tolist() == labels[5]


def test_cifar100_pickle_layout(tmp_path):
    d = tmp_path / 'cifar-100-python'
    d.mkdir()
    for name, n in (('train', 6), ('test', 2)):
        with open(d / name, 'wb') as f:
            pickle.dump({'data': np.zeros((n, 3072), np.uint8), 'fine_labels': list(range(n)),
                         'coarse_labels': [0] * n}, f)
    ds = create_dataset('torch/cifar100', str(tmp_path), 'train')
    assert ds.num_classes == 100 and ds.targets.tolist() == list(range(6))
    with pytest.raises(DataError, match='incomplete'):
        (d / 'test').unlink()
        create_dataset('torch/cifar100', str(tmp_path), 'test')


def test_decode_to_memory_matches_pil(cifar10_test):
    ds = create_dataset('', str(cifar10_test), 'test', num_samples=16)
    mem = create_dataset('', str(cifar10_test), 'test', num_samples=16, in_memory=True)
    assert mem.images.dtype == torch.uint8 and mem.images.shape == (16, 32, 32, 3)
    for i in (0, 7, 15):
        assert np.array_equal(mem.images[i].numpy(), np.asarray(ds[i][0]))
    assert mem.targets.tolist() == list(ds.targets)


def test_decode_mixed_sizes_error(tmp_path, make_image):
    make_image(tmp_path / 'a' / '1.png', size=(32, 32))
    make_image(tmp_path / 'b' / '2.png', size=(40, 32))
    ds = create_dataset('folder', str(tmp_path), 'train')
    with pytest.raises(DataError, match='one size.*Drop --in-memory'):
        decode_to_memory(ds)


def test_random_crop_flip_is_padded_crop():
    x = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    out = random_crop_flip(x, padding=2, hflip=0.5, generator=g)
    padded = F.pad(x, (2, 2, 2, 2))
    n_flipped = 0
    for b in range(16):
        matches = [(oy, ox, fl) for oy in range(5) for ox in range(5) for fl in (False, True)
                   if torch.equal(out[b], (lambda c: c.flip(2) if fl else c)(padded[b, :, oy:oy + 8, ox:ox + 8]))]
        assert matches, f'sample {b} is not a (flipped) crop of its padded input'
        n_flipped += matches[0][2]
    assert 0 < n_flipped < 16  # both branches taken
    assert torch.equal(random_crop_flip(x, padding=0, hflip=1.0), x.flip(3))


def _toy(n=20):
    imgs = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 4, 4, 3).contiguous()
    return TensorImageDataset(imgs, torch.arange(n) % 5, [str(i) for i in range(5)])


def test_tensor_loader_deterministic_per_epoch_and_sharded():
    ds = _toy(20)
    kw = dict(batch_size=3, is_training=True, mean=(0., 0., 0.), std=(1 / 255,) * 3, padding=0, hflip=0., seed=1)
    def order(loader):  # pixel value == example index
        return torch.cat([x[:, 0, 0, 0] for x, _, _ in loader]).round().long()

    a = TensorLoader(ds, **kw)
    first = order(a)
    assert len(a) == 6 and len(first) == 18
    assert torch.equal(order(TensorLoader(ds, **kw)), first)  # same seed + epoch -> same batches
    a.set_epoch(1)
    assert not torch.equal(order(a), first)
    # Pixel value == index: check normalisation and DDP shards (disjoint, equal step counts).
    seen = []
    for rank in range(2):
        r = TensorLoader(ds, rank=rank, world_size=2, **kw)
        r.set_epoch(3)
        assert len(r) == 3
        for x, _, _ in r:
            seen.extend(x[:, 0, 0, 0].round().long().tolist())
    assert len(seen) == len(set(seen)) == 18
    ev = [TensorLoader(ds, batch_size=4, rank=k, world_size=2) for k in range(2)]
    assert sum(len(y) for e in ev for _, y, _ in e) == 20  # eval: every example once, no padding
