"""Campaign summaries: mean/std over seeds, the markdown table, and the plots."""
import math

import pytest
import timm

import timm_cra  # noqa: F401
from tools.cifar_report import (campaign_context, plot_curves, plot_kernels, results_markdown, stage_kernels,
                                summarize)


def _record(variant, seed, top1, model='cifar_resnet20', kwargs=None):
    return dict(variant=variant, seed=seed, model=model, model_kwargs=kwargs or {}, final_top1=top1, params=1000,
                macs=2_000_000, epochs=2, train_img_s_median=100.0 + seed,
                curve=[dict(epoch=0, eval_top1=top1 - 10, train_loss=1.0), dict(epoch=1, eval_top1=top1, train_loss=0.5)])


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
