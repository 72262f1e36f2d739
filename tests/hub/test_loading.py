"""timm's pretrained loading of CRA weights through the real huggingface_hub client and the loopback Hub."""
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from timm.models import PretrainedCfg

import timm
import timm_cra
from timm_cra import PretrainedWeightsError
from timm_cra.hub.repo import export_repo
from timm_cra.hub.server import repo_commit_hash

from ..conftest import closed_port_endpoint

ARCH = 'cra_mobilenetv2_050'
NUM_CLASSES = 10


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_same(sd_a, sd_b, skip=()):
    assert set(sd_a) == set(sd_b)
    for k in sd_a:
        if k not in skip:
            assert torch.equal(sd_a[k], sd_b[k]), k


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """A tiny trained-looking repo folder (random weights, 10 classes) and its state dict."""
    torch.manual_seed(0)
    model = timm.create_model(ARCH, num_classes=NUM_CLASSES)
    folder = export_repo(model, tmp_path_factory.mktemp('export') / 'repo', model_name=f'{ARCH}.test_c10')
    return folder, _state(model)


def _overlay(repo_id):
    return dict(pretrained=True, num_classes=NUM_CLASSES,
                pretrained_cfg_overlay=dict(hf_hub_id=repo_id, num_classes=NUM_CLASSES))


def _no_weights_cached(hub):
    """Weight files (complete or partial) in the cache; huggingface_hub's empty '.no_exist' markers do not count."""
    return [f for f in hub.cached_files()
            if '/.no_exist/' not in f and ('safetensors' in f or f.endswith('.incomplete') or '/blobs/' in f)]


def test_registered_name_loads_from_hub(hub, exported):
    folder, expected = exported
    hub.add_repo('t-load/by-name', folder)
    model = timm.create_model(ARCH, **_overlay('t-load/by-name'))
    _assert_same(_state(model), expected)


def test_hf_hub_name_then_offline_cache_hit(hub, exported):
    folder, expected = exported
    hub.add_repo('t-load/hf-hub', folder)
    model = timm.create_model('hf-hub:t-load/hf-hub', pretrained=True)
    assert model.num_classes == NUM_CLASSES and model.pretrained_cfg['tag'] == 'test_c10'
    _assert_same(_state(model), expected)

    # Second load: Hub gone (closed port) and HF_HUB_OFFLINE=1 -> served from the cache.
    cached = hub.cached_files()
    hub.set_endpoint(closed_port_endpoint())
    hub.set_offline(True)
    again = timm.create_model('hf-hub:t-load/hf-hub', pretrained=True)
    _assert_same(_state(again), expected)
    assert hub.cached_files() == cached


def test_revision_pin(hub, exported):
    folder, expected = exported
    repo_dir = hub.add_repo('t-load/pinned', folder)
    old_commit = repo_commit_hash(repo_dir)
    model = timm.create_model(f'hf-hub:t-load/pinned@{old_commit}', pretrained=True)
    _assert_same(_state(model), expected)

    # Publish new weights on main: the pin keeps the old ones, main follows.
    changed = {k: (v + 1 if v.is_floating_point() else v) for k, v in expected.items()}
    save_file(changed, str(repo_dir / 'model.safetensors'))
    assert repo_commit_hash(repo_dir) != old_commit
    _assert_same(_state(timm.create_model(f'hf-hub:t-load/pinned@{old_commit}', pretrained=True)), expected)
    _assert_same(_state(timm.create_model('hf-hub:t-load/pinned', pretrained=True)), changed)

    with pytest.raises(PretrainedWeightsError, match=r"revision '0{40}' does not exist.*@<revision>"):
        timm.create_model(ARCH, **_overlay('t-load/pinned@' + '0' * 40))


