"""The read-only mirror (timm_cra.hub.server) under hostile or heavy repo folders: links into hidden folders, many
files, concurrent first downloads of an un-hashed file, repo folders whose ids differ only in case.

Each check goes through huggingface_hub (what timm's ``hf-hub:`` loads use) and plain HTTP against the suite's
in-process loopback Hub (the ``hub`` fixture)."""
import http.client
import os
import threading

import pytest

from timm_cra.hub import server as mirror

TOKEN = b'hf_SECRETtokenINaRemoteURL'
GIT_CONFIG = b'[remote "origin"]\n\turl = https://user:' + TOKEN + b'@huggingface.co/org/repo\n'


def _request(endpoint, method, path, follow=True):
    # A branch's file is a 307 to its commit's URL (as on the Hub); followed as curl -L, urllib and huggingface_hub
    # do. follow=False: the redirect itself.
    host, port = endpoint.split('//')[1].split(':')
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    if follow and resp.status in (301, 302, 303, 307, 308) and resp.getheader('Location', '').startswith('/'):
        return _request(endpoint, method, resp.getheader('Location'))
    return resp, body


def test_links_into_hidden_folders_are_neither_served_nor_listed(hub, tmp_path):
    """``leak.txt -> .git/config`` and ``gitdir -> .git`` inside a served repo: the direct path ``.git/config`` was
    refused, but the links served its bytes (a token in a remote URL) and leak.txt was listed and downloaded by
    snapshot_download. A path whose resolved form passes a hidden part is now refused as the direct one is."""
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download
    from huggingface_hub.errors import EntryNotFoundError
    repo = hub.add_repo('t-mirror/hidden-links', {'config.json': b'{}'})
    (repo / '.git').mkdir()
    (repo / '.git' / 'config').write_bytes(GIT_CONFIG)
    os.symlink('.git/config', repo / 'leak.txt')
    os.symlink('.git', repo / 'gitdir')
    os.symlink('config.json', repo / 'inner.json')  # a link staying in the visible repo is still served
    (repo / 'sub').mkdir()
    os.symlink('../.git/config', repo / 'sub' / 'deep.txt')

    for name in ('leak.txt', 'gitdir/config', 'sub/deep.txt', '.git/config'):
        for method in ('HEAD', 'GET'):
            resp, body = _request(hub.endpoint, method, f'/t-mirror/hidden-links/resolve/main/{name}')
            assert resp.status in (400, 404), (name, method, resp.status)
            assert TOKEN not in body
    resp, body = _request(hub.endpoint, 'GET', '/t-mirror/hidden-links/resolve/main/inner.json')
    assert resp.status == 200 and body == b'{}'
    for path in ('/api/models/t-mirror/hidden-links', '/api/models/t-mirror/hidden-links/tree/main?recursive=true'):
        resp, body = _request(hub.endpoint, 'GET', path)
        assert resp.status == 200 and b'leak' not in body and b'deep' not in body and b'gitdir' not in body

    api = HfApi()
    assert api.list_repo_files('t-mirror/hidden-links') == ['config.json', 'inner.json']
    assert [s.rfilename for s in api.model_info('t-mirror/hidden-links').siblings] == ['config.json', 'inner.json']
    folder = snapshot_download('t-mirror/hidden-links', local_dir=tmp_path / 'snap')
    got = sorted(p.relative_to(folder).as_posix() for p in (tmp_path / 'snap').rglob('*')
                 if p.is_file() and '.cache' not in p.parts)
    assert got == ['config.json', 'inner.json']
    for name in ('leak.txt', 'gitdir/config', 'sub/deep.txt'):
        with pytest.raises(EntryNotFoundError):
            hf_hub_download('t-mirror/hidden-links', name)
    assert not [p for p in hub.cache_dir.rglob('*') if p.is_file() and TOKEN in p.read_bytes()]


def _counting(monkeypatch, module, name, counts):
    real = getattr(module, name)

    def counted(*args, **kwargs):
        counts[name] = counts.get(name, 0) + 1
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)


def test_a_head_does_no_path_resolution_per_unrelated_file(hub, monkeypatch):
    """A HEAD of config.json in a repo with 3,000 files in junk/ resolved every file and the repo folder (two
    realpath calls a file: 20,000 files made each HEAD take 4-18 s and hf-hub: loads time out). Counted, not timed:
    it now resolves as many paths as in a one-file repo, and stats each file at most once (its commit id)."""
    files = {'config.json': b'{}'}
    hub.add_repo('t-mirror/small', files)
    many = hub.add_repo('t-mirror/many', files)
    (many / 'junk').mkdir()
    n = 3000
    for i in range(n):
        (many / 'junk' / f'f{i}.txt').write_bytes(b'')
    work = {}
    for repo in ('small', 'many'):
        counts = {}
        with monkeypatch.context() as patch:  # the in-process mirror's threads resolve and stat through these
            _counting(patch, os.path, 'realpath', counts)
            _counting(patch, os, 'stat', counts)
            resp, _ = _request(hub.endpoint, 'HEAD', f'/t-mirror/{repo}/resolve/main/config.json')
        assert resp.status == 200
        work[repo] = counts
    assert work['many'].get('realpath', 0) == work['small'].get('realpath', 0)
    # two requests: resolve/main's 307 to the commit's URL and that URL's HEAD, each walking the repo once
    assert work['many']['stat'] <= work['small']['stat'] + 2 * n


