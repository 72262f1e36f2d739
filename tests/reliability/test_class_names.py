"""The class names a run trains on travel with its weights: the exported ``model.safetensors`` records them in its
header (as ``last.pth`` and ``config.json`` do), so every reader maps a dataset's classes by name; ``--resume`` on
data with other classes and names that cannot be exported are refused before any epoch. Real CLIs on tiny data."""
import json
import os

import pytest
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .test_data_labels import _png
from .test_data_splits import TRAIN_ARGS, _classlabel_split
from .test_data_strangers import _run

#: dark images are 'cat', bright ones 'dog' (as ``_classlabel_split`` draws them)
SHADES = {'cat': 10, 'dog': 240}


def _class_folders(root, classes, n=4):
    for c in map(os.fsdecode, classes):  # bytes that are no UTF-8 as os.listdir gives them back
        os.makedirs(os.path.join(root, c))
        for i in range(n):
            with open(os.path.join(root, c, f'{i}.png'), 'wb') as f:
                f.write(_png(SHADES.get(c, 10)))
    return root


@pytest.fixture(scope='module')
def dog_cat_run(tmp_path_factory, cli_env):
    """A run on parquet splits whose ClassLabel names are ['dog', 'cat'] (not sorted), and class folders of the
    same images (sorted: cat, dog), as the stranger's reproduction had them."""
    tmp = tmp_path_factory.mktemp('dogcat')
    data = tmp / 'pq'
    data.mkdir()
    for split in ('train', 'test'):
        _classlabel_split(['dog', 'cat']).to_parquet(str(data / f'{split}-0.parquet'))
    folders = _class_folders(str(tmp / 'sq' / 'val'), ['cat', 'dog'])
    r = _run('timm_cra.train', TRAIN_ARGS + ['--data-dir', data, '--val-split', 'test', '--epochs', '4',
                                             '--output', tmp / 'out', '--experiment', 'run'], cli_env, tmp)
    assert r.returncode == 0, r.stderr[-2000:]
    run = tmp / 'out' / 'run'
    assert json.loads((run / 'results.json').read_text())['final']['eval_top1'] == 100.0
    return tmp, run, os.path.dirname(folders)


