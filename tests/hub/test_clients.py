"""Every repo in hub/ with weights, read by the real clients: transformers (model, pipeline) agrees with timm
on the same images and names the same classes; the card's usage code runs as written against the loopback Hub;
a config in the previous layout still loads in timm."""
import io
import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

import timm
import timm_cra  # noqa: F401
from timm_cra.hub.repo import check_label_names, write_config

from tests.conftest import REPO_ROOT
from tests.hub.clients import pipeline_top1, run_card_code, timm_top1, transformers_model

WEIGHTED = sorted(p.parent for p in (REPO_ROOT / 'hub').glob('*/*/model.safetensors'))


@pytest.fixture(scope='module')
def cifar_images(cifar10_test):
    """8 real CIFAR-10 test images (PIL, RGB) from the repository's parquet split."""
    import pyarrow.parquet as pq
    table = pq.read_table(cifar10_test / 'test-00000-of-00001.parquet').slice(0, 8).to_pylist()
    key = next(k for k, v in table[0].items() if isinstance(v, dict) and 'bytes' in v)
    return [Image.open(io.BytesIO(row[key]['bytes'])).convert('RGB') for row in table]


@pytest.mark.parametrize('folder', WEIGHTED, ids=lambda p: p.name)
def test_hub_repo_loads_in_transformers(folder, cifar_images):
    config = json.loads((folder / 'config.json').read_text())
    assert 'num_classes' not in config.get('model_args', {})  # transformers passes it itself
    model = timm.create_model(f'local-dir:{folder}', pretrained=True).eval()
    assert list(model.pretrained_cfg['label_names']) == config['label_names']
    hf = transformers_model(folder)
    assert [hf.config.id2label[i] for i in range(hf.config.num_labels)] == config['label_names']
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(hf(pixel_values=x).logits, model(x), rtol=0, atol=0)
    expected = [config['label_names'][i] for i in timm_top1(model, cifar_images)]
    assert pipeline_top1(folder, cifar_images) == expected


@pytest.mark.slow  # over ~15 s on 2 cores (many processes or epochs): CI step 2
@pytest.mark.parametrize('folder', WEIGHTED, ids=lambda p: p.name)
def test_hub_card_code_runs(folder, hub, cifar_images, tmp_path):
    image = tmp_path / 'img.png'
    cifar_images[0].save(image)
    config = json.loads((folder / 'config.json').read_text())
    model = timm.create_model(f'local-dir:{folder}', pretrained=True).eval()
    top1 = config['label_names'][timm_top1(model, cifar_images[:1])[0]]
    timm_out, hf_out = run_card_code(folder, image)  # hf-hub:timm-cra/... through the loopback Hub
    assert timm_out.splitlines()[0].startswith(f'{top1}: ')
    assert f"'label': '{top1}'" in hf_out.split('}')[0]


def test_previous_layout_still_loads_in_timm(tmp_path):
    """Repos published before the one layout: num_classes / in_chans / global_pool in model_args, labels only
    inside pretrained_cfg."""
    src = REPO_ROOT / 'hub' / 'timm-cra' / 'cra_cifar_resnet20.cifar10'
    old = tmp_path / 'old'
    shutil.copytree(src, old)
    config = json.loads((src / 'config.json').read_text())
    config['model_args'] = {'in_chans': 3, 'num_classes': 10, 'global_pool': 'avg'}
    config['pretrained_cfg']['label_names'] = config.pop('label_names')
    (old / 'config.json').write_text(json.dumps(config, indent=2))
    model = timm.create_model(f'local-dir:{old}', pretrained=True).eval()
    new = timm.create_model(f'local-dir:{src}', pretrained=True).eval()
    assert model.pretrained_cfg['label_names'] == new.pretrained_cfg['label_names']
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(x), new(x), rtol=0, atol=0)


def test_label_count_must_match_the_head(tmp_path):
    model = timm.create_model('cra_cifar_resnet20', num_classes=3, in_chans=1, device='meta')
    with pytest.raises(ValueError, match=r'^2 label names for a 3-class head: give exactly one name'):
        write_config(model, tmp_path / 'config.json', label_names=['a', 'b'])
    assert not (tmp_path / 'config.json').exists()
    config = write_config(model, tmp_path / 'config.json', label_names=['a', 'b', 'c'],
                          data_config={'mean': (0.5,), 'std': (0.25,)})
    # The one layout: labels at the root only, model_args without what transformers passes itself.
    assert config['label_names'] == ['a', 'b', 'c'] and 'label_names' not in config['pretrained_cfg']
    assert config['model_args'] == {'in_chans': 1}
    assert config['pretrained_cfg']['mean'] == [0.5] and config['pretrained_cfg']['input_size'][0] == 1
    assert check_label_names(None, 3) is None


