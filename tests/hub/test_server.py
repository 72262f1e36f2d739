"""The read-only loopback Hub mirror speaks the protocol huggingface_hub's download client expects."""
import http.client
import json
import os
from pathlib import Path

import pytest

from timm_cra.hub.server import repo_commit_hash


def _request(endpoint, method, path, headers=None, follow=True):
    # A branch's file is a 307 to its commit's URL (as on the Hub); followed as curl -L, urllib and huggingface_hub
    # do. follow=False: the redirect itself.
    host, port = endpoint.split('//')[1].split(':')
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    conn.request(method, path, headers=headers or {})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    if follow and resp.status in (301, 302, 303, 307, 308) and resp.getheader('Location', '').startswith('/'):
        return _request(endpoint, method, resp.getheader('Location'), headers)
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


def test_range_headers_as_rfc_9110_says(hub):
    """A Range the mirror cannot use (invalid syntax, another unit, several ranges, a last byte before the first) is
    ignored: 200 with the whole file, as RFC 9110 says; it was a 416. 416 only for a valid range past the end or a
    suffix of 0 bytes. huggingface_hub's own forms (``bytes=N-``, ``bytes=N-M``, ``bytes=-N``) keep their 206; a
    HEAD describes the whole file."""
    hub.add_repo('t-server/range', {'a.txt': b'0123456789', 'empty.txt': b''})
    url = '/t-server/range/resolve/main/a.txt'
    whole = b'0123456789'
    for rng, status, body in [
            ('bytes=3-', 206, b'3456789'), ('bytes=2-4', 206, b'234'), ('bytes=-3', 206, b'789'),
            ('bytes=8-100', 206, b'89'), ('bytes=-100', 206, whole), ('BYTES=1-1', 206, b'1'),
            ('bytes=0-' + '9' * 5000, 206, whole), ('bytes=' + '0' * 30 + '7-', 206, b'789'),
            ('bytes=10-', 416, b''), ('bytes=-0', 416, b''), ('bytes=' + '9' * 5000 + '-', 416, b''),
            ('bytes=5-2', 200, whole), ('bytes=abc', 200, whole), ('bytes=-', 200, whole), ('items=0-1', 200, whole),
            ('bytes=0-1,3-4', 200, whole), ('bytes 0-1', 200, whole)]:
        resp, got = _request(hub.endpoint, 'GET', url, {'Range': rng})
        assert (resp.status, got) == (status, body), rng[:40]
        if status == 206:
            first = whole.index(body)
            assert resp.getheader('Content-Range') == f'bytes {first}-{first + len(body) - 1}/10', rng[:40]
        elif status == 416:
            assert resp.getheader('Content-Range') == 'bytes */10'
        assert int(resp.getheader('Content-Length')) == len(body)
    resp, got = _request(hub.endpoint, 'HEAD', url, {'Range': 'bytes=3-'})
    assert resp.status == 200 and resp.getheader('Content-Length') == '10' and got == b''
    resp, got = _request(hub.endpoint, 'GET', '/t-server/range/resolve/main/empty.txt', {'Range': 'bytes=-5'})
    assert resp.status == 200 and got == b''


def test_commit_hash_follows_replaced_and_edited_files(tmp_path):
    """A plain folder's commit hash is keyed on names and stat data: a file replaced (a new inode, even with the
    same size and mtime, as `cp -p` or `rsync -t` leave it), edited, added or renamed changes it."""
    import os
    repo = tmp_path / 'o' / 'r'
    repo.mkdir(parents=True)
    (repo / 'f').write_bytes(b'x')
    seen = [repo_commit_hash(repo)]
    assert repo_commit_hash(repo) == seen[0]  # stable while nothing changes
    st = (repo / 'f').stat()
    (tmp_path / 'new').write_bytes(b'y')
    os.utime(tmp_path / 'new', ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp_path / 'new', repo / 'f')  # same name, size and mtime: another file
    seen.append(repo_commit_hash(repo))
    (repo / 'f').write_bytes(b'yz')
    seen.append(repo_commit_hash(repo))
    (repo / 'g').write_bytes(b'')
    seen.append(repo_commit_hash(repo))
    os.rename(repo / 'g', repo / 'h')
    seen.append(repo_commit_hash(repo))
    assert len(set(seen)) == len(seen), seen


