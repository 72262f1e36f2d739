"""Validation: result files, ImageNet sample label plumbing, exact metrics with a constructed model, CIFAR checkpoints."""
import csv
import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import ImageNetInfo
from timm.models import _registry

from timm_cra.data import DataError, create_dataset, skip_collate
from timm_cra.eval import RESULT_FIELDS, create_parser, validate, write_results

pytestmark = pytest.mark.usefixtures('single_torch_thread')


def _args(argv):
    return create_parser().parse_args([str(a) for a in argv] + ['--workers', '0', '--no-progress'])


def test_random_weights_and_results_files(cifar10_test, tiny_model_args, tmp_path):
    res = validate(_args(tiny_model_args + ['--data-dir', cifar10_test, '--split', 'test', '--num-samples', '20',
                                            '--num-classes', '10', '--batch-size', '8']))
    assert res['count'] == 20 and res['skipped'] == 0
    assert 0 <= res['top1'] <= res['top5'] <= 100 and res['top1_err'] == pytest.approx(100 - res['top1'])
    assert (res['img_size'], res['crop_pct'], res['interpolation']) == (224, 0.875, 'bicubic')  # model's cfg
    assert res['loss'] > 0
    write_results(res, str(tmp_path / 'r.json'), str(tmp_path / 'r.csv'))
    write_results(res, '', str(tmp_path / 'r.csv'))
    with open(tmp_path / 'r.csv') as f:
        rows = list(csv.reader(f))
    assert rows[0] == list(RESULT_FIELDS) and len(rows) == 3
    assert json.loads((tmp_path / 'r.json').read_text())['count'] == 20


def test_imagenet_sample_targets_through_loader(imagenet_sample):
    from timm.data import create_loader
    ds = create_dataset('imagenet', str(imagenet_sample), 'validation')
    loader = create_loader(ds, input_size=(3, 64, 64), batch_size=6, use_prefetcher=False, num_workers=0,
                           collate_fn=skip_collate, device=torch.device('cpu'))
    targets = torch.cat([y for _, y, _ in loader]).tolist()
    wnids = [path.split('/')[-2] for path, _ in ds.samples]
    index = {w: i for i, w in enumerate(ImageNetInfo().label_names())}
    assert targets == [index[w] for w in wnids]


class _Oracle(nn.Module):
    """Reads the class back from a solid-colour image (red = 10 + 20 * class) and ranks the classes so that
    classes 0, 2, 4, 6, 8 are right at top-1; 1, 3, 5 rank the true class 3rd; 7, 9 rank it last."""

    def __init__(self, num_classes=10, **_):  # ignores timm's pretrained_cfg / cache_dir kwargs
        super().__init__()
        self.num_classes = num_classes
        self.pretrained_cfg = dict(input_size=(3, 16, 16), interpolation='bilinear', crop_pct=1.0,
                                   mean=(0., 0., 0.), std=(1., 1., 1.), num_classes=num_classes)

    def forward(self, x):
        cls = ((x[:, 0].mean((1, 2)) * 255 - 10) / 20).round().long()
        return torch.stack([oracle_logits(int(c)) for c in cls])


def oracle_logits(c: int) -> torch.Tensor:
    order = list(range(10))
    order.remove(c)
    if c % 2 == 0:
        rank = 0
    elif c < 7:
        rank = 2
    else:
        rank = 9
    order.insert(rank, c)  # order[0] gets the highest logit
    logits = torch.empty(10)
    logits[torch.tensor(order)] = torch.arange(10, 0, -1, dtype=torch.float32)
    return logits


def test_exact_metrics_with_constructed_model(tmp_path, make_image, monkeypatch):
    for c in range(10):
        make_image(tmp_path / 'val' / f'class{c}' / 'a.png', color=(10 + 20 * c, 0, 0), size=(16, 16))
    monkeypatch.setitem(_registry._model_entrypoints, 'test_oracle',
                        lambda pretrained=False, **kwargs: _Oracle(**kwargs))
    res = validate(_args(['--model', 'test_oracle', '--data-dir', tmp_path, '--dataset', 'folder',
                          '--split', 'val', '--batch-size', '3']))
    assert res['count'] == 10
    assert res['top1'] == 50.0 and res['top5'] == 80.0
    expected_loss = F.cross_entropy(torch.stack([oracle_logits(c) for c in range(10)]), torch.arange(10))
    assert res['loss'] == pytest.approx(expected_loss.item(), abs=1e-4)