TAG = 'cra_cifar_resnet20.cifar10'


def _edited_repo(hub, edit):
    """hub/'s repo of TAG served under its own id with ``edit(config)`` applied to its config.json (a mirror, or
    the repo after an update this package predates)."""
    repo = hub.add_repo(f'timm-cra/{TAG}', REPO_ROOT / 'hub' / 'timm-cra' / TAG)
    config = json.loads((repo / 'config.json').read_text())
    edit(config)
    (repo / 'config.json').write_text(json.dumps(config, indent=2))
    return config


def test_registered_tag_refuses_a_repo_whose_config_disagrees(hub):
    """One repo, one answer: the tag loads the repo's weights, so a config.json naming other classes or another
    normalisation than the registered cfg is refused (hf-hub: and transformers read the repo's)."""
    config = _edited_repo(hub, lambda c: c.update(label_names=c['label_names'][::-1]))
    from transformers import pipeline
    assert pipeline('image-classification', model=f'timm-cra/{TAG}').model.config.id2label[0] == 'truck'
    assert timm.create_model(f'hf-hub:timm-cra/{TAG}', pretrained=True).pretrained_cfg['label_names'][0] == 'truck'
    for create in (timm.create_model, timm_cra.create_model):
        with pytest.raises(timm_cra.PretrainedWeightsError,
                           match=rf"^timm_cra: the config.json of Hub repo 'timm-cra/{TAG}' disagrees with the "
                                 rf"registered '{TAG}' on label_names \(class 0: 'truck' in the repo, 'airplane' "
                                 rf"registered\).*Upgrade timm-cra.*'hf-hub:timm-cra/{TAG}'"):
            create(TAG, pretrained=True)
    # the same from the cache, offline (the config was cached with the weights)
    hub.set_offline(True)
    with pytest.raises(timm_cra.PretrainedWeightsError, match=r'disagrees .* on label_names'):
        timm.create_model(TAG, pretrained=True)
    hub.set_offline(False)
    config['pretrained_cfg']['mean'] = [0.5, 0.5, 0.5]
    _edited_repo(hub, lambda c: c.update(config))
    with pytest.raises(timm_cra.PretrainedWeightsError, match=r"on label_names .*; mean \(\(0\.5, 0\.5, 0\.5\) in the "
                                                              r"repo, \(0\.4914, 0\.4822, 0\.4465\) registered\)"):
        timm.create_model(TAG, pretrained=True)


def test_registered_tag_loads_a_repo_that_agrees_or_has_no_config(hub):
    """A repo published before configs were compared, without config.json, loads as before; hub/'s repo agrees
    with its registered cfg (its config cached beside the weights, then read offline)."""
    repo = hub.add_repo(f'timm-cra/{TAG}', REPO_ROOT / 'hub' / 'timm-cra' / TAG)
    (repo / 'config.json').unlink()
    without_config = timm.create_model(TAG, pretrained=True)
    assert not [f for f in hub.cached_files() if f.endswith('/config.json') and '/.no_exist/' not in f]
    shutil.rmtree(hub.cache_dir)
    hub.cache_dir.mkdir()
    hub.add_repo(f'timm-cra/{TAG}', REPO_ROOT / 'hub' / 'timm-cra' / TAG)
    model = timm.create_model(TAG, pretrained=True)
    assert [f for f in hub.cached_files() if f.endswith('/config.json') and '/.no_exist/' not in f]
    hub.set_offline(True)
    assert timm.create_model(TAG, pretrained=True).pretrained_cfg['label_names'][0] == 'airplane'
    # a field the caller overlays is theirs to choose
    assert timm.create_model(TAG, pretrained=True, pretrained_cfg_overlay=dict(crop_pct=0.9)).pretrained_cfg[
        'crop_pct'] == 0.9
    for a, b in zip(model.state_dict().values(), without_config.state_dict().values()):
        assert torch.equal(a, b)


