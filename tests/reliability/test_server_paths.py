"""Hostile paths against the loopback Hub: nothing outside a repo folder is ever served, listed or written.

A secret file with known bytes sits next to the served root; every URL below tries to reach it (absolute
names, '..', percent- and double-encoding, backslashes, NUL, symlinks leaving the repo or the root, repo
ids with '..'). Read routes must answer 400/404 without the secret in the answer; write routes (same
table, plus commit / preupload / create-repo payloads) must refuse and leave the disk outside untouched.
"""
import base64
import hashlib
import http.client
import json
import os
import socket
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.hubserver.write_server import WritableHubServer
from timm_cra.hub.server import HubFolderServer, repo_commit_hash

SECRET = b'TOP-SECRET-9f3c1e-not-for-clients'
TOKEN = 'paths-test-token'


@pytest.fixture(scope='module')
def tmp_path(tmp_path_factory):
    """One layout for the module (every test checks it is left unchanged)."""
    return tmp_path_factory.mktemp('paths')


@pytest.fixture(scope='module')
def layout(tmp_path):
    """tmp/outside/secret.txt, tmp/root/org/repo/{ok.txt, inner.txt -> ok.txt, link.txt -> secret},
    tmp/root/org/evil -> tmp/outside (a repo leaving the root), tmp/root/org/repo/sub -> tmp/outside."""
    outside = tmp_path / 'outside'
    outside.mkdir()
    secret = outside / 'secret.txt'
    secret.write_bytes(SECRET)
    root = tmp_path / 'root'
    repo = root / 'org' / 'repo'
    repo.mkdir(parents=True)
    (repo / 'ok.txt').write_bytes(b'public')
    os.symlink('ok.txt', repo / 'inner.txt')
    os.symlink(secret, repo / 'link.txt')
    os.symlink(outside, repo / 'sub')
    os.symlink(outside, root / 'org' / 'evil')
    return root, outside, secret


@pytest.fixture(scope='module')
def read_server(layout):
    with HubFolderServer(layout[0]) as server:
        yield server


@pytest.fixture(scope='module')
def write_server(layout):
    with WritableHubServer(layout[0], write_token=TOKEN) as server:
        yield server


def _request(endpoint, method, path, body=None, headers=None, follow=True):
    # A branch's file is a 307 to its commit's URL (as on the Hub); followed as curl -L, urllib and huggingface_hub
    # do. follow=False: the redirect itself.
    host, port = endpoint.split('//')[1].split(':')
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    # putrequest sends the path exactly as given (no normalisation of '..' or encodings).
    conn.putrequest(method, path)
    headers = dict(headers or {})
    if body is not None:
        headers['Content-Length'] = str(len(body))
    for k, v in headers.items():
        conn.putheader(k, v)
    conn.endheaders(body)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    if follow and resp.status in (301, 302, 303, 307, 308) and resp.getheader('Location', '').startswith('/'):
        return _request(endpoint, method, resp.getheader('Location'), body, headers)
    return resp, data


def _hostile_read_urls(secret: Path, commit: str):
    rel = '../../../outside/secret.txt'  # from root/org/repo
    abs_q = quote(str(secret), safe='')
    return {
        'absolute-encoded': f'/org/repo/resolve/main/{abs_q}',
        'absolute-pinned-revision': f'/org/repo/resolve/{commit}/{abs_q}',
        'absolute-in-subfolder': f'/org/repo/resolve/main/x/{abs_q}',
        'dotdot-raw': f'/org/repo/resolve/main/{rel}',
        'dotdot-encoded-slash': '/org/repo/resolve/main/' + rel.replace('/', '%2F'),
        'dotdot-fully-encoded': '/org/repo/resolve/main/' + quote(rel, safe='').replace('.', '%2e'),
        'double-encoded': '/org/repo/resolve/main/' + rel.replace('.', '%252e').replace('/', '%252f'),
        'backslash': '/org/repo/resolve/main/' + rel.replace('/', '%5C'),
        'nul-suffix': f'/org/repo/resolve/main/{abs_q}%00ok.txt',
        'nul-in-name': '/org/repo/resolve/main/ok.txt%00',
        'symlink-to-outside': '/org/repo/resolve/main/link.txt',
        'symlinked-folder-to-outside': '/org/repo/resolve/main/sub/secret.txt',
        'repo-symlink-leaving-root': '/org/evil/resolve/main/secret.txt',
        'repo-id-dotdot': '/%2e%2e/outside/resolve/main/secret.txt',
        'repo-id-dotdot-raw': '/../outside/resolve/main/secret.txt',
        'repo-id-encoded-slash': '/org%2F..%2F..%2Foutside/x/resolve/main/secret.txt',
        'info-repo-leaving-root': '/api/models/org/evil',
        'info-repo-id-dotdot': '/api/models/%2e%2e/outside',
        'info-revision-repo-leaving-root': '/api/models/org/evil/revision/main',
    }


