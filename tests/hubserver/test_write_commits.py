"""Commits to the writable loopback Hub are one step, driven by huggingface_hub's real client, under real faults.

A refused commit, a disk that fills mid-commit (a full tmpfs, or RLIMIT_FSIZE on the server process), racing
commits that share an LFS object, and kill -9 between staging and switch all leave ``main`` at a complete
revision: the previous one byte for byte, or the new one whole. Also: the tree route ``upload_folder
(delete_patterns=...)`` needs, streamed LFS uploads (bounded memory), connection time-outs, malformed
``Content-Length``, over-long names and repo ids the Hub refuses.
"""
import contextlib
import hashlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.hubserver.write_server import WritableHubServer
from timm_cra.hub.server import HubFolderServer, repo_commit_hash, served_revision

REPO_ROOT = Path(__file__).resolve().parents[2]
TOKEN = 'commit-test-token'


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _disk(root: Path):
    """Everything under ``root`` (hidden files included): path -> bytes, link target or 'dir'."""
    out = {}
    for p in sorted(root.rglob('*')):
        rel = str(p.relative_to(root))
        out[rel] = ('link', os.readlink(p)) if p.is_symlink() else 'dir' if p.is_dir() else p.read_bytes()
    return out


def _served(api, repo_id, cache_dir, revision='main'):
    """What a client sees: {file: sha256} of ``revision``, every file downloaded with hf_hub_download."""
    from huggingface_hub import hf_hub_download
    names = api.list_repo_files(repo_id, revision=revision)
    return {n: _sha(Path(hf_hub_download(repo_id, n, revision=revision, cache_dir=cache_dir)).read_bytes())
            for n in names}


def _request(endpoint, method, path, body=None, headers=None, timeout=5, follow=True):
    # A branch's file is a 307 to its commit's URL (as on the Hub); followed as curl -L, urllib and huggingface_hub
    # do. follow=False: the redirect itself.
    host, port = endpoint.split('//')[1].split(':')
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    conn.putrequest(method, path)
    for k, v in (headers or {}).items():
        conn.putheader(k, v)
    if body is not None and 'Content-Length' not in (headers or {}):
        conn.putheader('Content-Length', str(len(body)))
    conn.endheaders(body)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    if follow and resp.status in (301, 302, 303, 307, 308) and resp.getheader('Location', '').startswith('/'):
        return _request(endpoint, method, resp.getheader('Location'), body, headers, timeout)
    return resp, data


@pytest.fixture
def lfs_client(monkeypatch):
    """The plain LFS protocol (what clients without hf_xet use), so LFS objects go through this server."""
    from huggingface_hub import constants
    monkeypatch.setattr(constants, 'HF_HUB_DISABLE_XET', True)


@pytest.fixture
def write_hub(hub, tmp_path, lfs_client):
    """A writable in-process server on an empty root (LFS from 1 KB on), huggingface_hub pointed at it."""
    from huggingface_hub import HfApi
    root = tmp_path / 'root'
    root.mkdir()
    with WritableHubServer(root, write_token=TOKEN, lfs_threshold=1000) as server:
        hub.set_endpoint(server.endpoint)
        server.root, server.api = root, HfApi(endpoint=server.endpoint, token=TOKEN)
        yield server


def _add(path, data):
    from huggingface_hub import CommitOperationAdd
    return CommitOperationAdd(path_in_repo=path, path_or_fileobj=data)


def _delete(path):
    from huggingface_hub import CommitOperationDelete
    return CommitOperationDelete(path_in_repo=path)