def test_a_repo_config_cannot_send_the_loader_to_other_weights(hub, tmp_path):
    """The stranger's repo: config.json's pretrained_cfg names hf_hub_filename 'alt.safetensors' (clean) while
    model.safetensors (what transformers, local-dir: and the registered tag read) holds NaN. hf-hub: followed the
    config, so its NaN check vetted the other file; now every reader refuses the config, naming the key."""
    from safetensors.torch import load_file, save_file
    repo = tmp_path / 'evil'
    shutil.copytree(REPO_ROOT / 'hub' / 'timm-cra' / TAG, repo)
    config = json.loads((repo / 'config.json').read_text())
    config['pretrained_cfg']['hf_hub_filename'] = 'alt.safetensors'
    (repo / 'config.json').write_text(json.dumps(config))
    state = load_file(str(repo / 'model.safetensors'))
    save_file(state, str(repo / 'alt.safetensors'))
    save_file(dict(state, **{'fc.weight': torch.full_like(state['fc.weight'], float('nan'))}),
              str(repo / 'model.safetensors'))
    hub.add_repo('evil/r', repo)
    refused = r"pretrained_cfg 'hf_hub_filename' \('alt.safetensors'\) says where to load weights from"
    for create in (timm_cra.create_model, timm.create_model):
        with pytest.raises(timm_cra.PretrainedWeightsError, match=rf"^timm_cra: '?hf-hub:evil/r'?: {refused}"):
            create('hf-hub:evil/r', pretrained=True)
    with pytest.raises(timm_cra.PretrainedWeightsError, match=rf"^timm_cra: local-dir:{repo}: {refused}"):
        timm_cra.create_model(f'local-dir:{repo}', pretrained=True)
    # the same repo behind the registered tag, unpublished: its other bytes are not the tag's, the bundled copy loads
    hub.add_repo(f'timm-cra/{TAG}', repo)
    assert timm.create_model(TAG, pretrained=True).pretrained_cfg['file'].endswith(f'{TAG}/model.safetensors')
    # with the published bytes, the registered tag refuses the config
    shutil.copyfile(REPO_ROOT / 'hub' / 'timm-cra' / TAG / 'model.safetensors', repo / 'model.safetensors')
    hub.add_repo(f'timm-cra/{TAG}', repo)
    with pytest.raises(timm_cra.PretrainedWeightsError, match=rf"config.json of Hub repo 'timm-cra/{TAG}': {refused}"):
        timm.create_model(TAG, pretrained=True)


def _repo_with_root_keys(folder: Path, **root) -> Path:
    """A copy of the bundled CIFAR repo in ``folder`` whose config.json has the root keys ``root`` added."""
    src = REPO_ROOT / 'hub' / 'timm-cra' / TAG
    shutil.copytree(src, folder)
    config = json.loads((src / 'config.json').read_text())
    (folder / 'config.json').write_text(json.dumps(dict(config, **root)))
    return folder


def test_a_repo_config_that_transformers_reads_otherwise_than_timm_is_refused(hub, tmp_path):
    """Root keys timm ignores and transformers acts on: ``dtype: float16`` (transformers loaded the weights in half
    precision, timm in float32; ``torch_dtype`` is its older name), a ``model_type`` other than timm_wrapper (another
    architecture), ``auto_map`` (the repo's code, trust_remote_code). Refused by timm_cra.create_model (local-dir:,
    hf-hub:) and the registered tag in one line naming the key; the values transformers' save_pretrained writes for
    a timm model (model_type timm_wrapper, dtype float32) still load."""
    src = REPO_ROOT / 'hub' / 'timm-cra' / TAG
    config = json.loads((src / 'config.json').read_text())

    def repo(name, **root):
        return _repo_with_root_keys(tmp_path / name, **root)

    half = repo('half', dtype='float16')
    assert next(transformers_model(half).parameters()).dtype == torch.float16  # what the check prevents
    hub.add_repo('stranger/half', half)
    hub.add_repo(f'timm-cra/{TAG}', half)  # the same repo behind the registered tag
    refused = r"'dtype' 'float16' makes transformers load the weights in another precision than timm's float32: " \
              r"remove 'dtype'"
    for name in (f'local-dir:{half}', 'hf-hub:stranger/half'):
        with pytest.raises(timm_cra.PretrainedWeightsError, match=rf"{refused} \(or set it to \"float32\"\)\. Fix"):
            timm_cra.create_model(name, pretrained=True)
    with pytest.raises(timm_cra.PretrainedWeightsError, match=rf"config.json of Hub repo 'timm-cra/{TAG}': {refused}"):
        timm.create_model(TAG, pretrained=True)
    for name, root, key in (('bf16', dict(torch_dtype='bfloat16'), 'torch_dtype'),
                            ('vit', dict(model_type='vit'), 'model_type'),
                            ('code', dict(auto_map={'AutoConfig': 'cfg.C'}), 'auto_map'),
                            ('multi', dict(problem_type='multi_label_classification'), 'problem_type'),
                            ('file', dict(transformers_weights='alt.safetensors'), 'transformers_weights')):
        with pytest.raises(timm_cra.PretrainedWeightsError, match=rf"^timm_cra: local-dir:\S+: '{key}' .*remove "
                                                                 rf"'{key}'"):
            timm_cra.create_model(f'local-dir:{repo(name, **root)}', pretrained=True)
    saved = repo('saved', model_type='timm_wrapper', dtype='float32', torch_dtype=None)
    model = timm_cra.create_model(f'local-dir:{saved}', pretrained=True)
    assert model.pretrained_cfg['label_names'] == config['label_names']