def test_file_rewritten_in_place_with_its_mtime_restored_is_served_fresh(hub):
    """The mirror's digest cache (ETag, sha256) was keyed on inode, mtime and size: a file rewritten in place with the
    same size and its mtime put back (``cat new > f; touch -d @old f``) kept its old ETag, so the client served the
    cached old bytes. Keyed on the ctime too, the next download gets the new bytes under their own sha256."""
    import hashlib
    import os
    from huggingface_hub import hf_hub_download
    old, new = b'old weights ' * 100, b'new weights ' * 100
    repo = hub.add_repo('t-server/in-place', {'model.safetensors': old})
    path = hf_hub_download('t-server/in-place', 'model.safetensors')
    assert Path(path).read_bytes() == old
    weights = repo / 'model.safetensors'
    st = weights.stat()
    with open(weights, 'r+b') as f:  # the same inode, size and mtime
        f.write(new)
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (weights.stat().st_ino, weights.stat().st_size, weights.stat().st_mtime_ns) == (
        st.st_ino, st.st_size, st.st_mtime_ns)
    resp, _ = _request(hub.endpoint, 'HEAD', '/t-server/in-place/resolve/main/model.safetensors')
    assert resp.getheader('ETag') == f'"{hashlib.sha256(new).hexdigest()}"'
    path = hf_hub_download('t-server/in-place', 'model.safetensors')  # the same cache
    assert Path(path).read_bytes() == new


def test_a_huge_file_in_a_repo_is_never_read_for_the_commit_hash(hub, tmp_path):
    """The commit hash of a plain folder hashed every file: a 6 GB file beside the weights made the first request
    (config.json through huggingface_hub) read 6 GB and time out. Served by timm-cra-hub-mirror in its own process,
    whose bytes read the kernel counts (/proc/<pid>/io), with a sparse 6 GiB file in the repo."""
    import os
    import subprocess
    import sys
    from huggingface_hub import HfApi, hf_hub_download
    repo = tmp_path / 'root' / 'o' / 'r'
    repo.mkdir(parents=True)
    (repo / 'config.json').write_bytes(b'{"a": 1}')
    with open(repo / 'huge.bin', 'wb') as f:
        f.truncate(6 << 30)  # truncate -s 6G: sparse, takes no disk
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, '-m', 'timm_cra.hub.server', '--root', str(tmp_path / 'root'),
                             '--port', '0', '--quiet'], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(root)))
    try:
        endpoint = proc.stdout.readline().split('HF_ENDPOINT=')[1].rstrip(')\n')
        hub.set_endpoint(endpoint)
        path = hf_hub_download('o/r', 'config.json')
        first = HfApi(endpoint=endpoint).model_info('o/r').sha
        read = int(dict(line.split(': ') for line in Path(f'/proc/{proc.pid}/io').read_text().splitlines())['rchar'])
        (tmp_path / 'new.json').write_bytes(b'{"a": 2}')
        os.replace(tmp_path / 'new.json', repo / 'config.json')
        second = HfApi(endpoint=endpoint).model_info('o/r').sha
        path2 = hf_hub_download('o/r', 'config.json', revision=second)
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert Path(path).read_bytes() == b'{"a": 1}' and Path(path2).read_bytes() == b'{"a": 2}'
    assert read < 64 << 20, f'the mirror read {read} bytes to serve config.json'  # the interpreter's own files
    assert second != first


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