@contextlib.contextmanager
def _server_process(root: Path, env=None, preexec_fn=None, lfs_threshold=1000):
    """``python -m tests.hubserver.write_server --allow-write`` on ``root``; yields (process, endpoint); killed by
    PID."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TIMM_CRA_HUB_WRITE_TOKEN=TOKEN, **(env or {}))
    lfs = ['--lfs-threshold', str(lfs_threshold)] if lfs_threshold else []
    proc = subprocess.Popen(
        [sys.executable, '-m', 'tests.hubserver.write_server', '--root', str(root), '--port', '0', '--quiet',
         '--allow-write', *lfs],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=preexec_fn)
    watchdog = threading.Timer(120, proc.kill)  # a server that never prints its URL must not hang the test
    watchdog.start()
    try:
        line = proc.stdout.readline()
        watchdog.cancel()
        m = re.search(r' at (http://127\.0\.0\.1:\d+)', line)
        assert m, (line, proc.poll())
        yield proc, m.group(1)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


# ---- refused commits ------------------------------------------------------------------------------------
def _raw_commit(endpoint, repo_id, lines):
    body = b''.join(json.dumps(x).encode() + b'\n' for x in [{'key': 'header', 'value': {'summary': 's'}}, *lines])
    return _request(endpoint, 'POST', f'/api/models/{repo_id}/commit/main', body,
                    {'Authorization': f'Bearer {TOKEN}', 'Content-Type': 'application/x-ndjson'})


@pytest.mark.parametrize('case', ['file-and-folder', 'delete-missing', 'delete-missing-folder', 'stale-parent',
                                  'lfs-not-uploaded'])
def test_refused_commit_leaves_previous_revision_byte_identical(write_hub, hub, tmp_path, case):
    from huggingface_hub.errors import HfHubHTTPError
    api, repo_id = write_hub.api, 't-commit/refused'
    api.create_repo(repo_id)
    first = api.create_commit(repo_id, [_add('config.json', b'{"a": 1}'), _add('w.bin', os.urandom(5000))],
                              commit_message='one')
    second = api.create_commit(repo_id, [_add('README.md', b'# two\n'), _add('sub/x.txt', b'x')], commit_message='two')
    before_disk, before = _disk(write_hub.root), _served(api, repo_id, tmp_path / 'c1')
    if case == 'lfs-not-uploaded':  # the client always uploads first, so this one is sent by hand
        oid = _sha(b'never uploaded')
        resp, body = _raw_commit(write_hub.endpoint, repo_id, [
            {'key': 'file', 'value': {'path': 'early.txt', 'content': 'ZWFybHk=', 'encoding': 'base64'}},
            {'key': 'lfsFile', 'value': {'path': 'late.bin', 'algo': 'sha256', 'oid': oid, 'size': 14}}])
        status = resp.status
    else:
        ops, parent = {
            'file-and-folder': ([_add('early.txt', b'early'), _add('x', b'file'), _add('x/y', b'below')], None),
            'delete-missing': ([_add('early.txt', b'early'), _delete('missing.txt')], None),
            'delete-missing-folder': ([_add('early.txt', b'early'), _delete('nothing/')], None),
            'stale-parent': ([_add('early.txt', b'early')], first.oid),
        }[case]
        with pytest.raises(HfHubHTTPError) as e:
            api.create_commit(repo_id, ops, commit_message='refused', parent_commit=parent)
        status = e.value.response.status_code
    assert status == {'file-and-folder': 400, 'delete-missing': 404, 'delete-missing-folder': 404,
                      'stale-parent': 412, 'lfs-not-uploaded': 400}[case]
    assert _disk(write_hub.root) == before_disk  # not one byte written, no temp left
    assert _served(api, repo_id, tmp_path / 'c2') == before
    assert repo_commit_hash(write_hub.root / 't-commit' / 'refused') == second.oid


def test_lfs_rename_via_create_commit(write_hub, hub, tmp_path):
    """delete a.bin + add b.bin with the same bytes (the client skips the upload: the server has them)."""
    from huggingface_hub import HfApi
    api, repo_id = write_hub.api, 't-commit/rename'
    data = os.urandom(200_000)
    api.create_repo(repo_id)
    old = api.create_commit(repo_id, [_add('a.bin', data), _add('keep.txt', b'keep')], commit_message='add a.bin')
    new = api.create_commit(repo_id, [_delete('a.bin'), _add('b.bin', data)], commit_message='rename a.bin -> b.bin')
    assert _served(api, repo_id, tmp_path / 'c') == {'b.bin': _sha(data), 'keep.txt': _sha(b'keep')}
    # The previous revision is still served under its commit hash.
    assert _served(api, repo_id, tmp_path / 'c', revision=old.oid) == {'a.bin': _sha(data), 'keep.txt': _sha(b'keep')}
    assert new.oid == repo_commit_hash(write_hub.root / 't-commit' / 'rename') != old.oid
    with HubFolderServer(write_hub.root) as read_only:  # the same root served read-only: the same main
        assert HfApi(endpoint=read_only.endpoint).model_info(repo_id).sha == new.oid


def test_plain_folder_in_the_write_root_takes_a_commit(write_hub, hub, tmp_path):
    """A hand-made folder (as in hub/) becomes a written repo; its own files are copied, never changed."""
    repo_dir = write_hub.root / 't-plain' / 'repo'
    repo_dir.mkdir(parents=True)
    (repo_dir / 'config.json').write_bytes(b'{}')
    (repo_dir / 'old.txt').write_bytes(b'old')
    api = write_hub.api
    plain_commit = api.model_info('t-plain/repo').sha
    new = api.create_commit('t-plain/repo', [_add('new.txt', b'new'), _delete('old.txt')], commit_message='two')
    assert new.oid != plain_commit
    assert _served(api, 't-plain/repo', tmp_path / 'c') == {'config.json': _sha(b'{}'), 'new.txt': _sha(b'new')}
    assert (repo_dir / 'old.txt').read_bytes() == b'old' and not (repo_dir / 'new.txt').exists()
    (repo_dir / 'config.json').write_bytes(b'{"edited": 1}')  # copied, not linked: the revision keeps its bytes
    assert (served_revision(repo_dir)[0] / 'config.json').read_bytes() == b'{}'
    # The folder's own commit hash still resolves (pinned @hash), to the files it had.
    assert _served(api, 't-plain/repo', tmp_path / 'c-pinned', revision=plain_commit) == {
        'config.json': _sha(b'{}'), 'old.txt': _sha(b'old')}
    assert (repo_dir / '.hub-head').read_text().split() == [plain_commit, new.oid]


# ---- disk full mid-commit ------------------------------------------------------------------------------
def _limit_file_size():
    import resource
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))  # the kernel refuses writes past 1 MiB: EFBIG


@pytest.mark.parametrize('fault', ['tmpfs-full', 'rlimit-fsize'])
def test_disk_full_mid_commit_leaves_previous_revision(hub, tmp_path, fault):
    """Files travel inside the commit (no LFS), so the disk fills while the new revision is staged."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError
    root = tmp_path / 'root'
    root.mkdir()
    with contextlib.ExitStack() as stack:
        if fault == 'tmpfs-full':
            mount = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', str(root)], capture_output=True)
            if mount.returncode != 0:
                pytest.skip(f'cannot mount a tmpfs here ({mount.stderr.decode().strip()}); rlimit-fsize covers this')
            stack.callback(subprocess.run, ['umount', str(root)], check=True)
            server = stack.enter_context(WritableHubServer(root, write_token=TOKEN))
            endpoint = server.endpoint
        else:
            endpoint = stack.enter_context(_server_process(root, preexec_fn=_limit_file_size, lfs_threshold=None))[1]
        hub.set_endpoint(endpoint)
        api, repo_id = HfApi(endpoint=endpoint, token=TOKEN), 't-disk/full'
        api.create_repo(repo_id)
        api.create_commit(repo_id, [_add('config.json', b'{}'), _add('old.txt', b'old'),
                                    _add('w.bin', os.urandom(100_000))], commit_message='one')
        before_disk, before = _disk(root), _served(api, repo_id, tmp_path / 'c1')
        # Staged in name order: a-new.txt is written, then z-big.bin (3 MiB, inside the commit) fills the disk.
        with pytest.raises(HfHubHTTPError) as e:
            api.create_commit(repo_id, [_add('a-new.txt', b'new'), _delete('old.txt'),
                                        _add('z-big.bin', os.urandom(3 << 20))], commit_message='too big')
        assert e.value.response.status_code == 507 and 'out of disk space' in str(e.value)
        assert _disk(root) == before_disk
        assert _served(api, repo_id, tmp_path / 'c2') == before
        # The server is healthy: a commit that fits lands whole.
        api.create_commit(repo_id, [_add('a-new.txt', b'new'), _delete('old.txt')], commit_message='fits')
        assert sorted(api.list_repo_files(repo_id)) == ['a-new.txt', 'config.json', 'w.bin']