def test_a_repo_config_that_picks_another_processor_for_transformers_is_refused(hub, tmp_path, cifar_images):
    """``image_processor_type: ViTImageProcessor`` in config.json: transformers' pipeline preprocessed with a ViT
    processor (224 px, mean 0.5) while timm, the registered tag and validate used the timm fields (another top-1 on
    the same image). The keys that pick transformers' processor class (image_processor_type, feature_extractor_type,
    processor_class, tokenizer_class) are refused by timm_cra.create_model (local-dir:, hf-hub:) and the registered
    tag in one line naming the key; the value transformers itself would use (TimmWrapperImageProcessor) loads."""
    from transformers import AutoImageProcessor, AutoProcessor, pipeline
    src = REPO_ROOT / 'hub' / 'timm-cra' / TAG

    def repo(name, **root):
        return _repo_with_root_keys(tmp_path / name, **root)

    vit = repo('vit', image_processor_type='ViTImageProcessor')
    classify = pipeline('image-classification', model=str(vit))  # what the check prevents: another preprocessing
    assert type(classify.image_processor).__name__ == 'ViTImageProcessor'
    assert classify.image_processor.size == {'height': 224, 'width': 224}
    assert pipeline_top1(vit, cifar_images) != pipeline_top1(src, cifar_images)
    hub.add_repo('stranger/vit', vit)
    hub.add_repo(f'timm-cra/{TAG}', vit)  # the same repo behind the registered tag
    refused = r"'image_processor_type' 'ViTImageProcessor' makes transformers preprocess with another processor " \
              r"than the TimmWrapperImageProcessor that applies config.json's timm fields: remove 'image_processor_type'"
    for name in (f'local-dir:{vit}', 'hf-hub:stranger/vit'):
        with pytest.raises(timm_cra.PretrainedWeightsError, match=rf"^timm_cra: {name}: {refused}\. Fix"):
            timm_cra.create_model(name, pretrained=True)
    with pytest.raises(timm_cra.PretrainedWeightsError, match=rf"config.json of Hub repo 'timm-cra/{TAG}': {refused}"):
        timm.create_model(TAG, pretrained=True)
    for name, root, key, built in (
            ('fe', dict(feature_extractor_type='ViTFeatureExtractor'), 'feature_extractor_type', AutoImageProcessor),
            ('proc', dict(processor_class='CLIPProcessor'), 'processor_class', AutoProcessor),
            ('tok', dict(tokenizer_class='BertTokenizer'), 'tokenizer_class', AutoProcessor)):
        folder = repo(name, **root)
        try:  # transformers builds another class than the timm processor, or fails trying
            assert type(built.from_pretrained(str(folder))).__name__ != 'TimmWrapperImageProcessor'
        except (OSError, ValueError):
            pass
        with pytest.raises(timm_cra.PretrainedWeightsError, match=rf"^timm_cra: local-dir:\S+: '{key}' .*remove "
                                                                 rf"'{key}'"):
            timm_cra.create_model(f'local-dir:{folder}', pretrained=True)
    timm_wrapper = repo('timm_wrapper', image_processor_type='TimmWrapperImageProcessor')
    assert type(AutoImageProcessor.from_pretrained(str(timm_wrapper))).__name__ == 'TimmWrapperImageProcessor'
    assert timm_cra.create_model(f'local-dir:{timm_wrapper}', pretrained=True).num_classes == 10


