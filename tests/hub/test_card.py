"""Model cards: huggingface_hub reads back the metadata timm-cra writes, with the numbers of results/."""
import json
from pathlib import Path

import pytest
import timm
import timm_cra  # noqa: F401
from huggingface_hub import ModelCard

from timm_cra.hub.card import load_eval_results, render_model_card

ROOT = Path(__file__).resolve().parents[2]
CARDS = sorted((ROOT / 'hub').glob('*/*/README.md'))


@pytest.mark.parametrize('path', CARDS, ids=lambda p: p.parent.name)
def test_committed_card_loads_with_huggingface_hub(path):
    # A model-index `source` without a URL (what measured cards used to carry) makes ModelCard.load raise.
    data = ModelCard.load(path).data
    config = json.loads((path.parent / 'config.json').read_text())
    assert data.library_name == 'timm' and data.license == (config['pretrained_cfg'].get('license') or 'unknown')
    results = load_eval_results(ROOT / 'results' / f'{path.parent.name}.json')
    assert data.model_name == path.parent.name and data.datasets == [results.dataset]
    assert [(r.metric_name, r.metric_value) for r in data.eval_results] == [
        ('Top-1 accuracy', results.top1), ('Top-5 accuracy', results.top5)]
    for r in data.eval_results:
        assert (r.task_type, r.dataset_type, r.dataset_split) == ('image-classification', results.dataset,
                                                                  results.split)
        assert r.source_url == results.source_url
        assert r.source_name == (results.source_name if results.source_url else None)


def _card(results):
    cfg = timm.get_pretrained_cfg('cra_resnet50.paper_in1k').to_dict()
    return render_model_card(model_name='cra_resnet50.test', repo_id='timm-cra/cra_resnet50.test',
                             pretrained_cfg=cfg, num_params=25_000_000, macs=4_000_000_000, results=results)


def test_card_without_results_has_no_model_index():
    card = _card(None)
    data = ModelCard(card).data.to_dict()
    assert 'model-index' not in data and 'model_name' not in data and 'datasets' not in data
    assert data['pipeline_tag'] == 'image-classification' and 'No evaluation results yet.' in card


def test_measured_result_with_url_keeps_its_source():
    results = load_eval_results({'top1': 70.125, 'dataset': 'my-org/my-data', 'split': 'test',
                                 'source_url': 'https://example.org/eval'})
    (r,) = ModelCard(_card(results)).data.eval_results  # no top-5: one metric
    assert (r.metric_value, r.dataset_name, r.dataset_split) == (70.125, 'my-org/my-data', 'test')
    assert (r.source_name, r.source_url) == ('Measured by timm-cra', 'https://example.org/eval')


def test_the_data_a_results_file_names_is_text_in_the_card_not_markup():
    """A results file's ``dataset`` / ``split`` went raw into the card's text: a newline started lines of their own
    (``license: mit``, a ``---`` line, a ``# injected`` heading), a ``](http://...)`` made a link, ``<script>`` HTML,
    ``|`` a table cell. Control characters are refused in one line naming the key; markup is shown as text."""
    from timm_cra.hub.card import RepoContentError
    for key, value in (('dataset', 'mydata\nlicense: mit\nbase_model: evil/x'), ('split', 'val\n---\n# injected'),
                       ('dataset', 'data\x1b[31m')):
        with pytest.raises(RepoContentError, match=rf"'{key}' .* holds a control character .*: name the data in "
                                                   rf"printable text") as e:
            load_eval_results({'top1': 99.0, key: value})
        assert '\n' not in str(e.value)
    results = load_eval_results({'top1': 99.0, 'dataset': 'data](http://evil.example) <script>x</script> |',
                                 'split': 'val | 99.9 | *bold* `code`'})
    body = _card(results).split('---', 2)[2]
    line = next(ln for ln in body.splitlines() if ln.startswith('Measured by timm-cra on'))
    assert line == ('Measured by timm-cra on data\\](http://evil.example) &lt;script&gt;x&lt;/script&gt; \\| '
                    '(val \\| 99.9 \\| \\*bold\\* \\`code\\`).')
    assert 'Measured by timm-cra on CIFAR-10 (test, 3 images).' in _card(
        load_eval_results({'top1': 9.0, 'dataset': 'cifar10', 'split': 'test', 'count': 3}))


def test_a_count_of_more_images_than_any_dataset_is_refused():
    """``count`` 10**30 was printed on the card as the images scored; bounded by what any dataset holds."""
    from timm_cra.hub.card import MAX_IMAGES_SCORED, RepoContentError
    assert load_eval_results({'top1': 9.0, 'count': MAX_IMAGES_SCORED}).count == MAX_IMAGES_SCORED
    with pytest.raises(RepoContentError, match=r"'count' \(images scored\) 1e\+30 is more images than any dataset "
                                               r"holds \(at most 10,000,000,000\)"):
        load_eval_results({'top1': 9.0, 'count': 10 ** 30})


def test_results_scored_by_position_say_so_on_the_card(tmp_path):
    """validate of a model on data named apart from its classes warns and records class_mapping 'by position'; the
    card published from those results showed the number (9.6% for translated names in another order) alone."""
    from timm_cra.hub.card import BY_POSITION_NOTE, load_eval_results
    path = tmp_path / 'r.json'
    path.write_text(json.dumps({'top1': 9.6, 'dataset': 'val_trans', 'split': 'val', 'class_mapping': 'by position'}))
    assert load_eval_results(str(path)).notes == BY_POSITION_NOTE
    path.write_text(json.dumps({'top1': 9.6, 'notes': 'Mine.', 'class_mapping': 'by position'}))
    assert load_eval_results(str(path)).notes == f'Mine. {BY_POSITION_NOTE}'
    path.write_text(json.dumps({'top1': 9.6, 'class_mapping': "by name: the dataset's 3 classes onto the model's 10"}))
    assert load_eval_results(str(path)).notes is None
