"""The mirror answers one version of a file or none: repo folders linked into hidden folders, files replaced or
rewritten while served, downloads spanning a change, and a burst of requests sharing the repo walk."""
import hashlib
import http.client
import os
import re
import threading
from pathlib import Path

import pytest

from tests.hubserver.test_mirror_serving import GIT_CONFIG, TOKEN, _request
from tests.hubserver.test_write_commits import _add, lfs_client, write_hub  # noqa: F401 (fixtures)
from timm_cra.hub import server as mirror
from timm_cra.hub.server import HubFolderServer, repo_commit_hash


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _poisoned_blobs(cache_dir: Path):
    """Blobs of the huggingface_hub cache whose name (the sha256 the HEAD announced) is not their bytes' sha256."""
    return [p for p in cache_dir.rglob('blobs/*')
            if p.is_file() and re.fullmatch('[0-9a-f]{64}', p.name) and _sha(p.read_bytes()) != p.name]


# ---- F2: the repo (or org) folder itself a link --------------------------------------------------------
def test_repo_and_org_folders_linked_into_hidden_folders_are_not_served(hub):
    """``acme/leak -> ../other/repo/.git``, ``acme/lfs -> ../.hub-lfs`` (the writable server's LFS store) and an org
    folder linked into a hidden one stayed inside the root and were served (.git/config with a token in its remote
    URL; model_info listed .git's files). The rule of links inside a repo now holds for the repo folder itself; a
    repo folder linked to a visible one is still served."""
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import RepositoryNotFoundError
    root = Path(hub.server.test_root)
    other = hub.add_repo('t-linkrepo/other', {'config.json': b'{}'})
    (other / '.git').mkdir()
    (other / '.git' / 'config').write_bytes(GIT_CONFIG)
    lfs = root / '.hub-lfs-t-linkrepo'
    (lfs / 'repo').mkdir(parents=True)
    (lfs / 'repo' / 'config').write_bytes(GIT_CONFIG)
    os.symlink('other/.git', root / 't-linkrepo' / 'leak')
    os.symlink('../.hub-lfs-t-linkrepo/repo', root / 't-linkrepo' / 'lfs')
    os.symlink('other', root / 't-linkrepo' / 'alias')  # visible: served
    os.symlink('.hub-lfs-t-linkrepo', root / 't-linkorg')  # the org folder a link
    try:
        for repo_id in ('t-linkrepo/leak', 't-linkrepo/lfs', 't-linkorg/repo'):
            for path in (f'/{repo_id}/resolve/main/config', f'/api/models/{repo_id}',
                         f'/api/models/{repo_id}/tree/main'):
                resp, body = _request(hub.endpoint, 'GET', path)
                assert resp.status == 404 and resp.getheader('X-Error-Code') == 'RepoNotFound', (path, resp.status)
                assert TOKEN not in body
            with pytest.raises(RepositoryNotFoundError):
                HfApi().model_info(repo_id)
        assert open(hf_hub_download('t-linkrepo/alias', 'config.json'), 'rb').read() == b'{}'
        assert not [p for p in hub.cache_dir.rglob('*') if p.is_file() and TOKEN in p.read_bytes()]
    finally:
        for link in (root / 't-linkorg', root / 't-linkrepo' / 'leak', root / 't-linkrepo' / 'lfs',
                     root / 't-linkrepo' / 'alias'):
            os.unlink(link)
        (lfs / 'repo' / 'config').unlink()
        (lfs / 'repo').rmdir()
        lfs.rmdir()