def test_registered_tag_compares_model_args(hub):
    """The repo's model_args are part of its answer: cra_pool_type 'avg' (same shapes as the weights) made hf-hub:
    and transformers pool by average while the tag pooled by max; cra_pool_size 7 with 4x4 weights loaded silently
    through the tag while the others refused. The tag now refuses both; model_args that agree load, also with a
    head of the caller's own."""
    _edited_repo(hub, lambda c: c.update(model_args={'cra_pool_type': 'avg'}))
    assert timm_cra.create_model(f'hf-hub:timm-cra/{TAG}', pretrained=True).layer1[0].se.pool_type == 'avg'
    with pytest.raises(timm_cra.PretrainedWeightsError,
                       match=rf"^timm_cra: the config.json of Hub repo 'timm-cra/{TAG}' disagrees with the registered "
                             rf"'{TAG}' on model_args \(\{{\"cra_pool_type\": \"avg\"\}} in the repo build layer1.0.se "
                             rf"as CraAttn\(pool_size=\(4, 4\), pool_type='avg'.*the registered tag as CraAttn\("
                             rf"pool_size=\(4, 4\), pool_type='max'"):
        timm.create_model(TAG, pretrained=True)
    _edited_repo(hub, lambda c: c.update(model_args={'cra_pool_size': 7}))
    with pytest.raises(timm_cra.PretrainedWeightsError):  # 4x4 weights, a 7x7 architecture
        timm_cra.create_model(f'hf-hub:timm-cra/{TAG}', pretrained=True)
    with pytest.raises(timm_cra.PretrainedWeightsError, match=r"on model_args \(\{\"cra_pool_size\": 7\} in the repo"):
        timm_cra.create_model(TAG, pretrained=True)
    _edited_repo(hub, lambda c: c.update(model_args={'cra_pool_size': 4, 'cra_pool_type': 'max'}))
    assert timm.create_model(TAG, pretrained=True).layer1[0].se.pool_size == (4, 4)
    assert timm.create_model(TAG, pretrained=True, num_classes=5, drop_path_rate=0.1).fc.out_features == 5
    # a feature extractor of the tag was refused: the repo's model was built as a classifier to compare with it
    features = timm.create_model(TAG, pretrained=True, features_only=True, out_indices=(1, 2))
    assert [f.shape[1] for f in features(torch.zeros(1, 3, 32, 32))] == [16, 32]  # stages 1 and 2


_PROCESSOR = {'image_processor_type': 'TimmWrapperImageProcessor',
              'pretrained_cfg': {'input_size': [3, 32, 32], 'mean': [0.5] * 3, 'std': [0.1] * 3, 'crop_pct': 1.0,
                                 'interpolation': 'bilinear'}}


@pytest.mark.parametrize('filename,content', [
    ('preprocessor_config.json', _PROCESSOR),
    ('processor_config.json', {'image_processor': _PROCESSOR}),  # transformers 5's combined file, read first
])
def test_a_repo_with_a_preprocessor_config(hub, tmp_path, caplog, filename, content):
    """transformers' pipeline preprocesses with a repo's preprocessor_config.json (or processor_config.json), timm
    with config.json (publish never writes either): the registered tag refuses such a repo, hf-hub: and local-dir:
    warn in one line naming the file."""
    repo = hub.add_repo(f'timm-cra/{TAG}', REPO_ROOT / 'hub' / 'timm-cra' / TAG)
    (repo / filename).write_text(json.dumps(content))
    from transformers import AutoImageProcessor
    assert list(AutoImageProcessor.from_pretrained(f'timm-cra/{TAG}').data_config['mean']) == [0.5] * 3  # refused
    with pytest.raises(timm_cra.PretrainedWeightsError,
                       match=rf"^timm_cra: Hub repo 'timm-cra/{TAG}' holds {filename}: transformers' "
                             rf"pipeline preprocesses with it, the registered '{TAG}' with its own cfg"):
        timm.create_model(TAG, pretrained=True)
    for name in (f'hf-hub:timm-cra/{TAG}', f'local-dir:{repo}'):
        caplog.clear()
        timm_cra.create_model(name, pretrained=True)
        warned = [r.getMessage() for r in caplog.records if filename in r.getMessage()]
        assert warned == [f"timm_cra: '{name}' holds {filename}: transformers' pipeline preprocesses "
                          f"with it, timm with config.json, so their answers can differ; remove it unless they "
                          f"agree."], warned
    (repo / filename).unlink()
    caplog.clear()
    timm_cra.create_model(f'local-dir:{repo}', pretrained=True)
    assert not [r for r in caplog.records if filename in r.getMessage()]