def test_read_only_server_refuses_writes(hub, tmp_path):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError
    repo_dir = hub.add_repo('t-server/readonly', {'config.json': b'{}'})
    api = HfApi(endpoint=hub.endpoint, token='any-token')
    with pytest.raises(HfHubHTTPError) as e:
        api.create_repo('t-server/created')
    assert e.value.response.status_code == 403 and 'read-only mirror' in str(e.value)
    with pytest.raises(HfHubHTTPError) as e:
        (tmp_path / 'up').mkdir()
        (tmp_path / 'up' / 'config.json').write_bytes(b'{"a": 1}')
        api.upload_folder(repo_id='t-server/readonly', folder_path=str(tmp_path / 'up'))
    assert e.value.response.status_code == 403
    assert sorted(p.name for p in repo_dir.iterdir()) == ['config.json']
    assert not (hub.server.test_root / 't-server' / 'created').exists()


def test_mirror_starts_without_torch_or_timm(tmp_path):
    """``python -m timm_cra.hub.server`` (what CI and the offline error messages start) serves hub/ with the standard
    library alone: ``-X importtime`` lists every module the process imported, and neither torch nor timm is one
    (with them it held ~720 MB; without, ~22 MB)."""
    import os
    import subprocess
    import sys
    import urllib.request
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(root))
    proc = subprocess.Popen([sys.executable, '-X', 'importtime', '-m', 'timm_cra.hub.server', '--root',
                             str(root / 'hub'), '--port', '0', '--quiet'], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        endpoint = line.split('HF_ENDPOINT=')[1].rstrip(')\n')
        with urllib.request.urlopen(f'{endpoint}/timm-cra/cra_cifar_resnet20.cifar10/resolve/main/config.json',
                                    timeout=30) as resp:
            served = resp.read()
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    assert served == (root / 'hub' / 'timm-cra' / 'cra_cifar_resnet20.cifar10' / 'config.json').read_bytes()
    imported = {ln.rsplit('|', 1)[1].strip() for ln in stderr.splitlines() if ln.startswith('import time:')}
    assert {'timm_cra', 'timm_cra.hub'} <= imported  # the package's __init__ ran (the server itself is __main__)
    assert not {m for m in imported if m.split('.')[0] in ('torch', 'timm', 'numpy', 'huggingface_hub')}


def test_cli_refuses_bad_port_busy_port_and_timeout_in_one_line(tmp_path, capsys):
    """`--port 99999` and a port in use were tracebacks (OverflowError, OSError); `--timeout inf` (or `1e10`, past
    what a socket time-out holds) started a server that answered nothing. Each is one line naming the fix, exit 2 (the CLI's main, as `python -m` runs it)."""
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
                           (['--port', '0', '--timeout', 'inf'], '--timeout must be a number of seconds from 1 '
                                                                 'to 86400 (a day), not inf'),
                           (['--port', '0', '--timeout', '1e-9'], 'not 1e-09'),  # cut ordinary downloads
                           (['--port', '0', '--timeout', '1e10'], 'not 10000000000.0'),
                           (['--port', '0', '--timeout', 'nan'], 'not nan'),
                           (['--port', '0', '--timeout', '0'], 'not 0.0')]:
            with pytest.raises(SystemExit) as e:
                main(['--root', str(tmp_path)] + args)
            out = capsys.readouterr()
            assert e.value.code == 2 and out.err.startswith('error: ') and out.err.count('\n') == 1, out.err
            assert says in out.err and out.out == '', out.err
    finally:
        busy.close()


def _mirror_cli(root, *args):
    """timm-cra-hub-mirror over ``root`` in its own process (``python -m``): ``(process, host, port)``."""
    import os
    import subprocess
    import sys
    proc = subprocess.Popen([sys.executable, '-m', 'timm_cra.hub.server', '--root', str(root), '--port', '0',
                             '--quiet', *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2])))
    host, port = proc.stdout.readline().split('HF_ENDPOINT=http://')[1].rstrip(')\n').split(':')
    return proc, host, int(port)