def test_a_link_to_a_folder_inside_the_repo_is_served_as_listed(hub):
    """``dirlink -> sub``: ``resolve/main/dirlink/f.txt`` was served but never listed (the walk does not follow links
    to folders), so snapshot_download missed what a HEAD served. Now neither: what is served is what is listed."""
    from huggingface_hub import HfApi
    repo = hub.add_repo('t-mirror/dirlink', {'config.json': b'{}'})
    (repo / 'sub').mkdir()
    (repo / 'sub' / 'f.txt').write_bytes(b'f')
    os.symlink('sub', repo / 'dirlink')
    os.symlink('.', repo / 'loop')
    assert HfApi().list_repo_files('t-mirror/dirlink') == ['config.json', 'sub/f.txt']
    for name in ('dirlink/f.txt', 'loop/config.json', 'loop/sub/f.txt'):
        resp, _ = _request(hub.endpoint, 'HEAD', f'/t-mirror/dirlink/resolve/main/{name}')
        assert resp.status == 404 and resp.getheader('X-Error-Code') == 'EntryNotFound', name
    resp, body = _request(hub.endpoint, 'GET', '/t-mirror/dirlink/resolve/main/sub/f.txt')
    assert resp.status == 200 and body == b'f'


# ---- F1: one answer, one open file ---------------------------------------------------------------------
def test_a_file_replaced_while_hashed_is_answered_from_the_version_opened(hub, monkeypatch):
    """The mirror stat'ed and hashed model.bin, then opened it again: replaced (os.replace) in between, the answer
    carried the old version's ETag and the new version's bytes, which huggingface_hub keeps under that ETag. The
    replace is made here while the mirror hashes; the answer is now wholly the version it opened."""
    old, new = b'\1' * (3 << 20), b'\2' * (3 << 20)
    repo = hub.add_repo('t-mirror/replaced', {'config.json': b'{}', 'model.bin': old})
    (repo / 'new.tmp').write_bytes(new)
    commit = repo_commit_hash(repo)
    real, armed = hashlib.sha256, threading.Event()
    armed.set()

    class Racing:  # the file is replaced once, while it is hashed
        def __init__(self, *args):
            self._h = real(*args)

        def update(self, data):
            if armed.is_set():
                armed.clear()
                os.replace(repo / 'new.tmp', repo / 'model.bin')
            self._h.update(data)

        def hexdigest(self):
            return self._h.hexdigest()

    monkeypatch.setattr(hashlib, 'sha256', Racing)
    resp, body = _request(hub.endpoint, 'GET', f'/t-mirror/replaced/resolve/{commit}/model.bin')
    monkeypatch.setattr(hashlib, 'sha256', real)
    assert not armed.is_set()
    assert resp.status == 200 and body == old and resp.getheader('ETag') == f'"{_sha(old)}"'
    resp, body = _request(hub.endpoint, 'GET', '/t-mirror/replaced/resolve/main/model.bin')
    assert resp.status == 200 and body == new and resp.getheader('ETag') == f'"{_sha(new)}"'


@pytest.mark.parametrize('mtime_put_back', [False, True])
def test_a_file_rewritten_in_place_while_streamed_cuts_the_body(tmp_path, mtime_put_back):
    """Rewritten in place while served (``open('r+b').write``), the body mixed both versions under the old ETag and
    the mirror never noticed. Each chunk is now sent only if the open file's identity is unchanged after reading it:
    the body stops short of its Content-Length and the connection closes (the client sees an error). Also when the
    writer puts the mtime back (``touch -r``, ``rsync --inplace -t``): the ctime, which the kernel sets, still
    changes (comparing inode, size and mtime only, huggingface_hub cached a torn blob under the old sha256)."""
    repo = tmp_path / 'root' / 'o' / 'r'
    repo.mkdir(parents=True)
    path = repo / 'big.bin'
    path.write_bytes(b'\1' * (3 << 20))
    os.utime(path, (946684800, 946684800))  # an old mtime: the rewrite below changes it whatever the clock's grain

    class Rewriting(HubFolderServer.handler_class):
        def _write_file_body(self, f, start, length, identity):
            real_write = self.wfile.write

            def write(data):
                real_write(data)
                with open(path, 'r+b') as g:  # after the first chunk: the rest is the next version
                    g.write(b'\2' * (3 << 20))
                if mtime_put_back:
                    os.utime(path, (946684800, 946684800))

            self.wfile.write = write
            try:
                super()._write_file_body(f, start, length, identity)
            finally:
                del self.wfile.write

    class Server(HubFolderServer):
        handler_class = Rewriting

    with Server(tmp_path / 'root') as server:
        commit = repo_commit_hash(repo)
        conn = http.client.HTTPConnection(*server.server_address[:2], timeout=15)
        conn.request('GET', f'/o/r/resolve/{commit}/big.bin')
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader('Content-Length') == str(3 << 20)
        with pytest.raises(http.client.IncompleteRead) as short:
            resp.read()
        conn.close()
    assert set(short.value.partial) == {1} and 0 < len(short.value.partial) < 3 << 20


