"""The loopback Hub speaks the protocol huggingface_hub's download client expects."""
import hashlib
import http.client
import json
import shutil
from pathlib import Path

import pytest

from timm_cra.hub.server import repo_commit_hash, served_revision


def _request(endpoint, method, path, headers=None):
    host, port = endpoint.split('//')[1].split(':')
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    conn.request(method, path, headers=headers or {})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp, body


def test_resolve_headers_range_and_errors(hub):
    repo_dir = hub.add_repo('t-server/basic', {'a.txt': b'0123456789'})
    commit = repo_commit_hash(repo_dir)
    resp, body = _request(hub.endpoint, 'HEAD', '/t-server/basic/resolve/main/a.txt')
    assert resp.status == 200 and body == b''
    assert resp.getheader('X-Repo-Commit') == commit and len(commit) == 40
    assert resp.getheader('Content-Length') == '10' and resp.getheader('ETag').startswith('"')

    resp, body = _request(hub.endpoint, 'GET', f'/t-server/basic/resolve/{commit}/a.txt', {'Range': 'bytes=3-'})
    assert resp.status == 206 and body == b'3456789'
    assert resp.getheader('Content-Range') == 'bytes 3-9/10'

    resp, _ = _request(hub.endpoint, 'HEAD', '/t-server/basic/resolve/main/missing.bin')
    assert resp.status == 404 and resp.getheader('X-Error-Code') == 'EntryNotFound'
    resp, _ = _request(hub.endpoint, 'HEAD', '/t-server/nope/resolve/main/a.txt')
    assert resp.status == 404 and resp.getheader('X-Error-Code') == 'RepoNotFound'
    resp, _ = _request(hub.endpoint, 'HEAD', '/t-server/basic/resolve/' + '0' * 40 + '/a.txt')
    assert resp.status == 404 and resp.getheader('X-Error-Code') == 'RevisionNotFound'
    resp, _ = _request(hub.endpoint, 'GET', '/t-server/basic/resolve/main/..%2F..%2Fetc%2Fpasswd')
    assert resp.status == 404


def test_commit_hash_follows_content(tmp_path):
    repo = tmp_path / 'o' / 'r'
    repo.mkdir(parents=True)
    (repo / 'f').write_bytes(b'x')
    first = repo_commit_hash(repo)
    (repo / 'f').write_bytes(b'y')
    assert repo_commit_hash(repo) != first


def test_client_download_and_model_info(hub):
    from huggingface_hub import HfApi, hf_hub_download
    hub.add_repo('t-server/client', {'config.json': b'{"a": 1}'})
    path = hf_hub_download('t-server/client', 'config.json')
    assert json.loads(open(path).read()) == {'a': 1}
    assert str(hub.cache_dir) in path
    info = HfApi().model_info('t-server/client')
    assert [s.rfilename for s in info.siblings] == ['config.json']


def test_cli_rejects_missing_root(tmp_path, capsys):
    from timm_cra.hub.server import main
    with pytest.raises(SystemExit):
        main(['--root', str(tmp_path / 'nope'), '--port', '0'])
    assert 'is not a folder' in capsys.readouterr().err


# ---- write side: the real huggingface_hub upload client against a writable loopback Hub ------------------
WRITE_TOKEN = 'loopback-write-token'
CIFAR_REPO = Path(__file__).resolve().parents[2] / 'hub' / 'timm-cra' / 'cra_cifar_resnet20.cifar10'


@pytest.fixture
def write_hub(hub, tmp_path):
    """A writable server on a temp root (layered over nothing), with huggingface_hub pointed at it."""
    from timm_cra.hub.server import HubFolderServer
    root = tmp_path / 'write-root'
    root.mkdir()
    with HubFolderServer(root, write_token=WRITE_TOKEN) as server:
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


def test_read_only_server_refuses_writes(hub, model_folder):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError
    repo_dir = hub.add_repo('t-server/readonly', {'config.json': b'{}'})
    api = HfApi(endpoint=hub.endpoint, token=WRITE_TOKEN)
    with pytest.raises(HfHubHTTPError) as e:
        api.create_repo('t-server/created')
    assert e.value.response.status_code == 403 and '--allow-write' in str(e.value)
    with pytest.raises(HfHubHTTPError) as e:
        api.upload_folder(repo_id='t-server/readonly', folder_path=str(model_folder))
    assert e.value.response.status_code == 403
    assert sorted(p.name for p in repo_dir.iterdir()) == ['config.json']
    assert not (hub.server.test_root / 't-server' / 'created').exists()


def test_publish_cli_pushes_to_loopback_hub(write_hub, hub, cli_env, tmp_path):
    """scripts/publish.py --push (push_repo_folder) end to end; timm then loads the pushed weights."""
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
        [sys.executable, str(CIFAR_REPO.parents[2] / 'scripts' / 'publish.py'), 'cra_cifar_resnet20.cifar10',
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
    from timm_cra.hub.server import WRITE_TOKEN_ENV, main
    monkeypatch.delenv(WRITE_TOKEN_ENV, raising=False)
    with pytest.raises(SystemExit):
        main(['--root', str(tmp_path), '--port', '0', '--allow-write'])
    assert '--allow-write needs a token' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(['--root', str(tmp_path), '--port', '0', '--write-token', 'x'])
    assert 'add --allow-write' in capsys.readouterr().err


def test_cli_refuses_bad_port_busy_port_and_timeout_in_one_line(tmp_path, capsys):
    """`--port 99999` and a port in use were tracebacks (OverflowError, OSError); `--timeout inf` started a server
    that answered nothing. Each is one line naming the fix, exit 2 (the CLI's main, as `python -m` runs it)."""
    import socket
    from timm_cra.hub.server import main
    busy = socket.socket()
    busy.bind(('127.0.0.1', 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        for args, says in [(['--port', '99999'], '--port must be 0 to 65535 (0 picks a free port), not 99999'),
                           (['--port', str(port)], f'cannot listen on 127.0.0.1:{port} (Address already in use): '
                                                   f'pass another --port (0 picks a free one)'),
                           (['--port', '0', '--timeout', 'inf'], '--timeout must be a positive, finite number of '
                                                                 'seconds, not inf'),
                           (['--port', '0', '--timeout', 'nan'], 'not nan'),
                           (['--port', '0', '--timeout', '0'], 'not 0.0')]:
            with pytest.raises(SystemExit) as e:
                main(['--root', str(tmp_path)] + args)
            out = capsys.readouterr()
            assert e.value.code == 2 and out.err.startswith('error: ') and out.err.count('\n') == 1, out.err
            assert says in out.err and out.out == '', out.err
    finally:
        busy.close()
