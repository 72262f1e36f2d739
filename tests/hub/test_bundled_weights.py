"""Weights that ship inside the package: the CIFAR repos' ``model.safetensors`` are ``hub/``'s bytes with a
recorded sha256; loads ask the Hub first (a published repo stays the canonical home) and use the bundled copy
only when the Hub cannot serve the repo, saying so; a damaged copy is one error line."""
import contextlib
import hashlib
import logging
import re
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import timm
import timm_cra  # noqa: F401
from timm_cra import PretrainedWeightsError
from timm_cra.models import _weight_checks
from timm_cra.models._weight_checks import BUNDLED_DIR, BUNDLED_WEIGHTS

from ..conftest import HUB_DIR, closed_port_endpoint

TAG = 'cra_cifar_resnet20.cifar10'
REPO = f'timm-cra/{TAG}'
FALLBACK = 'loading the copy bundled with timm-cra'


def _published(repo_id=REPO):
    return load_file(str(HUB_DIR / repo_id / 'model.safetensors'))


def _assert_weights(model, expected):
    state = model.state_dict()
    assert set(state) == set(expected)
    assert all(torch.equal(state[k], v) for k, v in expected.items())


def test_bundled_copies_are_the_hub_repos_bytes():
    """hub/ is the source: each bundled file is its repo's model.safetensors byte for byte, with that sha256
    recorded. After regenerating a repo's weights: copy hub/<repo>/model.safetensors to
    timm_cra/models/bundled/<repo>/ and record its sha256 in BUNDLED_WEIGHTS."""
    on_disk = {p.parent.relative_to(BUNDLED_DIR).as_posix() for p in BUNDLED_DIR.rglob('*') if p.is_file()}
    assert on_disk == set(BUNDLED_WEIGHTS), 'every bundled file has a recorded sha256, and nothing else is there'
    cifar = {p.parent.relative_to(HUB_DIR).as_posix() for p in HUB_DIR.glob('timm-cra/*.cifar10*/model.safetensors')}
    assert cifar and cifar == set(BUNDLED_WEIGHTS)
    for repo_id, sha in BUNDLED_WEIGHTS.items():
        hub_bytes = (HUB_DIR / repo_id / 'model.safetensors').read_bytes()
        assert (BUNDLED_DIR / repo_id / 'model.safetensors').read_bytes() == hub_bytes, f'{repo_id} drifted from hub/'
        assert hashlib.sha256(hub_bytes).hexdigest() == sha, f'{repo_id}: recorded sha256 is not hub/\'s'


@pytest.mark.parametrize('tag', [TAG, 'cifar_resnet20.cifar10'])
def test_offline_and_not_cached_loads_the_bundled_copy(hub, caplog, tag):
    hub.set_offline(True)
    with caplog.at_level(logging.INFO, logger='timm_cra'):
        model = timm.create_model(tag, pretrained=True)
    _assert_weights(model, _published(f'timm-cra/{tag}'))
    assert f'{FALLBACK}' in caplog.text and 'HF_HUB_OFFLINE=1' in caplog.text
    assert Path(model.pretrained_cfg['file']).is_relative_to(BUNDLED_DIR)  # the model says where it came from
    assert hub.cached_files() == []


def test_unreachable_hub_loads_the_bundled_copy_at_once(hub, caplog, monkeypatch):
    sleeps = []
    monkeypatch.setattr('huggingface_hub.utils._http.time.sleep', sleeps.append)
    hub.set_endpoint(closed_port_endpoint())
    with caplog.at_level(logging.WARNING, logger='timm_cra'):
        model = timm.create_model(TAG, pretrained=True, num_classes=5, in_chans=1)  # the README's call
    assert 'is unreachable' in caplog.text and FALLBACK in caplog.text
    assert sleeps == []  # no back-off before the fallback
    expected = _published()
    assert torch.allclose(model.conv1.weight, expected['conv1.weight'].sum(1, keepdim=True))
    assert model.fc.out_features == 5 and torch.equal(model.layer3[2].conv2.weight, expected['layer3.2.conv2.weight'])