def test_weights_in_another_file_than_model_safetensors_are_refused(hub, tmp_path, caplog):
    """The stranger's repo: no model.safetensors, its weights as pytorch_model.bin, and a model.safetensors.index.json
    with a shard holding another head. timm read the .bin, transformers the shard: two answers, every check passed.
    Now a repo's weights are its model.safetensors: timm_cra.create_model (local-dir:, hf-hub:) and the registered
    tag refuse it naming the file; another weight file beside model.safetensors (both libraries read
    model.safetensors) is refused by the tag and named in one warning by create_model."""
    from safetensors.torch import load_file, save_file
    src = REPO_ROOT / 'hub' / 'timm-cra' / TAG
    state = load_file(str(src / 'model.safetensors'))
    repo = tmp_path / 'sharded'
    repo.mkdir()
    shutil.copy(src / 'config.json', repo)
    torch.save(state, repo / 'pytorch_model.bin')
    other = dict(state, **{k: state[k].flip(0).contiguous() for k in ('fc.weight', 'fc.bias')})
    save_file(other, str(repo / 'model-00001-of-00001.safetensors'), metadata={'format': 'pt'})
    (repo / 'model.safetensors.index.json').write_text(json.dumps(
        {'metadata': {}, 'weight_map': {k: 'model-00001-of-00001.safetensors' for k in other}}))
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # what the check prevents: the two libraries read different files of one repo
        # the same products in another row order: equal up to the BLAS kernel's summation order for each row
        torch.testing.assert_close(transformers_model(repo)(pixel_values=x).logits,
                                   timm.create_model(f'local-dir:{repo}', pretrained=True).eval()(x).flip(-1),
                                   rtol=0, atol=1e-5)
    refused = r"holds model.safetensors.index.json \(and 2 more weight files\) and no model.safetensors: timm and " \
              r"transformers pick other files"
    with pytest.raises(timm_cra.PretrainedWeightsError, match=rf"^timm_cra: 'local-dir:{repo}' {refused}"):
        timm_cra.create_model(f'local-dir:{repo}', pretrained=True)
    hub.add_repo('stranger/sharded', repo)
    with pytest.raises(timm_cra.PretrainedWeightsError, match=rf"^timm_cra: 'hf-hub:stranger/sharded' {refused}"):
        timm_cra.create_model('hf-hub:stranger/sharded', pretrained=True)
    assert not [f for f in hub.cached_files() if f.endswith('.bin')]  # refused before timm downloads one
    hub.add_repo(f'timm-cra/{TAG}', repo)  # the same repo behind the registered tag
    with pytest.raises(timm_cra.PretrainedWeightsError, match=rf"^timm_cra: Hub repo 'timm-cra/{TAG}' \(registered "
                                                             rf"'{TAG}'\) {refused}"):
        timm.create_model(TAG, pretrained=True)

    beside = tmp_path / 'beside'  # a copy beside model.safetensors, as timm's push_to_hf_hub writes ('both')
    shutil.copytree(src, beside)
    torch.save(state, beside / 'pytorch_model.bin')
    hub.add_repo(f'timm-cra/{TAG}', beside)
    with pytest.raises(timm_cra.PretrainedWeightsError, match=rf"'timm-cra/{TAG}' \(registered '{TAG}'\) holds "
                                                             rf"pytorch_model.bin beside model.safetensors"):
        timm.create_model(TAG, pretrained=True)
    caplog.clear()
    timm_cra.create_model(f'local-dir:{beside}', pretrained=True)
    assert [r.getMessage() for r in caplog.records if 'pytorch_model.bin' in r.getMessage()] == [
        f"timm_cra: 'local-dir:{beside}' holds pytorch_model.bin beside model.safetensors: timm and transformers read "
        f"model.safetensors, other clients (transformers with use_safetensors=False, older timm) pytorch_model.bin; "
        f"remove it unless it holds the same weights."]
    (beside / 'pytorch_model.bin').unlink()
    (beside / 'adapter_config.json').write_text('{}')
    with pytest.raises(timm_cra.PretrainedWeightsError, match=r"holds adapter_config.json: transformers \(with peft "
                                                             r"installed\) applies that adapter"):
        timm_cra.create_model(f'local-dir:{beside}', pretrained=True)