def test_unreadable_image_counted(tmp_path, make_image, monkeypatch):
    for c in range(10):
        make_image(tmp_path / f'class{c}' / 'a.png', color=(10 + 20 * c, 0, 0), size=(16, 16))
    (tmp_path / 'class0' / 'b.jpg').write_bytes(b'not an image')
    monkeypatch.setitem(_registry._model_entrypoints, 'test_oracle',
                        lambda pretrained=False, **kwargs: _Oracle(**kwargs))
    res = validate(_args(['--model', 'test_oracle', '--data-dir', tmp_path, '--dataset', 'folder']))
    assert res['count'] == 10 and res['skipped'] == 1 and res['top1'] == 50.0


def test_cifar_checkpoints_agree_with_trainer(cifar_run, cifar10_test, tiny_model_args):
    summary, out = cifar_run
    common = ['--data-dir', cifar10_test, '--split', 'test', '--num-samples', '32', '--batch-size', '16']
    from_local_dir = validate(_args(['--model', f'local-dir:{out}', '--pretrained'] + common))
    # The exported config carries the CIFAR eval transform: 32 px, no crop, CIFAR mean/std.
    assert (from_local_dir['img_size'], from_local_dir['crop_pct']) == (32, 1.0)
    assert from_local_dir['count'] == 32
    assert from_local_dir['top1'] == pytest.approx(summary['final']['eval_top1'], abs=100 / 32 + 1e-6)
    cifar_cfg = ['--num-classes', '10', '--img-size', '32', '--crop-pct', '1.0',
                 '--mean', '0.4914', '0.4822', '0.4465', '--std', '0.2470', '0.2435', '0.2616']
    for ckpt in ('model.safetensors', 'last.pth'):
        res = validate(_args(tiny_model_args + cifar_cfg + ['--checkpoint', out / ckpt] + common))
        assert res['top1'] == from_local_dir['top1'] and res['loss'] == pytest.approx(from_local_dir['loss'])


def test_label_count_mismatch(cifar10_test, tiny_model_args):
    with pytest.raises(DataError, match='10 classes but the model head has 1000'):
        validate(_args(tiny_model_args + ['--data-dir', cifar10_test, '--split', 'test', '--num-samples', '8']))


@pytest.mark.slow  # over ~15 s on 2 cores (many processes or epochs): CI step 2
def test_validate_cli(run_command, cifar10_test, tiny_model_args, tmp_path):
    data = ['--data-dir', cifar10_test, '--split', 'test', '--num-samples', '20', '--num-classes', '10']
    proc = run_command('timm-cra-validate', tiny_model_args + data + [
        '--batch-size', '10', '--workers', '0',
        '--results-file', tmp_path / 'r.json', '--results-csv', tmp_path / 'r.csv'])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((tmp_path / 'r.json').read_text())['count'] == 20
    assert 'Validate cra_resnet18' in proc.stderr  # progress bar
    bad = run_command('timm-cra-validate', tiny_model_args + data + ['--checkpoint', tmp_path / 'nope.safetensors'])
    assert bad.returncode == 2 and 'Traceback' not in bad.stderr and "error: Checkpoint" in bad.stderr