def test_an_hf_hub_load_reads_config_and_weights_of_one_commit(hub, exported, monkeypatch):
    """timm_cra.create_model('hf-hub:...') read config.json, then timm fetched the weights of main anew: a repo
    republished between the two gave one commit's class names with another's weights, silently; and a config.json
    once cached was never asked again while the weights followed main. Now config.json is asked of the Hub (the
    cached copy when current) and the weights are read at the commit it came from: a swap in between is an error."""
    import huggingface_hub
    folder, expected = exported
    repo_dir = hub.add_repo('t-load/swap', folder)
    first = timm_cra.create_model('hf-hub:t-load/swap', pretrained=True)
    assert first.pretrained_cfg['hf_hub_id'] == 't-load/swap'  # the id asked for, as timm records it
    config = (repo_dir / 'config.json').read_text().replace('"test_c10"', '"test_c10_v2"')
    (repo_dir / 'config.json').write_text(config)  # a new commit: its config is read, not the cached one
    assert timm_cra.create_model('hf-hub:t-load/swap', pretrained=True).pretrained_cfg['tag'] == 'test_c10_v2'

    changed = {k: (v + 1 if v.is_floating_point() else v) for k, v in expected.items()}
    fresh = hub.add_repo('t-load/swap-fresh', folder)  # weights not cached: the load downloads them
    real_download, swapped = huggingface_hub.hf_hub_download, []

    def republish_after_the_config(*args, **kwargs):
        path = real_download(*args, **kwargs)
        if kwargs.get('filename', args[1] if len(args) > 1 else None) == 'config.json' and not swapped:
            swapped.append(True)
            save_file(changed, str(fresh / 'model.safetensors'))  # the weights of the next commit
        return path
    monkeypatch.setattr(huggingface_hub, 'hf_hub_download', republish_after_the_config)
    with pytest.raises(PretrainedWeightsError, match=r"revision '[0-9a-f]{40}' does not exist"):
        timm_cra.create_model('hf-hub:t-load/swap-fresh', pretrained=True)
    monkeypatch.setattr(huggingface_hub, 'hf_hub_download', real_download)  # not undo(): the hub fixture's stay
    assert swapped
    _assert_same(_state(timm_cra.create_model('hf-hub:t-load/swap-fresh', pretrained=True)), changed)  # again: whole


def test_a_missing_revision_names_the_repo_and_the_revision_apart(hub, exported):
    """A pinned revision that does not exist was reported as "... does not exist in Hub repo 't-load/pinned@0000...'":
    the revision read as part of the repo's name. The repo and the revision are now named apart."""
    folder, _ = exported
    hub.add_repo('t-load/pinned-missing', folder)
    with pytest.raises(PretrainedWeightsError) as e:
        timm.create_model(ARCH, **_overlay('t-load/pinned-missing@' + '0' * 40))
    message = str(e.value)
    assert f"revision '{'0' * 40}' does not exist in Hub repo 't-load/pinned-missing' at {hub.endpoint}. " in message, \
        message
    assert 'pinned-missing@' not in message.split('(hf-hub:')[0] and '\n' not in message, message


def test_new_head_keeps_every_other_weight(hub, exported):
    folder, expected = exported
    hub.add_repo('t-load/head', folder)
    model = timm.create_model('hf-hub:t-load/head', pretrained=True, num_classes=3)
    assert model.get_classifier().out_features == 3
    state = _state(model)
    head = {'classifier.weight', 'classifier.bias'}
    _assert_same(state, expected, skip=head)
    assert state['classifier.weight'].shape == (3, expected['classifier.weight'].shape[1])


def test_in_chans_1_adapts_first_conv(hub, exported):
    folder, expected = exported
    hub.add_repo('t-load/gray', folder)
    model = timm.create_model('hf-hub:t-load/gray', pretrained=True, in_chans=1)
    state = _state(model)
    _assert_same(state, expected, skip={'conv_stem.weight'})
    # timm folds RGB filters into one channel by summing them.
    torch.testing.assert_close(state['conv_stem.weight'], expected['conv_stem.weight'].sum(1, keepdim=True))
    assert model(torch.randn(1, 1, 64, 64)).shape == (1, NUM_CLASSES)


# ---- bad input: one clear error each, nothing half-written left in the cache ----------------------------------