def test_root_id2label_must_say_what_label_names_says(hub, tmp_path):
    """A root id2label without label_names: transformers named class 0 'truck' (the map reversed), timm answered
    index 0, the tag and torch.hub refused; our check passed. Now id2label / label2id that do not say exactly what
    label_names says are refused by every reader; the ones that do still load."""
    src = REPO_ROOT / 'hub' / 'timm-cra' / TAG
    config = json.loads((src / 'config.json').read_text())
    names = config['label_names']

    def repo(name, edit):
        folder = tmp_path / name
        shutil.copytree(src, folder)
        c = json.loads(json.dumps(config))
        edit(c)
        (folder / 'config.json').write_text(json.dumps(c))
        return folder

    reversed_map = {str(i): n for i, n in enumerate(reversed(names))}
    only = repo('only', lambda c: (c.pop('label_names'), c.update(id2label=reversed_map)))
    assert transformers_model(only).config.id2label[0] == 'truck'  # what the check prevents
    assert 'label_names' not in timm.create_model(f'local-dir:{only}', pretrained=True).pretrained_cfg or \
        not timm.create_model(f'local-dir:{only}', pretrained=True).pretrained_cfg['label_names']
    with pytest.raises(timm_cra.PretrainedWeightsError,
                       match=rf"^timm_cra: local-dir:{only}: 'id2label' names the classes unlike 'label_names' "
                             rf"\(absent: timm answers class indices, transformers these names\): remove 'id2label'"):
        timm_cra.create_model(f'local-dir:{only}', pretrained=True)
    hub.add_repo(f'timm-cra/{TAG}', only)
    with pytest.raises(timm_cra.PretrainedWeightsError, match=r"'id2label' names the classes unlike"):
        timm.create_model(TAG, pretrained=True)
    for name, edit in (('both', lambda c: c.update(id2label=reversed_map)),
                       ('label2id', lambda c: c.update(label2id={n: i for i, n in enumerate(reversed(names))}))):
        key = 'label2id' if name == 'label2id' else 'id2label'
        with pytest.raises(timm_cra.PretrainedWeightsError, match=rf"'{key}' names the classes unlike 'label_names' "
                                                                 rf"\(transformers reads label_names then"):
            timm_cra.create_model(f'local-dir:{repo(name, edit)}', pretrained=True)
    same = repo('same', lambda c: c.update(id2label={str(i): n for i, n in enumerate(names)},
                                           label2id={n: i for i, n in enumerate(names)}))
    assert timm_cra.create_model(f'local-dir:{same}', pretrained=True).pretrained_cfg['label_names'] == names


def test_config_in_chans_that_the_weights_lack_is_one_line(tmp_path):
    """model_args in_chans 1 (input_size [1, ...]) over the 3-channel weights: timm-cra-validate --model local-dir:
    printed timm's 39-line RuntimeError traceback, rc 1. Now one line naming both channel counts and the fixes."""
    import subprocess
    import sys
    repo = tmp_path / 'grey'
    shutil.copytree(REPO_ROOT / 'hub' / 'timm-cra' / TAG, repo)
    config = json.loads((repo / 'config.json').read_text())
    config['model_args'] = {'in_chans': 1}
    config['pretrained_cfg'].update(input_size=[1, 32, 32], mean=[0.5], std=[0.25])
    (repo / 'config.json').write_text(json.dumps(config))
    for c in ('cat', 'dog'):
        (tmp_path / 'data' / 'val' / c).mkdir(parents=True)
        Image.new('RGB', (32, 32), (10, 200, 30)).save(tmp_path / 'data' / 'val' / c / '0.png')
    r = subprocess.run([sys.executable, '-m', 'timm_cra.eval', '--model', f'local-dir:{repo}', '--data-dir',
                        str(tmp_path / 'data'), '--split', 'val', '--workers', '0'], capture_output=True, text=True,
                       cwd=tmp_path, timeout=300)
    assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr[-3000:]
    # the folder's weights header is checked against the model its config describes before any tensor is read
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith('error: ') and 'size mismatch: conv1.weight (16, 3, 3, 3) vs model (16, 1, 3, 3) (the ' \
        'weights take 3 input channels, the model 1: pass --in-chans 3; else the folder\'s config.json describes ' \
        'another model than its weights' in last, r.stderr[-2000:]