def test_a_repo_past_the_entry_limit_is_one_line_naming_it(hub, monkeypatch):
    """The walk each request makes is bounded: past ``MAX_REPO_ENTRIES`` a request is refused at once with one line
    naming the limit and the fix, which huggingface_hub shows (a 507: not retried)."""
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    repo = hub.add_repo('t-mirror/huge', {'config.json': b'{}'})
    (repo / 'junk').mkdir()
    for i in range(30):
        (repo / 'junk' / f'f{i}.txt').write_bytes(b'')
    monkeypatch.setattr(mirror, 'MAX_REPO_ENTRIES', 20)
    resp, _ = _request(hub.endpoint, 'HEAD', '/t-mirror/huge/resolve/main/config.json')
    assert resp.status == 507
    message = resp.getheader('X-Error-Message')
    assert 'over 20 files and folders' in message and 'huge' in message and '\n' not in message
    with pytest.raises(HfHubHTTPError, match='over 20 files and folders'):
        HfApi().model_info('t-mirror/huge')
    with pytest.raises(LocalEntryNotFoundError) as failed:  # a download's HEAD error is its cause
        hf_hub_download('t-mirror/huge', 'config.json')
    assert 'over 20 files and folders' in str(failed.value.__cause__)
    monkeypatch.setattr(mirror, 'MAX_REPO_ENTRIES', 40)  # within the limit it is served
    assert open(hf_hub_download('t-mirror/huge', 'config.json'), 'rb').read() == b'{}'


