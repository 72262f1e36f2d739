"""The CIFAR campaign runner: one record per finished run, skip finished runs, resume from last.pth."""
import json

import pytest

from tools.cifar_campaign import CIFAR_VARIANTS, campaign_argv, run_campaign, run_one

# a slice of the repository's CIFAR-10 test split (data/cifar10) stands in for the training split
SLICE = ['--train-num-samples', '256', '--val-num-samples', '128', '--batch-size', '64', '--train-split', 'test']


def test_campaign_argv_one_recipe_for_all_variants():
    a = campaign_argv('resnet20', 0, 'D', 'O')
    b = campaign_argv('cra_max4_resnet20', 0, 'D', 'O')
    assert a[a.index('--epochs') + 1] == b[b.index('--epochs') + 1]
    assert b[-2:] == ['--model-kwargs', 'cra_pool_size=4']
    assert a[a.index('--config') + 1] == 'cifar'


def test_unknown_variant_and_missing_data(tmp_path):
    with pytest.raises(ValueError, match='Unknown campaign variants'):
        run_campaign(['nope'], [0], str(tmp_path), str(tmp_path), str(tmp_path))
    with pytest.raises(FileNotFoundError, match='--data-dir'):
        run_campaign(['resnet20'], [0], str(tmp_path / 'missing'), str(tmp_path), str(tmp_path))


def test_run_one_writes_record_and_skips_finished(cifar10_test, tmp_path):
    results = tmp_path / 'results'
    rec = run_one('cra_max4_resnet20', 3, str(cifar10_test), str(tmp_path / 'out'), str(results), epochs=1,
                  extra_args=SLICE)
    saved = json.loads((results / 'cra_max4_resnet20-s3.json').read_text())
    assert saved == json.loads(json.dumps(rec))
    assert saved['epochs'] == 1 and len(saved['curve']) == 1
    assert saved['model_kwargs'] == {'cra_pool_size': 4}
    assert saved['params'] == 272_474 + 17 * 16 * 3 + 17 * 32 * 3 + 17 * 64 * 3
    assert 0 <= saved['final_top1'] <= 100 and 'cifar' in saved['command']
    assert set(CIFAR_VARIANTS) >= {saved['variant']}
    # A finished run is not trained again.
    assert run_one('cra_max4_resnet20', 3, str(cifar10_test), str(tmp_path / 'out'), str(results), epochs=1,
                   extra_args=SLICE) is None


def test_a_run_another_process_trains_is_skipped(cifar10_test, tmp_path, capsys):
    """Two campaign processes over the same seeds: the one that finds a run's folder held goes on to the next run
    instead of failing on the trainer's refusal; the run is not recorded by it."""
    from timm_cra.utils.io import locked_folder
    out, results = tmp_path / 'out', tmp_path / 'results'
    with locked_folder(str(out / 'resnet20-s0'), wait=False):  # the trainer's lock, as another process holds it
        assert run_campaign(['resnet20'], [0], str(cifar10_test), str(out), str(results), epochs=1) == []
    assert 'resnet20-s0: skipped, another process' in capsys.readouterr().err
    assert not (results / 'resnet20-s0.json').exists()