def _cifar_class_folder(cifar10_test, root, classes, per_class=8):
    """``root/<class>/<i>.png`` from the shipped CIFAR-10 test split, for the named classes only."""
    import io
    import pyarrow.parquet as pq
    from PIL import Image
    names = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck']
    rows = pq.read_table(cifar10_test / 'test-00000-of-00001.parquet').slice(0, 400).to_pylist()
    for c in classes:
        picked = [r for r in rows if r['label'] == names.index(c)][:per_class]
        (root / c).mkdir(parents=True)
        for i, r in enumerate(picked):
            Image.open(io.BytesIO(r['img']['bytes'])).save(root / c / f'{i}.png')
    return root


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_val_subset_of_pretrained_classes_keeps_the_trained_head(cifar10_test, cli_env, tmp_path):
    """A val folder with 3 of the published CIFAR model's 10 classes is mapped onto its label_names by name and
    evaluated with the trained head; --num-classes 3 (a random head) is refused in one line, and so is a class
    the model does not know, without advising --num-classes."""
    import subprocess
    import sys
    model = f"local-dir:{cifar10_test.parents[1] / 'hub' / 'timm-cra' / 'cra_cifar_resnet20.cifar10'}"
    val = _cifar_class_folder(cifar10_test, tmp_path / 'val', ['cat', 'dog', 'ship'])

    def cli(*extra):
        return subprocess.run([sys.executable, '-m', 'timm_cra.eval', '--model', model, '--pretrained', '--data-dir',
                               str(val), '--workers', '0', '--no-progress', *extra], env=cli_env,
                              capture_output=True, text=True, timeout=240)
    ok = cli('--results-file', str(tmp_path / 'r.json'))
    assert ok.returncode == 0, ok.stderr[-2000:]
    res = json.loads((tmp_path / 'r.json').read_text())
    assert res['count'] == 24 and res['class_mapping'] == "by name: the dataset's 3 classes onto the model's 10"
    assert "mapped by name" in ok.stderr
    assert res['top1'] >= 70  # the trained head (a random 10-way head: ~10%; the 3-way one of old: ~33%)
    bad = cli('--num-classes', '3')
    assert bad.returncode == 2 and bad.stderr.count('\n') == 1 and 'Traceback' not in bad.stderr
    assert "error: --num-classes 3 differs from the 10 classes of the pretrained weights' head" in bad.stderr
    (val / 'zebra').mkdir()
    (val / 'cat' / '0.png').rename(val / 'zebra' / '0.png')
    with pytest.raises(DataError, match=r"4 classes but the pretrained head has 10 outputs and its classes zebra "
                                         r"are not among the model's label_names") as e:
        validate(_args(['--model', model, '--pretrained', '--data-dir', val]))
    assert '--num-classes' not in str(e.value)


def test_val_classes_partly_named_like_the_model_are_refused(cifar10_test, cli_env, tmp_path):
    """CIFAR class folders with automobile/ renamed car/ were scored by sorted folder position (top1 64 instead of
    78.5, exit 0): a partial name overlap is one line naming the odd folder and the label it lacks; folders named
    by none of the label names (0..9) are still scored by sorted position, as documented."""
    import subprocess
    import sys
    model = f"local-dir:{cifar10_test.parents[1] / 'hub' / 'timm-cra' / 'cra_cifar_resnet20.cifar10'}"
    names = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck']
    val = _cifar_class_folder(cifar10_test, tmp_path / 'val', names, per_class=2)
    (val / 'automobile').rename(val / 'car')
    bad = subprocess.run([sys.executable, '-m', 'timm_cra.eval', '--model', model, '--pretrained', '--data-dir',
                          str(val), '--workers', '0', '--no-progress'], env=cli_env, capture_output=True, text=True,
                         timeout=240)
    assert bad.returncode == 2 and bad.stderr.count('\n') == 1 and 'Traceback' not in bad.stderr, bad.stderr[-2000:]
    assert "classes 'car' are not among the model's label_names" in bad.stderr
    assert "rename them to the model's names (missing from the data: 'automobile')" in bad.stderr
    for i, c in enumerate(names):  # no overlap: sorted position, the documented folder order
        (val / ('car' if c == 'automobile' else c)).rename(val / str(i))
    res = validate(_args(['--model', model, '--pretrained', '--data-dir', val]))
    assert res['count'] == 20 and 'class_mapping' not in res and res['top1'] >= 50


def _one_error_line(argv, capsys) -> str:
    """``python -m timm_cra.eval argv`` in this process: exit 2 with one ``error:`` line, returned."""
    from timm_cra.eval.validate import main
    from timm_cra.utils.errors import run_cli
    with pytest.raises(SystemExit) as e:
        run_cli(main, [str(a) for a in argv])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith('error: ') and err.count('\n') == 1, err
    return err


def test_bad_batch_size_and_model_kwargs_are_one_line(cifar10_test, tmp_path, capsys):
    """-b 0 / -b -1 and --model-kwargs bogus=1 were tracebacks (torch's ValueError, the constructor's TypeError)."""
    base = ['--model', 'cra_cifar_resnet20', '--data-dir', cifar10_test, '--split', 'test', '--num-samples', '4',
            '--workers', '0', '--no-progress']
    for b in ('0', '-1'):
        assert f'--batch-size must be a positive integer, not {b}' in _one_error_line(base + ['-b', b], capsys)
    err = _one_error_line(base + ['--model-kwargs', 'bogus=1'], capsys)
    assert "cra_cifar_resnet20 takes no argument 'bogus' (--model-kwargs" in err and 'remove it' in err
    import timm_cra
    with pytest.raises(TypeError):  # a TypeError that is not about a keyword stays a bug's traceback
        timm_cra.create_model('cra_cifar_resnet20', num_classes='ten')


