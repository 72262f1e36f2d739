"""The loopback Hub under load and under injected faults, as huggingface_hub's download client sees it.

(a) many threads on keep-alive connections get byte-exact bodies; (b) a fault-injecting server (500 for
the first requests of a file, or a connection cut halfway through the body) never leaves a half file as a
complete cache entry, and a retry once the fault heals gives the source bytes; (c) two processes filling
the same empty cache at once both succeed and the blob is stored once.
"""
import hashlib
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from timm_cra.hub.server import HubFolderServer, repo_commit_hash

REPO_ROOT = Path(__file__).resolve().parents[2]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    """Repo ``t-load/files``: a few sizes, from empty to several MB (random bytes)."""
    root = tmp_path_factory.mktemp('load-root')
    repo = root / 't-load' / 'files'
    (repo / 'sub').mkdir(parents=True)
    rng = random.Random(0)
    content = {'empty.bin': b'', 'small.json': b'{"a": 1}', 'sub/mid.bin': rng.randbytes(300_000),
               'big.bin': rng.randbytes(3 << 20),
               'huge.bin': rng.randbytes(25 << 20)}  # over 2 of the client's 10 MiB download chunks
    for name, data in content.items():
        (repo / name).write_bytes(data)
    return root, content


# ---- (a) load --------------------------------------------------------------------------------------------
def test_a_burst_of_connections_is_queued_not_dropped(tmp_path):
    """64 connections opened before the mirror accepts any: with socketserver's backlog of 5 the kernel dropped
    the 7th and later ones (each connect waited for its 1 s SYN retry); all now complete at once and are served."""
    (tmp_path / 't-load' / 'burst').mkdir(parents=True)
    (tmp_path / 't-load' / 'burst' / 'small.json').write_bytes(b'{}')
    server = HubFolderServer([tmp_path])  # listening, not accepting yet: connections wait in the kernel's queue
    sockets = []
    try:
        for _ in range(64):
            sockets.append(socket.create_connection(server.server_address, timeout=0.5))
        server.start()
        for s in sockets:
            s.settimeout(30)
            s.sendall(b'HEAD /t-load/burst/resolve/main/small.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
            assert s.makefile('rb').readline().split()[1] == b'307'  # main's answer: its commit's URL
    finally:
        for s in sockets:
            s.close()
        server.stop()


def test_threads_on_keepalive_connections_get_exact_bytes(files):
    root, content = files
    names = sorted(n for n in content if n != 'huge.bin')
    errors, counts = [], []

    commit = repo_commit_hash(root / 't-load' / 'files')  # where resolve/main redirects (a 307, tested elsewhere)

    def worker(i, endpoint):
        host, port = endpoint.split('//')[1].split(':')
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        n, sock = 0, None
        try:
            for j in range(10):
                name = names[(i + j) % len(names)]
                ranged = j % 3 == 2 and content[name]
                headers = {'Range': 'bytes=5-'} if ranged else {}
                conn.request('GET', f'/t-load/files/resolve/{commit}/{name}', headers=headers)
                resp = conn.getresponse()
                body = resp.read()
                sock = sock or conn.sock
                if conn.sock is not sock:
                    errors.append(f'{name}: the connection was not kept alive')
                expect = content[name][5:] if ranged else content[name]
                if resp.status != (206 if ranged else 200) or body != expect:
                    errors.append(f'{name}: status {resp.status}, {len(body)} bytes')
                if resp.getheader('ETag') != f'"{_sha(content[name])}"' or _sha(body) != _sha(expect):
                    errors.append(f'{name}: sha256 does not match the ETag')
                n += 1
        except Exception as e:  # reported below, with the thread
            errors.append(f'thread {i}: {e!r}')
        finally:
            conn.close()
            counts.append(n)

    with HubFolderServer(root) as server:
        threads = [threading.Thread(target=worker, args=(i, server.endpoint)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    assert sum(counts) == 200


# ---- (b) faults ------------------------------------------------------------------------------------------
class _FaultyHandler(HubFolderServer.handler_class):
    """Consumes ``server.faults`` (a list of '500' / 'cut') on GETs of a file; logs (method, Range)."""

    def _route(self, head_only):
        server = self.server
        self._cut = False
        with server.fault_lock:
            server.log.append((self.command, self.headers.get('Range')))
            fault = server.faults.pop(0) if (not head_only and '/resolve/' in self.path and server.faults) else None
        if fault == '500':
            return self._error(500, None, 'injected fault', head_only)
        self._cut = fault == 'cut'
        return super()._route(head_only)

    def _write_file_body(self, f, start, length, identity):
        if not self._cut:
            return super()._write_file_body(f, start, length, identity)
        f.seek(start)  # half the promised body, then the connection dies
        self.wfile.write(f.read(length // 2))
        self.wfile.flush()
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)


class _FaultyServer(HubFolderServer):
    handler_class = _FaultyHandler

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.faults, self.log, self.fault_lock = [], [], threading.Lock()


def _complete_entries(cache_dir: Path):
    """Blobs and snapshot files the cache would serve (``.incomplete`` files are not entries)."""
    return sorted(str(p.relative_to(cache_dir)) for p in cache_dir.rglob('*')
                  if ('blobs' in p.parts or 'snapshots' in p.parts) and (p.is_file() or p.is_symlink())
                  and not p.name.endswith('.incomplete'))


@pytest.fixture
def faulty(files, hub):
    root, content = files
    with _FaultyServer(root) as server:
        hub.set_endpoint(server.endpoint)
        yield server, content, hub.cache_dir


def _download_until_healed(server, faults, name, cache_dir, max_calls):
    """hf_hub_download until it succeeds; checks the cache after every failure. Returns (calls, failures)."""
    from huggingface_hub import hf_hub_download
    server.faults, server.log = list(faults), []
    failures = []
    for call in range(max_calls):
        try:
            path = hf_hub_download('t-load/files', name)
        except Exception as e:  # any failure must leave no servable half file
            failures.append(type(e).__name__)
            assert _complete_entries(cache_dir) == [], failures
            continue
        return call + 1, failures, Path(path).read_bytes()
    pytest.fail(f'no success in {max_calls} calls: {failures}')


def test_500s_fail_fast_then_heal(faulty):
    server, content, cache_dir = faulty
    calls, failures, data = _download_until_healed(server, ['500', '500'], 'big.bin', cache_dir, max_calls=4)
    assert data == content['big.bin']
    assert server.faults == []  # every injected 500 was seen by some call
    print(f'\n500 x2 on GET: {calls} calls, failures {failures}, requests {server.log}')
    assert len(failures) == calls - 1 >= 1


@pytest.mark.parametrize('name,faults', [('big.bin', ['cut']), ('big.bin', ['cut', '500']), ('huge.bin', ['cut'])],
                         ids=['cut', 'cut-then-500', 'cut-resumed-by-range'])
def test_cut_connection_never_leaves_a_half_file(faulty, name, faults):
    server, content, cache_dir = faulty
    calls, failures, data = _download_until_healed(server, faults, name, cache_dir, max_calls=3)
    assert data == content[name]
    assert server.faults == []
    gets = [r for r in server.log if r[0] == 'GET']
    assert len(gets) >= len(faults) + 1  # the cut body was fetched again (resumed or whole)
    print(f'\n{faults}: {calls} calls, failures {failures}, requests {server.log}')
    blobs = [p for p in (cache_dir / 'models--t-load--files' / 'blobs').iterdir()]
    assert [p.name for p in blobs] == [_sha(content[name])]


# ---- (c) two processes, one cache ------------------------------------------------------------------------
_LOADER = '''
import hashlib, sys
from huggingface_hub import hf_hub_download
path = hf_hub_download('t-load/files', 'big.bin')
print(hashlib.sha256(open(path, 'rb').read()).hexdigest())
'''


def test_two_processes_fill_one_cache(files, tmp_path):
    root, content = files
    cache = tmp_path / 'shared-cache'
    with HubFolderServer(root) as server:
        env = dict(os.environ, HF_ENDPOINT=server.endpoint, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE='0',
                   HF_HUB_DISABLE_PROGRESS_BARS='1', NO_PROXY='127.0.0.1,localhost', PYTHONPATH=str(REPO_ROOT))
        procs = [subprocess.Popen([sys.executable, '-c', _LOADER], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
        outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    assert [out.strip() for out, _ in outs] == [_sha(content['big.bin'])] * 2
    blobs = sorted(p.name for p in (cache / 'models--t-load--files' / 'blobs').iterdir())
    assert blobs == [_sha(content['big.bin'])]
    assert json.dumps(_complete_entries(cache)).count('big.bin') == 1


_RANK_LOADER = r'''
import hashlib, os, sys
import torch.distributed as dist
import timm, timm_cra
dist.init_process_group('gloo')
model = timm.create_model('cra_cifar_resnet20.cifar10', pretrained=True)
digest = hashlib.sha256(b''.join(v.numpy().tobytes() for v in model.state_dict().values())).hexdigest()
with open(os.path.join(sys.argv[1], f'rank{dist.get_rank()}.txt'), 'w') as f:
    f.write(digest)
dist.destroy_process_group()
'''


@pytest.mark.slow  # a minute of subprocesses: the slow step keeps the fast suite near 10 minutes
def test_two_torchrun_ranks_load_one_tag_into_one_cache(tmp_path):
    """Two ranks of one torchrun job load the same registered tag at once from an empty cache: both get the
    published weights, which are downloaded into the cache once."""
    import timm
    import timm_cra  # noqa: F401
    cache = tmp_path / 'cache'
    script = tmp_path / 'load.py'
    script.write_text(_RANK_LOADER)
    with HubFolderServer(REPO_ROOT / 'hub') as server:
        env = dict(os.environ, HF_ENDPOINT=server.endpoint, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE='0',
                   HF_HUB_DISABLE_PROGRESS_BARS='1', NO_PROXY='127.0.0.1,localhost', PYTHONPATH=str(REPO_ROOT),
                   OMP_NUM_THREADS='1')
        proc = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
                               str(script), str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    local = timm.create_model(f"local-dir:{REPO_ROOT / 'hub/timm-cra/cra_cifar_resnet20.cifar10'}", pretrained=True)
    expected = hashlib.sha256(b''.join(v.numpy().tobytes() for v in local.state_dict().values())).hexdigest()
    assert [(tmp_path / f'rank{r}.txt').read_text() for r in (0, 1)] == [expected, expected]
    weights = REPO_ROOT / 'hub/timm-cra/cra_cifar_resnet20.cifar10/model.safetensors'
    blobs = sorted(p.name for p in (cache / 'models--timm-cra--cra_cifar_resnet20.cifar10' / 'blobs').iterdir())
    # one stored copy of each file (the weights, and the config.json a registered tag is checked against), no
    # leftover of a second download
    assert blobs == sorted([_sha(weights.read_bytes()), _sha((weights.parent / 'config.json').read_bytes())])
    assert not [p for p in cache.rglob('*.incomplete')]