class _Always500(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def _answer(self):
        self.send_response(500)
        self.send_header('Content-Length', '0')
        self.end_headers()

    do_GET = do_HEAD = _answer

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def _hub_without_weights(kind: str, root: Path):
    """An endpoint that cannot serve the CIFAR repos' weights: no repos, a repo without weights, HTTP 500."""
    from timm_cra.hub.server import HubFolderServer
    if kind == 'server-error':
        with ThreadingHTTPServer(('127.0.0.1', 0), _Always500) as server:
            threading.Thread(target=server.serve_forever, daemon=True).start()
            try:
                yield f'http://127.0.0.1:{server.server_address[1]}'
            finally:
                server.shutdown()
        return
    for repo in BUNDLED_WEIGHTS if kind == 'no-weights' else ():
        (root / repo).mkdir(parents=True)
        shutil.copy(HUB_DIR / repo / 'config.json', root / repo / 'config.json')
    root.mkdir(exist_ok=True)
    with HubFolderServer([root]) as server:
        yield server.endpoint


@pytest.mark.parametrize('kind,reason', [('no-repo', 'has no such repo'),
                                         ('no-weights', 'could not serve it (RemoteEntryNotFoundError)'),
                                         ('server-error', 'could not serve it')])
def test_hub_that_cannot_serve_the_repo_loads_the_bundled_copy(hub, tmp_path, caplog, monkeypatch, kind, reason):
    monkeypatch.setattr('huggingface_hub.utils._http.time.sleep', lambda s: None)  # a 500 is retried first
    with _hub_without_weights(kind, tmp_path / 'root') as endpoint:
        hub.set_endpoint(endpoint)
        with caplog.at_level(logging.WARNING, logger='timm_cra'):
            model = timm.create_model('cra_cifar_resnet20.cifar10_gates_untrained', pretrained=True)
    assert reason in caplog.text and FALLBACK in caplog.text
    base = _published('timm-cra/cifar_resnet20.cifar10')
    assert torch.equal(model.conv1.weight, base['conv1.weight'])  # the base repo's bytes, gates added at load


def _hub_cutting_downloads(root: Path):
    """A mirror of ``root`` whose HEADs answer (so the reachability probe passes) and whose every GET of a
    model.safetensors sends half the body, then closes the connection."""
    import socket
    from timm_cra.hub.server import HubFolderServer

    class Cut(HubFolderServer.handler_class):
        def _write_file_body(self, f, start, length, identity):
            if Path(f.name).name != 'model.safetensors':
                return super()._write_file_body(f, start, length, identity)
            f.seek(start)
            self.wfile.write(f.read(length // 2))
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)

    class Server(HubFolderServer):
        handler_class = Cut

    return Server([root])


def test_a_download_cut_after_the_probe_falls_back_or_is_one_line(hub, caplog, monkeypatch):
    """A Hub whose GET of model.safetensors closed the connection midway, after the HEAD probe had answered, was an
    httpx RemoteProtocolError traceback, also for tags with a bundled copy. Now the bundled copy loads (after the
    client's retries: a cut may heal), any other load is one line; no partial file is left in the cache."""
    from timm_cra import create_model
    monkeypatch.setattr('huggingface_hub.utils._http.time.sleep', lambda s: None)
    with _hub_cutting_downloads(HUB_DIR) as server:
        hub.set_endpoint(server.endpoint)
        with caplog.at_level(logging.WARNING, logger='timm_cra'):
            model = timm.create_model(TAG, pretrained=True)
        assert 'broke off the download (RemoteProtocolError)' in caplog.text and FALLBACK in caplog.text
        _assert_weights(model, _published())
        with pytest.raises(PretrainedWeightsError) as e:  # hf-hub: names never fall back
            create_model(f'hf-hub:{REPO}', pretrained=True)
    message = str(e.value)
    # the weights are read at the commit config.json came from (models._factory: one commit a load), which it names
    assert '\n' not in message and re.search(
        rf"the download from Hub repo '{re.escape(REPO)}' \(revision '[0-9a-f]{{40}}'\) at {re.escape(server.endpoint)} "
        rf"broke off \(RemoteProtocolError: peer closed connection without sending complete message body", message), message
    assert 'HF_ENDPOINT' in message and 'pretrained_cfg_overlay' in message
    config_blob = hashlib.sha256((HUB_DIR / REPO / 'config.json').read_bytes()).hexdigest()  # the mirror's ETag
    assert [f.rsplit('/', 1)[1] for f in hub.cached_files() if '/blobs/' in f] == [config_blob]  # no weights part


def _hub_trickling(root: Path, part: str):
    """A mirror of ``root`` that trickles: every answer's ``headers`` one line each 0.1 s (never ending them), or
    the ``body`` of each GET of a model.safetensors one byte each 0.1 s. Each byte comes well within any read
    time-out; it stops after 100 s, so a lost bound fails the test instead of hanging it."""
    from timm_cra.hub.server import HubFolderServer
    pause = threading.Event()  # waits 0.1 s: time.sleep is patched out below (the client's back-off)

    class Trickle(HubFolderServer.handler_class):
        def _trickle(self, lines):
            with contextlib.suppress(OSError):
                for line in lines:
                    self.wfile.write(line)
                    self.wfile.flush()
                    pause.wait(0.1)
            self.close_connection = True

        def _route(self, head_only):
            if part != 'headers':
                return super()._route(head_only)
            self._drain_body()
            self._trickle([b'HTTP/1.1 200 OK\r\n'] + [f'X-Line-{i}: x\r\n'.encode() for i in range(1000)])

        def _write_file_body(self, f, start, length, identity):
            if Path(f.name).name != 'model.safetensors':
                return super()._write_file_body(f, start, length, identity)
            f.seek(start)
            self._trickle(iter(lambda: f.read(1), b''))  # 270 KB: far over 100 s

    class Server(HubFolderServer):
        handler_class = Trickle

    return Server([root])


@pytest.mark.parametrize('part, reason', [('headers', 'is unreachable (no answer: timed out)'),
                                          ('body', 'broke off the download (ReadTimeout)')])
def test_a_trickling_hub_loads_the_bundled_copy_in_bounded_time(hub, caplog, monkeypatch, part, reason):
    """A Hub that trickles its answer, one header line (or one body byte) at a time, trips no read time-out: the
    probe's HEAD (headers never finished) or the weights download (resumed after each time-out) waited for ever.
    The probe's whole answer is bounded (_PROBE_TIMEOUT_S) and so is a bundled repo's whole download
    (BUNDLED_DOWNLOAD_TIMEOUT_S): the bundled copy loads, saying why."""
    import time
    monkeypatch.setattr('huggingface_hub.utils._http.time.sleep', lambda s: None)  # the client's back-off
    monkeypatch.setattr(_weight_checks, '_PROBE_TIMEOUT_S', 1.0)
    monkeypatch.setattr('timm_cra.models._builder.BUNDLED_DOWNLOAD_TIMEOUT_S', 2.0)
    with _hub_trickling(HUB_DIR, part) as server:
        hub.set_endpoint(server.endpoint)
        start = time.monotonic()
        with caplog.at_level(logging.WARNING, logger='timm_cra'):
            model = timm.create_model(TAG, pretrained=True)
        took = time.monotonic() - start
    assert took < 20, took
    assert reason in caplog.text and FALLBACK in caplog.text, caplog.text
    _assert_weights(model, _published())
    assert not [f for f in hub.cached_files() if '/snapshots/' in f and f.endswith('model.safetensors')]


@contextlib.contextmanager
def _other_weights_served(hub, tmp_path, repo=REPO):
    """Inside the block, a Hub serving ``repo`` with other weights than the bundled copy (fc.bias + 1): yields their
    state and sha256."""
    state = _published(repo)
    state['fc.bias'] = state['fc.bias'] + 1
    from timm_cra.hub.server import HubFolderServer
    folder = tmp_path / 'root' / repo
    shutil.copytree(HUB_DIR / repo, folder)
    save_file(state, str(folder / 'model.safetensors'))
    with HubFolderServer([tmp_path / 'root']) as server:  # its own server: the session's keeps hub/'s bytes
        hub.set_endpoint(server.endpoint)
        yield state, hashlib.sha256((folder / 'model.safetensors').read_bytes()).hexdigest()


def test_other_bytes_under_a_repo_timm_cra_has_not_published_load_the_bundled_copy(hub, tmp_path, caplog):
    """Whoever serves timm-cra/<repo> before the project publishes it (the org unclaimed on huggingface.co) is not
    the source of the tag's weights: its other bytes were loaded with a warning; the bundled copy loads, said."""
    with _other_weights_served(hub, tmp_path) as (_, served), caplog.at_level(logging.INFO, logger='timm_cra'):
        model = timm.create_model(TAG, pretrained=True)
    _assert_weights(model, _published())
    assert FALLBACK in caplog.text and f'serves other weights (sha256 {served}) than the copy this release bundles, ' \
        f'and timm-cra has not published that repo yet' in caplog.text


def test_a_gates_untrained_tag_reads_the_bundled_copy_of_an_unpublished_base_repo(hub, tmp_path, caplog):
    """cra_cifar_resnet20.cifar10_gates_untrained reads timm-cra/cifar_resnet20.cifar10, unpublished: other bytes
    served under that name loaded through it (only a warning) while its base tag loaded the bundled copy."""
    base = 'timm-cra/cifar_resnet20.cifar10'
    with _other_weights_served(hub, tmp_path, base) as (_, served), caplog.at_level(logging.INFO, logger='timm_cra'):
        model = timm.create_model('cra_cifar_resnet20.cifar10_gates_untrained', pretrained=True)
    assert model.pretrained_cfg['file'] == str(BUNDLED_DIR / base / 'model.safetensors')
    assert torch.equal(model.fc.bias, _published(base)['fc.bias'])
    assert FALLBACK in caplog.text and f'serves other weights (sha256 {served})' in caplog.text


def test_a_published_hub_repo_wins_over_the_bundled_copy(hub, tmp_path, caplog, monkeypatch):
    # The Hub is the canonical home once the project published a repo there (the tag's status then cleared): when
    # it serves the repo with other weights (a later revision), those are loaded, and said.
    from timm_cra.models import _builder
    monkeypatch.delitem(_builder.WEIGHT_STATES, TAG)
    with _other_weights_served(hub, tmp_path) as (state, served), caplog.at_level(logging.INFO, logger='timm_cra'):
        model = timm.create_model(TAG, pretrained=True)
    _assert_weights(model, state)
    assert FALLBACK not in caplog.text and f"weights from the Hub repo '{REPO}' at {hub.endpoint}" in caplog.text
    assert 'file' not in model.pretrained_cfg or not model.pretrained_cfg['file']
    # ... and says that offline the same tag would load other weights (the bundled copy)
    differs = [r.getMessage() for r in caplog.records if 'is not the copy this release' in r.getMessage()]
    assert len(differs) == 1 and served in differs[0] and BUNDLED_WEIGHTS[REPO] in differs[0]
    assert 'pip install -U timm-cra' in differs[0] and '\n' not in differs[0]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger='timm_cra'):
        timm.create_model(TAG, pretrained=True)  # from the cache now: still said
    assert 'is not the copy this release' in caplog.text


def test_the_hub_serving_the_bundled_bytes_is_not_warned_about(hub, caplog):
    with caplog.at_level(logging.INFO, logger='timm_cra'):
        model = timm.create_model(TAG, pretrained=True)
    _assert_weights(model, _published())
    assert f"weights from the Hub repo '{REPO}'" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_bundled_copy_that_does_not_fit_names_the_bundled_file(hub):
    # cra_pool_size=7 builds 7x7 gate convs; the 4x4 weights do not fit. Loaded offline, the weights came from the
    # bundled file, and the refusal names it, not a Hub that was never asked.
    hub.set_offline(True)
    with pytest.raises(PretrainedWeightsError) as info:
        timm.create_model(TAG, pretrained=True, cra_pool_size=7)
    message = str(info.value)
    assert 'does not fit' in message and str(BUNDLED_DIR / REPO / 'model.safetensors') in message
    assert 'huggingface.co' not in message and hub.endpoint not in message and '\n' not in message


def test_damaged_bundled_copy_is_one_error_line(hub, tmp_path, monkeypatch):
    copy = tmp_path / 'bundled'
    shutil.copytree(BUNDLED_DIR, copy)
    weights = copy / REPO / 'model.safetensors'
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    monkeypatch.setattr(_weight_checks, 'BUNDLED_DIR', copy)
    hub.set_offline(True)
    with pytest.raises(PretrainedWeightsError) as info:
        timm.create_model(TAG, pretrained=True)
    message = str(info.value)
    assert 'does not match its recorded sha256' in message and 'pip install --force-reinstall' in message
    assert '\n' not in message
    weights.unlink()
    with pytest.raises(PretrainedWeightsError, match='bundled with timm-cra .* is missing'):
        timm.create_model(TAG, pretrained=True)


def test_a_pinned_revision_never_falls_back(hub):
    # The bundled copy is the default revision's bytes: another revision must come from the Hub.
    hub.set_offline(True)
    with pytest.raises(PretrainedWeightsError, match='HF_HUB_OFFLINE=1 is set'):
        timm.create_model(TAG, pretrained=True, pretrained_cfg_overlay=dict(hf_hub_id=f'{REPO}@v2'))


def test_a_full_hub_cache_loads_the_bundled_copy_or_is_one_line(hub, caplog, monkeypatch, small_disk):
    """The download cannot be cached (the cache's disk is full: huggingface_hub's OSError ENOSPC, no path, was a
    74-line traceback): a tag whose weights are bundled loads them, saying why; any other load is one line."""
    from huggingface_hub import constants
    cache = small_disk('full-cache', '600k')  # room for the config, not for the 1.1 MB weights
    monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(cache))
    monkeypatch.setenv('HF_HUB_CACHE', str(cache))
    with caplog.at_level(logging.WARNING, logger='timm_cra'):
        model = timm.create_model(TAG, pretrained=True)
    _assert_weights(model, _published())
    assert FALLBACK in caplog.text and 'No space left on device' in caplog.text and str(cache) in caplog.text
    with pytest.raises(PretrainedWeightsError) as e:
        timm.create_model(f'hf-hub:{REPO}', pretrained=True)
    message = str(e.value)
    assert '\n' not in message and 'could not be cached (No space left on device' in message
    assert 'point HF_HUB_CACHE at a folder with room' in message