@pytest.mark.parametrize('flags,needle', [
    (['--std', 'inf'], 'Non-finite values: --std inf;'),
    (['--mean', '0.5', 'nan', '0.5'], 'Non-finite values: --mean 0.5 nan 0.5;'),
    (['--crop-pct', 'nan'], 'Non-finite values: --crop-pct nan;'),
    (['--std', '0'], '--std 0.0: every value must be above 0'),
    (['--mean', '1e300'], '--mean 1e+300: every value must be from 0 to 1'),
    (['--std', '1e-300'], '--std 1e-300: every value must be from 0.001 to 1'),
    # the bounds a config.json is held to: a 0-255 mean, an input or crop resize over 4096 x 4096 pixels
    (['--mean', '125.3', '123.0', '113.9'], '--mean 125.3 123.0 113.9: every value must be from 0 to 1'),
    (['--img-size', '8000'], '--img-size 8000 must be a side in pixels from 8 to 4096 (a square input of at most '
                             '16777216 pixels)'),
    (['--input-size', '3', '8000', '8000'], '--input-size 3 8000 8000 is 64000000 pixels: at most 16777216'),
    (['--img-size', '32', '--crop-pct', '1e-6'], '--crop-pct 1e-06: timm would resize images to 32000000 x 32000000'),
    # the sides were written out in full: an 803-character line
    (['--img-size', '32', '--crop-pct', '1e-300'], '--crop-pct 1e-300: timm would resize images to 3.2e+301 x 3.2e+301 '
                                                   'px before the 32 x 32 crop'),
    (['--img-size', '32', '--crop-pct', '1e-310'], '--crop-pct 1e-310: timm would resize images to inf x inf px'),  # was
    # an OverflowError traceback (floor of inf)
    (['--crop-pct', '0'], '--crop-pct 0.0 must be in (0, 2]'),
    (['--crop-pct', '3'], '--crop-pct 3.0 must be in (0, 2]'),
    (['--img-size', '0'], '--img-size 0 must be a side in pixels from 8 to 4096'),
    (['--img-size', '-5'], '--img-size -5 must be a side in pixels from 8 to 4096'),
    (['--img-size', '100000'], '--img-size 100000 must be a side in pixels from 8 to 4096'),
    (['--input-size', '3', '0', '32'], '--input-size 3 0 32 must be channels, height, width'),
    # the trainer wrote such a side into config.json, which a load refuses (a [3, 1, 1] input scored, exit 0)
    (['--img-size', '1'], '--img-size 1 must be a side in pixels from 8 to 4096'),
    (['--input-size', '3', '32', '4'], '--input-size 3 32 4 must be channels, height, width: 1 to 1024 channels, '
                                       'the sides 8 to 8192 px'),
    (['--workers', '-1'], '--workers -1 must be 0 (load in this process) or more'),
    (['--num-samples', '-1'], '--num-samples must be a positive integer, not -1'),
    (['--num-samples', '0'], '--num-samples must be a positive integer, not 0'),
    # scored as 'center' with exit 0, and the results recorded 'bogus' as the crop that was scored
    (['--crop-mode', 'bogus'], "--crop-mode 'bogus' is not one timm knows: center, squash, border"),
    # an unset shell variable: no file and exit 0
    (['--results-file', ''], '--results-file is an empty path (an unset shell variable?)'),
    (['--results-csv', ''], '--results-csv is an empty path (an unset shell variable?)'),
    (['--interpolation', 'foo'], "--interpolation 'foo' is not one timm knows: nearest, bilinear"),
])
def test_data_flags_that_describe_no_input_are_one_line(cifar10_test, capsys, flags, needle):
    """--mean nan / --std inf scored top1 0.0 with exit 0; --crop-pct 0 was silently the model's 1.0, --num-samples
    -1 dropped the last image and 0 took all; --std 0, --crop-pct nan, --img-size 0 / -5 / 100000 and --workers -1
    were tracebacks (a MemoryError). All are refused in one line by utils.cli.check_shared_values, which train's
    parser runs too."""
    base = ['--model', 'cra_cifar_resnet20', '--pretrained', '--data-dir', cifar10_test, '--split', 'test',
            '--no-progress']
    assert needle in _one_error_line(base + flags, capsys)


