"""The loopback Hub speaks the protocol huggingface_hub's download client expects."""
import http.client
import json

import pytest

from timm_cra.hub.server import repo_commit_hash


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
