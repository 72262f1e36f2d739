"""Repo folder export: safetensors + JSON-clean config + model card; atomic; loads back bit-identically."""
import json

import pytest
import torch
import yaml

import timm
import timm_cra  # noqa: F401
from timm.models import PretrainedCfg
from timm_cra.hub import repo as repo_mod
from timm_cra.hub.card import load_eval_results
from timm_cra.hub.repo import export_repo


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    return timm.create_model('cra_mobilenetv2_050', num_classes=7, in_chans=1).eval()


def test_export_loads_back_bit_identical(model, tmp_path):
    out = export_repo(model, tmp_path / 'r', model_name='cra_mobilenetv2_050.test_gray7',
                      results={'top1': 80.5, 'top5_err': 1.25, 'dataset': 'cifar10', 'split': 'test'},
                      recipe='SGD, 3 epochs')
    assert sorted(p.name for p in out.iterdir()) == ['README.md', 'config.json', 'model.safetensors']
    config = json.loads((out / 'config.json').read_text())
    PretrainedCfg(**config['pretrained_cfg'])
    assert config['pretrained_cfg']['tag'] == 'test_gray7' and config['model_args']['in_chans'] == 1

    loaded = timm.create_model(f'local-dir:{out}', pretrained=True)
    assert loaded.num_classes == 7 and loaded.conv_stem.in_channels == 1
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k

    card = (out / 'README.md').read_text()
    front = yaml.safe_load(card.split('---\n')[1])
    assert front['library_name'] == 'timm' and front['license'] == 'apache-2.0'
    assert {'image-classification', 'timm', 'cra'} <= set(front['tags']) and front['datasets'] == ['cifar10']
    metrics = front['model-index'][0]['results'][0]['metrics']
    assert [m['value'] for m in metrics] == [80.5, 98.75]
    assert 'SGD, 3 epochs' in card and 'import timm_cra' in card and '2010.05605' in card
    assert "hf-hub:timm-cra/cra_mobilenetv2_050.test_gray7" in card


def test_export_is_atomic(model, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError('disk full')
    monkeypatch.setattr(repo_mod, 'write_repo_metadata', boom)
    with pytest.raises(RuntimeError, match='disk full'):
        export_repo(model, tmp_path / 'r')
    assert list(tmp_path.iterdir()) == []  # neither the folder nor a hidden temp folder


def test_existing_folder_needs_overwrite(model, tmp_path):
    (tmp_path / 'r').mkdir()
    with pytest.raises(FileExistsError, match='overwrite=True'):
        export_repo(model, tmp_path / 'r')


def test_bad_results_are_named(tmp_path):
    path = tmp_path / 'res.json'
    path.write_text('{"acc": 3}')
    with pytest.raises(ValueError, match="need 'top1'"):
        load_eval_results(path)


@pytest.mark.parametrize('pool, model_args', [(4, None), (7, {'cra_pool_size': 7})])
def test_model_args_keep_only_what_the_architecture_does_not_build_by_default(tmp_path, pool, model_args):
    """A run trained with an entrypoint default spelled out (--model-kwargs cra_pool_size=4) publishes the config
    tools/generate_hub.py writes for the registered tag: the same model, one config.json; another value stays and
    builds the same model back."""
    model = timm.create_model('cra_cifar_resnet20', cra_pool_size=pool).eval()
    out = export_repo(model, tmp_path / 'r', model_name='cra_cifar_resnet20.pool_test')
    config = json.loads((out / 'config.json').read_text())
    assert config.get('model_args') == model_args
    loaded = timm.create_model(f'local-dir:{out}', pretrained=True)
    assert loaded.layer3[0].se.pool_size == model.layer3[0].se.pool_size


def test_a_model_its_config_does_not_rebuild_is_refused_before_anything_is_written(tmp_path):
    """retrofit_cra(resnet18) keeps resnet18's cfg: its repo said architecture resnet18 beside weights with CRA
    gates, which timm, hf-hub: and transformers all failed to load. Refused, nothing written, naming the
    architecture the weights are; saved as that architecture, it loads back."""
    from timm_cra.hub.card import RepoContentError
    from timm_cra.hub.repo import save_model_files
    from timm_cra.models import retrofit_cra
    retrofitted = retrofit_cra(timm.create_model('resnet18', num_classes=3))
    with pytest.raises(RepoContentError, match=r"names architecture 'resnet18' .*not built by it: layer1.0.se.conv"
                                               r".*\(16\)\); no reader could load the repo .*create_model\('cra_resnet18'"):
        export_repo(retrofitted, tmp_path / 'r', model_name='resnet18.mine')
    with pytest.raises(RepoContentError, match="names architecture 'resnet18'"):
        save_model_files(retrofitted, tmp_path / 'run')
    assert not (tmp_path / 'r').exists() and not any((tmp_path / 'run').iterdir())
    model = timm.create_model('cra_resnet18', num_classes=3)
    model.load_state_dict(retrofitted.state_dict())
    out = export_repo(model, tmp_path / 'r', model_name='cra_resnet18.mine')
    loaded = timm.create_model(f'local-dir:{out}', pretrained=True)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in retrofitted.state_dict().items())


def test_a_model_whose_modules_compute_otherwise_than_its_config_builds_is_refused(tmp_path):
    """Same tensors, other computation: retrofit_cra(..., pool_type='avg') on a cra_resnet18 exported a config.json
    naming cra_resnet18 without model_args, so every reader pooled by max (logits off by 5e-4 here, 5.6e17 on a
    cra_cifar_resnet20). Refused, naming the module; built with its keywords, it exports."""
    from timm_cra.hub.card import RepoContentError
    from timm_cra.models import retrofit_cra
    changed = retrofit_cra(timm.create_model('cra_resnet18', num_classes=3), pool_type='avg')
    with pytest.raises(RepoContentError, match=r"module 'layer1.0.se' is CraAttn\(.*pool_type='avg'.*builds "
                                               r"CraAttn\(.*pool_type='max'"):
        export_repo(changed, tmp_path / 'r', model_name='cra_resnet18.mine')
    assert not (tmp_path / 'r').exists()
    export_repo(timm.create_model('cra_cifar_resnet20', cra_pool_type='avg'), tmp_path / 'r', model_name='x.y')
    assert timm.create_model(f'local-dir:{tmp_path / "r"}').layer1[0].se.pool_type == 'avg'