def test_first_heads_at_once_hash_a_file_once(hub, monkeypatch):
    """4 first HEADs at once on an un-hashed file each hashed it (4.3 GB read for a 1 GiB file): the ones arriving
    while it is hashed now wait for that one reading. The hash is slowed so that all 4 arrive meanwhile."""
    hub.add_repo('t-mirror/big', {'config.json': b'{}', 'w.bin': os.urandom(1 << 16)})
    calls = []
    real = mirror._read_digest
    started = threading.Event()

    def slow_digest(*args, **kwargs):
        calls.append(args[0].name)
        started.set()
        threading.Event().wait(1.0)
        return real(*args, **kwargs)

    monkeypatch.setattr(mirror, '_read_digest', slow_digest)
    answers = []

    def head():
        answers.append(_request(hub.endpoint, 'HEAD', '/t-mirror/big/resolve/main/w.bin')[0])

    threads = [threading.Thread(target=head) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [a.status for a in answers] == [200] * 4
    assert len({a.getheader('ETag') for a in answers}) == 1
    assert len(calls) == 1, calls


def test_repo_folders_differing_only_in_case_are_refused(hub):
    """evil/dup and evil/Dup were served with different contents, and EVIL/DUP silently got one of them. Repo ids are
    case-insensitive on the Hub, so the two folders are one id: every spelling is refused in one line naming both,
    until one is renamed or removed."""
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    hub.add_repo('t-mirror-case/dup', {'config.json': b'{"a": 1}'})
    upper = hub.add_repo('t-mirror-case/Dup', {'config.json': b'{"a": 2}'})
    for repo_id in ('t-mirror-case/dup', 't-mirror-case/Dup', 'T-MIRROR-CASE/DUP'):
        resp, _ = _request(hub.endpoint, 'HEAD', f'/{repo_id}/resolve/main/config.json')
        assert resp.status == 409
        message = resp.getheader('X-Error-Message')
        assert {'t-mirror-case/dup and t-mirror-case/Dup', 't-mirror-case/Dup and t-mirror-case/dup'} & {
            message.split(': ', 1)[1].split(' differ only in case')[0]}, message  # in the order the walk met them
        assert str(hub.server.test_root) not in message and str(hub.server.test_root.resolve()) not in message
        with pytest.raises(HfHubHTTPError, match='ambiguous'):
            HfApi().model_info(repo_id)
        with pytest.raises(LocalEntryNotFoundError) as failed:  # a download's HEAD error is its cause
            hf_hub_download(repo_id, 'config.json')
        assert 'ambiguous' in str(failed.value.__cause__)
    (upper / 'config.json').unlink()
    upper.rmdir()
    assert open(hf_hub_download('T-MIRROR-CASE/DUP', 'config.json'), 'rb').read() == b'{"a": 1}'


def test_repo_ids_fold_ascii_letters_only(hub):
    """Repo ids resolve case-insensitively, as on the Hub, whose ids are ASCII: ``str.casefold`` also folded
    ``STRASSE`` onto a folder ``straße`` (another id, another repo). Only ASCII letters fold now."""
    hub.add_repo('t-uni/straße', {'config.json': b'{}'})
    for repo in ('STRASSE', 'strasse'):
        resp, _ = _request(hub.endpoint, 'HEAD', f'/t-uni/{repo}/resolve/main/config.json')
        assert resp.status == 404 and resp.getheader('X-Error-Code') == 'RepoNotFound', repo
    resp, body = _request(hub.endpoint, 'GET', '/T-UNI/STRA%C3%9FE/resolve/main/config.json')
    assert resp.status == 200 and body == b'{}'


def test_a_head_file_without_its_commits_names_what_is_missing(hub):
    """A `.hub-head` copied into a plain folder (no `.hub-revisions`) answered `404 Invalid rev id: main (repo ... has
    main = aaaa...)`: main called invalid while named. It is the store that is broken, so the answer is a 500
    naming the missing commit folder and both ways out, from the served root."""
    repo = hub.add_repo('t-mirror-head/stray', {'x.txt': b'x'})
    (repo / '.hub-head').write_text('a' * 40 + '\n')
    resp, _ = _request(hub.endpoint, 'HEAD', '/t-mirror-head/stray/resolve/main/x.txt')
    message = resp.getheader('X-Error-Message')
    assert resp.status == 500 and message == (
        f"t-mirror-head/stray/.hub-revisions/{'a' * 40} is missing: t-mirror-head/stray/.hub-head names commit "
        f"{'a' * 40} but its files are not there; restore it, or remove .hub-head to serve the folder as it is."), message
    resp, _ = _request(hub.endpoint, 'HEAD', f"/t-mirror-head/stray/resolve/{'b' * 40}/x.txt")
    assert resp.status == 404 and 'Invalid rev id' in resp.getheader('X-Error-Message')  # not a commit of it
    (repo / '.hub-head').unlink()
    resp, _ = _request(hub.endpoint, 'HEAD', '/t-mirror-head/stray/resolve/main/x.txt')
    assert resp.status == 200, resp.status  # the redirect to its commit, followed


def test_the_org_page_the_load_errors_link_to_lists_the_served_repos(hub):
    """A missing repo's error says "published repos: <endpoint>/<org>"; on the mirror that link was a 404. It lists
    the ids served under the org (case-insensitively, as repo ids resolve), never an ambiguous or hidden one."""
    import re
    import timm
    import timm_cra
    with pytest.raises(timm_cra.PretrainedWeightsError) as info:
        timm.create_model('cra_cifar_resnet20', pretrained=True,
                          pretrained_cfg_overlay=dict(hf_hub_id='timm-cra/no-such-repo'))
    link = re.search(r'published repos: (\S+?)\)', str(info.value)).group(1)
    assert link == f'{hub.endpoint}/timm-cra'
    resp, body = _request(hub.endpoint, 'GET', link[len(hub.endpoint):])
    assert resp.status == 200 and resp.getheader('Content-Type').startswith('text/plain')
    listed = body.decode().splitlines()
    assert 'timm-cra/cra_cifar_resnet20.cifar10' in listed and listed == sorted(listed, key=str.lower)
    hub.add_repo('t-org-page/one', {'config.json': b'{}'})
    hub.add_repo('t-org-page/dup', {'config.json': b'{}'})
    hub.add_repo('t-org-page/Dup', {'config.json': b'{}'})
    hub.add_repo('t-org-page/.hidden', {'config.json': b'{}'})
    (hub.server.test_root / 't-org-page' / 'two\nt-org-page').mkdir()  # would forge a second line
    for name in ('a..b', 'a--b', 'x.git'):  # folders no Hub id names (huggingface_hub refuses them)
        (hub.server.test_root / 't-org-page' / name).mkdir()
    os.symlink('selfloop', hub.server.test_root / 't-org-page' / 'selfloop')  # hid the whole org (a 404)
    resp, body = _request(hub.endpoint, 'GET', '/T-ORG-PAGE')
    assert resp.status == 200 and body == b't-org-page/one\n'
    resp, _ = _request(hub.endpoint, 'HEAD', '/t-org-page')
    assert resp.status == 200 and int(resp.getheader('Content-Length')) == len(b't-org-page/one\n')
    resp, _ = _request(hub.endpoint, 'GET', '/t-org-nobody')
    assert resp.status == 404 and 'not found' in resp.getheader('X-Error-Message')
    resp, _ = _request(hub.endpoint, 'GET', '/..')
    assert resp.status in (400, 404)
