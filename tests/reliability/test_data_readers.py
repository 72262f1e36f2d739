"""What a stranger found in the data readers (campaign 5), fed the real inputs through the real CLIs and readers."""
import json

import numpy as np
import pytest
from PIL import Image

from .test_data_strangers import _run


def _class_folders(root, h, w, n=4):
    """train/ and val/ with classes cat and dog of ``h`` x ``w`` PNGs; the top half tells the class."""
    rng = np.random.default_rng(0)
    for split in ('train', 'val'):
        for ci, c in enumerate(('cat', 'dog')):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                a[:h // 2] = 200 if ci else 30
                Image.fromarray(a).save(root / split / c / f'{i}.png')
    return root


@pytest.mark.parametrize('h,w', [(48, 32), (32, 48)])
@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_in_memory_training_evaluates_like_validate_on_non_square_images(tmp_path, cli_env, h, w):
    """--in-memory evaluated 48x32 images at 48x32 and squashed 32x48 ones to 32x32, while validate resizes and
    centre-crops to the recorded input_size (3, 32, 32): best_top1 100.00 vs validate 90.625 on the same weights.
    Now the in-memory images are brought to the input size by validate's own transform: the trainer's final eval
    is validate's result on the weights it exported."""
    data = _class_folders(tmp_path / 'ns', h, w)
    r = _run('timm_cra.train', ['--config', 'cifar', '--model', 'cra_cifar_resnet20', '--in-memory', '-b', '4',
                                '--workers', '0', '--epochs', '1', '--data-dir', data, '--val-split', 'val',
                                '--output', tmp_path / 'out', '--experiment', 'run', '--no-plot'], cli_env, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    final = json.loads((tmp_path / 'out' / 'run' / 'results.json').read_text())['final']
    r = _run('timm_cra.eval', ['--model', f'local-dir:{tmp_path / "out" / "run"}', '--data-dir', data, '--split', 'val',
                               '--workers', '0', '--no-progress', '--results-file', tmp_path / 'v.json'],
             cli_env, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    validated = json.loads((tmp_path / 'v.json').read_text())
    assert validated['count'] == 8 and validated['img_size'] == 32
    assert final['eval_top1'] == pytest.approx(validated['top1'], abs=1e-3)
    assert final['eval_loss'] == pytest.approx(validated['loss'], abs=1e-5)


def _rows_as_paths(folder, paths):
    """Rewrite a saved split's arrow file (an Arrow IPC stream) so that its image rows hold only ``path`` values,
    bytes None: what a save_to_disk folder of a dataset built from file paths, or a stranger's, holds."""
    import pyarrow as pa
    arrow = next(p for p in folder.iterdir() if p.suffix == '.arrow')
    with pa.ipc.open_stream(arrow.read_bytes()) as reader:
        table = reader.read_all()
    image = pa.array([{'bytes': None, 'path': p} for p in paths], type=table.schema.field('image').type)
    table = table.set_column(table.schema.get_field_index('image'), table.schema.field('image'), image)
    with pa.ipc.new_stream(str(arrow), table.schema) as writer:
        writer.write_table(table)


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_save_to_disk_image_paths_are_read_inside_the_folder(tmp_path, cli_env):
    """A save_to_disk folder whose image rows hold only a path read files from anywhere: absolute paths, `../`, and
    paths relative to the working directory (the count depended on the cwd). Now the parquet rule holds: a relative
    path resolves inside the folder, an absolute one or one leaving it is a counted skip naming why."""
    import datasets
    from .test_data_labels import _png
    data = tmp_path / 'saved'
    feats = datasets.Features(image=datasets.Image(), label=datasets.ClassLabel(names=['cat', 'dog']))
    datasets.Dataset.from_dict({'image': [{'bytes': _png(40 * i), 'path': None} for i in range(5)],
                                'label': [0, 1, 0, 1, 0]}, features=feats).save_to_disk(str(data))
    (data / 'img').mkdir()
    (data / 'img' / 'a.png').write_bytes(_png(10))
    (data / 'b.png').write_bytes(_png(240))
    (tmp_path / 'outside.png').write_bytes(_png(100))
    cwd = tmp_path / 'cwd'
    (cwd / 'here').mkdir(parents=True)
    (cwd / 'here' / 'c.png').write_bytes(_png(100))  # exists relative to the cwd only
    _rows_as_paths(data, ['img/a.png', 'b.png', '../outside.png', str(tmp_path / 'outside.png'), 'here/c.png'])
    r = _run('timm_cra.eval', ['--model', 'cra_cifar_resnet20', '--num-classes', '2', '--data-dir', data, '--split',
                               'train', '--batch-size', '5', '--workers', '0', '--no-progress', '--results-file',
                               tmp_path / 'r.json'], cli_env, cwd)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads((tmp_path / 'r.json').read_text())
    assert (result['count'], result['skipped']) == (2, 3), result
    assert "path '../outside.png' leaves the data's folder" in r.stderr, r.stderr[-2000:]
    assert f"path '{tmp_path / 'outside.png'}' is absolute" in r.stderr, r.stderr[-2000:]
    # the trainer's in-memory decode takes the same rule
    r = _run('timm_cra.train', ['--model', 'cra_cifar_resnet20', '--data-dir', data, '--val-split', '',
                                '--in-memory', '-b', '2', '--workers', '0', '--epochs', '1', '--no-plot',
                                '--output', tmp_path / 'out', '--experiment', 'run'], cli_env, cwd)
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'skipped 3 unreadable image(s) of 5' in r.stderr, r.stderr[-2000:]


@pytest.mark.parametrize('kind,in_memory', [
    ('parquet', False), ('save_to_disk', True),  # the fast suite: each kind and each decode path once
    pytest.param('parquet', True, marks=pytest.mark.slow), pytest.param('save_to_disk', False, marks=pytest.mark.slow)])
@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_plain_string_image_paths_are_read_inside_the_folder(tmp_path, cli_env, kind, in_memory):
    """An image column of plain strings (paths, not {'bytes', 'path'} rows) was read from anywhere: absolute paths
    outside the data folder were trained on, relative ones were read against the working directory (8/8 from one
    folder, 0/8 from /), and /etc/hostname was opened. A string now follows the `path` row's rule (`hf._path_in`):
    it resolves inside the data folder, else it is a counted skip naming why, before any file is opened; in the
    trainer's loaders (plain and --in-memory, train and eval) and in validate."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq
    from .test_data_labels import _png
    from .test_data_strangers import _rows
    data, elsewhere, cwd = tmp_path / 'data', tmp_path / 'elsewhere', tmp_path / 'cwd'
    for folder in (data / 'img', elsewhere, cwd / 'here'):
        folder.mkdir(parents=True)
    (data / 'img' / 'a.png').write_bytes(_png(10))
    (data / 'img' / 'b.png').write_bytes(_png(240))
    (elsewhere / 'x.png').write_bytes(_png(100))
    (cwd / 'here' / 'c.png').write_bytes(_png(100))  # exists relative to the working directory only
    paths = ['img/a.png', 'img/b.png', str(elsewhere / 'x.png'), '../elsewhere/x.png', 'here/c.png',
             '/etc/hostname', 'img/a.png\0']
    columns = {'image': paths, 'label': [0, 1, 0, 1, 0, 1, 0]}
    if kind == 'parquet':
        for split in ('train', 'test'):
            pq.write_table(pa.table(columns), data / f'{split}-00000-of-00001.parquet')
    else:
        table = datasets.Dataset.from_dict(columns)
        datasets.DatasetDict(train=table, test=table).save_to_disk(str(data))
        assert table.features['image'] == datasets.Value('string')
    batch = 2 if in_memory else 7  # the rows read, or every row in one batch
    r = _run('timm_cra.train', ['--model', 'cra_cifar_resnet20', '--data-dir', data, '--val-split', 'test', '-b', batch,
                                '--workers', '0', '--epochs', '1', '--no-plot', '--output', tmp_path / 'out',
                                '--experiment', 'run'] + (['--in-memory'] if in_memory else []), cli_env, cwd)
    assert r.returncode == 0, r.stderr[-2000:]
    if in_memory:
        assert r.stderr.count('skipped 5 unreadable image(s) of 7') == 2, r.stderr[-2000:]
    else:
        row, = _rows(tmp_path / 'out' / 'run' / 'metrics.csv')
        assert (int(row['train_skipped']), int(row['eval_skipped'])) == (5, 5), row
    r = _run('timm_cra.eval', ['--model', 'cra_cifar_resnet20', '--num-classes', '2', '--data-dir', data, '--split',
                               'test', '--batch-size', '7', '--workers', '0', '--no-progress', '--results-file',
                               tmp_path / 'r.json'], cli_env, cwd)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads((tmp_path / 'r.json').read_text())
    assert (result['count'], result['skipped']) == (2, 5), result
    log = r.stderr
    for reason in (f"path '{elsewhere / 'x.png'}' is absolute", "path '/etc/hostname' is absolute",
                   "path '../elsewhere/x.png' leaves the data's folder", 'does not exist', 'NUL character'):
        assert reason in log, (reason, log[-2000:])
    assert 'Traceback' not in log


def test_missing_split_names_the_folders_parquet_data_left_out(tmp_path):
    """A --data-dir holding train-*.parquet and train/ val/ class folders is read as parquet: --val-split val said
    only 'not found (parquet splits: train)'. The line now says the data was read as parquet and names the folders
    that were not read."""
    from timm_cra.data import DataError, create_dataset
    from .test_data_labels import write_parquet
    data = _class_folders(tmp_path / 'mix', 32, 32, n=1)
    write_parquet(data / 'train-00000-of-00001.parquet', [0, 1, 0, 1])
    with pytest.raises(DataError) as e:
        create_dataset('', str(data), 'val', split_flag='--val-split')
    message = str(e.value)
    assert "read as parquet data, though it also holds the folder(s) train/, val/ without parquet files" in message \
        and 'keep one kind of data in a --data-dir' in message and '\n' not in message, message


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_class_names_match_across_unicode_normal_forms(tmp_path, cli_env):
    """A model whose label is 'café' (NFC, as Linux writes it) and a val folder 'café' written by macOS (NFD): not
    the same name, so training refused the val split (a class absent from training) and validate refused the data.
    Class names are now matched after NFC normalisation: both run and score the images."""
    import unicodedata
    nfc, nfd = (unicodedata.normalize(form, 'café') for form in ('NFC', 'NFD'))
    data = _class_folders(tmp_path / 'data', 32, 32, n=2)
    for split, name in (('train', nfc), ('val', nfd)):
        (data / split / 'cat').rename(data / split / name)
    r = _run('timm_cra.train', ['--model', 'cra_cifar_resnet20', '--data-dir', data, '--val-split', 'val', '-b', '2',
                                '--workers', '0', '--epochs', '1', '--img-size', '32', '--no-plot',
                                '--output', tmp_path / 'out', '--experiment', 'run'], cli_env, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    labels = json.loads((tmp_path / 'out' / 'run' / 'config.json').read_text())['label_names']
    assert labels == [nfc, 'dog'], labels
    r = _run('timm_cra.eval', ['--model', f'local-dir:{tmp_path / "out" / "run"}', '--data-dir', data, '--split', 'val',
                               '--workers', '0', '--no-progress', '--results-file', tmp_path / 'v.json'],
             cli_env, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path / 'v.json').read_text())['count'] == 4


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_a_full_datasets_cache_is_named_not_the_parquet_file(tmp_path, cli_env):
    """HF_DATASETS_CACHE on a full disk while datasets converts parquet to arrow: the line blamed the data file
    ('write the file again'). The arrow shard is written into /dev/full here (a real ENOSPC on every write; the
    shard's folder a symlink so that no rebuild gets around it): the line names the cache folder and the fix."""
    import os
    from timm_cra.data import create_dataset
    from .test_data_labels import write_parquet
    data = write_parquet(tmp_path / 'p' / 'train-00000-of-00001.parquet', [0, 1, 0, 1])
    create_dataset('', str(data), 'train', cache_dir=str(tmp_path / 'first'))  # where datasets writes, per file
    key_dir = next((tmp_path / 'first' / 'parquet-by-stat').iterdir())
    shard_dir = next(key_dir.rglob('*.arrow')).parent.relative_to(key_dir)
    held, full = tmp_path / 'held', tmp_path / 'full'
    (held / shard_dir).parent.mkdir(parents=True)
    full.mkdir()
    os.symlink(full, held / f'{shard_dir}.incomplete')  # datasets' build folder for the shard
    os.symlink('/dev/full', full / 'parquet-train-00000-00000-of-NNNNN.arrow')
    (tmp_path / 'cache' / 'parquet-by-stat').mkdir(parents=True)
    os.symlink(held, tmp_path / 'cache' / 'parquet-by-stat' / key_dir.name)
    r = _run('timm_cra.eval', ['--model', 'cra_cifar_resnet20', '--num-classes', '2', '--data-dir', data, '--split',
                               'train', '--workers', '0', '--no-progress', '--results-file', tmp_path / 'r.json'],
             dict(cli_env, HF_DATASETS_CACHE=str(tmp_path / 'cache')), tmp_path)
    assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: The datasets cache folder {tmp_path / 'cache' / 'parquet-by-stat'}") \
        and '(No space left on device): free space there, or set HF_DATASETS_CACHE' in last, last
    assert 'write the file again' not in last and not (tmp_path / 'r.json').exists()