def _card_top5(model, img: Image.Image, labels) -> str:
    """What the card's timm code prints for ``img`` (already in the model's mode)."""
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model), is_training=False)
    with torch.no_grad():
        probs = model(transform(img).unsqueeze(0)).softmax(-1)[0]
    top = probs.topk(min(5, len(probs)))
    return ''.join(f'{labels[i]}: {p:.3f}\n' for p, i in zip(top.values.tolist(), top.indices.tolist()))


def _sideways_jpeg(model, images, path: Path, mode: str) -> Path:
    """The first of ``images`` whose top-1 changes when stored turned a quarter (as a phone stores a photo,
    EXIF Orientation 6), saved so: the JPEG whose stored pixels and upright picture score differently."""
    from timm_cra.data.images import decode_image
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    for img in images:
        img.transpose(Image.Transpose.ROTATE_90).save(path, quality=95, exif=exif.tobytes())
        with Image.open(path) as stored:
            stored_top1, upright_top1 = timm_top1(model, [stored.convert(mode), decode_image(path, len(mode))])
        if stored_top1 != upright_top1:
            return path
    raise AssertionError('no image scores differently sideways: the check below could not fail')


@pytest.mark.slow  # four interpreters running the cards' code, a publish: CI step 2
def test_card_code_reads_an_exif_rotated_photo_as_the_loaders_do(hub, cifar_images, tmp_path):
    """A JPEG stored sideways with EXIF Orientation 6: the loaders (decode_image, so validate and train) read it
    upright, the card's code read the stored pixels (120 of 200 rotated digits got another top-1). The code of a
    published card, run as written, now prints the loader's top-5 exactly (a 3-channel card in hub/: timm code
    and transformers' pipeline, which turns images upright itself; a 1-channel card from publish: timm code and
    image processor + model)."""
    import os
    import subprocess
    import sys

    from safetensors.torch import save_file

    from timm_cra.data.images import decode_image
    folder = REPO_ROOT / 'hub' / 'timm-cra' / TAG  # served by the loopback Hub under timm-cra/<tag>
    rgb = timm.create_model(f'local-dir:{folder}', pretrained=True).eval()
    labels = rgb.pretrained_cfg['label_names']
    jpeg = _sideways_jpeg(rgb, cifar_images, tmp_path / 'rgb.jpg', 'RGB')
    expected = _card_top5(rgb, decode_image(jpeg, 3), labels)
    timm_out, hf_out = run_card_code(folder, jpeg)
    assert timm_out == expected
    assert f"'label': '{expected.split(':')[0]}'" in hf_out.split('}')[0]

    # The same weights as a 1-channel model (timm sums the first conv over the colours), published by the CLI.
    grey = timm.create_model(f'local-dir:{folder}', pretrained=True, in_chans=1).eval()
    save_file(grey.state_dict(), tmp_path / 'grey.safetensors')
    repo, repo_id = tmp_path / 'grey', 'card8-org/grey'
    pub = subprocess.run([sys.executable, '-m', 'timm_cra.hub.publish', 'cra_cifar_resnet20.grey',
                          tmp_path / 'grey.safetensors', '--model-kwargs', 'in_chans=1', '--num-classes', '10',
                          '--label-names', ','.join(labels), '--out', repo, '--repo-id', repo_id],
                         env=dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS='1'),
                         capture_output=True, text=True, timeout=300)
    assert pub.returncode == 0, pub.stderr[-3000:]
    hub.add_repo(repo_id, repo)
    grey = timm.create_model(f'local-dir:{repo}', pretrained=True).eval()
    jpeg = _sideways_jpeg(grey, cifar_images, tmp_path / 'grey.jpg', 'L')
    expected = _card_top5(grey, decode_image(jpeg, 1), labels)
    timm_out, hf_out = run_card_code(repo, jpeg)
    assert timm_out == expected and hf_out.strip() == expected.split(':')[0]
