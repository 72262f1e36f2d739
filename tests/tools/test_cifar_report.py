"""Campaign summaries: mean/std over seeds, the markdown table, and the plots."""
import json
import math
import re

import pytest
import timm

import timm_cra  # noqa: F401
from tools import cifar_report, publish_cifar
from tools.cifar_report import (block_name, campaign_context, campaign_table, convergence_sentence, load_records,
                                plot_curves, plot_kernels, results_markdown, stage_kernels, student_t_p, summarize,
                                welch_t)
from tools.publish_cifar import MAIN_JOB_TAG, campaign_numbers_text, reproduce_text, tag_recipe
from tools.doc_blocks import ROOT, doc_files


def _record(variant, seed, top1, model='cifar_resnet20', kwargs=None, epochs=2):
    curve = [dict(epoch=e, eval_top1=top1 - 10 * (epochs - 1 - e), train_loss=1.0 / (e + 1)) for e in range(epochs)]
    return dict(variant=variant, seed=seed, model=model, model_kwargs=kwargs or {}, final_top1=top1, params=1000,
                macs=2_000_000, epochs=epochs, train_img_s_median=100.0 + seed, curve=curve,
                command=f'timm-cra-train --config cifar --model {model} --seed {seed} --epochs {epochs}')


@pytest.mark.parametrize('t, df, p', [(2.776445, 4, 0.05), (12.7062, 1, 0.05), (-3.169273, 10, 0.01),
                                      (2.0, 10, 0.0733880348), (1.959964, 1e6, 0.05), (0.0, 3, 1.0),
                                      (1.5, 2, 1 - 1.5 / math.sqrt(2 + 1.5 ** 2))])
def test_the_p_value_is_students_two_sided_tail(t, df, p):
    # Student's t table values; df need not be whole (Welch's rarely is). df = 2: p = 1 - t / sqrt(2 + t^2) exactly.
    assert student_t_p(t, df) == pytest.approx(p, rel=1e-5)


def test_welch_unequal_variances_and_refusals():
    w = welch_t([84.40, 84.23, 84.21], [82.91, 83.01, 83.01])  # the 15-epoch resnet20 vs CRA 4x4 seeds
    assert w['diff'] == pytest.approx(1.3033333) and w['t'] == pytest.approx(18.93, abs=0.01)
    assert w['df'] == pytest.approx(3.119, abs=0.001) and 1e-4 < w['p'] < 1e-3
    assert welch_t([1.0, 1.0], [1.0, 1.0])['p'] == 1.0
    with pytest.raises(ValueError, match='two seeds'):
        welch_t([1.0], [1.0, 2.0])


def test_summarize_mean_std_in_campaign_order():
    recs = [_record('cra_max4_resnet20', 1, 91.0, 'cra_cifar_resnet20', {'cra_pool_size': 4}),
            _record('resnet20', 0, 90.0), _record('resnet20', 1, 92.0),
            _record('cra_max4_resnet20', 0, 89.0, 'cra_cifar_resnet20', {'cra_pool_size': 4})]
    rows = summarize(recs)
    assert [r['variant'] for r in rows] == ['resnet20', 'cra_max4_resnet20']
    assert rows[0]['top1_mean'] == 91.0 and rows[0]['top1_std'] == pytest.approx(math.sqrt(2))
    assert rows[1]['top1'] == [89.0, 91.0]
    md = results_markdown(rows)
    assert '| resnet20 | `cifar_resnet20` | 91.00 ± 1.41 | 2 | 90.00, 92.00 |' in md
    assert '`cra_cifar_resnet20` (cra_pool_size=4)' in md
    single = results_markdown(summarize([_record('resnet20', 0, 90.0)]))
    assert '90.00 (1 seed)' in single


def test_campaign_context_for_a_card():
    cra = dict(model='cra_cifar_resnet20', kwargs={'cra_pool_size': 4})
    rows = summarize([_record('resnet20', 0, 90.0), _record('resnet20', 1, 92.0),
                      _record('cra_max4_resnet20', 0, 89.0, **cra), _record('cra_max4_resnet20', 1, 90.0, **cra)])
    text = campaign_context(rows, 'cra_max4_resnet20', 1)
    assert text.startswith('This is seed 1 of 2 runs of the same recipe (`cra_cifar_resnet20` (cra_pool_size=4): '
                           '89.50 ± 0.71% top-1')
    assert 'per seed 89.00, 90.00' in text and '`cifar_resnet20` 91.00 ± 1.41' in text
    assert 'Against the ungated `cifar_resnet20`: -1.50 points (means).' in text
    base = campaign_context(rows, 'resnet20', 0)
    assert 'Against the ungated' not in base and '`cra_cifar_resnet20` (cra_pool_size=4) 89.50 ± 0.71' in base
    with pytest.raises(ValueError, match='se_resnet20'):
        campaign_context(rows, 'se_resnet20', 0)