def _validate(tmp, cli_env, data, model_args):
    out = tmp / 'r.json'
    r = _run('timm_cra.eval', model_args + ['--data-dir', data, '--split', 'val', '--batch-size', '4', '--workers', '0',
                                            '--no-progress', '--results-file', out], cli_env, tmp)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(out.read_text()), r.stderr


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_exported_safetensors_carry_the_class_names_and_validate_maps_by_them(dog_cat_run, cli_env, tmp_path):
    """`validate --checkpoint <run>/model.safetensors` (the docs' example) scored by folder position: 0.0, exit 0,
    no word, where last.pth and local-dir: gave 100. The exported header records the names, so all three agree; a
    .safetensors without names still scores by position, and says so (results and one warning line)."""
    _, run, folders = dog_cat_run
    with safe_open(str(run / 'model.safetensors'), 'pt') as f:
        metadata = f.metadata()
    assert (metadata.pop('format'), metadata.pop('label_names')) == ('pt', '["dog", "cat"]'), metadata
    assert json.loads(metadata.pop('data_config'))['input_size'] == [3, 32, 32] and not metadata, metadata
    checkpoint = ['--model', 'cra_cifar_resnet20', '--num-classes', '2', '--checkpoint']
    for model_args in (['--model', f'local-dir:{run}'], checkpoint + [run / 'last.pth'],
                       checkpoint + [run / 'model.safetensors']):
        result, _ = _validate(tmp_path, cli_env, folders, model_args)
        assert result['top1'] == 100.0, (model_args, result)
        assert result['class_mapping'].startswith('by name'), (model_args, result)
    bare = tmp_path / 'bare.safetensors'  # the tensors alone, as another tool (or an older trainer) writes them
    save_file(load_file(str(run / 'model.safetensors')), str(bare))
    result, err = _validate(tmp_path, cli_env, folders, checkpoint + [bare])
    assert result['class_mapping'] == 'by position' and result['top1'] == 0.0, result
    warnings = [ln for ln in err.splitlines() if 'record no class names' in ln]
    assert len(warnings) == 1 and "'cat', 'dog' are scored by position" in warnings[0], err[-2000:]
    assert '--model local-dir:<run>' in warnings[0], warnings


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_initial_checkpoint_head_is_matched_to_the_data_by_name(dog_cat_run, cli_env, tmp_path):
    """--initial-checkpoint <run>/model.safetensors of the [dog, cat] run, fine-tuned on folders cat/, dog/ with the
    head kept: by position each class started from the other's output (epoch 0 scored 0). The header's names put the
    head rows in the data's order."""
    _, run, _ = dog_cat_run
    for split in ('train', 'val'):
        _class_folders(str(tmp_path / 'data' / split), ['cat', 'dog'])
    r = _run('timm_cra.train', TRAIN_ARGS + ['--data-dir', tmp_path / 'data', '--dataset', 'folder', '--epochs', '1',
                                             '--lr', '1e-9', '--initial-checkpoint', run / 'model.safetensors',
                                             '--output', tmp_path / 'out', '--experiment', 'ft'], cli_env, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'matched to the data\'s classes by name (its order: dog, cat)' in r.stderr, r.stderr[-2000:]
    assert json.loads((tmp_path / 'out' / 'ft' / 'results.json').read_text())['final']['eval_top1'] == 100.0


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_resume_on_data_with_other_classes_is_refused_before_any_work(dog_cat_run, cli_env, tmp_path):
    """--resume of a run on [dog, cat] with class folders [cat, dog] (or ant, bee) trained its next epochs with
    the classes swapped and exported the new names. Refused in one line naming both lists and the fix; the run's
    files stay as they were."""
    tmp, run, _ = dog_cat_run
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    for classes, says in ((['cat', 'dog'], 'the classes in another order'), (['ant', 'bee'], 'other classes')):
        data = tmp_path / '-'.join(classes)
        for split in ('train', 'val'):
            _class_folders(str(data / split), classes)
        r = _run('timm_cra.train', TRAIN_ARGS + ['--data-dir', data, '--dataset', 'folder', '--epochs', '6',
                                                 '--resume', run / 'last.pth'], cli_env, tmp_path)
        assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr[-2000:]
        last = r.stderr.strip().splitlines()[-1]
        assert last == (f"error: Cannot --resume '{run / 'last.pth'}' on data with {says}: the run trained on "
                        f"[dog, cat], this data has [{', '.join(classes)}]. Resume on the run's data, or start a new "
                        f"run from its weights with --initial-checkpoint {run / 'last.pth'}."), last
        assert 'Epoch 4' not in r.stderr
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


@pytest.mark.parametrize('name,says', [
    ('c\tat', "label name 'c\\tat' holds a control character (newline, tab, escape), U+0009"),
    (b'caf\xe9', "label name b'caf\\xe9' is not UTF-8 text (a name in another encoding)"),
])
@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_class_names_that_cannot_be_exported_stop_the_run_before_any_epoch(tmp_path, cli_env, name, says):
    """A class folder 'c\\tat' or non-UTF-8 b'caf\\xe9' trained every epoch, then failed at the export naming
    --label-names (publish's flag, not train's) and calling \\xe9 a control character. The export's check now runs
    before the first epoch, naming the fix for the data."""
    _class_folders(str(tmp_path / 'data' / 'train'), [name, 'dog'])
    _class_folders(str(tmp_path / 'data' / 'val'), ['dog'])
    r = _run('timm_cra.train', TRAIN_ARGS + ['--data-dir', tmp_path / 'data', '--dataset', 'folder', '--epochs', '1',
                                             '--output', tmp_path / 'out', '--experiment', 'run'], cli_env, tmp_path)
    assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f'error: {says}: rename that class in the data (its class folder'), last
    assert 'label-names' not in last and 'Epoch 0' not in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / 'out' / 'run').exists()


