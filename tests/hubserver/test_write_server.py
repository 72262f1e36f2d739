"""The tests' writable loopback Hub (tests/hubserver/write_server.py): the real huggingface_hub upload client
against it."""
import hashlib
import shutil
from pathlib import Path

import pytest

from tests.hubserver.write_server import WRITE_TOKEN_ENV, WritableHubServer, main
from timm_cra.hub.server import repo_commit_hash, served_revision

WRITE_TOKEN = 'loopback-write-token'
CIFAR_REPO = Path(__file__).resolve().parents[2] / 'hub' / 'timm-cra' / 'cra_cifar_resnet20.cifar10'


@pytest.fixture
def write_hub(hub, tmp_path):
    """A writable server on a temp root (layered over nothing), with huggingface_hub pointed at it."""
    root = tmp_path / 'write-root'
    root.mkdir()
    with WritableHubServer(root, write_token=WRITE_TOKEN) as server:
        hub.set_endpoint(server.endpoint)
        server.root = root
        yield server


@pytest.fixture
def model_folder(tmp_path):
    """A real published repo folder (config.json, model.safetensors, README.md) to upload."""
    assert (CIFAR_REPO / 'model.safetensors').is_file(), f'{CIFAR_REPO} is committed; restore it from git'
    return Path(shutil.copytree(CIFAR_REPO, tmp_path / 'upload-src'))


@pytest.mark.parametrize('transfer', ['regular', 'lfs'])
def test_upload_folder_then_download(write_hub, hub, model_folder, monkeypatch, transfer):
    from huggingface_hub import HfApi, constants, hf_hub_download
    if transfer == 'lfs':  # the plain LFS protocol: what clients without hf_xet use
        monkeypatch.setattr(constants, 'HF_HUB_DISABLE_XET', True)
        write_hub.lfs_threshold = 1000
    api = HfApi(endpoint=write_hub.endpoint, token=WRITE_TOKEN)
    api.create_repo('t-write/cifar', exist_ok=True)
    info = api.upload_folder(repo_id='t-write/cifar', folder_path=str(model_folder))
    repo_dir = write_hub.root / 't-write' / 'cifar'
    assert info.oid == repo_commit_hash(repo_dir)
    served = served_revision(repo_dir)[0]
    assert api.list_repo_files('t-write/cifar') == ['README.md', 'config.json', 'model.safetensors']
    assert sorted(p.name for p in served.iterdir()) == ['README.md', 'config.json', 'model.safetensors']
    for name in ('config.json', 'model.safetensors', 'README.md'):
        assert Path(hf_hub_download('t-write/cifar', name)).read_bytes() == (model_folder / name).read_bytes()
    if transfer == 'lfs':  # the uploaded object is kept in the store, hard-linked into the revision (no copy)
        store = write_hub.root / '.hub-lfs'
        lfs = [n for n in ('config.json', 'model.safetensors', 'README.md')
               if (model_folder / n).stat().st_size >= write_hub.lfs_threshold]
        assert 'model.safetensors' in lfs
        for name in lfs:
            assert (store / hashlib.sha256((served / name).read_bytes()).hexdigest()).samefile(served / name)

    # A second commit changes the content-derived hash and downloads follow it.
    readme = model_folder / 'README.md'
    readme.write_bytes(readme.read_bytes() + b'\nSecond revision.\n')
    info2 = api.upload_folder(repo_id='t-write/cifar', folder_path=str(model_folder))
    assert info2.oid != info.oid and info2.oid == repo_commit_hash(repo_dir)
    assert Path(hf_hub_download('t-write/cifar', 'README.md')).read_bytes() == readme.read_bytes()
    assert Path(hf_hub_download('t-write/cifar', 'README.md', revision=info.oid)).read_bytes() != readme.read_bytes()


