"""ImageNet / class folders: wnid -> ImageNet-1k index, layouts, errors, unreadable images."""
import pytest
import torch
from timm.data import ImageNetInfo

from timm_cra.data import DataError, ImageFolderDataset, create_dataset, skip_collate


def test_imagenet_sample_uses_full_synset_order(imagenet_sample):
    ds = create_dataset('', str(imagenet_sample), 'validation')
    names = ImageNetInfo().label_names()
    assert isinstance(ds, ImageFolderDataset) and ds.label_mode == 'imagenet'
    assert len(ds) == 20 and ds.num_classes == 1000
    for path, target in ds.samples:
        wnid = path.split('/')[-2]
        assert names[target] == wnid
    # 19 folders present: sorted-folder indices would be 0..18, which ImageNet indices are not.
    assert max(ds.targets) > 18


def test_imagenet_subset_split_folder(tmp_path, make_image):
    make_image(tmp_path / 'val' / 'n01440764' / 'a.JPEG')  # tench: index 0
    make_image(tmp_path / 'val' / 'n15075141' / 'b.jpg')  # toilet tissue: index 999
    (tmp_path / 'val' / 'n15075141' / 'notes.txt').write_text('not an image: ignored')
    ds = create_dataset('imagenet', str(tmp_path), 'val')
    assert ds.targets == [0, 999]


def test_folder_mode_sorted_classes_and_shared_val_indices(class_folder):
    train = create_dataset('folder', str(class_folder), 'train')
    val = create_dataset('folder', str(class_folder), 'validation', class_names=train.class_names)
    assert train.class_names == ['cat', 'dog', 'emu'] and train.num_classes == 3
    assert sorted(set(val.targets)) == [0, 1, 2] and len(val) == 6
    img, target = train[0]
    assert img.size == (32, 32) and target == 0


def test_missing_folder_error(tmp_path):
    with pytest.raises(DataError, match='does not exist.*--data-dir'):
        create_dataset('', str(tmp_path / 'nope'), 'train')


def test_no_class_subfolders_error(tmp_path, make_image):
    make_image(tmp_path / 'train' / 'loose.jpg')
    with pytest.raises(DataError, match='no class sub-folders'):
        create_dataset('folder', str(tmp_path), 'train')


def test_missing_split_error_lists_subfolders(tmp_path, make_image):
    make_image(tmp_path / 'train' / 'n01440764' / 'a.jpg')
    with pytest.raises(DataError, match="Split 'val' not found.*train"):
        create_dataset('imagenet', str(tmp_path), 'val')


def test_unknown_wnid_error(tmp_path, make_image):
    make_image(tmp_path / 'n01440764' / 'a.jpg')
    make_image(tmp_path / 'n99999999' / 'b.jpg')
    with pytest.raises(DataError, match='not ImageNet-1k wnids: n99999999.*--dataset folder'):
        create_dataset('imagenet', str(tmp_path), 'val')


def test_non_wnid_folders_need_folder_mode(tmp_path, make_image):
    make_image(tmp_path / 'cats' / 'a.jpg')
    make_image(tmp_path / 'dogs' / 'a.jpg')
    with pytest.raises(DataError, match='not ImageNet-1k wnids'):
        create_dataset('imagenet', str(tmp_path), 'val')
    ds = create_dataset('', str(tmp_path), 'val')  # auto: plain class folders
    assert ds.label_mode == 'folder' and ds.targets == [0, 1]


def test_unreadable_image_is_counted_skip(tmp_path, make_image):
    make_image(tmp_path / 'a' / 'good.png')
    (tmp_path / 'a' / 'bad.jpg').write_bytes(b'this is not a jpeg')
    make_image(tmp_path / 'b' / 'good.png')
    ds = ImageFolderDataset(str(tmp_path), label_mode='folder')
    ds.transform = lambda im: torch.zeros(3, 4, 4)
    batch = [ds[i] for i in range(len(ds))]
    assert sum(img is None for img, _ in batch) == 1
    x, y, skipped = skip_collate(batch)
    assert skipped == 1 and x.shape == (2, 3, 4, 4) and y.tolist() == [0, 1]
    x, y, skipped = skip_collate([b for b in batch if b[0] is None])
    assert skipped == 1 and x.numel() == 0


def test_training_set_up_lists_each_split_folder_once(class_folder, monkeypatch):
    """The split check and both datasets' split names compare train/ and val/: inside ``images_listed_once`` each
    class folder is scanned once for the comparisons (and once more by its dataset), where it was scanned three
    times; outside it a folder is listed anew, so a hard link added since is seen."""
    import os
    from collections import Counter
    from timm_cra.data import folders
    from timm_cra.data.folders import shared_files
    from timm_cra.train.args import parse_args
    from timm_cra.train.loaders import create_datasets

    scans = Counter()
    scan = folders._scan_class_folder
    monkeypatch.setattr(folders, '_scan_class_folder', lambda f, ignored: scans.update([f]) or scan(f, ignored))
    create_datasets(parse_args(['--model', 'cra_resnet18', '--data-dir', str(class_folder)]))
    assert len(scans) == 6 and set(scans.values()) == {2}, scans
    assert shared_files(str(class_folder / 'val'), str(class_folder / 'train')) == (0, 6)
    os.link(class_folder / 'train' / 'cat' / '0.png', class_folder / 'val' / 'cat' / 'copy.png')
    assert shared_files(str(class_folder / 'val'), str(class_folder / 'train')) == (1, 7)
    with pytest.raises(DataError, match='1 of the 7 images of --val-split validation'):
        create_datasets(parse_args(['--model', 'cra_resnet18', '--data-dir', str(class_folder)]))


def test_a_training_split_is_never_renamed_nor_said_to_be_another(caplog):
    """A training split sharing files with the test split was warned to have scores 'partly the test split's'."""
    import logging
    from timm_cra.data.folders import recorded_split
    with caplog.at_level(logging.WARNING):
        assert recorded_split('train', ['test'], lambda other: (1, 1), root='r', what='train', renamable=False) == 'train'
        assert recorded_split('val', ['train'], lambda other: (1, 2), root='r', what='val') == 'val'
    assert [r.getMessage()[:27] for r in caplog.records] == ['1 of the 2 images of val ar']