def test_a_safetensors_header_with_malformed_label_names_is_one_line(tmp_path, capsys):
    """The header's names are a stranger's bytes too: not JSON, not a list of strings, or a name given twice is
    refused in one line naming the file (never a traceback, never names mapped by a wrong list)."""
    import timm
    from timm_cra.eval.validate import main
    from timm_cra.utils.errors import run_cli
    state = timm.create_model('cra_cifar_resnet20', num_classes=2).state_dict()
    data = _class_folders(str(tmp_path / 'data' / 'val'), ['cat', 'dog'])
    for text in ('cat,dog', '[1, 2]', '["cat", "cat"]', '[]', '{"0": "cat"}'):
        path = tmp_path / 'w.safetensors'
        save_file(state, str(path), metadata={'format': 'pt', 'label_names': text})
        with pytest.raises(SystemExit) as e:
            run_cli(main, ['--model', 'cra_cifar_resnet20', '--num-classes', '2', '--checkpoint', str(path),
                           '--data-dir', os.path.dirname(data), '--split', 'val', '--workers', '0'])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count('\n') == 1, err
        assert err.startswith(f"error: '{path}' records label_names in its header that are not a JSON list of "
                              f"distinct class names"), err


@pytest.mark.parametrize('names,says', [
    (['c\tat', 'dog'], "label name 'c\\tat' holds a control character (newline, tab, escape), U+0009"),
    ([b'caf\xe9', 'dog'], "label name b'caf\\xe9' is not UTF-8 text (a name in another encoding)"),
    (['', 'dog'], "label name '' is empty"),  # ClassLabel names: validate scored and recorded it (campaign 9)
])
def test_validate_refuses_class_names_the_trainer_refuses(tmp_path, capsys, names, says):
    """The data's class names are checked where the data is read (data.create_dataset), for train and validate
    alike, with the trainer's message."""
    from timm_cra.eval.validate import main
    from timm_cra.utils.errors import run_cli
    if '' in names:
        import datasets
        from .test_data_labels import _png as png
        feats = datasets.Features(image=datasets.Image(), label=datasets.ClassLabel(names=list(names)))
        datasets.Dataset.from_dict({'image': [{'bytes': png(40 * i), 'path': None} for i in range(2)],
                                    'label': [0, 1]}, features=feats).save_to_disk(str(tmp_path / 'saved'))
        capsys.readouterr()  # save_to_disk's progress bar
        data = ['--data-dir', str(tmp_path / 'saved')]
    else:
        _class_folders(str(tmp_path / 'data' / 'val'), names)
        data = ['--data-dir', str(tmp_path / 'data'), '--split', 'val']
    with pytest.raises(SystemExit) as e:
        run_cli(main, ['--model', 'cra_cifar_resnet20', '--num-classes', '2', '--workers', '0', *data])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count('\n') == 1, err
    assert err.startswith(f'error: {says}: rename that class in the data (its class folder'), err