def test_a_file_truncated_while_served_closes_the_connection_at_once(tmp_path):
    """A file cut from 32 MB to 1 MB while served: the mirror stopped writing but kept the connection open until its
    --timeout (60 s), so the client waited a minute for a partial body. Now it closes at the short read: the client
    sees the end of the stream at once, short of the Content-Length, and the mirror serves the next request."""
    import socket
    import time
    repo = tmp_path / 'root' / 'o' / 'r'
    repo.mkdir(parents=True)
    (repo / 'big.bin').write_bytes(b'\1' * (32 << 20))
    proc, host, port = _mirror_cli(tmp_path / 'root', '--timeout', '60')
    try:
        with socket.create_connection((host, port), timeout=15) as s:
            # the commit's URL, where resolve/main redirects (a 307 without a body)
            s.sendall(f'GET /o/r/resolve/{repo_commit_hash(repo)}/big.bin HTTP/1.1\r\nHost: {host}\r\n\r\n'.encode())
            received = s.recv(1 << 16)  # headers and the first bytes: the server has read its first 1 MB chunk
            assert b' 200 ' in received.split(b'\r\n')[0] and b'Content-Length: 33554432' in received, received[:300]
            os.truncate(repo / 'big.bin', 1 << 20)
            start = time.monotonic()
            while True:
                chunk = s.recv(1 << 20)  # socket.timeout (15 s) here: the connection was left open
                if not chunk:
                    break
                received += chunk
            waited = time.monotonic() - start
        assert waited < 10, waited
        assert len(received.split(b'\r\n\r\n', 1)[1]) < 32 << 20  # a short body: the client can tell
        resp, body = _request(f'http://{host}:{port}', 'GET', '/o/r/resolve/main/big.bin')
        assert resp.status == 200 and body == b'\1' * (1 << 20)
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_request_headers_trickled_past_the_timeout_close_the_connection(tmp_path):
    """Request headers sent a byte every second to a mirror with --timeout 3 (each read well within it) held the
    connection and its thread open for as long as the client went on. Now the whole header read ends by --timeout,
    the connection is closed, and the mirror serves the next request."""
    import socket
    import time
    repo = tmp_path / 'root' / 'o' / 'r'
    repo.mkdir(parents=True)
    (repo / 'config.json').write_bytes(b'{"a": 1}')
    proc, host, port = _mirror_cli(tmp_path / 'root', '--timeout', '3')
    try:
        with socket.create_connection((host, port), timeout=1) as s:
            start, closed = time.monotonic(), False
            s.sendall(b'GET /o/r/resolve/main/config.json HTTP/1.1\r\nX-Slow: ')
            while not closed and time.monotonic() - start < 15:  # the old mirror: still open after 15 s
                try:
                    s.sendall(b'a')
                    closed = s.recv(100) == b''  # a second's wait for the server's end of stream
                except socket.timeout:
                    pass
                except OSError:  # a reset: closed too
                    closed = True
            waited = time.monotonic() - start
        assert closed and waited < 8, waited
        resp, body = _request(f'http://{host}:{port}', 'GET', '/o/r/resolve/main/config.json')
        assert resp.status == 200 and body == b'{"a": 1}'
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def _bytes_read(pid: int) -> int:
    """What a process has read so far, as the kernel counts it (``rchar``: every read, page cache or not)."""
    return int(dict(line.split(': ') for line in Path(f'/proc/{pid}/io').read_text().splitlines())['rchar'])


