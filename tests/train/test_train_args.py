"""Trainer arguments: timm flag names, YAML configs (defaults) vs CLI (overrides), bundled recipes."""
import pytest
import timm
import torch

from timm_cra.data import UsageError
from timm_cra.train import create_optimizer, create_scheduler, list_recipes, parse_args


def test_recipes_bundled_and_parse():
    assert {'paper_imagenet', 'timm_modern', 'cifar', 'finetune'} <= set(list_recipes())
    for name in list_recipes():
        parse_args(['--config', name])


def test_paper_recipe_values():
    a = parse_args(['--config', 'paper_imagenet'])
    assert (a.epochs, a.batch_size, a.opt, a.lr, a.momentum, a.weight_decay) == (100, 256, 'sgd', 0.1, 0.9, 1e-4)
    assert (a.sched, a.decay_epochs, a.decay_rate, a.warmup_epochs) == ('step', 30, 0.1, 0)
    assert a.img_size == 224 and a.color_jitter == 0 and a.aa is None and a.smoothing == 0
    assert a.mixup == 0 and a.cutmix == 0 and not a.bce_loss
    assert (a.interpolation, a.crop_pct) == ('bicubic', 0.875)  # resize 256 -> crop 224
    assert a.filter_bias_and_bn is False


def test_cli_overrides_config(tmp_path):
    cfg = tmp_path / 'c.yaml'
    cfg.write_text('lr: 0.5\nepochs: 7\nmodel-ema: true\n')
    a = parse_args(['--config', str(cfg), '--lr', '0.01'])
    assert a.lr == 0.01 and a.epochs == 7 and a.model_ema is True
    assert parse_args(['--config', 'paper_imagenet', '--filter-bias-and-bn']).filter_bias_and_bn is True


def test_bad_configs(tmp_path):
    cfg = tmp_path / 'c.yaml'
    cfg.write_text('learning_rate: 0.5\n')
    with pytest.raises(UsageError, match='unknown keys: learning_rate'):
        parse_args(['--config', str(cfg)])
    with pytest.raises(UsageError, match='neither a file nor a bundled recipe'):
        parse_args(['--config', 'no_such_recipe'])


def test_paper_recipe_decays_all_params():
    model = timm.create_model('cra_resnet18', layers=(1, 1, 1, 1), num_classes=10)
    n_params = sum(1 for _ in model.parameters())
    opt = create_optimizer(model, parse_args(['--config', 'paper_imagenet']))
    assert sum(len(g['params']) for g in opt.param_groups) == n_params
    assert all(g['weight_decay'] == 1e-4 for g in opt.param_groups)
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]['momentum'] == 0.9
    # timm's default exempts biases and norm weights -- the reason the recipe turns the filter off.
    timm_default = create_optimizer(model, parse_args(['--weight-decay', '1e-4']))
    assert {g['weight_decay'] for g in timm_default.param_groups} == {0.0, 1e-4}


def test_paper_recipe_lr_per_epoch():
    args = parse_args(['--config', 'paper_imagenet'])
    model = torch.nn.Linear(2, 2)
    opt = create_optimizer(model, args)
    sched, num_epochs = create_scheduler(opt, args, updates_per_epoch=10)
    assert num_epochs == 100
    lrs = []
    for epoch in range(num_epochs):  # the trainer's order: lr of epoch e, then step(e + 1) at its end
        lrs.append(opt.param_groups[0]['lr'])
        sched.step(epoch + 1)
    expected = [0.1] * 30 + [0.01] * 30 + [0.001] * 30 + [0.0001] * 10  # torch MultiStepLR([30, 60, 90])
    assert lrs == pytest.approx(expected)