def test_offline_and_not_cached(hub):
    hub.set_endpoint(closed_port_endpoint())
    hub.set_offline(True)
    with pytest.raises(PretrainedWeightsError, match=r"not in the local cache.*unset HF_HUB_OFFLINE.*file="):
        timm.create_model(ARCH, **_overlay('t-load/anything'))
    assert _no_weights_cached(hub) == []


def test_hub_unreachable_and_not_cached(hub, monkeypatch):
    # Online but nothing listens: the client retries with back-off; skip its sleeps to keep the test fast.
    monkeypatch.setattr('huggingface_hub.utils._http.time.sleep', lambda s: None)
    hub.set_endpoint(closed_port_endpoint())
    with pytest.raises(PretrainedWeightsError, match=r"is unreachable.*HF_ENDPOINT"):
        timm.create_model(ARCH, **_overlay('t-load/anything'))
    assert _no_weights_cached(hub) == []


def test_repo_missing(hub):
    with pytest.raises(PretrainedWeightsError, match=r"'t-load/no-such-repo' at http://127.0.0.1.* does not exist") \
            as e:
        timm.create_model(ARCH, **_overlay('t-load/no-such-repo'))
    # the org's page on the Hub the endpoint names (it pointed at huggingface.co under a loopback HF_ENDPOINT)
    assert f'(published repos: {hub.endpoint.rstrip("/")}/t-load)' in str(e.value), str(e.value)
    assert _no_weights_cached(hub) == []


def test_weights_file_missing_for_registered_tag(hub):
    # hub/timm-cra/cra_resnet50.paper_in1k holds config + card only (weights pending conversion).
    with pytest.raises(PretrainedWeightsError, match=r"has no model.safetensors.*publish.*file="):
        timm.create_model('cra_resnet50.paper_in1k', pretrained=True)
    assert _no_weights_cached(hub) == []


def test_pending_weights_on_public_hub_fail_before_any_request(hub):
    from timm_cra.models._builder import PUBLIC_HUB_ENDPOINT
    hub.set_endpoint(PUBLIC_HUB_ENDPOINT)
    hub.set_offline(True)
    with pytest.raises(RuntimeError, match=r"not published on the Hugging Face Hub yet.*convert_official.*"
                                           r"untrained CRA gates.*cra_resnet50\.a1_in1k_gates_untrained"):
        timm.create_model('cra_resnet50', pretrained=True)  # default tag: paper_in1k
    # your own repo through the overlay (timm's idiom, which the errors advise) is asked for, not refused as the
    # tag's unpublished weights ("not published ... (someone/my-cra-resnet50)")
    with pytest.raises(RuntimeError, match=r"Hub repo 'someone/my-cra-resnet50' .* was not asked \(HF_HUB_OFFLINE"):
        timm.create_model('cra_resnet50', pretrained=True,
                          pretrained_cfg_overlay=dict(hf_hub_id='someone/my-cra-resnet50'))