def test_disk_full_at_the_head_switch_is_the_507(write_hub, hub, tmp_path, monkeypatch):
    """The disk filling at the last step (the atomic replace of .hub-head, whose one-line error carries no errno of
    its own) was a 500 "Commit failed (None)"; it is the documented 507, and nothing changed."""
    import errno
    from huggingface_hub.errors import HfHubHTTPError
    api, repo_id = write_hub.api, 't-disk/head'
    api.create_repo(repo_id)
    api.create_commit(repo_id, [_add('config.json', b'{}')], commit_message='one')
    before = _served(api, repo_id, tmp_path / 'c1')
    real = os.replace

    def full(src, dst, *args, **kwargs):
        if os.fspath(dst).endswith('.hub-head'):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(src, dst, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(os, 'replace', full)
        with pytest.raises(HfHubHTTPError) as e:
            api.create_commit(repo_id, [_add('config.json', b'{"a": 1}')], commit_message='two')
    assert e.value.response.status_code == 507 and 'out of disk space' in str(e.value)
    assert 'None' not in str(e.value)
    assert _served(api, repo_id, tmp_path / 'c2') == before


# ---- racing commits ------------------------------------------------------------------------------------
def test_racing_commits_sharing_an_lfs_object_both_land_whole(write_hub, hub, tmp_path):
    api, repo_id = write_hub.api, 't-commit/race'
    api.create_repo(repo_id)
    expected = {}
    for round_ in range(3):
        shared = os.urandom(300_000)  # new each round, so both clients upload it at once
        barrier, results = threading.Barrier(2, timeout=30), {}

        def commit(i):
            ops = [_add(f'r{round_}/t{i}/shared.bin', shared), _add(f'r{round_}/t{i}/own.txt', f'{i}'.encode())]
            barrier.wait()
            try:
                results[i] = api.create_commit(repo_id, ops, commit_message=f'round {round_} thread {i}')
            except Exception as e:  # checked below
                results[i] = e

        threads = [threading.Thread(target=commit, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert all(hasattr(results.get(i), 'oid') for i in range(2)), results
        for i in range(2):
            expected[f'r{round_}/t{i}/shared.bin'] = _sha(shared)
            expected[f'r{round_}/t{i}/own.txt'] = _sha(f'{i}'.encode())
        assert _served(api, repo_id, tmp_path / f'c{round_}') == expected  # no file of either commit lost
        for i in range(2):  # each commit's own revision holds its files (it applied whole)
            files = set(api.list_repo_files(repo_id, revision=results[i].oid))
            assert {f'r{round_}/t{i}/shared.bin', f'r{round_}/t{i}/own.txt'} <= files


# ---- kill -9 between staging and switch; streamed LFS upload ---------------------------------------------
def _vm_kib(pid, field):
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith(field + ':'):
            return int(line.split()[1])
    raise AssertionError(field)


def _lfs_upload_url(endpoint, repo_id, data):
    batch = json.dumps({'operation': 'upload', 'objects': [{'oid': _sha(data), 'size': len(data)}]}).encode()
    resp, body = _request(endpoint, 'POST', f'/{repo_id}.git/info/lfs/objects/batch', batch,
                          {'Authorization': f'Bearer {TOKEN}'})
    assert resp.status == 200, body
    return json.loads(body)['objects'][0]['actions']['upload']['href'][len(endpoint):]


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_kill_9_mid_commit_then_restart_serves_previous_revision(hub, tmp_path, lfs_client):
    from huggingface_hub import HfApi
    root, repo_id = tmp_path / 'root', 't-kill/repo'
    root.mkdir()
    repo_dir = root / 't-kill' / 'repo'
    with WritableHubServer(root, write_token=TOKEN, lfs_threshold=1000) as server:
        hub.set_endpoint(server.endpoint)
        api = HfApi(endpoint=server.endpoint, token=TOKEN)
        api.create_repo(repo_id)
        first = api.create_commit(repo_id, [_add('config.json', b'{}'), _add('w.bin', os.urandom(50_000))],
                                  commit_message='one')
        before = _served(api, repo_id, tmp_path / 'c1')
    big = os.urandom(64 << 20)
    with _server_process(root, env={'TIMM_CRA_HUB_TEST_PAUSE_BEFORE_SWITCH': '120'}) as (proc, endpoint):
        hub.set_endpoint(endpoint)
        api = HfApi(endpoint=endpoint, token=TOKEN)
        # A 64 MiB LFS upload is streamed to disk: the server's peak memory grows by far less than that.
        url = _lfs_upload_url(endpoint, repo_id, big)
        Path(f'/proc/{proc.pid}/clear_refs').write_text('5')  # resets the peak (VmHWM) to the current RSS
        peak = _vm_kib(proc.pid, 'VmHWM')
        resp, _ = _request(endpoint, 'PUT', url, (big[i:i + (1 << 20)] for i in range(0, len(big), 1 << 20)),
                           {'Content-Length': str(len(big))}, timeout=60)
        assert resp.status == 200
        grown_mib = (_vm_kib(proc.pid, 'VmHWM') - peak) / 1024
        print(f'\npeak RSS growth during a 64 MiB LFS upload: {grown_mib:.1f} MiB')
        assert grown_mib < 24
        # An upload cut off halfway (the client stalls), and a commit that stops between staging and switch.
        half = os.urandom(1 << 20)
        stalled = socket.create_connection(('127.0.0.1', int(endpoint.rsplit(':', 1)[1])), timeout=10)
        stalled.sendall(f'PUT {_lfs_upload_url(endpoint, repo_id, half)} HTTP/1.1\r\nHost: x\r\n'
                        f'Content-Length: {len(half)}\r\n\r\n'.encode() + half[:len(half) // 2])
        outcome = {}
        committer = threading.Thread(target=lambda: outcome.setdefault('r', _try(
            api.create_commit, repo_id, [_add('big.bin', big), _delete('config.json')], commit_message='killed')))
        committer.start()
        deadline = time.monotonic() + 90
        history = set((repo_dir / '.hub-head').read_text().split())
        while time.monotonic() < deadline:
            staged = [p for p in (repo_dir / '.hub-revisions').iterdir() if p.name not in history]
            if staged and not staged[0].name.startswith('.') and list((root / '.hub-lfs').glob('.hub-tmp-*')):
                break
            time.sleep(0.2)
        else:
            pytest.fail('the commit never reached the switch')
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        stalled.close()
        committer.join(timeout=60)
        assert isinstance(outcome.get('r'), Exception)  # the client saw the commit fail
    assert list(root.rglob('.hub-tmp-*'))  # the kill did leave a half upload (and a staged revision)
    # Restart: leftovers are removed, main is the previous revision under its old commit hash.
    with WritableHubServer(root, write_token=TOKEN, lfs_threshold=1000) as server:
        hub.set_endpoint(server.endpoint)
        api = HfApi(endpoint=server.endpoint, token=TOKEN)
        assert not list(root.rglob('.hub-tmp-*'))
        assert sorted(p.name for p in (repo_dir / '.hub-revisions').iterdir()) == sorted(
            (repo_dir / '.hub-head').read_text().split())
        assert api.model_info(repo_id).sha == first.oid
        assert _served(api, repo_id, tmp_path / 'c2') == before
        # The uploaded object survived in the store: the same commit now lands whole, without re-uploading.
        api.create_commit(repo_id, [_add('big.bin', big), _delete('config.json')], commit_message='again')
        assert _served(api, repo_id, tmp_path / 'c3') == {'big.bin': _sha(big), 'w.bin': before['w.bin']}


def _try(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # the caller checks which
        return e


# ---- tree route ----------------------------------------------------------------------------------------
def test_tree_route_list_files_and_delete_patterns(write_hub, hub, tmp_path):
    from huggingface_hub import RepoFile, RepoFolder
    api, repo_id = write_hub.api, 't-commit/tree'
    src = tmp_path / 'src'
    for name, data in {'a.txt': b'a', 'keep.md': b'k', 'sub/b.txt': b'b', 'sub/deep/c.bin': os.urandom(4000)}.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    api.create_repo(repo_id)
    api.upload_folder(repo_id=repo_id, folder_path=str(src))
    assert api.list_repo_files(repo_id) == ['a.txt', 'keep.md', 'sub/b.txt', 'sub/deep/c.bin']
    top = {e.path: type(e) for e in api.list_repo_tree(repo_id)}
    assert top == {'a.txt': RepoFile, 'keep.md': RepoFile, 'sub': RepoFolder}
    sub = {e.path: e for e in api.list_repo_tree(repo_id, path_in_repo='sub')}
    assert sorted(sub) == ['sub/b.txt', 'sub/deep'] and sub['sub/b.txt'].size == 1
    # An id from stat data, not git's blob id: a listing reads no file (hub/test_server.py, a huge file in a folder)
    assert re.fullmatch('[0-9a-f]{40}', sub['sub/b.txt'].blob_id)
    # upload_folder(delete_patterns=...) lists the repo through the tree route, then deletes in the same commit.
    (src / 'a.txt').unlink()
    (src / 'sub' / 'b.txt').unlink()
    (src / 'new.md').write_bytes(b'n')
    api.upload_folder(repo_id=repo_id, folder_path=str(src), delete_patterns='*.txt')
    assert api.list_repo_files(repo_id) == ['keep.md', 'new.md', 'sub/deep/c.bin']
    api.create_commit(repo_id, [_delete('sub/')], commit_message='delete a folder')
    assert api.list_repo_files(repo_id) == ['keep.md', 'new.md']


# ---- connections, headers, names, repo ids -------------------------------------------------------------
def _closed_within(sock, seconds):
    """Seconds until the server closes ``sock`` (recv gives b''), or None if it is still open after ``seconds``."""
    sock.settimeout(seconds)
    start = time.monotonic()
    try:
        while sock.recv(4096):  # an answer may come first; wait for the close
            pass
    except (TimeoutError, socket.timeout):
        return None
    except ConnectionResetError:
        pass
    return time.monotonic() - start


def test_half_open_connections_are_closed_after_the_timeout(tmp_path):
    root = tmp_path / 'root'
    (root / 'o' / 'r').mkdir(parents=True)
    (root / 'o' / 'r' / 'a.txt').write_bytes(b'a')
    with WritableHubServer(root, write_token=TOKEN, request_timeout=1.0) as server:
        port = server.server_address[1]
        heads = socket.create_connection(('127.0.0.1', port))  # headers never finished
        heads.sendall(b'GET /o/r/resolve/main/a.txt HTTP/1.1\r\nHost: x\r\n')
        body = socket.create_connection(('127.0.0.1', port))  # body promised, never sent
        body.sendall(f'POST /api/repos/create HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n'
                     'Content-Length: 100\r\n\r\n{"na'.encode())
        idle = socket.create_connection(('127.0.0.1', port))  # keep-alive, then silence
        idle.sendall(b'GET /o/r/resolve/main/a.txt HTTP/1.1\r\nHost: x\r\n\r\n')
        for sock in (heads, body, idle):
            with sock:
                elapsed = _closed_within(sock, 15)
                assert elapsed is not None and elapsed < 10
        resp, data = _request(server.endpoint, 'GET', '/o/r/resolve/main/a.txt')  # still serving
        assert resp.status == 200 and data == b'a'
        assert not (root / 'na').exists()


@pytest.mark.parametrize('length', ['-1', 'abc', '1e3', ' +5'])
def test_invalid_content_length_is_a_400(tmp_path, length):
    with WritableHubServer(tmp_path, write_token=TOKEN, request_timeout=30) as server:
        resp, body = _request(server.endpoint, 'POST', '/api/repos/create', b'{}',
                              {'Authorization': f'Bearer {TOKEN}', 'Content-Length': length}, timeout=5)
        assert resp.status == 400 and b'Content-Length' in body
    assert list(tmp_path.iterdir()) == []


def test_over_long_names_are_refused_without_a_traceback(write_hub, capsys):
    api, repo_id = write_hub.api, 't-commit/long'
    api.create_repo(repo_id)
    long = 'x' * 300
    for url in (f'/{repo_id}/resolve/main/{long}', f'/{repo_id}/resolve/main/sub/{long}.bin',
                f'/o/{long}/resolve/main/a', f'/api/models/o/{long}', f'/api/models/{repo_id}/tree/main/{long}'):
        resp, _ = _request(write_hub.endpoint, 'GET', url)
        assert resp.status == 404, url
    resp, _ = _raw_commit(write_hub.endpoint, repo_id, [
        {'key': 'file', 'value': {'path': long, 'content': 'eA==', 'encoding': 'base64'}}])
    assert resp.status == 400
    assert api.list_repo_files(repo_id) == []
    assert 'Traceback' not in capsys.readouterr().err


@pytest.mark.parametrize('org,name', [('o2', None), (['x'], 'y'), ('o', 5), ('o', 'a--b'), ('o', 'x' * 97),
                                      ('o', '-lead'), (None, 'noorg'), ('o', 'trail.')])
def test_create_repo_refuses_ids_the_hub_refuses(write_hub, org, name):
    body = json.dumps({'organization': org, 'name': name, 'type': 'model'}).encode()
    resp, _ = _request(write_hub.endpoint, 'POST', '/api/repos/create', body, {'Authorization': f'Bearer {TOKEN}'})
    assert resp.status == 400
    assert list(write_hub.root.iterdir()) == []


def test_repo_ids_are_case_insensitive(write_hub, hub, tmp_path):
    from huggingface_hub.errors import HfHubHTTPError
    api = write_hub.api
    api.create_repo('t-case/Model')
    with pytest.raises(HfHubHTTPError) as e:
        api.create_repo('T-CASE/model')
    assert e.value.response.status_code == 409
    api.create_commit('T-Case/MODEL', [_add('config.json', b'{"c": 1}')], commit_message='through another case')
    assert _served(api, 't-case/model', tmp_path / 'c') == {'config.json': _sha(b'{"c": 1}')}
    assert [p.name for p in (write_hub.root).iterdir()] == ['t-case']
    assert [p.name for p in (write_hub.root / 't-case').iterdir()] == ['Model']
    assert served_revision(write_hub.root / 't-case' / 'Model')[1] == api.model_info('t-case/model').sha
    # Across orgs: ACME/two lands in acme/ (one org folder per id), so acme/two is the same repo.
    api.create_repo('t-acme/one')
    api.create_repo('T-ACME/two')
    assert sorted(p.name for p in write_hub.root.iterdir()) == ['t-acme', 't-case']
    api.create_commit('t-acme/two', [_add('two.txt', b'2')], commit_message='via the other case')
    with pytest.raises(HfHubHTTPError) as e:
        api.create_repo('t-acme/two')
    assert e.value.response.status_code == 409
    assert api.list_repo_files('T-ACME/TWO') == ['two.txt']
    # Org folders made by hand in two cases: each repo is found under either spelling.
    for org, name in (('t-hand', 'lower'), ('T-HAND', 'upper')):
        (write_hub.root / org / name).mkdir(parents=True)
        (write_hub.root / org / name / f'{name}.txt').write_bytes(name.encode())
    for repo_id, name in (('T-HAND/lower', 'lower'), ('t-hand/upper', 'upper'), ('T-Hand/Upper', 'upper')):
        assert api.list_repo_files(repo_id) == [f'{name}.txt']


# ---- store entries that are symlinks (S1-S3); two server processes on one root (S4) ----------------------
ZEROS = '0' * 40


@pytest.fixture
def single_try(monkeypatch):
    """The upload client without its retries on 500: the refusal is permanent, retrying only delays it (~23 s)."""
    import functools
    from huggingface_hub import _commit_api, lfs
    for module in (_commit_api, lfs):
        monkeypatch.setattr(module, 'http_backoff', functools.partial(module.http_backoff, max_retries=0))


def _victim(tmp_path, name):
    """A folder outside the root that a planted symlink points at, holding what it must never lose or serve."""
    victim = tmp_path / name
    (victim / ZEROS).mkdir(parents=True)
    (victim / ZEROS / 'config.json').write_bytes(b'{"victim": "SECRET-victim-bytes"}')
    (victim / 'keep.bin').write_bytes(b'victim file')
    return victim


@pytest.mark.parametrize('planted', ['revisions-link', 'revision-link', 'head-link'])
def test_store_links_out_of_the_root_are_never_followed(hub, tmp_path, single_try, planted):
    """S1/S2/S3: a repo whose .hub-revisions (or a revision in it, or .hub-head) links out of the root: a writable
    server's start-up clean-up deletes nothing through it, reads answer 500 naming the fix and serve no byte of
    it, commits are refused and write nothing through it."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError
    root, victim = tmp_path / 'root', _victim(tmp_path, 'victim')
    repo = root / 'evil' / 'repo'
    repo.mkdir(parents=True)
    if planted == 'revisions-link':
        os.symlink(victim, repo / '.hub-revisions')
        (repo / '.hub-head').write_text(ZEROS + '\n')
    elif planted == 'revision-link':
        (repo / '.hub-revisions').mkdir()
        os.symlink(victim / ZEROS, repo / '.hub-revisions' / ZEROS)
        (repo / '.hub-head').write_text(ZEROS + '\n')
    else:
        (repo / '.hub-revisions' / ZEROS).mkdir(parents=True)
        (victim / 'head').write_text(ZEROS + '\n')
        os.symlink(victim / 'head', repo / '.hub-head')
    before_victim, before_root = _disk(victim), _disk(root)
    for write_token in (TOKEN, None):  # writable (start-up clean-up, commits), then a read-only mirror
        with WritableHubServer(root, write_token=write_token) as server:
            assert _disk(victim) == before_victim
            for url in ('/evil/repo/resolve/main/config.json', f'/evil/repo/resolve/{ZEROS}/config.json',
                        '/api/models/evil/repo', '/api/models/evil/repo/tree/main'):
                resp, body = _request(server.endpoint, 'GET', url)
                assert resp.status == 500 and b'SECRET' not in body and b'config.json' not in body, (url, body)
                message = resp.getheader('X-Error-Message')
                assert 'symlink' in message and 'replace it' in message and '\n' not in message
            if write_token:
                api = HfApi(endpoint=server.endpoint, token=TOKEN)
                with pytest.raises(HfHubHTTPError) as e:
                    api.create_commit('evil/repo', [_add('config.json', b'{"pwned": 1}')], commit_message='x')
                assert e.value.response.status_code == 500 and 'symlink' in str(e.value)
    assert _disk(victim) == before_victim and _disk(root) == before_root


@pytest.mark.parametrize('planted', ['plain-revisions-link', 'lfs-store-link'])
def test_commits_never_write_through_a_store_link(hub, tmp_path, lfs_client, single_try, planted):
    """S3: a plain folder whose .hub-revisions links out, S3b: <root>/.hub-lfs linking out (with a stale temp
    file there, which start-up clean-up must not delete): the commit or upload is refused, nothing lands outside."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError
    root, victim = tmp_path / 'root', tmp_path / 'victim'
    victim.mkdir()
    repo = root / 'plain' / 'repo'
    repo.mkdir(parents=True)
    (repo / 'config.json').write_bytes(b'{}')
    if planted == 'plain-revisions-link':
        os.symlink(victim, repo / '.hub-revisions')
    else:
        (victim / '.hub-tmp-not-ours').write_bytes(b'victim file')
        os.symlink(victim, root / '.hub-lfs')
    before_victim = _disk(victim)
    with WritableHubServer(root, write_token=TOKEN, lfs_threshold=1000) as server:
        hub.set_endpoint(server.endpoint)
        api = HfApi(endpoint=server.endpoint, token=TOKEN)
        with pytest.raises(HfHubHTTPError) as e:  # 2 KB: an LFS upload from 1 KB on
            api.create_commit('plain/repo', [_add('w.bin', os.urandom(2000)), _add('a.txt', b'a')],
                              commit_message='x')
        assert e.value.response.status_code == 500 and 'symlink' in str(e.value)
    assert _disk(victim) == before_victim
    assert sorted(p.name for p in repo.iterdir()) == sorted(['config.json'] + (
        ['.hub-revisions'] if planted == 'plain-revisions-link' else []))


def _commit_in_thread(api, repo_id, ops, results, key, barrier=None):
    def run():
        if barrier is not None:
            barrier.wait()
        results[key] = _try(api.create_commit, repo_id, ops, commit_message=f'commit {key}')
    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_two_server_processes_on_one_root_lose_no_commit(hub, tmp_path, monkeypatch):
    """S4: 8 commits racing through two servers on one --root, in two processes (a ``--allow-write``
    subprocess and this one), each pausing between staging and switch, where the race was: every commit is
    reported and lands; none drops another's files."""
    from huggingface_hub import HfApi
    root, repo_id = tmp_path / 'root', 't-two/race'
    root.mkdir()
    pause = {'TIMM_CRA_HUB_TEST_PAUSE_BEFORE_SWITCH': '0.3'}
    monkeypatch.setenv('TIMM_CRA_HUB_TEST_PAUSE_BEFORE_SWITCH', '0.3')
    with _server_process(root, env=pause) as (_, endpoint_a), WritableHubServer(root, write_token=TOKEN) as server_b:
        endpoint_b = server_b.endpoint
        apis = [HfApi(endpoint=e, token=TOKEN) for e in (endpoint_a, endpoint_b)]
        apis[0].create_repo(repo_id)
        barrier, results = threading.Barrier(8, timeout=60), {}
        threads = [_commit_in_thread(apis[i % 2], repo_id, [_add(f'c{i}.txt', f'{i}'.encode())], results, i, barrier)
                   for i in range(8)]
        for t in threads:
            t.join(timeout=120)
        assert all(hasattr(results.get(i), 'oid') for i in range(8)), results
        for api in apis:
            hub.set_endpoint(api.endpoint)
            assert _served(api, repo_id, tmp_path / f'c-{api.endpoint[-5:]}') == {
                f'c{i}.txt': _sha(f'{i}'.encode()) for i in range(8)}
        history = (root / 't-two' / 'race' / '.hub-head').read_text().split()
        assert len(history) == 9 and {results[i].oid for i in range(8)} <= set(history)


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_second_server_start_leaves_a_live_commit_alone(hub, tmp_path):
    """S4: a writable server starting on a root while another server process's commit is staged (not yet
    switched) does not remove that staging; the commit lands and the new server serves it."""
    from huggingface_hub import HfApi
    root, repo_id = tmp_path / 'root', 't-two/live'
    root.mkdir()
    revisions = root / 't-two' / 'live' / '.hub-revisions'
    with _server_process(root, env={'TIMM_CRA_HUB_TEST_PAUSE_BEFORE_SWITCH': '3'}) as (_, endpoint_a):
        api_a = HfApi(endpoint=endpoint_a, token=TOKEN)
        api_a.create_repo(repo_id)
        results = {}
        thread = _commit_in_thread(api_a, repo_id, [_add('live.txt', b'live')], results, 'a')
        deadline = time.monotonic() + 30
        # staged = renamed from its .hub-tmp-* staging folder to its commit (then paused before the switch)
        while len([p for p in revisions.iterdir() if not p.name.startswith('.hub-tmp-')]) < 2 \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        staged = sorted(p.name for p in revisions.iterdir())
        assert len(staged) == 2, staged  # the empty first commit and the staged one
        with WritableHubServer(root, write_token=TOKEN) as server_b:  # its start-up clean-up has run
            endpoint_b = server_b.endpoint
            assert sorted(p.name for p in revisions.iterdir()) == staged
            thread.join(timeout=60)
            assert hasattr(results.get('a'), 'oid'), results
            assert sorted(p.name for p in revisions.iterdir()) == staged
            hub.set_endpoint(endpoint_b)
            api_b = HfApi(endpoint=endpoint_b, token=TOKEN)
            assert api_b.model_info(repo_id).sha == results['a'].oid
            assert _served(api_b, repo_id, tmp_path / 'c') == {'live.txt': _sha(b'live')}


# ---- protocol details: read-only roots, request framing, .gitattributes --------------------------------
def test_write_to_a_read_only_root_is_a_403_naming_the_fix(hub, tmp_path):
    """M6: the repo exists (in a later, read-only root): the client must not report it as missing."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
    write_root, read_root = tmp_path / 'w', tmp_path / 'r'
    write_root.mkdir()
    (read_root / 't-ro' / 'repo').mkdir(parents=True)
    (read_root / 't-ro' / 'repo' / 'config.json').write_bytes(b'{}')
    with WritableHubServer([write_root, read_root], write_token=TOKEN) as server:
        hub.set_endpoint(server.endpoint)
        api = HfApi(endpoint=server.endpoint, token=TOKEN)
        assert api.list_repo_files('t-ro/repo') == ['config.json']
        with pytest.raises(HfHubHTTPError) as e:
            api.create_commit('t-ro/repo', [_add('x.txt', b'x')], commit_message='x')
        assert not isinstance(e.value, RepositoryNotFoundError)
        assert e.value.response.status_code == 403 and 'read-only' in str(e.value) and '--allow-write' in str(e.value)
    assert sorted(p.name for p in (read_root / 't-ro' / 'repo').iterdir()) == ['config.json']


def _raw_exchange(endpoint, raw: bytes, wait=2.0) -> bytes:
    """Send raw bytes on one connection; everything the server answers until it closes or goes quiet."""
    sock = socket.create_connection(('127.0.0.1', int(endpoint.rsplit(':', 1)[1])), timeout=wait)
    sock.sendall(raw)
    out = b''
    with contextlib.suppress(socket.timeout):
        while chunk := sock.recv(65536):
            out += chunk
    sock.close()
    return out


def test_request_framing_get_body_and_duplicate_content_length(tmp_path):
    """M7: a GET body is read and dropped, never parsed as a second request; M8: two Content-Length headers
    (or one with Transfer-Encoding) are a 400 and the connection closes."""
    root = tmp_path / 'root'
    (root / 'org' / 'repo').mkdir(parents=True)
    (root / 'org' / 'repo' / 'config.json').write_bytes(b'{}')
    smuggled = b'GET /org/repo/resolve/main/config.json HTTP/1.1\r\nHost: x\r\n\r\n'
    with HubFolderServer(root) as server:
        out = _raw_exchange(server.endpoint, b'GET /api/models/org/repo HTTP/1.1\r\nHost: x\r\n'
                            b'Content-Length: %d\r\n\r\n' % len(smuggled) + smuggled)
        assert out.count(b'HTTP/1.1 ') == 1 and out.startswith(b'HTTP/1.1 200'), out
        for headers in (b'Content-Length: 0\r\nContent-Length: 5\r\n', b'Content-Length: 5\r\nContent-Length: 5\r\n',
                        b'Content-Length: 5\r\nTransfer-Encoding: chunked\r\n'):
            out = _raw_exchange(server.endpoint, b'POST /api/models/org/repo/commit/main HTTP/1.1\r\nHost: x\r\n'
                                + headers + b'\r\nhello' + smuggled)
            assert out.count(b'HTTP/1.1 ') == 1 and out.startswith(b'HTTP/1.1 400'), out
            assert b'one Content-Length' in out


def test_gitattributes_is_committed_and_served_but_not_git_or_store_names(write_hub, hub, tmp_path):
    """M10: huggingface_hub commits carrying .gitattributes land (the Hub stores it); .git/... and the server's
    own store names stay refused."""
    from huggingface_hub.errors import HfHubHTTPError
    api, repo_id = write_hub.api, 't-attr/repo'
    api.create_repo(repo_id)
    attributes = b'*.bin filter=lfs diff=lfs merge=lfs -text\n'
    folder = tmp_path / 'upload'
    folder.mkdir()
    (folder / '.gitattributes').write_bytes(attributes)
    (folder / 'config.json').write_bytes(b'{}')
    api.upload_folder(repo_id=repo_id, folder_path=str(folder))
    assert _served(api, repo_id, tmp_path / 'c') == {'.gitattributes': _sha(attributes), 'config.json': _sha(b'{}')}
    before = _disk(write_hub.root)
    for name in ('.hub-head', '.hub-revisions/x', 'sub/.hub-lfs', '.gitattributes/x'):
        with pytest.raises(HfHubHTTPError) as e:
            api.create_commit(repo_id, [_add(name, b'x')], commit_message='hidden')
        assert e.value.response.status_code == 400, name
    resp, _ = _raw_commit(write_hub.endpoint, repo_id, [  # the client itself refuses .git/ paths
        {'key': 'file', 'value': {'path': '.git/config', 'content': 'eA==', 'encoding': 'base64'}}])
    assert resp.status == 400
    assert _disk(write_hub.root) == before


def test_commit_operation_copy_uses_paths_info(write_hub, hub, tmp_path):
    """M3: CommitOperationCopy (get_paths_info, then the copy named by sha256): the copy is served with the same
    bytes, the source stays, and a missing source is reported by the client before any commit."""
    from huggingface_hub import CommitOperationCopy
    from huggingface_hub.errors import EntryNotFoundError
    api, repo_id = write_hub.api, 't-copy/repo'
    api.create_repo(repo_id)
    weights, small = os.urandom(5000), b'{"small": 1}'  # one LFS upload (from 1 KB on), one inside the commit
    api.create_commit(repo_id, [_add('w.bin', weights), _add('sub/config.json', small)], commit_message='one')
    info = {f.path: f for f in api.get_paths_info(repo_id, ['w.bin', 'sub', 'missing.txt', '../x'])}
    assert sorted(info) == ['sub', 'w.bin'] and info['w.bin'].lfs.sha256 == _sha(weights)
    api.create_commit(repo_id, [CommitOperationCopy('w.bin', 'copies/w.bin'),
                                CommitOperationCopy('sub/config.json', 'copies/config.json')], commit_message='copy')
    assert _served(api, repo_id, tmp_path / 'c') == {
        'w.bin': _sha(weights), 'copies/w.bin': _sha(weights), 'sub/config.json': _sha(small),
        'copies/config.json': _sha(small)}
    head = api.model_info(repo_id).sha
    with pytest.raises(EntryNotFoundError):
        api.create_commit(repo_id, [CommitOperationCopy('missing.bin', 'x.bin')], commit_message='missing')
    assert api.model_info(repo_id).sha == head


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_file_inside_a_commit_is_staged_with_bounded_memory(hub, tmp_path):
    """M4: a 64 MiB file sent inside the commit (no LFS, the default): the body is spooled to disk and each
    file decoded to its staging file as it is parsed, so the server's peak memory grows by about one
    base64 copy of the largest file (not several copies of the whole commit)."""
    from huggingface_hub import HfApi
    root, repo_id, big = tmp_path / 'root', 't-mem/repo', os.urandom(64 << 20)
    root.mkdir()
    with _server_process(root, lfs_threshold=None) as (proc, endpoint):
        hub.set_endpoint(endpoint)
        api = HfApi(endpoint=endpoint, token=TOKEN)
        api.create_repo(repo_id)
        Path(f'/proc/{proc.pid}/clear_refs').write_text('5')  # resets the peak (VmHWM) to the current RSS
        peak = _vm_kib(proc.pid, 'VmHWM')
        api.create_commit(repo_id, [_add('big.bin', big), _add('config.json', b'{}')], commit_message='big')
        grown_mib = (_vm_kib(proc.pid, 'VmHWM') - peak) / 1024
        print(f'\npeak RSS growth during a commit carrying a 64 MiB file: {grown_mib:.1f} MiB')
        assert sorted(api.list_repo_files(repo_id)) == ['big.bin', 'config.json']
        revision = root / 't-mem' / 'repo' / '.hub-revisions' / api.model_info(repo_id).sha
        assert (revision / 'big.bin').read_bytes() == big
    assert grown_mib < 64  # was 256 MiB with the body, its lines and the decoded file all held in memory


@pytest.mark.parametrize('case', ['content-first', 'content-last', 'escaped-slash', 'bad-base64'])
def test_large_commit_lines_are_parsed_as_json(write_hub, hub, tmp_path, case):
    """The spooled parse of a commit body over 1 MiB gives what json.loads gives: any key order, a JSON escape
    inside the content (parsed whole then), and bad base64 refused with nothing written."""
    import base64
    api, repo_id = write_hub.api, 't-lines/repo'
    api.create_repo(repo_id)
    data = os.urandom(3 << 20)
    content = base64.b64encode(data).decode()
    if case == 'bad-base64':
        content = content[:1000] + '!!!!' + content[1004:]
    value = json.dumps({'content': content, 'path': 'big.bin', 'encoding': 'base64'})
    if case == 'content-last':
        value = json.dumps({'path': 'big.bin', 'encoding': 'base64', 'content': content})
    elif case == 'escaped-slash':
        value = value.replace('/', '\\/')
    before = _disk(write_hub.root)
    body = (json.dumps({'key': 'header', 'value': {'summary': 's'}}) + '\n{"key": "file", "value": ' + value + '}\n')
    resp, answer = _request(write_hub.endpoint, 'POST', f'/api/models/{repo_id}/commit/main', body.encode(),
                            {'Authorization': f'Bearer {TOKEN}', 'Content-Type': 'application/x-ndjson'}, timeout=30)
    if case == 'bad-base64':
        assert resp.status == 400 and b'Bad base64' in answer
        assert _disk(write_hub.root) == before
    else:
        assert resp.status == 200, answer
        assert _served(api, repo_id, tmp_path / 'c') == {'big.bin': _sha(data)}