# ---- F1b: a branch redirects to its commit; a commit serves its own bytes or nothing ----------------------
def test_a_branch_redirects_to_its_commit_and_a_stale_commit_is_not_served(hub, monkeypatch):
    """resolve/main answered the then-current bytes to the HEAD and to the GET alike, so a change between them gave
    huggingface_hub one version's sha256 and commit with another's bytes. main is now a 307 to the commit's URL (as
    the Hub redirects to an immutable URL); a commit's URL serves that commit's bytes or a 404 RevisionNotFound,
    also when the file is replaced between the walk that found the commit and the opening of the file."""
    repo = hub.add_repo('t-mirror/pinned', {'config.json': b'{}', 'model.bin': b'one'})
    commit = repo_commit_hash(repo)
    for method in ('HEAD', 'GET'):
        resp, body = _request(hub.endpoint, method, '/t-mirror/pinned/resolve/main/model.bin', follow=False)
        assert resp.status == 307 and body == b'' and resp.getheader('X-Repo-Commit') == commit
        assert resp.getheader('Location') == f'/t-mirror/pinned/resolve/{commit}/model.bin'
    resp, _ = _request(hub.endpoint, 'HEAD', '/t-mirror/pinned/resolve/main/missing.bin', follow=False)
    assert resp.status == 404 and resp.getheader('X-Error-Code') == 'EntryNotFound'  # no redirect to a 404

    real = mirror._open_regular

    def replaced_first(path):  # between the walk (commit found) and the open
        (repo / 'new.tmp').write_bytes(b'two')
        os.replace(repo / 'new.tmp', repo / 'model.bin')
        return real(path)

    monkeypatch.setattr(mirror, '_open_regular', replaced_first)
    resp, body = _request(hub.endpoint, 'GET', f'/t-mirror/pinned/resolve/{commit}/model.bin')
    monkeypatch.setattr(mirror, '_open_regular', real)
    assert resp.status == 404 and resp.getheader('X-Error-Code') == 'RevisionNotFound' and b'two' not in body
    assert 'model.bin' in resp.getheader('X-Error-Message') and 'changed' in resp.getheader('X-Error-Message')
    resp, body = _request(hub.endpoint, 'GET', '/t-mirror/pinned/resolve/main/model.bin')
    assert resp.status == 200 and body == b'two' and resp.getheader('X-Repo-Commit') != commit


def _change_after_head(monkeypatch, nth: int, change):
    """Run ``change()`` once, right after the mirror answers its ``nth`` HEAD of a resolve URL."""
    real, heads, lock = mirror._ReadRoutes._resolve, [], threading.Lock()

    def resolve(self, repo_id, revision, file_parts, head_only):
        try:
            return real(self, repo_id, revision, file_parts, head_only)
        finally:
            with lock:
                if head_only:
                    heads.append(revision)
                    if len(heads) == nth:
                        change()

    monkeypatch.setattr(mirror._ReadRoutes, '_resolve', resolve)