def test_truncated_safetensors(hub, exported):
    folder, _ = exported
    repo_dir = hub.add_repo('t-load/truncated', folder)
    data = (repo_dir / 'model.safetensors').read_bytes()
    (repo_dir / 'model.safetensors').write_bytes(data[:len(data) // 2])
    with pytest.raises(PretrainedWeightsError, match=r"not a valid safetensors file.*removed from the cache"):
        timm.create_model(ARCH, **_overlay('t-load/truncated'))
    assert _no_weights_cached(hub) == []


def test_corrupt_local_file(tmp_path):
    path = tmp_path / 'model.safetensors'
    path.write_bytes(b'\x08\x00\x00\x00\x00\x00\x00\x00{"a":1}!')
    with pytest.raises(PretrainedWeightsError, match=r"not a valid safetensors file.*Re-download or re-export"):
        timm.create_model(ARCH, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))


def test_checkpoint_shapes_do_not_match(hub, exported):
    folder, expected = exported
    repo_dir = hub.add_repo('t-load/mismatch', folder)
    state = load_file(str(repo_dir / 'model.safetensors'))
    state['conv_stem.weight'] = torch.zeros(8, 3, 3, 3)  # trained as another width
    save_file(state, str(repo_dir / 'model.safetensors'))
    with pytest.raises(PretrainedWeightsError, match=r"(?s)does not fit the architecture.*conv_stem.weight.*trained as"):
        timm.create_model(ARCH, **_overlay('t-load/mismatch'))


def test_unknown_tag():
    with pytest.raises(ValueError, match=r"unknown pretrained tag 'cra_resnet18.nope'.*cra_resnet18.untrained"):
        timm.create_model('cra_resnet18.nope', pretrained=True)
    # the package's factory (every CLI's) said timm's RuntimeError, naming no tag, and the CLIs printed a traceback
    import timm_cra
    for name, known in (('cra_resnet18.nope', 'cra_resnet18.untrained'), ('resnet18.nope', 'resnet18.a1_in1k'),
                        ('cra_resnet18.', 'cra_resnet18.untrained')):
        with pytest.raises(ValueError, match=rf"unknown pretrained tag '{name}'.*{known}"):
            timm_cra.create_model(name)


def test_no_weights_at_all():
    # The bare name never falls back to the gates-untrained tag; the error names it.
    with pytest.raises(RuntimeError, match=r"no pretrained weights exist for 'cra_resnet18.untrained'.*"
                                           r"untrained CRA gates.*cra_resnet18\.a1_in1k_gates_untrained.*file="):
        timm.create_model('cra_resnet18', pretrained=True)


def test_trained_tag_missing_on_the_hub_names_the_local_copy(hub, tmp_path):
    # The CIFAR repos are complete in hub/ but not on huggingface.co. The default revision falls back to the
    # copy inside the package (tests/hub/test_bundled_weights.py); a pinned revision cannot, and a Hub without
    # the repo must then say where the repo folder is.
    from timm_cra.hub.server import HubFolderServer
    (tmp_path / 'empty').mkdir()
    with HubFolderServer([tmp_path / 'empty']) as empty_hub:
        hub.set_endpoint(empty_hub.endpoint)
        pinned = dict(pretrained_cfg_overlay=dict(hf_hub_id='timm-cra/cra_cifar_resnet20.cifar10@main'))
        with pytest.raises(PretrainedWeightsError, match=r"does not exist.*hub/timm-cra/cra_cifar_resnet20\.cifar10.*"
                                                         r"local-dir:hub/timm-cra/cra_cifar_resnet20\.cifar10"):
            timm.create_model('cra_cifar_resnet20.cifar10', pretrained=True, **pinned)
        # tags without a local copy keep the plain message
        with pytest.raises(PretrainedWeightsError, match='does not exist') as info:
            timm.create_model(ARCH, **_overlay('t-load/no-such-repo'))
        assert 'local-dir' not in str(info.value)
    # the named folder is real and loads
    root = Path(__file__).resolve().parents[2]
    model = timm.create_model(f"local-dir:{root / 'hub/timm-cra/cra_cifar_resnet20.cifar10'}", pretrained=True)
    assert model.num_classes == 10


def test_a_mismatch_names_the_architecture_of_the_config_json():
    """An hf-hub: / local-dir: load's weights that do not fit its architecture were said not to fit "the
    architecture 'None'" and to replace "the classifier 'None'": the load's cfg now names what config.json does."""
    from timm_cra.models._factory import _described
    from timm_cra.models._load_errors import explain_pretrained_errors
    err = RuntimeError('Error(s) in loading state_dict for ResNet:\n\tUnexpected key(s) in state_dict: "layer1.0.se.conv.weight".')
    for config, says in (({'architecture': 'resnet18', 'pretrained_cfg': {'classifier': 'fc'}},
                          "does not fit the architecture 'resnet18': .*replace the classifier 'fc'\\."),
                         ({}, r"does not fit the architecture: .*replace the classifier\.")):
        cfg = _described(PretrainedCfg(hf_hub_id='someone/repo', source='hf-hub'), config)
        with pytest.raises(PretrainedWeightsError, match=says) as info, explain_pretrained_errors('hf-hub:someone/repo', cfg):
            raise err
        assert 'None' not in str(info.value)