def test_non_finite_mean_through_the_installed_cli(cifar10_test, tmp_path):
    """The stranger's command, as a process: exit 2, one line on stderr, nothing on stdout, no results file."""
    import subprocess
    import sys
    results = tmp_path / 'r.json'
    proc = subprocess.run([sys.executable, '-m', 'timm_cra.eval', '--model', 'cra_cifar_resnet20.cifar10',
                           '--pretrained', '--data-dir', str(cifar10_test), '--split', 'test', '--mean', 'nan',
                           '--results-file', str(results)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == '', proc.stderr[-2000:]
    assert proc.stderr.startswith('error: Non-finite values: --mean nan;') and proc.stderr.count('\n') == 1
    assert not results.exists()


def test_results_csv_that_is_not_ours_is_refused_not_appended(cifar10_test, tmp_path, capsys):
    """An existing --results-csv with another header got rows in the wrong columns, a non-UTF-8 one a traceback:
    both are refused in one line before any work, the file untouched; a CSV with validate's header gets a row."""
    base = ['--model', 'cra_cifar_resnet20', '--data-dir', cifar10_test, '--split', 'test', '--num-samples', '4',
            '--num-classes', '10', '--workers', '0', '--no-progress']
    other, binary = tmp_path / 'other.csv', tmp_path / 'binary.csv'
    other.write_text('a,b,c\n1,2,3\n')
    binary.write_bytes(b'\xff\xfe,x\n')
    err = _one_error_line(base + ['--results-csv', other], capsys)
    assert f'--results-csv {other} has another header (a,b,c) than validate\'s (model,top1,' in err
    assert 'choose another file, or one with that header' in err
    assert 'is not UTF-8 text' in _one_error_line(base + ['--results-csv', binary], capsys)
    assert other.read_text() == 'a,b,c\n1,2,3\n' and binary.read_bytes() == b'\xff\xfe,x\n'
    ours = tmp_path / 'ours.csv'
    ours.write_text(','.join(RESULT_FIELDS) + '\n')
    from timm_cra.eval.validate import main
    main([str(a) for a in base + ['--results-csv', ours]])
    rows = list(csv.reader(ours.open()))
    assert rows[0] == list(RESULT_FIELDS) and len(rows) == 2 and rows[1][0] == 'cra_cifar_resnet20'


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_local_dir_model_loads_its_weights_unless_no_pretrained(cifar_run, cifar10_test, cli_env, tmp_path):
    """validate --model local-dir:<run> without --pretrained scored random weights under the folder's name (export
    loads them by default); now both load them unless --no-pretrained, and the log says which."""
    import subprocess
    import sys
    _, out = cifar_run
    common = ['--data-dir', cifar10_test, '--split', 'test', '--num-samples', '32', '--batch-size', '16']
    with_flag = validate(_args(['--model', f'local-dir:{out}', '--pretrained'] + common))
    proc = subprocess.run([sys.executable, '-m', 'timm_cra.eval', '--model', f'local-dir:{out}', '--workers', '0',
                           '--no-progress', '--results-file', str(tmp_path / 'r.json')] + [str(a) for a in common],
                          env=cli_env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    default = json.loads((tmp_path / 'r.json').read_text())
    assert default['pretrained'] is True and with_flag['pretrained'] is True
    assert (default['top1'], default['loss']) == (with_flag['top1'], with_flag['loss'])
    random_init = validate(_args(['--model', f'local-dir:{out}', '--no-pretrained', '--num-classes', '10'] + common))
    assert random_init['loss'] != with_flag['loss'] and random_init['pretrained'] is False


def test_results_csv_with_an_unterminated_quote_is_refused_not_swallowed(tmp_path, capsys):
    """A --results-csv whose last row opens a quote it never closes: the appended row became part of that quoted
    field, so it vanished for every CSV reader, exit 0. Refused in one line naming the file, before any work; the
    file is untouched."""
    from ..conftest import REPO_ROOT
    broken = tmp_path / 'results.csv'
    text = ','.join(RESULT_FIELDS) + '\n"cra_x,1,2\n'
    broken.write_text(text)
    err = _one_error_line(['--model', 'cra_cifar_resnet20', '--data-dir', REPO_ROOT / 'data' / 'cifar10',
                           '--split', 'test', '--num-samples', '4', '--workers', '0', '--no-progress',
                           '--results-csv', broken], capsys)
    assert f'--results-csv {broken} is not a well-formed CSV (unexpected end of data at line 2' in err, err
    assert broken.read_text() == text


def test_results_name_the_split_the_data_gives_what_was_read(class_folder, cifar10_test, tmp_path):
    """``--data-dir data/train`` (a folder that is one split itself) was recorded as the 'validation' split, and
    CIFAR's test batch read as ``--split validation`` as 'validation' too; results and cards name the split as the
    data does, or none where the data is one split. A split folder given as the data is that split of its parent's
    data (recorded as a dataset called 'train', with no split, a card hid that it scored training images)."""
    import datasets
    from tests.reliability.test_data_cifar_pickle import write_cifar10
    write_cifar10(tmp_path / 'pickles')
    features = datasets.Features({'img': datasets.Image(), 'label': datasets.ClassLabel(names=['a', 'b'])})
    rows = {'img': [{'bytes': (class_folder / 'train' / 'cat' / '0.png').read_bytes(), 'path': None}] * 2,
            'label': [0, 1]}
    saved = datasets.DatasetDict({'validation': datasets.Dataset.from_dict(rows, features=features)})
    saved.save_to_disk(str(tmp_path / 'saved'))
    saved['validation'].save_to_disk(str(tmp_path / 'one_saved'))
    cases = [  # (data, --split asked, split recorded)
        (class_folder, 'validation', 'val'), (class_folder / 'train', 'validation', 'train'),
        (tmp_path / 'pickles', 'validation', 'test'), (tmp_path / 'pickles', 'train', 'train'),
        (tmp_path / 'saved', 'val', 'validation'), (tmp_path / 'one_saved', 'train', None),
        (cifar10_test, 'test', 'test'), (cifar10_test / 'test-00000-of-00001.parquet', 'validation', None)]
    for data, asked, recorded in cases:
        ds = create_dataset('', str(data), asked, num_samples=2)
        assert ds.split == recorded, (data, asked)
        assert create_dataset('', str(data), asked, num_samples=2, in_memory=True).split == recorded
    res = validate(_args(['--model', 'cifar_resnet20', '--data-dir', class_folder / 'train', '--num-classes', 3]))
    assert (res['dataset'], res['split']) == (class_folder.name, 'train')


def test_data_named_apart_from_the_model_is_scored_by_position_with_a_warning(make_image, tmp_path, caplog):
    """CIFAR-10 weights (airplane ... truck) validated on folders named in French were scored by folder position
    without a word and ``class_mapping: null``, while weights naming no classes got a warning: both say so now."""
    import logging
    from ..conftest import REPO_ROOT
    weights = REPO_ROOT / 'hub' / 'timm-cra' / 'cra_cifar_resnet20.cifar10'
    french = ['avion', 'automobile_fr', 'oiseau', 'chat', 'cerf', 'chien', 'grenouille', 'cheval', 'bateau', 'camion']
    for c in french:
        make_image(tmp_path / 'val' / c / '0.png')
    with caplog.at_level(logging.WARNING):
        res = validate(_args(['--model', f'local-dir:{weights}', '--data-dir', tmp_path, '--split', 'val']))
    assert res['class_mapping'] == 'by position' and res['count'] == 10, res
    assert "None of the dataset's classes 'automobile_fr', 'avion'" in caplog.text
    assert "class names 'airplane', 'automobile'" in caplog.text


def test_a_cfg_with_a_test_size_is_scored_at_it_as_timm_validates(cifar10_test):
    """timm's validate.py scores at a cfg's test_input_size / test_crop_pct (its --use-train-size opts out); this one
    scored the a1_in1k_gates_untrained tags at 224 / 0.95, rows of 'timm's results CSV' at another size than timm's."""
    base = ['--model', 'cra_resnet18.a1_in1k_gates_untrained', '--model-kwargs', 'layers=(1,1,1,1)', '--no-pretrained',
            '--num-classes', '10', '--data-dir', cifar10_test,
            '--split', 'test', '--num-samples', '4', '--batch-size', '4', '--workers', '0', '--no-progress']
    res = validate(_args(base))
    assert (res['img_size'], res['crop_pct']) == (288, 1.0)
    res = validate(_args(base + ['--use-train-size']))
    assert (res['img_size'], res['crop_pct']) == (224, 0.95)
    assert validate(_args(base + ['--img-size', '160']))['img_size'] == 160  # a size given wins