READ_CASES = list(_hostile_read_urls(Path('/x'), '0' * 40))


@pytest.mark.parametrize('case', READ_CASES)
def test_read_routes_never_leave_the_repo(layout, read_server, case):
    root, _, secret = layout
    url = _hostile_read_urls(secret, repo_commit_hash(root / 'org' / 'repo'))[case]
    for method in ('GET', 'HEAD'):
        resp, body = _request(read_server.endpoint, method, url)
        assert resp.status in (400, 404), (case, method, resp.status)
        assert SECRET not in body and SECRET.decode() not in str(resp.getheaders())


def _raw_head(endpoint, request_line: str) -> bytes:
    """The status line and headers of the answer to ``request_line``, read off a raw socket (http.client would
    parse a forged header as a real one)."""
    host, port = endpoint.split('//')[1].split(':')
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(f'{request_line}\r\nHost: x\r\nConnection: close\r\n\r\n'.encode())
        data = b''
        while b'\r\n\r\n' not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.split(b'\r\n\r\n')[0]


@pytest.mark.parametrize('server', ['read', 'write'])
def test_error_headers_quoting_the_request_cannot_forge_headers(layout, read_server, write_server, server):
    """A 404 quotes the requested name in X-Error-Message: a CR / LF in it (``%0d%0a``) made a real ``Set-Cookie``
    header (response splitting). Every control character is escaped; one header line per header."""
    endpoint = (read_server if server == 'read' else write_server).endpoint
    evil = '%0d%0aSet-Cookie:%20evil=1'
    for method, path in [('GET', f'/org/repo/resolve/main/x{evil}'), ('HEAD', f'/org/repo/resolve/main/x{evil}'),
                         ('GET', '/org/repo/resolve/main/x%0aSet-Cookie:%20evil=1%0d'),
                         ('GET', f'/org/repo/resolve/rev{evil}/ok.txt'), ('GET', f'/org/nope{evil}/resolve/main/x'),
                         ('GET', f'/api/models/org/repo/tree/main/x{evil}'), ('GET', f'/nothing{evil}'),
                         ('GET', '/org/repo/resolve/main/x%c2%85Set-Cookie:%20evil=1%e2%80%a8%0b%0c%1b')]:
        head = _raw_head(endpoint, f'{method} {path} HTTP/1.1')
        lines = head.split(b'\r\n')
        assert lines[0].startswith(b'HTTP/1.1 404'), (path, lines[0])
        assert all(b'\r' not in line and b'\n' not in line for line in lines), path
        names = [line.split(b':')[0].lower() for line in lines[1:]]
        assert b'set-cookie' not in names and names.count(b'x-error-message') == 1, (path, head)
        message = next(line for line in lines if line.lower().startswith(b'x-error-message:'))
        assert all(32 <= b < 127 for b in message), (path, message)


def test_listing_and_commit_ignore_escaping_links_but_serve_inner_ones(layout, read_server):
    root, _, secret = layout
    resp, body = _request(read_server.endpoint, 'GET', '/api/models/org/repo')
    assert resp.status == 200
    assert sorted(s['rfilename'] for s in json.loads(body)['siblings']) == ['inner.txt', 'ok.txt']
    # A symlink that stays inside the repo folder is served (documented choice).
    resp, body = _request(read_server.endpoint, 'GET', '/org/repo/resolve/main/inner.txt')
    assert resp.status == 200 and body == b'public'
    # The secret's content does not feed the commit hash: changing it changes nothing.
    before = repo_commit_hash(root / 'org' / 'repo')
    try:
        secret.write_bytes(SECRET + b'!')
        assert repo_commit_hash(root / 'org' / 'repo') == before
    finally:
        secret.write_bytes(SECRET)


# ---- write side ----------------------------------------------------------------------------------------
HOSTILE_NAMES = {
    'absolute': '/tmp/pwned.txt',
    'dotdot': '../../../outside/pwned.txt',
    'dotdot-inner': 'a/../../../../outside/pwned.txt',
    'backslash': '..\\..\\..\\outside\\pwned.txt',
    'nul': 'pwned.txt\x00.bin',
    'hidden-git': '.git/config',
    'hidden-file': '.pwned',
    'empty-part': 'a//pwned.txt',
    'empty': '',
    'symlinked-folder': 'sub/pwned.txt',
    'symlink-file': 'link.txt',
}


def _commit_body(line):
    header = {'key': 'header', 'value': {'summary': 'hostile'}}
    return b''.join(json.dumps(x).encode() + b'\n' for x in (header, line))


def _snapshot(tmp_path):
    return sorted((str(p.relative_to(tmp_path)), p.read_bytes() if p.is_file() else None)
                  for p in tmp_path.rglob('*') if not p.is_symlink())