@pytest.mark.parametrize('nth', [1, 2])
def test_hf_hub_download_across_a_replace_never_caches_mixed_versions(hub, monkeypatch, nth):
    """hf_hub_download HEADs then GETs: with model.bin replaced between them it kept the new bytes under the old
    sha256 (``blobs/<sha of A>`` holding B; transformers then loads them forever). Now the download is of one
    version or fails (RevisionNotFound): no blob's bytes differ from its name."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    repo = hub.add_repo('t-mirror/race', {'config.json': b'{}', 'model.bin': b'A' * 1000})

    def replace():
        (repo / 'new.tmp').write_bytes(b'B' * 1000)
        os.replace(repo / 'new.tmp', repo / 'model.bin')

    with monkeypatch.context() as patch:
        _change_after_head(patch, nth, replace)
        try:
            got = open(hf_hub_download('t-mirror/race', 'model.bin'), 'rb').read()
        except (HfHubHTTPError, LocalEntryNotFoundError):
            got = None
    assert got in (None, b'A' * 1000, b'B' * 1000)
    assert not _poisoned_blobs(hub.cache_dir)
    assert open(hf_hub_download('t-mirror/race', 'model.bin'), 'rb').read() == b'B' * 1000


def test_a_download_across_a_commit_gets_the_commit_it_was_told_of(write_hub, hub):
    """On the writable server a commit landing between hf_hub_download's HEAD and GET left
    ``snapshots/<A>/model.bin`` holding B's bytes under A's sha256: both asked resolve/main. The client's own steps,
    with commit B landing between them: its HEAD (``get_hf_file_metadata``, which follows the 307) gives commit A,
    A's sha256 and the commit's URL, which it then GETs (``url != metadata.location``): A's immutable bytes."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    api = write_hub.api
    api.create_repo('t-race/commits')
    first = api.create_commit('t-race/commits', [_add('model.bin', b'A' * 2000)], commit_message='A').oid
    url = hf_hub_url('t-race/commits', 'model.bin')
    meta = get_hf_file_metadata(url)
    assert meta.commit_hash == first and meta.etag == _sha(b'A' * 2000) and meta.location != url
    api.create_commit('t-race/commits', [_add('model.bin', b'B' * 2000)], commit_message='B')
    resp, body = _request(write_hub.endpoint, 'GET', meta.location.split(write_hub.endpoint, 1)[1], follow=False)
    assert resp.status == 200 and body == b'A' * 2000 and _sha(body) == meta.etag
    resp, body = _request(write_hub.endpoint, 'GET', '/t-race/commits/resolve/main/model.bin')  # main is B now
    assert resp.status == 200 and body == b'B' * 2000 and resp.getheader('ETag') == f'"{_sha(body)}"'


# ---- F3: a burst shares the walk -------------------------------------------------------------------------
def test_concurrent_requests_share_the_repo_walk(hub, monkeypatch):
    """Each request walked the whole repo folder: 8 HEADs at once on a 99,102-entry repo took 12-14 s each, past
    huggingface_hub's 10 s HEAD time-out. Requests arriving while a walk runs now share the next one: counted, 8
    requests held at a slow walk take at most 2 walks (the first, and one started after the others arrived)."""
    repo = hub.add_repo('t-mirror/burst', {'config.json': b'{}'})
    commit = repo_commit_hash(repo)
    real, walks, release = mirror._walk_repo, [], threading.Event()

    def slow_walk(folder):
        if Path(folder).name == 'burst':
            walks.append(folder)
            release.wait(30)
        return real(folder)

    monkeypatch.setattr(mirror, '_walk_repo', slow_walk)
    answers = []

    def head():
        answers.append(_request(hub.endpoint, 'HEAD', f'/t-mirror/burst/resolve/{commit}/config.json')[0].status)

    threads = [threading.Thread(target=head) for _ in range(8)]
    for t in threads:
        t.start()
    while sum(st['waiting'] for st in list(mirror._walks._state.values())) < 8:  # all 8 asked, 1 walking
        threading.Event().wait(0.01)
    release.set()
    for t in threads:
        t.join()
    assert answers == [200] * 8
    assert len(walks) <= 2, len(walks)
    assert mirror._walks._state == {}  # nothing kept once the burst is served