def test_listing_and_a_json_snapshot_never_read_a_huge_file(hub, tmp_path):
    """A sparse 30 GB file in ``extra/``: a recursive tree listing took 92 s and ``snapshot_download`` of ``*.json``
    (config.json alone) sat 103 s, as the listing's file and folder oids were git hashes of every byte. Now
    they come from stat data: the mirror process (its own, whose reads the kernel counts) reads under 64 MiB for
    both, with a sparse 3 GiB file here; the download is still checked against its sha256 ETag, and each oid still
    changes with the file (or anything below the folder) it names."""
    import hashlib
    from huggingface_hub import HfApi, RepoFile, RepoFolder, snapshot_download
    repo = tmp_path / 'root' / 'o' / 'r'
    (repo / 'extra').mkdir(parents=True)
    config = b'{"architecture": "cra_cifar_resnet20"}'
    (repo / 'config.json').write_bytes(config)
    with open(repo / 'extra' / 'huge.bin', 'wb') as f:
        f.truncate(3 << 30)  # truncate -s 3G: sparse, takes no disk
    proc, host, port = _mirror_cli(tmp_path / 'root')
    try:
        endpoint = f'http://{host}:{port}'
        hub.set_endpoint(endpoint)
        api = HfApi(endpoint=endpoint)
        before = _bytes_read(proc.pid)
        tree = {e.path: e for e in api.list_repo_tree('o/r', recursive=True)}
        top = {e.path: e for e in api.list_repo_tree('o/r')}
        folder = snapshot_download('o/r', allow_patterns=['*.json'])
        read = _bytes_read(proc.pid) - before
        resp, _ = _request(endpoint, 'HEAD', '/o/r/resolve/main/config.json')
        os.truncate(repo / 'extra' / 'huge.bin', 2 << 30)  # edited in place
        after = {e.path: e for e in api.list_repo_tree('o/r', recursive=True)}
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert read < 64 << 20, f'the mirror read {read} bytes to list the repo and send config.json'
    assert sorted(tree) == ['config.json', 'extra', 'extra/huge.bin'] and sorted(top) == ['config.json', 'extra']
    assert isinstance(tree['extra'], RepoFolder) and tree['extra'].tree_id == top['extra'].tree_id
    assert isinstance(tree['extra/huge.bin'], RepoFile) and tree['extra/huge.bin'].size == 3 << 30
    assert all(len(e.blob_id) == 40 for e in tree.values() if isinstance(e, RepoFile))
    assert sorted(p.name for p in Path(folder).rglob('*')) == ['config.json']
    assert (Path(folder) / 'config.json').read_bytes() == config
    assert resp.getheader('ETag') == f'"{hashlib.sha256(config).hexdigest()}"'  # what the client checks it by
    assert after['extra/huge.bin'].size == 2 << 30
    assert after['extra/huge.bin'].blob_id != tree['extra/huge.bin'].blob_id
    assert after['extra'].tree_id != tree['extra'].tree_id
    assert after['config.json'].blob_id == tree['config.json'].blob_id  # untouched: the same id


def test_hidden_folders_are_never_walked(hub, monkeypatch):
    """A ``.git`` of 51,200 files in a served folder made every HEAD of config.json take 2-3 s: the file walk went
    through it and dropped its files after. Hidden folders are now pruned: no request lists one, and none of their
    files is served or listed."""
    from huggingface_hub import HfApi
    repo = hub.add_repo('t-server/dotgit', {'config.json': b'{}', '.gitattributes': b'*.bin lfs\n'})
    for sub in ('objects/aa', 'objects/bb', 'refs/heads'):
        (repo / '.git' / sub).mkdir(parents=True)
        (repo / '.git' / sub / 'f').write_bytes(b'x')
    (repo / 'sub' / '.cache').mkdir(parents=True)
    (repo / 'sub' / '.cache' / 'c.bin').write_bytes(b'c')
    (repo / 'sub' / 'w.bin').write_bytes(b'w')
    listed = []
    scandir = os.scandir

    def recording_scandir(path='.'):
        listed.append(os.fspath(path))
        return scandir(path)

    with monkeypatch.context() as patch:  # the in-process mirror's threads list folders through it
        patch.setattr(os, 'scandir', recording_scandir)
        resp, _ = _request(hub.endpoint, 'HEAD', '/t-server/dotgit/resolve/main/config.json')
        files = HfApi().list_repo_files('t-server/dotgit')
        siblings = [s.rfilename for s in HfApi().model_info('t-server/dotgit').siblings]
    assert resp.status == 200
    assert files == siblings == ['.gitattributes', 'config.json', 'sub/w.bin']
    assert any(Path(p) == repo for p in listed)  # the walk went through this scandir
    assert not [p for p in listed if '/.git' in p or '/.cache' in p], listed
    resp, _ = _request(hub.endpoint, 'HEAD', '/t-server/dotgit/resolve/main/.git/refs/heads/f')
    assert resp.status == 404