def test_create_repo_exist_ok_on_an_existing_repo_returns_its_url(write_hub):
    """The Hub's 409 for an existing repo carries its ``url``; ``create_repo(exist_ok=True)`` reads it (a KeyError
    without it), so a second push to a repo works. Also across case: the existing spelling is named."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError
    api = HfApi(endpoint=write_hub.endpoint, token=WRITE_TOKEN)
    first = api.create_repo('t-again/Model')
    assert api.create_repo('t-again/Model', exist_ok=True) == first == f'{write_hub.endpoint}/t-again/Model'
    assert api.create_repo('T-AGAIN/model', exist_ok=True).repo_id == 't-again/Model'
    with pytest.raises(HfHubHTTPError) as e:  # without exist_ok: the 409 itself
        api.create_repo('t-again/Model')
    assert e.value.response.status_code == 409 and e.value.response.json()['url'] == first


def test_writes_need_the_token(write_hub, model_folder):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError
    for token, status in (('wrong-token', 403), (False, 401)):
        with pytest.raises(HfHubHTTPError) as e:
            HfApi(endpoint=write_hub.endpoint, token=token).create_repo('t-write/denied')
        assert e.value.response.status_code == status
    assert not (write_hub.root / 't-write').exists()
    HfApi(endpoint=write_hub.endpoint, token=WRITE_TOKEN).create_repo('t-write/denied')
    with pytest.raises(HfHubHTTPError) as e:
        HfApi(endpoint=write_hub.endpoint, token='wrong-token').upload_folder(
            repo_id='t-write/denied', folder_path=str(model_folder))
    assert e.value.response.status_code == 403
    assert list(served_revision(write_hub.root / 't-write' / 'denied')[0].iterdir()) == []


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_publish_cli_pushes_to_loopback_hub(write_hub, hub, cli_env, tmp_path):
    """timm-cra-publish --push (push_repo_folder) end to end; timm then loads the pushed weights."""
    import subprocess
    import sys
    import timm
    import torch
    from safetensors.torch import load_file
    import timm_cra  # noqa: F401
    ckpt = CIFAR_REPO / 'model.safetensors'
    if not ckpt.is_file():
        pytest.skip(f'{ckpt} is missing')
    env = dict(cli_env, HF_ENDPOINT=write_hub.endpoint, HF_TOKEN=WRITE_TOKEN, HF_HUB_OFFLINE='0',
               HF_HUB_CACHE=str(hub.cache_dir), NO_PROXY='127.0.0.1,localhost')
    out = tmp_path / 'built'
    proc = subprocess.run(
        [sys.executable, '-m', 'timm_cra.hub.publish', 'cra_cifar_resnet20.cifar10',
         str(ckpt), '--repo-id', 't-write/pushed', '--out', str(out), '--push'],
        env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f'Pushed: {write_hub.endpoint}/t-write/pushed/commit/' in proc.stdout
    repo_dir = served_revision(write_hub.root / 't-write' / 'pushed')[0]
    for name in ('config.json', 'model.safetensors', 'README.md'):
        assert (repo_dir / name).read_bytes() == (out / name).read_bytes()
    model = timm.create_model('hf-hub:t-write/pushed', pretrained=True)
    expected = load_file(str(ckpt))
    for k, v in model.state_dict().items():
        if k in expected:
            assert torch.equal(v, expected[k]), k


def test_cli_write_flags(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(WRITE_TOKEN_ENV, raising=False)
    with pytest.raises(SystemExit):
        main(['--root', str(tmp_path), '--port', '0', '--allow-write'])
    assert '--allow-write needs a token' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(['--root', str(tmp_path), '--port', '0', '--write-token', 'x'])
    assert 'add --allow-write' in capsys.readouterr().err


def test_a_commit_landing_during_a_push_is_not_overwritten_by_half(write_hub, model_folder, monkeypatch):
    """publish --push lists the repo's files to delete those the folder does not hold, then commits: a commit landing
    in between kept its file beside the folder's (the repo held `intruder.json` after publish's "exactly the folder's
    files" commit). The push names the head it replaces (parent_commit): the Hub refuses it, and the line says so."""
    from huggingface_hub import HfApi
    from timm_cra.hub.publish import push_repo_folder
    from timm_cra.utils.errors import UsageError
    api = HfApi(endpoint=write_hub.endpoint, token=WRITE_TOKEN)
    api.create_repo('t-race/model')
    api.upload_file(path_or_fileobj=b'old', path_in_repo='old.txt', repo_id='t-race/model')
    original = HfApi.repo_info

    def head_then_intruder(self, *args, **kwargs):
        info = original(self, *args, **kwargs)
        api.upload_file(path_or_fileobj=b'{}', path_in_repo='intruder.json', repo_id='t-race/model')
        return info

    monkeypatch.setattr(HfApi, 'repo_info', head_then_intruder)
    with pytest.raises(UsageError, match=r"failed: another commit landed on t-race/model during the push, so this one "
                                         r"was not committed .*; the repo folder .* is complete: rerun with "
                                         r"--overwrite --push\.$"):
        push_repo_folder(model_folder, 't-race/model', token=WRITE_TOKEN)
    served = served_revision(write_hub.root / 't-race' / 'model')[0]
    assert sorted(p.name for p in served.iterdir()) == ['intruder.json', 'old.txt']  # the push left it as it was
    monkeypatch.setattr(HfApi, 'repo_info', original)
    push_repo_folder(model_folder, 't-race/model', token=WRITE_TOKEN)  # no race: exactly the folder's files
    served = served_revision(write_hub.root / 't-race' / 'model')[0]
    assert sorted(p.name for p in served.iterdir()) == sorted(p.name for p in model_folder.iterdir())