def _shaded_folders(root, shades, n=4):
    for name, shade in shades.items():
        os.makedirs(os.path.join(root, name))
        for i in range(n):
            with open(os.path.join(root, name, f'{i}.png'), 'wb') as f:
                f.write(_png(shade))
    return root


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_class_folders_are_indexed_in_timms_order(dog_cat_run, cli_env, tmp_path):
    """Folders class2/ (bright) and class10/ (dark): timm's folder reader indexes them by its natural key (class2,
    class10), timm-cra sorted them plainly (class10, class2), so weights trained with timm's order (index 0 bright,
    as the dog/cat run's bare tensors: a timm train.py checkpoint) scored 0 with timm-cra-validate and 100 with timm.
    Now the folders are indexed as timm does; weights recorded with the old order (names in the header) still map
    by name, for validate --checkpoint and train --initial-checkpoint."""
    import timm.data
    from timm_cra.data import create_dataset
    mixed = _shaded_folders(str(tmp_path / 'mixed' / 'train'), {'class10': 10, 'class2': 240, 'Class9': 10})
    ours = create_dataset('folder', os.path.dirname(mixed), 'train')
    theirs = timm.data.create_dataset('', mixed)
    assert ours.class_names == ['class2', 'Class9', 'class10']
    assert sorted(ours.samples) == sorted((p, t) for p, t in theirs.reader.samples)

    _, run, _ = dog_cat_run
    bare = tmp_path / 'bare.safetensors'  # index 0 bright, 1 dark; no names
    save_file(load_file(str(run / 'model.safetensors')), str(bare))
    folders = os.path.dirname(_shaded_folders(str(tmp_path / 'data' / 'val'), {'class2': 240, 'class10': 10}))
    checkpoint = ['--model', 'cra_cifar_resnet20', '--num-classes', '2', '--checkpoint']
    result, _ = _validate(tmp_path, cli_env, folders, checkpoint + [bare])
    assert result['class_mapping'] == 'by position' and result['top1'] == 100.0, result

    # a run of the old order recorded its names in that order: class10 (its index 0, here bright) before class2
    old = tmp_path / 'old'
    for split in ('train', 'val'):
        _shaded_folders(str(old / split), {'class10': 240, 'class2': 10})
    recorded = tmp_path / 'old-order.safetensors'
    save_file(load_file(str(run / 'model.safetensors')), str(recorded),
              metadata={'format': 'pt', 'label_names': '["class10", "class2"]'})
    result, _ = _validate(tmp_path, cli_env, old, checkpoint + [recorded])
    assert result['class_mapping'].startswith('by name') and result['top1'] == 100.0, result
    r = _run('timm_cra.train', TRAIN_ARGS + ['--data-dir', old, '--dataset', 'folder', '--epochs', '1', '--lr', '1e-9',
                                             '--initial-checkpoint', recorded, '--output', tmp_path / 'out',
                                             '--experiment', 'ft'], cli_env, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "matched to the data's classes by name (its order: class10, class2)" in r.stderr, r.stderr[-2000:]
    assert json.loads((tmp_path / 'out' / 'ft' / 'results.json').read_text())['final']['eval_top1'] == 100.0


def test_class_names_typed_two_ways_are_one_name_for_a_kept_head_and_for_resume(caplog):
    """A run on folders fig/, éclair/ fine-tuned (--no-reset-head) on a macOS / rsync copy, whose folder names are
    decomposed (NFD): the names were compared byte for byte, so the head was kept by position under a warning that
    they were "other classes", and the NFD copy sorts éclair first: the two outputs swapped, top-1 100 -> 0. Resume
    refused the copy listing two lists that look the same. Both compare names as everywhere else (NFC)."""
    import logging
    import unicodedata
    import torch
    from timm_cra.train.model import _head_by_name
    from timm_cra.train.resume import check_resume_classes
    from timm_cra.utils.errors import UsageError
    data = sorted(unicodedata.normalize('NFD', n) for n in ('fig', 'éclair'))  # the copy's folder order
    assert [unicodedata.normalize('NFC', n) for n in data] == ['éclair', 'fig']
    state = {'fc.weight': torch.tensor([[1.0], [2.0]]), 'fc.bias': torch.tensor([1.0, 2.0])}  # rows: fig, éclair
    with caplog.at_level(logging.INFO):
        _head_by_name(state, ['fc.weight', 'fc.bias'], ['fig', 'éclair'], data, 'run/last.pth')
    assert state['fc.bias'].tolist() == [2.0, 1.0] and state['fc.weight'].flatten().tolist() == [2.0, 1.0]
    assert 'by name' in caplog.text and 'other classes' not in caplog.text
    same = {'fc.weight': torch.tensor([[1.0], [2.0]]), 'fc.bias': torch.tensor([1.0, 2.0])}
    _head_by_name(same, ['fc.weight', 'fc.bias'], ['éclair', 'fig'], data, 'run/last.pth')  # same order: untouched
    assert same['fc.bias'].tolist() == [1.0, 2.0]
    check_resume_classes('run/last.pth', {'label_names': ['éclair', 'fig']}, data)  # the same classes: resumes
    with pytest.raises(UsageError, match='the classes in another order'):
        check_resume_classes('run/last.pth', {'label_names': ['fig', 'éclair']}, data)