@pytest.mark.parametrize('case', list(HOSTILE_NAMES))
@pytest.mark.parametrize('kind', ['file', 'lfsFile', 'deletedFile', 'deletedFolder', 'preupload'])
def test_write_routes_refuse_hostile_paths(layout, write_server, tmp_path, case, kind):
    root, outside, secret = layout
    name = HOSTILE_NAMES[case]
    before = _snapshot(tmp_path)
    auth = {'Authorization': f'Bearer {TOKEN}', 'Content-Type': 'application/json'}
    if kind == 'preupload':
        body = json.dumps({'files': [{'path': name, 'size': 3, 'sample': ''}]}).encode()
        url = '/api/models/org/repo/preupload/main'
    else:
        value = {'path': name}
        if kind == 'file':
            value.update(content=base64.b64encode(b'pwn').decode(), encoding='base64')
        elif kind == 'lfsFile':  # an object the repo holds (ok.txt), so only the path can be refused
            value.update(algo='sha256', oid=hashlib.sha256(b'public').hexdigest(), size=6)
        body = _commit_body({'key': kind, 'value': value})
        url = '/api/models/org/repo/commit/main'
    resp, data = _request(write_server.endpoint, 'POST', url, body, auth)
    assert resp.status in (400, 404), (case, kind, resp.status, data)
    assert SECRET not in data
    assert _snapshot(tmp_path) == before
    assert secret.read_bytes() == SECRET and sorted(p.name for p in outside.iterdir()) == ['secret.txt']


@pytest.mark.parametrize('url', [
    '/api/models/%2e%2e/outside/commit/main',
    '/api/models/org/evil/commit/main',
    '/api/models/org/evil/preupload/main',
    '/org/evil.git/info/lfs/objects/batch',
    '/%2e%2e/outside.git/info/lfs/objects/batch',
])
def test_write_routes_refuse_repos_outside_the_root(layout, write_server, tmp_path, url):
    root, outside, _ = layout
    before = _snapshot(tmp_path)
    body = _commit_body({'key': 'file', 'value': {'path': 'pwned.txt', 'content': 'cHdu', 'encoding': 'base64'}})
    resp, data = _request(write_server.endpoint, 'POST', url, body, {'Authorization': f'Bearer {TOKEN}'})
    assert resp.status in (400, 403, 404), (url, resp.status)
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize('org,name', [('..', 'outside'), ('org', '..'), ('.hidden', 'x'), ('a/b', 'c'),
                                      ('org', 'x\\..\\..'), ('org', 'x\x00'), (None, 'noorg')])
def test_create_repo_refuses_hostile_ids(layout, write_server, tmp_path, org, name):
    root, _, _ = layout
    before = _snapshot(tmp_path)
    body = json.dumps({'name': name, 'organization': org, 'type': 'model'}).encode()
    resp, _ = _request(write_server.endpoint, 'POST', '/api/repos/create', body, {'Authorization': f'Bearer {TOKEN}'})
    assert resp.status == 400
    assert _snapshot(tmp_path) == before


def test_lfs_upload_url_checks_signature_and_bytes(layout, write_server):
    """The PUT carries no token (as with the Hub's presigned URLs): only a URL this server signed for that
    oid and size is accepted, and only bytes whose sha256 and size match the oid are stored."""
    root, _, _ = layout
    data = b'weights' * 1000
    oid = hashlib.sha256(data).hexdigest()
    auth = {'Authorization': f'Bearer {TOKEN}'}
    server = write_server
    batch = json.dumps({'operation': 'upload', 'objects': [{'oid': oid, 'size': len(data)}]}).encode()
    resp, body = _request(server.endpoint, 'POST', '/org/repo.git/info/lfs/objects/batch', batch, auth)
    assert resp.status == 200
    href = json.loads(body)['objects'][0]['actions']['upload']['href']
    path = href[len(server.endpoint):]
    forged = path.replace('sig=', 'sig=0')
    assert _request(server.endpoint, 'PUT', forged, data)[0].status == 403
    other = path.replace(oid, hashlib.sha256(b'x').hexdigest())
    assert _request(server.endpoint, 'PUT', other, data)[0].status == 403
    assert _request(server.endpoint, 'PUT', path, data[:-1] + b'X')[0].status == 400  # wrong bytes
    assert _request(server.endpoint, 'PUT', path, data[:-1])[0].status == 400  # wrong size
    assert not (root / '.hub-lfs' / oid).exists()
    assert _request(server.endpoint, 'PUT', path, data)[0].status == 200
    assert (root / '.hub-lfs' / oid).read_bytes() == data
    assert not [p for p in (root / '.hub-lfs').iterdir() if p.name != oid]  # no temp files left
    (root / '.hub-lfs' / oid).unlink()
