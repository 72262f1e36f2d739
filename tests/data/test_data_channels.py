"""Every loader produces the channel count the model takes (1: greyscale 'L', 3: RGB), with fitting mean/std."""
import numpy as np
import pytest
import timm
import torch
from PIL import Image

import timm_cra  # noqa: F401
from timm_cra.data import DataError, TensorLoader, create_dataset, fit_to_input, resolve_model_data_config
from tests.reliability.test_data_cifar_pickle import write_cifar10
from tests.reliability.test_data_labels import write_parquet

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)


def _rgb_folder(root):
    rng = np.random.default_rng(0)
    for c in ('a', 'b'):
        p = root / 'train' / c / '0.png'
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(p)
    return root


def _luma(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).convert('L'))  # PIL's own RGB -> L


@pytest.mark.parametrize('in_memory', [False, True])
def test_folder_rgb_files_to_one_channel(tmp_path, in_memory):
    root = _rgb_folder(tmp_path)
    rgb = np.asarray(Image.open(root / 'train' / 'a' / '0.png'))
    ds = create_dataset('folder', str(root), 'train', in_chans=1, in_memory=in_memory)
    img = ds[0][0]
    assert img.mode == 'L' and np.array_equal(np.asarray(img), _luma(rgb))
    back = create_dataset('folder', str(root), 'train', in_chans=3, in_memory=in_memory)
    back.set_in_chans(1)  # the trainer's path: data made before the model, then matched to it
    assert np.array_equal(np.asarray(back[0][0]), _luma(rgb))


def test_hf_parquet_to_one_channel(tmp_path):
    write_parquet(tmp_path / 'train-00000-of-00001.parquet', [0, 1])
    for in_memory in (False, True):
        ds = create_dataset('', str(tmp_path), 'train', in_chans=1, in_memory=in_memory)
        assert ds[1][0].mode == 'L' and np.asarray(ds[1][0]).max() == 10


def test_cifar_pickle_to_one_channel_matches_pil(tmp_path):
    write_cifar10(tmp_path)
    rgb = create_dataset('', str(tmp_path), 'train')
    grey = create_dataset('', str(tmp_path), 'train', in_chans=1)
    assert grey.images.shape == (20, 32, 32, 1)
    for i in (0, 7):
        assert np.array_equal(grey.images[i, ..., 0].numpy(), _luma(rgb.images[i].numpy()))


def test_tensor_loader_one_channel_batches(tmp_path):
    write_cifar10(tmp_path)
    ds = create_dataset('', str(tmp_path), 'train', in_chans=1)
    cfg = dict(input_size=(1, 40, 40), crop_pct=1.0, interpolation='bilinear', mean=(0.5,), std=(0.25,))
    x, y, skipped = next(iter(TensorLoader(fit_to_input(ds, cfg), 4, is_training=True, mean=(0.5,), std=(0.25,))))
    assert x.shape == (4, 1, 40, 40) and skipped == 0
    with pytest.raises(DataError, match='mean/std have 3/3 values but the images have 1 channel'):
        TensorLoader(ds, 4)


def test_unsupported_channel_count(tmp_path):
    with pytest.raises(DataError, match='1 \\(greyscale\\) or 3 \\(RGB\\) channels, not in_chans=2'):
        create_dataset('folder', str(_rgb_folder(tmp_path)), 'train', in_chans=2)


def test_data_config_fits_the_model_channels():
    grey = timm.create_model('cra_cifar_resnet20', in_chans=1)
    cfg = resolve_model_data_config({}, grey)
    assert cfg['input_size'] == (1, 32, 32) and cfg['crop_pct'] == 1.0
    assert cfg['mean'] == pytest.approx((sum(CIFAR_MEAN) / 3,))
    assert resolve_model_data_config({'mean': [0.5], 'std': [0.2]}, grey)['mean'] == (0.5,)
    with pytest.raises(DataError, match='--input-size 3 64 64 has 3 channels but the model takes 1'):
        resolve_model_data_config({'input_size': (3, 64, 64)}, grey)
    rgb = resolve_model_data_config({'img_size': 48}, timm.create_model('cra_cifar_resnet20'))
    assert rgb['input_size'] == (3, 48, 48) and rgb['mean'] == pytest.approx(CIFAR_MEAN)


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_validate_cli_split_hint_names_its_own_flag(run_command, tmp_path):
    root = _rgb_folder(tmp_path)
    r = run_command('timm-cra-validate', ['--model', 'cra_cifar_resnet20', '--num-classes', '2', '--data-dir', root,
                                   '--dataset', 'folder', '--split', 'val', '--workers', '0'])
    assert r.returncode == 2
    assert "Split 'val' not found" in r.stderr and 'set --split to one of them' in r.stderr
    assert '--val-split' not in r.stderr and '--train-split' not in r.stderr


def test_a_crop_whose_resize_passes_the_pixel_cap_is_refused_without_an_image_size():
    """--crop-pct alone (no --img-size) escaped the flags' resize check: 0.005 on a 32 px model resized every
    image to 6400 x 6400 (train ran an epoch at that size). The resolved data config is held to the same bound."""
    import timm
    model = timm.create_model('cra_cifar_resnet20')
    with pytest.raises(DataError, match=r'^--crop-pct 0.005 at input size 32 x 32: timm would resize images to '
                                        r'6400 x 6400 px'):
        resolve_model_data_config({'crop_pct': 0.005}, model)
    assert resolve_model_data_config({'crop_pct': 0.5}, model)['crop_pct'] == 0.5