def test_plots_are_written(tmp_path):
    recs = [_record('resnet20', 0, 90.0), _record('resnet20', 1, 92.0)]
    plot_curves(recs, str(tmp_path / 'curves.png'))
    model = timm.create_model('cra_cifar_resnet20', cra_pool_size=4)
    kernels = stage_kernels(model)
    assert list(kernels) == ['layer1', 'layer2', 'layer3'] and kernels['layer1'].shape == (4, 4)
    plot_kernels(model, str(tmp_path / 'k.png'))
    for name in ('curves.png', 'k.png'):
        assert (tmp_path / name).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_a_campaign_table_carries_welch_and_the_twice_the_epochs_check(tmp_path):
    e50, e100 = tmp_path / 'cifar10-e50', tmp_path / 'cifar10-e100'
    e50.mkdir()
    cra = dict(model='cra_cifar_resnet20', kwargs={'cra_pool_size': 4})
    for rec in [_record('resnet20', 0, 90.0, epochs=4), _record('resnet20', 1, 90.4, epochs=4),
                _record('cra_max4_resnet20', 0, 90.5, epochs=4, **cra),
                _record('cra_max4_resnet20', 1, 90.9, epochs=4, **cra)]:
        (e50 / f"{rec['variant']}-s{rec['seed']}.json").write_text(json.dumps(rec))
    (e50 / 'jpeg-gap.json').write_text('{}')  # other results beside the records are not records
    assert block_name(e50) == 'cifar-e50-table' and block_name(tmp_path / 'cifar10') == 'cifar-table'
    table = campaign_table(e50)
    assert '| cra_max4_resnet20 |' in table and '| +0.50 (t = 1.8, df = 2.0, p = 0.219) |' in table
    assert 'Twice-the-epochs' not in table
    e100.mkdir()
    (e100 / 'resnet20-s0.json').write_text(json.dumps(_record('resnet20', 0, 90.2, epochs=8)))
    table = campaign_table(e50)
    assert '| resnet20 | 0 | 4 | 90.00 | 8 | 90.20 | +0.20 | converged (gain < 0.3) |' in table
    (e100 / 'resnet20-s0.json').write_text(json.dumps(_record('resnet20', 0, 91.0, epochs=8)))
    assert '| +1.00 | not converged (gain ≥ 0.3) |' in campaign_table(e50)
    # a record of another budget or recipe there read as the check ("4 -> 2 epochs, converged")
    for other, differ in ((_record('resnet20', 0, 50.0, epochs=2), r'epochs 2 \(twice 4 is 8\)'),
                          (dict(_record('resnet20', 0, 91.0, epochs=8), model_kwargs={'drop_rate': 0.5}), 'model'),
                          (dict(_record('resnet20', 0, 91.0, epochs=8),
                                command='timm-cra-train --config cifar --seed 0 --epochs 8 --lr 0.4'),
                           'training command')):
        (e100 / 'resnet20-s0.json').write_text(json.dumps(other))
        with pytest.raises(ValueError, match=rf'the resnet20 seed 0 record of \d+ epochs is not the same recipe at '
                                             rf'twice the epochs of its 4-epoch run \({differ} differ\)'):
            campaign_table(e50)
    (e100 / 'resnet20-s0.json').write_text(json.dumps(_record('resnet20', 0, 91.0, epochs=8)))
    plot_curves([json.loads(p.read_text()) for p in sorted(e50.glob('*-s*.json'))], str(tmp_path / 'c.png'),
                [json.loads((e100 / 'resnet20-s0.json').read_text())])
    assert (tmp_path / 'c.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_docs_cifar_tables_match_the_results_files():
    # Every campaign block in README.md / docs/*.md is what tools/cifar_report.py renders from the records of
    # the results folder it is named after.
    blocks = [(doc, name, block) for doc in doc_files() for name, block in
              re.findall(r'<!-- (cifar[\w-]*-table):start -->\n(.*?)<!-- \1:end -->', doc.read_text(), re.S)]
    assert 'cifar-table' in [name for _, name, _ in blocks]
    for doc, name, block in blocks:
        results = ROOT / 'results' / ('cifar10' + name[len('cifar'):-len('-table')])
        assert block_name(results) == name
        assert campaign_table(results) == block, (
            f'{doc.relative_to(ROOT)} {name} is stale: run python tools/cifar_report.py --results '
            f'{results.relative_to(ROOT)} --update-docs')


def test_a_card_states_the_twice_the_epochs_check():
    records = [_record('resnet20', 0, 88.20, epochs=50), _record('resnet20', 1, 88.14, epochs=50)]
    assert convergence_sentence(records, []) == ''
    assert convergence_sentence(records, [_record('resnet20', 2, 89.0, epochs=100)]) == ''  # no seed to compare
    text = convergence_sentence(records, [_record('resnet20', 0, 88.82, epochs=100)])
    assert text == ('The same recipe at twice the epochs (100): `cifar_resnet20` seed 0 88.20% -> 88.82% (+0.62); '
                    'a gain under 0.3 points counts as converged, so 50 epochs are not converged.')
    assert convergence_sentence(records, [_record('resnet20', 1, 88.3, epochs=100)]).endswith(
        'so 50 epochs are converged.')


def test_a_card_says_how_to_reproduce_it_and_which_evaluation_the_campaign_used():
    assert 'python scripts/validate.py` in the timm-cra repository (no arguments)' in reproduce_text(MAIN_JOB_TAG)
    other = reproduce_text('cra_cifar_resnet20.cifar10_e50')
    assert ('`python scripts/validate.py --model local-dir:hub/timm-cra/cra_cifar_resnet20.cifar10_e50 --pretrained '
            '--data-dir data/cifar10 --split test`') in other
    record = dict(final_top1=88.10, command='timm-cra-train --config cifar --amp --smoothing 0.1')
    assert campaign_numbers_text(record, 88.10) == ''
    text = campaign_numbers_text(record, 88.17)
    assert 'under bfloat16 autocast' in text and '88.10% there and 88.17% in float32' in text
    assert 'autocast' not in campaign_numbers_text(dict(record, command='timm-cra-train --config cifar'), 88.17)


def test_the_tag_names_the_campaign_it_publishes(capsys):
    """--tag cifar10_e50 without --recipe published the e15 run's weights under the e50 tag (exit 0); the tag now
    names the campaign, and a --recipe that disagrees is refused before anything is read or written."""
    assert tag_recipe('cifar10') == 'e15' and tag_recipe('cifar10_e50') == 'e50'
    assert tag_recipe('cifar10_e100') == 'e100'
    for bad in ('cifar10_e7', 'imagenet', 'cifar10_'):
        with pytest.raises(ValueError, match='names no campaign'):
            tag_recipe(bad)
    with pytest.raises(SystemExit) as e:
        publish_cifar.main(['cra_max4_resnet20', '0', '--tag', 'cifar10_e50', '--recipe', 'e15'])
    assert e.value.code == 2 and 'names the e50 campaign, not --recipe e15' in capsys.readouterr().err


def test_a_run_recorded_twice_is_refused_and_a_missing_block_writes_nothing(tmp_path):
    e50 = tmp_path / 'cifar10-e50'
    e50.mkdir()
    for name, seed in (('resnet20-s0', 0), ('resnet20-s1', 1)):
        (e50 / f'{name}.json').write_text(json.dumps(_record('resnet20', seed, 90.0 + seed)))
    assert len(load_records(str(e50))) == 2
    with pytest.raises(SystemExit):  # no doc block cifar-e50-table for a folder outside the repository's results
        cifar_report.main(['--results', str(tmp_path / 'cifar10-e7'), '--update-docs'])
    (tmp_path / 'cifar10-e7').mkdir()
    (tmp_path / 'cifar10-e7' / 'resnet20-s0.json').write_text(json.dumps(_record('resnet20', 0, 90.0)))
    with pytest.raises(SystemExit):
        cifar_report.main(['--results', str(tmp_path / 'cifar10-e7'), '--update-docs'])
    assert sorted(p.name for p in (tmp_path / 'cifar10-e7').iterdir()) == ['resnet20-s0.json']
    (e50 / 'resnet20-s0-copy.json').write_text(json.dumps(_record('resnet20', 0, 89.0)))
    with pytest.raises(ValueError, match=r'resnet20-s0-copy.json is not a campaign record: it records resnet20 seed '
                                         r'0, not what its name says'):
        load_records(str(e50))


def test_a_run_folder_must_be_the_run_its_record_describes(tmp_path):
    """--runs pointed the e50 record at the e100 run's folder (or one seed's record at another seed's weights): its
    weights were published under the record's card, exit 0. The folder's own results.json and args.yaml must agree."""
    from timm_cra.utils.errors import UsageError
    record = dict(model='cifar_resnet20', model_kwargs={}, seed=0, epochs=50, final_top1=88.2)
    run = tmp_path / 'resnet20-s0'
    run.mkdir()

    def write(seed, epochs, top1):
        (run / 'results.json').write_text(json.dumps(dict(model='cifar_resnet20', epochs=epochs,
                                                          final=dict(eval_top1=top1))))
        (run / 'args.yaml').write_text(f'seed: {seed}\nmodel: cifar_resnet20\n')

    write(0, 50, 88.2)
    publish_cifar.check_run_is_the_record(run, record)
    write(0, 100, 88.82)
    with pytest.raises(UsageError, match=r'is not the run of its campaign record: epochs 100 \(the record: 50\); '
                                         r'final_top1 88.82 \(the record: 88.2\)'):
        publish_cifar.check_run_is_the_record(run, record)
    write(2, 50, 87.35)
    with pytest.raises(UsageError, match=r'seed 2 \(the record: 0\)'):
        publish_cifar.check_run_is_the_record(run, record)
    (run / 'results.json').unlink()
    with pytest.raises(UsageError, match="results.json"):
        publish_cifar.check_run_is_the_record(run, record)


def test_only_a_registered_tag_with_a_record_is_published():
    from timm_cra.utils.errors import UsageError
    with pytest.raises(UsageError, match='cifar_resnet20.cifar10_e100 is not a registered weight tag'):
        publish_cifar.main(['resnet20', '0', '--tag', 'cifar10_e100'])  # its record exists, its tag does not
    with pytest.raises(UsageError, match='No campaign record .*resnet20-s9.json'):
        publish_cifar.main(['resnet20', '9', '--tag', 'cifar10_e50'])


@pytest.mark.parametrize('edit, problem', [
    (lambda r: r.update(final_top1=float('nan')), "'final_top1' must be a percentage, not nan"),
    (lambda r: r.update(final_top1='88.2'), "'final_top1' must be a percentage, not '88.2'"),
    (lambda r: r.update(seed=True), "'seed' must be a seed"),
    (lambda r: r.pop('params'), "'params' must be a count (under 10**15), not None"),
    (lambda r: r.update(macs=10 ** 400), "'macs' must be a count (under 10**15)"),  # an OverflowError traceback
    (lambda r: r.update(variant='resnet21'), "'variant' must be a campaign variant"),
    (lambda r: r.update(model='x|y\n|evil'), "'model' must be a registered architecture name"),  # broke the table
    (lambda r: r.update(variant='cra_max4_resnet20'), 'it records cra_max4_resnet20 seed 0, not what its name says'),
    (lambda r: r['curve'][0].update(eval_top1=[]), "'curve' must be a list of"),
    (lambda r: r.update(curve=[]), "'curve' must be a list of"),
    (lambda r: [c.update(eval_top1=None) for c in r['curve']], "'curve' must be a list of"),  # a plot TypeError
    (lambda r: r['curve'][-1].update(eval_top1=80.0), "'curve' must be a list of"),  # not the final top-1
    (lambda r: r.pop('command'), "'command' must be the training command"),  # publish: a KeyError after validating
    (lambda r: r.update(command='train "--seed 0'), "'command' must be the training command"),
])
def test_an_unusable_campaign_record_is_one_line_naming_it(tmp_path, capsys, edit, problem):
    """An edited or truncated record was a traceback (a TypeError in statistics, a KeyError in a table); it is one
    line naming the file, from the report and from publish (which reads it before validating anything)."""
    e50 = tmp_path / 'cifar10-e50'
    e50.mkdir()
    record = _record('resnet20', 0, 90.0)
    edit(record)
    path = e50 / 'resnet20-s0.json'
    path.write_text(json.dumps(record))
    with pytest.raises(ValueError) as info:
        load_records(str(e50))
    message = str(info.value)
    assert message.startswith(f'{path} is not a campaign record: {problem}') and '\n' not in message
    assert 'Re-run tools/cifar_campaign.py' in message
    with pytest.raises(SystemExit):
        cifar_report.main(['--results', str(e50)])
    assert problem in capsys.readouterr().err
    assert sorted(p.name for p in e50.iterdir()) == ['resnet20-s0.json']  # nothing written


def test_a_truncated_campaign_record_is_one_line(tmp_path, monkeypatch):
    from timm_cra.utils.errors import UsageError
    results = tmp_path / 'results' / 'cifar10-e50'
    results.mkdir(parents=True)
    path = results / 'resnet20-s0.json'
    path.write_text(json.dumps(_record('resnet20', 0, 90.0))[:40])
    with pytest.raises(ValueError, match=r'campaign record .*resnet20-s0.json.*Re-run tools/cifar_campaign.py') as e:
        cifar_report.read_record(path)
    assert '\n' not in str(e.value)
    monkeypatch.setattr(publish_cifar, 'ROOT', tmp_path)  # publish reads the record before anything else
    with pytest.raises(UsageError, match='resnet20-s0.json') as e:
        publish_cifar.main(['resnet20', '0', '--tag', 'cifar10_e50'])
    assert '\n' not in str(e.value) and sorted(p.name for p in tmp_path.rglob('*')) == [
        'cifar10-e50', 'resnet20-s0.json', 'results']


def test_a_record_of_another_recipe_or_budget_is_not_averaged_in(tmp_path):
    """A 50-epoch record copied into the 15-epoch campaign as one more seed was averaged in ("85.26 +- 1.96, 4 seeds,
    epochs 15") and a card quoted it as the same recipe: one results folder holds one recipe's runs."""
    e15 = tmp_path / 'cifar10'
    e15.mkdir()
    for seed in (0, 1):
        (e15 / f'resnet20-s{seed}.json').write_text(json.dumps(_record('resnet20', seed, 84.0 + seed)))
    assert len(load_records(str(e15))) == 2
    other = _record('resnet20', 3, 88.2, epochs=3)
    (e15 / 'resnet20-s3.json').write_text(json.dumps(other))
    with pytest.raises(ValueError, match=r'resnet20-s3.json is not of the campaign of .*resnet20-s0.json \(its '
                                         r'epochs and training command differ\)'):
        load_records(str(e15))
    other = _record('resnet20', 3, 88.2)
    other['command'] += ' --amp --smoothing 0.1'  # same epochs, another recipe
    (e15 / 'resnet20-s3.json').write_text(json.dumps(other))
    with pytest.raises(ValueError, match=r'its training command differ'):
        load_records(str(e15))
    other = _record('resnet20', 3, 88.2, kwargs={'drop_rate': 0.2})
    (e15 / 'resnet20-s3.json').write_text(json.dumps(other))
    with pytest.raises(ValueError, match='its model of resnet20 differ'):
        load_records(str(e15))
    # what differs between runs is not the recipe: seed, run name, the variant's model and kwargs, the program
    assert cifar_report.recipe_of('python scripts/train.py --config cifar --model m --seed 1 --experiment x-s1 '
                                  '--epochs 15 --model-kwargs cra_pool_size=4') == \
        cifar_report.recipe_of('timm-cra-train --config cifar --model n --seed 2 --experiment y-s2 --epochs 15')


def test_the_report_writes_nothing_when_an_output_is_not_a_file(tmp_path, capsys):
    """summary.json as a FIFO blocked the report for ever, after summary.md had been rewritten."""
    import os
    e50 = tmp_path / 'cifar10-e50'
    e50.mkdir()
    for seed in (0, 1):
        (e50 / f'resnet20-s{seed}.json').write_text(json.dumps(_record('resnet20', seed, 84.0 + seed)))
    (e50 / 'summary.md').write_text('old')
    os.mkfifo(e50 / 'summary.json')
    with pytest.raises(SystemExit):
        cifar_report.main(['--results', str(e50)])
    assert 'summary.json' in capsys.readouterr().err
    assert (e50 / 'summary.md').read_text() == 'old' and not (e50 / 'curves.png').exists()
    os.unlink(e50 / 'summary.json')
    cifar_report.main(['--results', str(e50)])
    assert json.loads((e50 / 'summary.json').read_text())[0]['seeds'] == [0, 1]
    assert (e50 / 'curves.png').read_bytes()[:4] == b'\x89PNG' and (e50 / 'summary.md').read_text() != 'old'
    assert sorted(p.name for p in e50.iterdir()) == ['curves.png', 'resnet20-s0.json', 'resnet20-s1.json',
                                                      'summary.json', 'summary.md']  # no temp file left
