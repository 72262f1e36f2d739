"""python -m timm_cra.hub.publish: checkpoint + results -> repo folder (dry run); --push without a token fails
clearly. Inputs are what the trainer really writes (last.pth, model.safetensors + config.json, results.json) and
what timm's train.py writes (model_best.pth.tar with argparse.Namespace args)."""
import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import timm
import timm_cra  # noqa: F401

from timm_cra.hub import publish
from timm_cra.utils.errors import UsageError, run_cli

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / 'data' / 'cifar10'


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    torch.manual_seed(0)
    tmp = tmp_path_factory.mktemp('ckpt')
    model = timm.create_model('cra_mobilenetv2_050', num_classes=5)
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    ckpt = tmp / 'model_best.pth.tar'
    torch.save({'epoch': 3, 'arch': 'cra_mobilenetv2_050', 'state_dict': model.state_dict(),
                'state_dict_ema': ema, 'optimizer': {}, 'version': 2}, ckpt)
    results = tmp / 'results.json'
    results.write_text(json.dumps({'model': 'cra_mobilenetv2_050', 'top1': 61.25, 'top5': 90.5,
                                   'dataset': 'cifar10', 'split': 'test', 'img_size': 224}))
    return ckpt, results, model.state_dict(), ema


def test_dry_run_writes_loadable_folder(trained, tmp_path, capsys):
    ckpt, results, _, ema = trained
    out = tmp_path / 'repo'
    publish.main(['cra_mobilenetv2_050.test_c5', str(ckpt), '--results', str(results), '--num-classes', '5',
                  '--out', str(out)])
    assert 'Dry run: not pushed' in capsys.readouterr().out
    loaded = timm.create_model(f'local-dir:{out}', pretrained=True)
    for k, v in ema.items():  # EMA weights preferred, as timm's trainer evaluates them
        assert torch.equal(loaded.state_dict()[k], v), k
    assert 'value: 61.25' in (out / 'README.md').read_text()
    assert not list(out.glob('*.bin')) and not list(out.glob('*.pth*'))  # safetensors only


def test_no_ema_and_safetensors_input(trained, tmp_path):
    ckpt, _, plain, _ = trained
    out = tmp_path / 'repo'
    publish.main(['cra_mobilenetv2_050.test_c5', str(ckpt), '--num-classes', '5', '--no-ema', '--out', str(out)])
    st = tmp_path / 'w.safetensors'
    save_file(dict(plain), str(st))
    publish.main(['cra_mobilenetv2_050.test_c5', str(st), '--num-classes', '5', '--out', str(out), '--overwrite'])
    loaded = timm.create_model(f'local-dir:{out}', pretrained=True)
    for k, v in plain.items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_publishing_under_a_registered_tags_name_warns_in_one_line(trained, tmp_path, caplog):
    """``timm-cra-publish cra_cifar_resnet20.cifar10 <other weights>`` was silent, its repo id the project's own
    (``timm-cra/<tag>``, which ``timm.create_model(tag, pretrained=True)`` downloads); a case variant too (the Hub
    compares repo ids case-insensitively). One warning line; other names none."""
    ckpt, *_ = trained
    tag = 'cra_mobilenetv2_050.lamb_in1k_gates_untrained'
    for name, repo_id in ((tag, []), (tag.upper().replace('CRA_MOBILENETV2_050', 'cra_mobilenetv2_050'),
                                      ['--repo-id', 'me/x'])):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger='timm_cra.publish'):
            publish.main([name, str(ckpt), '--num-classes', '5', *repo_id, '--out', str(tmp_path / name)])
        warned = [m for m in caplog.messages if 'registered weights' in m]
        assert len(warned) == 1 and '\n' not in warned[0], caplog.messages
        assert f"is the name of the registered weights {tag} " in warned[0]
        assert ('published as its repo' if not repo_id else 'published as me/x') in warned[0]
        assert 'e.g. cra_mobilenetv2_050.mydata' in warned[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger='timm_cra.publish'):
        publish.main(['cra_mobilenetv2_050.test_c5', str(ckpt), '--num-classes', '5', '--out', str(tmp_path / 'own')])
    assert not [m for m in caplog.messages if 'registered weights' in m]


def test_wrong_architecture_is_named(trained, tmp_path):
    ckpt, *_ = trained
    with pytest.raises(UsageError, match=r'do not fit cra_mobilenetv2_050.*size mismatch: classifier.weight.*--num-classes'):
        publish.main(['cra_mobilenetv2_050.x', str(ckpt), '--out', str(tmp_path / 'r')])  # 1000 vs 5 classes
    assert not (tmp_path / 'r').exists()


@pytest.mark.parametrize('fault, needle', [
    ('nan', r'hold NaN/Inf values: conv_stem.weight'),
    ('int32', r'hold integer tensors for float parameters: conv_stem.weight \(torch.int32\)'),
    ('missing', r'do not fit cra_mobilenetv2_050: missing keys: classifier.bias'),
])
def test_weights_transformers_would_load_silently_are_never_published(trained, tmp_path, fault, needle):
    """transformers' AutoModel / pipeline load NaN, integer or incomplete weights without a word (NaN scores, a
    random head); repos written by publish never hold them: it refuses each in one line and writes nothing."""
    _, _, plain, _ = trained
    state = dict(plain)
    if fault == 'nan':
        state['conv_stem.weight'] = torch.full_like(state['conv_stem.weight'], float('nan'))
    elif fault == 'int32':
        state['conv_stem.weight'] = (state['conv_stem.weight'] * 100).to(torch.int32)
    else:
        del state['classifier.bias']
    weights = tmp_path / 'w.safetensors'
    save_file(state, str(weights))
    with pytest.raises(UsageError, match=needle):
        publish.main(['cra_mobilenetv2_050.x', str(weights), '--num-classes', '5', '--out', str(tmp_path / 'r')])
    assert not (tmp_path / 'r').exists()


def test_push_without_token_fails_before_network(trained, tmp_path, monkeypatch):
    from huggingface_hub import constants
    ckpt, *_ = trained
    monkeypatch.delenv('HF_TOKEN', raising=False)
    monkeypatch.setattr(constants, 'HF_TOKEN_PATH', str(tmp_path / 'no-token'))
    monkeypatch.setattr(constants, 'HF_STORED_TOKENS_PATH', str(tmp_path / 'no-tokens'))
    with pytest.raises(UsageError, match=r'hf auth login.*HF_TOKEN'):
        publish.main(['cra_mobilenetv2_050.test_c5', str(ckpt), '--num-classes', '5', '--out', str(tmp_path / 'r'),
                      '--push'])
    assert (tmp_path / 'r' / 'model.safetensors').is_file()  # the dry-run part still happened


@pytest.mark.parametrize('endpoint_kind', ['refuses', 'closes'])
@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_push_to_an_endpoint_that_refuses_connections_is_one_line(trained, tmp_path, endpoint_kind):
    """It was a ConnectError traceback (a RemoteProtocolError one where the server accepts and closes each
    connection). The folder written before the push is the complete dry-run output."""
    import contextlib
    from ..conftest import closed_port_endpoint, connection_closing_endpoint
    ckpt, *_ = trained
    with contextlib.ExitStack() as stack:
        endpoint = stack.enter_context(connection_closing_endpoint()) if endpoint_kind == 'closes' \
            else closed_port_endpoint()
        env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1', HF_ENDPOINT=endpoint, HF_TOKEN='hf_test',
                   HF_HUB_OFFLINE='0', NO_PROXY='127.0.0.1,localhost')
        proc = subprocess.run([sys.executable, '-m', 'timm_cra.hub.publish', 'cra_mobilenetv2_050.test_c5',
                               str(ckpt), '--num-classes', '5', '--out', str(tmp_path / 'r'), '--push'],
                              env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
    if endpoint_kind == 'refuses':  # nothing was sent
        assert proc.stderr.count('\n') == 1 and proc.stderr.startswith(
            f'error: Pushing to timm-cra/cra_mobilenetv2_050.test_c5 failed: cannot connect to the Hub endpoint '
            f'{endpoint} ('), proc.stderr
        assert 'nothing was uploaded' in proc.stderr
    else:  # the request was read, then dropped: "nothing was uploaded" was said after 6 commits had landed
        assert proc.stderr.count('\n') == 1 and proc.stderr.startswith(
            f'error: Pushing to timm-cra/cra_mobilenetv2_050.test_c5 failed: the Hub endpoint {endpoint} closed the '
            f'connection without answering (RemoteProtocolError: '), proc.stderr
        assert 'so the push may have landed (look at timm-cra/cra_mobilenetv2_050.test_c5 on the Hub)' in proc.stderr
        assert 'nothing was uploaded' not in proc.stderr
    assert f'the repo folder {tmp_path / "r"} is complete' in proc.stderr and 'HF_ENDPOINT' in proc.stderr
    model = timm.create_model(f'local-dir:{tmp_path / "r"}', pretrained=True)  # the folder is the loadable output
    assert model.num_classes == 5 and (tmp_path / 'r' / 'README.md').is_file()


class _LoopbackEndpoint:
    """An HTTP server on 127.0.0.1, answering with a handler class in a daemon thread, at ``endpoint``."""

    def _serve(self, handler) -> None:
        import threading
        from http.server import ThreadingHTTPServer
        self.server = ThreadingHTTPServer(('127.0.0.1', 0), handler)
        self.server.daemon_threads = True
        self.endpoint = f'http://127.0.0.1:{self.server.server_address[1]}'
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _BadHub(_LoopbackEndpoint):
    """A Hub on 127.0.0.1 that accepts connections, then ``stall``s (never answers), ``cut``s the connection, answers
    ``500``, or ``trickle``s a ``200`` (100000 bytes announced, one sent every 0.1 s); ``requests`` counts what it was
    asked."""

    def __init__(self, mode: str):
        import contextlib
        import socket
        import threading
        from http.server import BaseHTTPRequestHandler
        hub = self
        self.requests, self.release = 0, threading.Event()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'

            def log_message(self, *args):
                pass

            def _answer(self):
                hub.requests += 1
                self.rfile.read(int(self.headers.get('Content-Length') or 0))
                if mode == 'stall':
                    hub.release.wait(30)
                elif mode == 'trickle':  # each byte well within any read time-out: only a whole-request bound ends it
                    self.send_response(200)
                    self.send_header('Content-Length', '100000')
                    self.end_headers()
                    with contextlib.suppress(OSError):
                        for _ in range(1000):  # 100 s: the test fails, never hangs, if the bound is lost
                            if hub.release.wait(0.1):
                                break
                            self.wfile.write(b'{')
                            self.wfile.flush()
                elif mode == 'cut':
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b'\x01\0\0\0\0\0\0\0')
                    self.connection.close()  # with SO_LINGER 0: a reset, as a dropped link gives
                    self.close_connection = True
                else:
                    body = b'{"error": "Internal Error"}'
                    self.send_response(500)
                    self.send_header('Content-Length', str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_HEAD = _answer

        self._serve(Handler)

    def close(self):
        self.release.set()
        super().close()


#: An endpoint that answers 200 but is not a Hub (a proxy's login page, another web app): per mode, the request (a
#: path fragment) it answers with a body huggingface_hub cannot read; every other request gets what a Hub answers.
_NOT_A_HUB = {
    'html-create': ('/api/repos/create', b'<html>proxy login</html>'),
    'html-info': ('/api/models/timm-cra/cra_mobilenetv2_050.test_c5', b'<html>proxy login</html>'),  # its head
    'html-tree': ('/tree/', b'<html>proxy login</html>'),
    'html-preupload': ('/preupload/', b'<html>oops</html>'),
    'preupload-not-a-list': ('/preupload/', b'{"files": "nope"}'),
    'preupload-without-the-files': ('/preupload/', b'{"files": []}'),
    'commit-empty': ('/commit/', b'{}'),
    'commit-html': ('/commit/', b'<html/>'),
    'commit-url-not-the-hubs': ('/commit/', b'{"commitUrl": "x", "commitOid": "' + b'a' * 40 + b'"}'),
}


class _NotAHub(_LoopbackEndpoint):
    """A Hub on 127.0.0.1 that answers each request of a push as the Hub does, except the one :data:`_NOT_A_HUB` names
    for ``mode`` (``'hub'``: none), which gets a 200 with a body that is not the Hub API's."""

    def __init__(self, mode: str):
        from http.server import BaseHTTPRequestHandler
        hub = self
        self.paths = []

        class Handler(BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'

            def log_message(self, *args):
                pass

            def _answer(self):
                body = self.rfile.read(int(self.headers.get('Content-Length') or 0))
                path = self.path.split('?')[0]
                hub.paths.append(path)
                fragment, bad = _NOT_A_HUB.get(mode, (None, None))
                if fragment is not None and fragment in path:
                    answer = bad
                elif path.startswith('/api/repos/create'):
                    answer = json.dumps({'url': f'{hub.endpoint}/o/r', 'name': 'o/r', 'id': 'o/r'}).encode()
                elif path == '/api/models/timm-cra/cra_mobilenetv2_050.test_c5':  # the head the commit replaces
                    answer = json.dumps({'id': 'timm-cra/cra_mobilenetv2_050.test_c5', 'sha': 'b' * 40}).encode()
                elif '/tree/' in path:
                    answer = b'[]'  # a new repo
                elif '/preupload/' in path:
                    answer = json.dumps({'files': [{'path': f['path'], 'uploadMode': 'regular', 'shouldIgnore': False}
                                                   for f in json.loads(body)['files']]}).encode()
                elif path == '/api/validate-yaml':  # the model card's metadata
                    answer = b'{"errors": [], "warnings": []}'
                elif '/commit/' in path:
                    answer = json.dumps({'commitUrl': f'{hub.endpoint}/o/r/commit/{"a" * 40}',
                                         'commitOid': 'a' * 40}).encode()
                else:
                    self.send_response(404)
                    self.send_header('Content-Length', '0')
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header('Content-Type', 'text/html' if answer.startswith(b'<') else 'application/json')
                self.send_header('Content-Length', str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_GET = do_POST = do_PUT = do_HEAD = _answer

        self._serve(Handler)



@pytest.mark.parametrize('mode', ['hub', *_NOT_A_HUB])
def test_push_to_an_endpoint_that_is_not_a_hub_is_one_line(trained, tmp_path, monkeypatch, capsys, mode):
    """`publish --push` to an endpoint answering 200 with HTML or JSON of another shape (a proxy's login page) was a
    traceback, rc 1 (JSONDecodeError, ValueError: preupload_info is improperly formatted, KeyError 'README.md' /
    'commitUrl', HfUriError). Now one line naming the endpoint, HF_ENDPOINT and that it did not answer as a Hub does,
    exit 2; the folder is the complete dry-run output. 'hub': the same server answering every request as a Hub does
    takes the push, so each failure is the one bad answer's."""
    from huggingface_hub import constants
    ckpt, *_ = trained
    bad, out = _NotAHub(mode), tmp_path / 'r'
    monkeypatch.setattr(constants, 'ENDPOINT', bad.endpoint)
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', False)
    monkeypatch.setenv('HF_TOKEN', 'hf_test')
    try:
        if mode == 'hub':
            publish.main(['cra_mobilenetv2_050.test_c5', str(ckpt), '--num-classes', '5', '--out', str(out), '--push'])
            assert any('/commit/' in p for p in bad.paths), bad.paths
            return
        with pytest.raises(SystemExit) as e:
            run_cli(publish.main, ['cra_mobilenetv2_050.test_c5', str(ckpt), '--num-classes', '5', '--out', str(out),
                                   '--push', '--timeout', '10'])
    finally:
        bad.close()
    assert any(_NOT_A_HUB[mode][0] in p for p in bad.paths), bad.paths  # the push got as far as the bad answer
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count('\n') == 1, err
    assert err.startswith(f'error: Pushing to timm-cra/cra_mobilenetv2_050.test_c5 failed: the endpoint {bad.endpoint} '
                          f'answered, but not as a Hugging Face Hub does ('), err
    assert 'check that HF_ENDPOINT points at a Hub' in err and f'the repo folder {out} is complete' in err, err
    assert timm.create_model(f'local-dir:{out}', pretrained=True).num_classes == 5


@pytest.mark.parametrize('mode, says', [
    ('stall', 'did not answer within 0.5 s (ReadTimeout: timed out); the repo folder {out} is complete: rerun with '
              '--overwrite --push once it answers (check HF_ENDPOINT; a slow link: raise --timeout).'),
    ('cut', 'broke (ReadError: [Errno 104] Connection reset by peer); the repo folder {out} is complete: rerun '
            'with --overwrite --push (check HF_ENDPOINT and the network).'),
    ('500', "(a server error, not yours: retry later; the repo folder {out} is complete: rerun with --overwrite "
            "--push)."),
    ('trickle', 'did not answer within 0.5 s (ReadTimeout: timed out); the repo folder {out} is complete: rerun '
                'with --overwrite --push once it answers (check HF_ENDPOINT; a slow link: raise --timeout).'),
])
def test_push_to_a_hub_that_stalls_cuts_or_fails_is_one_line_in_bounded_time(trained, tmp_path, monkeypatch,
                                                                              capsys, mode, says):
    """`publish --push` to a Hub that accepts the connection and never answers hung forever after 'Wrote ...'
    (huggingface_hub's shared client sets no timeout); one that trickles its answer still did with --timeout (a time-out
    per read); a cut connection was a ReadError traceback; a 500 was blamed on the token. Each is one line naming the
    endpoint, within a bounded time (--timeout for every request, answer included), and the written folder is the
    complete dry-run output."""
    import time

    from huggingface_hub import constants, get_session
    ckpt, *_ = trained
    bad = _BadHub(mode)
    monkeypatch.setattr(constants, 'ENDPOINT', bad.endpoint)
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', False)
    monkeypatch.setenv('HF_TOKEN', 'hf_test')
    timeout_before, out = get_session().timeout, tmp_path / 'r'
    start = time.monotonic()
    try:
        with pytest.raises(SystemExit) as e:
            run_cli(publish.main, ['cra_mobilenetv2_050.test_c5', str(ckpt), '--num-classes', '5', '--out', str(out),
                                   '--push', '--timeout', '0.5'])
    finally:
        bad.close()
    assert time.monotonic() - start < 90 and bad.requests > 0
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count('\n') == 1 and err.startswith('error: Pushing '), err
    assert bad.endpoint in err and says.format(out=out) in err, err
    assert get_session().timeout == timeout_before  # the shared client's own setting is back
    assert timm.create_model(f'local-dir:{out}', pretrained=True).num_classes == 5


@pytest.mark.parametrize('mode, kind', [('refuses', 'no answer'), ('closes', 'no answer'), ('stall', 'time-out'),
                                        ('cut', 'broken connection'), ('500', None)])
def test_one_transport_classifier_for_the_loader_and_push(monkeypatch, mode, kind):
    """The loader's reachability probe and publish --push sorted transport failures with two classifiers (class
    names, one also checking the module): now one, utils.errors.transport_failure, fed here with what
    huggingface_hub's own client raises against each kind of bad endpoint."""
    import contextlib

    from huggingface_hub import constants, get_session
    from timm_cra.models._weight_checks import HubUnreachableError, check_hub_reachable
    from timm_cra.utils.errors import transport_failure
    from ..conftest import closed_port_endpoint, connection_closing_endpoint
    with contextlib.ExitStack() as stack:
        if mode in ('stall', 'cut', '500'):
            bad = _BadHub(mode)
            stack.callback(bad.close)
            endpoint = bad.endpoint
        else:
            endpoint = stack.enter_context(connection_closing_endpoint()) if mode == 'closes' \
                else closed_port_endpoint()
        monkeypatch.setattr(constants, 'ENDPOINT', endpoint)
        monkeypatch.setattr(constants, 'HUGGINGFACE_CO_URL_TEMPLATE',
                            endpoint + '/{repo_id}/resolve/{revision}/{filename}')
        monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', False)
        try:
            get_session().get(f'{endpoint}/api/models/o/r', timeout=0.5)
            raised = None
        except Exception as e:  # noqa: BLE001  (what the client raises is the input under test)
            raised = e
        assert (transport_failure(raised) if raised is not None else None) == kind, repr(raised)
        monkeypatch.setattr('timm_cra.models._weight_checks._PROBE_TIMEOUT_S', 0.5)
        if kind is None:
            check_hub_reachable('o/r', None)  # an answer of any status is the client's to retry
        else:
            with pytest.raises(HubUnreachableError):
                check_hub_reachable('o/r', None)
    assert transport_failure(ValueError('not from the HTTP library')) is None


def test_push_to_a_read_only_mirror_names_hf_endpoint(trained, tmp_path, monkeypatch, capsys, hub):
    """HF_ENDPOINT at the read-only mirror: its 403 was blamed on the token ("check the token's write access"), with a
    doubled period. Now the line says the endpoint refused writes and names HF_ENDPOINT."""
    ckpt, *_ = trained
    monkeypatch.setenv('HF_TOKEN', 'hf_test')
    with pytest.raises(SystemExit) as e:
        run_cli(publish.main, ['cra_mobilenetv2_050.test_c5', str(ckpt), '--num-classes', '5', '--out',
                               str(tmp_path / 'r'), '--push'])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith('error: ')]
    assert e.value.code == 2 and len(errors) == 1, err
    assert f'the endpoint {hub.endpoint} refused writes' in errors[0] and 'unset HF_ENDPOINT' in errors[0], errors[0]
    assert 'token' not in errors[0] and '..' not in errors[0] and errors[0].endswith('.'), errors[0]


def test_push_timeout_is_set_without_importing_the_http_library(trained, tmp_path, monkeypatch, capsys):
    """--timeout did `import httpx2`: an ImportError with a huggingface_hub whose client is httpx. It is set through
    the client object huggingface_hub uses; here the module is made unimportable and the push still times out."""
    from huggingface_hub import constants, get_session
    ckpt, *_ = trained
    get_session()  # huggingface_hub's client exists, as it does once huggingface_hub has made any request
    monkeypatch.setitem(sys.modules, type(get_session()).__module__.split('.')[0], None)  # `import httpx2` fails
    bad = _BadHub('stall')
    monkeypatch.setattr(constants, 'ENDPOINT', bad.endpoint)
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', False)
    monkeypatch.setenv('HF_TOKEN', 'hf_test')
    try:
        with pytest.raises(SystemExit) as e:
            run_cli(publish.main, ['cra_mobilenetv2_050.test_c5', str(ckpt), '--num-classes', '5', '--out',
                                   str(tmp_path / 'r'), '--push', '--timeout', '0.5'])
    finally:
        bad.close()
    err = capsys.readouterr().err  # may also hold a server thread's report of an earlier test's reset connection
    errors = [line for line in err.splitlines() if line.startswith('error: ')]
    assert e.value.code == 2 and len(errors) == 1 and 'did not answer within 0.5 s' in errors[0], err
    assert 'ImportError' not in err and 'httpx2' not in err


def test_push_with_an_empty_hf_endpoint_is_one_line(trained, tmp_path, monkeypatch):
    """HF_ENDPOINT='' made every URL relative: a traceback from the HTTP client. Now one line naming the fix."""
    from huggingface_hub import constants
    ckpt, *_ = trained
    monkeypatch.setattr(constants, 'ENDPOINT', '')
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', False)
    monkeypatch.setenv('HF_TOKEN', 'hf_test')
    with pytest.raises(UsageError, match=r"^HF_ENDPOINT is set but empty: unset it .* or set it to your Hub's URL"):
        publish.main(['cra_mobilenetv2_050.test_c5', str(ckpt), '--num-classes', '5', '--out', str(tmp_path / 'r'),
                      '--push'])


@pytest.mark.slow  # over ~15 s on 2 cores (many processes or epochs): CI step 2
@pytest.mark.parametrize('cmd', [['-m', 'timm_cra.hub.publish']])
def test_cli_entry_points(tmp_path, cmd):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, *cmd, '--help'], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0 and '--push' in proc.stdout
    proc = subprocess.run([sys.executable, *cmd, 'cra_resnet18.x', str(tmp_path / 'missing.pth')], env=env,
                          capture_output=True, text=True, timeout=60)
    # No silent default folder: --out is required, and argparse's error names it.
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].endswith(
        'error: the following arguments are required: --out')
    proc = subprocess.run([sys.executable, *cmd, 'cra_resnet18.x', str(tmp_path / 'missing.pth'), '--out',
                           str(tmp_path / 'r')], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"error: Checkpoint '{tmp_path / 'missing.pth'}' does not exist."]


@pytest.fixture(scope='module')
def trainer_run(tmp_path_factory):
    """A real run of the trainer (with EMA): last.pth, model.safetensors, config.json, results.json."""
    from timm_cra.train import train
    out = tmp_path_factory.mktemp('run')
    train(['--model', 'cra_resnet18', '--model-kwargs', 'layers=(1,1,1,1)', '--config', 'cifar', '--data-dir',
           str(SHIPPED), '--train-split', 'test', '--train-num-samples', '16', '--val-split', 'test',
           '--val-num-samples', '16', '--batch-size', '8', '--epochs', '1', '--no-plot', '--model-ema',
           '--output', str(out), '--experiment', 'r'])
    return out / 'r'


def _card_top1(folder):
    import yaml
    front = yaml.safe_load((folder / 'README.md').read_text().split('---')[1])
    return front['model-index'][0]['results'][0]['metrics'][0]['value']


@pytest.mark.parametrize('source', ['last.pth', 'model.safetensors', 'model_ema.safetensors'])
def test_publishes_what_the_trainer_writes(trainer_run, tmp_path, source):
    summary = json.loads((trainer_run / 'results.json').read_text())
    out = tmp_path / 'repo'
    # No --num-classes / --model-kwargs: layers=(1,1,1,1) and 10 classes come from the run's config / args.
    publish.main(['cra_resnet18.test_run', str(trainer_run / source), '--results', str(trainer_run / 'results.json'),
                  '--out', str(out)])
    loaded = timm.create_model(f'local-dir:{out}', pretrained=True)
    expected = load_file(str(trainer_run / ('model_ema.safetensors' if source != 'model.safetensors'
                                            else 'model.safetensors')))
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in expected.items())
    ema = source != 'model.safetensors'  # last.pth publishes its EMA weights by default
    assert _card_top1(out) == summary['final']['ema_eval_top1' if ema else 'eval_top1']
    card = (out / 'README.md').read_text()
    assert 'measured by the timm-cra trainer' in card
    # the best epoch of the weights published: the EMA card quoted the plain weights' best
    best = 'best_ema' if ema else 'best'
    assert f"best epoch {summary[f'{best}_epoch']}: {summary[f'{best}_top1']:.2f}%" in card


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_results_of_another_run_are_refused(trainer_run, tmp_path, capsys):
    """The weights of one run with another run's results.json made a card claiming that run's epochs and metrics:
    ``rank_state_sha256`` (a checkpoint's ``sha256['state_dict']``) and ``weights_sha256`` (the exported files') are
    checked against the weights given; refused in one line, nothing written. A results.json recorded before
    ``weights_sha256`` existed still publishes its ``model.safetensors``."""
    from timm_cra.train import train
    train(['--model', 'cra_resnet18', '--model-kwargs', 'layers=(1,1,1,1)', '--config', 'cifar', '--data-dir',
           str(SHIPPED), '--train-split', 'test', '--train-num-samples', '16', '--val-split', 'test',
           '--val-num-samples', '16', '--batch-size', '8', '--epochs', '2', '--no-plot', '--seed', '1',
           '--output', str(tmp_path), '--experiment', 'other'])
    other = tmp_path / 'other' / 'results.json'
    summary = json.loads((trainer_run / 'results.json').read_text())
    assert set(summary['weights_sha256']) == {'model.safetensors', 'model_ema.safetensors'}
    proc = _publish_cli('cra_resnet18.mine', trainer_run / 'last.pth', '--results', other, '--out', tmp_path / 'a')
    assert proc.returncode == 2 and proc.stderr == (
        f"error: {other} is not the results of '{trainer_run / 'last.pth'}' (its sha256 of the weights differs): "
        f"pass the results.json of the run that wrote these weights.\n"), proc.stderr
    for source in ('model.safetensors', 'model_ema.safetensors'):
        with pytest.raises(SystemExit):
            run_cli(publish.main, ['cra_resnet18.mine', str(trainer_run / source), '--results', str(other),
                                   '--out', str(tmp_path / 'b')])
        assert capsys.readouterr().err.startswith(f"error: {other} is not the results of '{trainer_run / source}'")
    assert sorted(os.listdir(tmp_path)) == ['other']
    del summary['weights_sha256']  # as written before the field existed: nothing to check, accepted
    (tmp_path / 'older.json').write_text(json.dumps(summary))
    publish.main(['cra_resnet18.mine', str(trainer_run / 'model.safetensors'), '--results',
                  str(tmp_path / 'older.json'), '--out', str(tmp_path / 'c')])
    assert _card_top1(tmp_path / 'c') == summary['final']['eval_top1']


def test_publishes_timm_train_py_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model('cra_resnet18', layers=(1, 1, 1, 1), num_classes=7)
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    args = argparse.Namespace(model='cra_resnet18', num_classes=7, model_kwargs={'layers': (1, 1, 1, 1)},
                              lr=0.1, epochs=3, data_dir='imagenet', dataset='')
    path = tmp_path / 'model_best.pth.tar'
    torch.save(dict(epoch=3, arch='cra_resnet18', state_dict=model.state_dict(), optimizer=opt.state_dict(),
                    version=2, args=args, metric=41.5, state_dict_ema=ema), path)
    out = tmp_path / 'repo'
    publish.main(['cra_resnet18.timm_c7', str(path), '--out', str(out)])
    loaded = timm.create_model(f'local-dir:{out}', pretrained=True)
    assert loaded.num_classes == 7
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in ema.items())
    with pytest.raises(UsageError, match='trained as cra_resnet18, not cra_resnet50'):
        publish.main(['cra_resnet50.x', str(path), '--out', str(tmp_path / 'r2')])


@pytest.mark.parametrize('name, repo_id, needle', [
    ('cra_resnet18.', None, "'cra_resnet18.' has no tag"),
    ('cra_resnet18', None, "'cra_resnet18' has no tag"),
    ('cra_resnet18.../../x', None, 'is not a valid Hub repo name'),
    ('cra_resnet18.a b', None, 'is not a valid Hub repo name'),
    ('cra_resnet18.ok', 'org/../escape', 'change --repo-id'),
    ('cra_resnet18.ok', 'noorg', "--repo-id 'noorg' is not <org>/<name>"),
    ('cra_resnet18.ok', '', "--repo-id '' is not <org>/<name>"),
    ('cra_resnet18.ok', 'org/', "--repo-id 'org/' is not <org>/<name>"),
])
def test_bad_tags_and_repo_ids_are_refused(trained, tmp_path, name, repo_id, needle):
    ckpt, *_ = trained
    argv = [name, str(ckpt), '--num-classes', '5', '--out', str(tmp_path / 'r')]
    with pytest.raises(UsageError, match=needle) as e:
        publish.main(argv + (['--repo-id', repo_id] if repo_id is not None else []))
    assert '\n' not in str(e.value)
    assert not (tmp_path / 'r').exists()


def _timm_train_checkpoint(tmp_path, num_classes: int, **args):
    """A ``model_best.pth.tar`` as timm's train.py writes it (no class names), of a seeded cra_cifar_resnet20."""
    torch.manual_seed(0)
    model = timm.create_model('cra_cifar_resnet20', num_classes=num_classes)
    path = tmp_path / 'model_best.pth.tar'
    torch.save(dict(epoch=1, arch='cra_cifar_resnet20', state_dict=model.state_dict(), version=2,
                    args=argparse.Namespace(model='cra_cifar_resnet20', num_classes=num_classes, pretrained=False,
                                            initial_checkpoint='', **args)), path)
    return path


def test_unnamed_classes_answer_the_same_in_transformers_and_timm(tmp_path):
    """A 1000-class timm train.py checkpoint published without --label-names: transformers' TimmWrapperConfig named
    the classes of a head of ImageNet's size with ImageNet's names ('tench, Tinca tinca'...), timm answered the
    class index. publish now writes the indices as label_names: every client answers the same index."""
    from tests.hub.clients import pipeline_top1, timm_top1, transformers_model
    from PIL import Image
    path = _timm_train_checkpoint(tmp_path, 1000, data_dir='/data/x')
    publish.main(['cra_cifar_resnet20.in1k', str(path), '--out', str(tmp_path / 'r')])
    hf = transformers_model(tmp_path / 'r')
    assert [hf.config.id2label[i] for i in (0, 999)] == ['0', '999']
    images = [Image.new('RGB', (32, 32), (40 * i, 255 - 40 * i, 90)) for i in range(3)]
    loaded = timm.create_model(f"local-dir:{tmp_path / 'r'}", pretrained=True)
    assert pipeline_top1(tmp_path / 'r', images) == [str(i) for i in timm_top1(loaded, images)]


@pytest.mark.slow  # over ~15 s on 2 cores (many processes or epochs): CI step 2
def test_labels_only_from_the_weights_data(tmp_path):
    """timm train.py checkpoints record no class names: --label-names (list or file) gives them, none are
    invented otherwise (not the architecture's CIFAR names), and a wrong count is one line naming the fix."""
    path = _timm_train_checkpoint(tmp_path, 3, data_dir='/data/shapes')
    publish.main(['cra_cifar_resnet20.none', str(path), '--out', str(tmp_path / 'none')])
    config = json.loads((tmp_path / 'none' / 'config.json').read_text())
    # unnamed classes are named by their index, so that transformers answers what timm answers
    assert config['label_names'] == ['0', '1', '2'] and 'label_names' not in config['pretrained_cfg']
    assert 'no class names recorded with these weights: outputs are class indices, named "0".."2"' in (
        tmp_path / 'none' / 'README.md').read_text()
    # validate takes the indices as no names: named class folders are scored by position, and it says so
    from PIL import Image
    for c in ('circle', 'square', 'triangle'):
        (tmp_path / 'shapes' / 'val' / c).mkdir(parents=True)
        Image.new('RGB', (32, 32), (90, 90, 90)).save(tmp_path / 'shapes' / 'val' / c / '0.png')
    r = subprocess.run([sys.executable, '-m', 'timm_cra.eval', '--model', f"local-dir:{tmp_path / 'none'}",
                        '--data-dir', str(tmp_path / 'shapes'), '--split', 'val', '--workers', '0',
                        '--results-file', str(tmp_path / 'v.json')], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path / 'v.json').read_text())['class_mapping'] == 'by position'
    assert "record no class names (label_names), so the dataset's classes 'circle', 'square'" in r.stderr

    names = tmp_path / 'names.txt'
    names.write_text('circle\nsquare\n\ntriangle\n')
    for value, out in ((str(names), 'file'), ('circle, square,triangle', 'list')):
        publish.main(['cra_cifar_resnet20.shapes', str(path), '--out', str(tmp_path / out), '--label-names', value,
                      '--repo-id', 'my-org/shapes-net'])
        assert json.loads((tmp_path / out / 'config.json').read_text())['label_names'] == ['circle', 'square',
                                                                                          'triangle']
        loaded = timm.create_model(f'local-dir:{tmp_path / out}', pretrained=True)
        assert loaded.pretrained_cfg['label_names'] == ['circle', 'square', 'triangle']
        card = (tmp_path / out / 'README.md').read_text()
        assert "'hf-hub:my-org/shapes-net'" in card and 'timm-cra/' not in card.split('## Usage')[1]
        assert '`circle`, `square`, `triangle`' in card and '`shapes` (training split `train`)' in card

    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, '-m', 'timm_cra.hub.publish', 'cra_cifar_resnet20.x', str(path), '--out',
                           str(tmp_path / 'bad'), '--label-names', 'a,b'], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        'error: 2 label names for a 3-class head: give exactly one name per class, in class-index order.']
    assert not (tmp_path / 'bad').exists()
    proc = _publish_cli('cra_cifar_resnet20.x', path, '--out', tmp_path / 'bad', '--label-names', 'a,b,a')
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: --label-names gives 'a' more than once: give each class its own name, in class-index order."]
    long_names = ','.join(f'class-{i}-' + 'x' * 120 for i in range(3))  # over 255 bytes: no file has that name
    proc = _publish_cli('cra_cifar_resnet20.x', path, '--out', tmp_path / 'long', '--label-names', long_names)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / 'long' / 'config.json').read_text())['label_names'] == long_names.split(',')


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_a_label_names_file_with_a_bom_is_read(tmp_path):
    """A --label-names file saved as UTF-8 with a BOM (Windows Notepad) was refused as holding a control character:
    the leading BOM is not part of the first name."""
    model = timm.create_model('cra_cifar_resnet20', num_classes=3)
    path = tmp_path / 'model_best.pth.tar'
    torch.save(dict(epoch=1, arch='cra_cifar_resnet20', state_dict=model.state_dict(), version=2,
                    args=argparse.Namespace(model='cra_cifar_resnet20', num_classes=3, pretrained=False)), path)
    names = tmp_path / 'names.txt'
    names.write_bytes('\ufeffcircle\r\nsquare\r\ntriangle\r\n'.encode('utf-8'))
    proc = _publish_cli('cra_cifar_resnet20.shapes', path, '--out', tmp_path / 'out', '--label-names', names)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((tmp_path / 'out' / 'config.json').read_text())['label_names'] == ['circle', 'square',
                                                                                      'triangle']


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_the_card_says_what_validate_scored_and_claims_no_dataset_the_results_do_not_name(cifar10_test, tmp_path,
                                                                                         run_command):
    """CIFAR-10 weights scored by ``timm-cra-validate --results-file`` on 3 CIFAR test images were published as
    "Measured by timm-cra on ImageNet-1k (validation)", with ``datasets: [imagenet-1k]`` and an ImageNet model-index
    entry, the count nowhere: validate recorded no data. It records the data (named as the trainer's results name
    theirs), the split and the count, and the card quotes them; results that name no data (timm ``validate.py``'s)
    claim none. A results file saved with a UTF-8 BOM is read (it was refused in Python's words)."""
    import yaml
    weights = ROOT / 'hub' / 'timm-cra' / 'cra_cifar_resnet20.cifar10' / 'model.safetensors'
    scored = tmp_path / 'c3.json'
    r = run_command('timm-cra-validate', ['--model', 'cra_cifar_resnet20', '--checkpoint', weights, '--data-dir',
                                          cifar10_test, '--split', 'test', '--num-samples', 3, '-b', 3, '-j', 0,
                                          '--no-progress', '--results-file', scored])
    assert r.returncode == 0, r.stderr[-2000:]
    recorded = json.loads(scored.read_text())
    assert (recorded['dataset'], recorded['split'], recorded['count']) == ('cifar10', 'test', 3)
    publish.main(['cra_cifar_resnet20.c3', str(weights), '--results', str(scored), '--out', str(tmp_path / 'c3')])
    card = (tmp_path / 'c3' / 'README.md').read_text()
    front = yaml.safe_load(card.split('---')[1])
    assert front['datasets'] == ['cifar10']
    assert {str(e['dataset']) for e in front['model-index'][0]['results']} == {
        str({'name': 'CIFAR-10', 'type': 'cifar10', 'split': 'test'})}
    assert 'Measured by timm-cra on CIFAR-10 (test, 3 images).' in card and 'imagenet' not in card.lower()

    unnamed = tmp_path / 'unnamed.json'  # as timm's validate.py writes: no data named; saved by a Windows editor
    unnamed.write_bytes(b'\xef\xbb\xbf' + json.dumps({k: v for k, v in recorded.items()
                                                     if k not in ('dataset', 'split')}).encode())
    publish.main(['cra_cifar_resnet20.c3', str(weights), '--results', str(unnamed), '--out', str(tmp_path / 'u')])
    card = (tmp_path / 'u' / 'README.md').read_text()
    front = yaml.safe_load(card.split('---')[1])
    assert 'datasets' not in front and 'model-index' not in front, front
    assert 'Measured by timm-cra on a dataset the results do not record (split not recorded, 3 images).' in card
    assert 'imagenet' not in card.lower() and '| cra_cifar_resnet20.c3 | 100.00 |' in card


def test_oversized_inputs_and_a_missing_label_names_file_are_one_line(tmp_path):
    """publish read ``--results``, a ``--label-names`` file and the ``config.json`` / ``args.yaml`` beside the
    checkpoint whole (a sparse 5 GB file was a MemoryError traceback; a config.json past the cap was ignored without
    a word): each stops at the JSON reader's cap, one line naming it. ``--label-names lab/clases.txt``, a typo'd path,
    was taken as one class name: a single value that looks like a path and names no file is refused."""
    from timm_cra.utils.strict_json import MAX_JSON_BYTES
    from timm_cra.utils.strict_yaml import MAX_CONFIG_BYTES
    path = _timm_train_checkpoint(tmp_path, 3, data_dir='/data/shapes')
    big = tmp_path / 'big'
    with open(big, 'wb') as f:
        f.truncate(MAX_JSON_BYTES + 1)  # sparse: no bytes on disk
    run = tmp_path / 'run'
    run.mkdir()
    shutil.copy(path, run / 'last.pth')
    shutil.copy(big, run / 'config.json')
    run_yaml = tmp_path / 'run_yaml'  # a checkpoint without args: the run's args.yaml beside it is read
    run_yaml.mkdir()
    torch.save({'state_dict': timm.create_model('cra_cifar_resnet20', num_classes=3).state_dict()},
               run_yaml / 'last.pth')
    shutil.copy(big, run_yaml / 'args.yaml')
    over = f'is over {MAX_JSON_BYTES // 2**20} MiB'
    for argv, needle in (([path, '--results', big], f'--results {big} {over}'),
                         ([path, '--label-names', big], f'--label-names file {big} {over}'),
                         ([run / 'last.pth'], f"the run's config {run / 'config.json'} {over}"),
                         ([run_yaml / 'last.pth', '--num-classes', 3],  # read as a config: its cap
                          f"the run's arguments {run_yaml / 'args.yaml'} is over {MAX_CONFIG_BYTES // 2**20} MiB"),
                         ([path, '--label-names', tmp_path / 'lab' / 'clases.txt'],
                          f"--label-names file '{tmp_path / 'lab' / 'clases.txt'}' does not exist: fix the path"),
                         ([path, '--label-names', 'clases.txt'], "--label-names file 'clases.txt' does not exist")):
        with pytest.raises(UsageError) as info:
            publish.main(['cra_cifar_resnet20.x', *map(str, argv), '--out', str(tmp_path / 'out')])
        assert needle in str(info.value) and '\n' not in str(info.value), str(info.value)
        assert not (tmp_path / 'out').exists()
    # a list is still a list, and a single name without a suffix or separator is a name
    publish.main(['cra_cifar_resnet20.x', str(path), '--label-names', 'circle,square,tri.angle', '--out',
                  str(tmp_path / 'out')])
    assert json.loads((tmp_path / 'out' / 'config.json').read_text())['label_names'] == ['circle', 'square',
                                                                                        'tri.angle']


def _publish_cli(*argv, timeout=120, env=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1', **(env or {}))
    return subprocess.run([sys.executable, '-m', 'timm_cra.hub.publish', *map(str, argv)], env=env,
                          capture_output=True, text=True, timeout=timeout)


def _tree(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob('*')) if p.is_file()}


@pytest.mark.slow  # over ~15 s on 2 cores (many processes or epochs): CI step 2
def test_run_folder_as_out_is_refused_before_any_work(trainer_run, tmp_path):
    """The run folder (or a folder above it) as --out with --overwrite would replace it, losing last.pth,
    results.json, metrics.csv, args.yaml: refused in one line before any work, nothing touched. The same for
    --results or a --label-names file inside --out."""
    import shutil
    run = Path(shutil.copytree(trainer_run, tmp_path / 'run'))
    other = Path(shutil.copytree(trainer_run, tmp_path / 'other'))
    (other / 'names.txt').write_text('\n'.join(f'c{i}' for i in range(10)))
    before = _tree(tmp_path)
    assert {'last.pth', 'results.json', 'metrics.csv', 'args.yaml'} <= set(before_run := _tree(run))
    for out, extra, what in ((run, ['--results', run / 'results.json'], 'checkpoint'),
                             (tmp_path, [], 'checkpoint'),
                             (run / '..' / 'run', [], 'checkpoint'),
                             (other, ['--results', other / 'results.json'], '--results'),
                             (other, ['--label-names', other / 'names.txt'], '--label-names file')):
        proc = _publish_cli('cra_resnet18.mine', run / 'last.pth', *extra, '--out', out, '--overwrite')
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr
        assert lines[0].startswith(f'error: --out {out} holds the {what} '), lines[0]
        assert _tree(tmp_path) == before and _tree(run) == before_run


#: Run inside its own mount namespace (``unshare -m``): mounts a tmpfs on argv[1], then runs the commands of the
#: test there (the mount is gone when it exits), printing what each did as JSON.
_IN_A_MOUNT_NAMESPACE = """
import json, subprocess, sys
mnt, ckpt = sys.argv[1], sys.argv[2]
subprocess.run(['mount', '-t', 'tmpfs', 'tmpfs', mnt], check=True)
args = ['cra_mobilenetv2_050.mnt', ckpt, '--num-classes', '5']
refused = subprocess.run([sys.executable, '-m', 'timm_cra.hub.publish', *args, '--out', mnt, '--overwrite'],
                         capture_output=True, text=True)
from timm_cra.hub import publish
publish.main(args + ['--out', mnt + '/repo'])  # the fix the line names (in this process: one torch import less)
from timm_cra.hub.repo import atomic_folder  # the last line of defence: its final rename, EBUSY
try:
    with atomic_folder(mnt, overwrite=True) as tmp:
        open(f'{tmp}/a.txt', 'w').close()
    renamed = ''
except Exception as e:
    renamed = f'{type(e).__name__}: {e}'
import os, timm, timm_cra
loads = timm.create_model(f'local-dir:{mnt}/repo', pretrained=True).num_classes
print(json.dumps(dict(refused=[refused.returncode, refused.stdout, refused.stderr], entries=os.listdir(mnt),
                      renamed=renamed, loads=loads)))
"""


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_a_mount_point_as_out_is_refused_before_any_work(trained, tmp_path):
    """`publish --out <a mount point> --overwrite` built the whole repo, then failed renaming it over the mount point
    (EBUSY) with "choose a writable place with free space". It is now refused before any work, naming the fix
    (a folder inside it), which then publishes; the final rename's EBUSY names the mount point too."""
    import shutil
    ckpt, *_ = trained
    if os.geteuid() != 0 or not shutil.which('unshare') or subprocess.run(
            ['unshare', '-m', 'true'], capture_output=True).returncode:
        pytest.skip('needs a mount namespace (root, unshare) to mount a tmpfs')
    mnt = tmp_path / 'mnt'
    mnt.mkdir()
    proc = subprocess.run(['unshare', '-m', sys.executable, '-c', _IN_A_MOUNT_NAMESPACE, str(mnt), str(ckpt)],
                          env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1'), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    did = json.loads(proc.stdout.strip().splitlines()[-1])
    rc, out, err = did['refused']
    assert rc == 2 and out == '' and err == (
        f'error: --out {mnt} is a mount point, and writing the repo replaces that folder, which a mount point cannot '
        f'be: publish into a folder inside it (e.g. {mnt}/<model_name>).\n'), err
    assert did['loads'] == 5  # the fix the line names works
    assert did['entries'] == ['repo'], did['entries']  # the refused run wrote nothing
    assert did['renamed'].startswith(f'OutputPathError: cannot write output folder {mnt}: Device or resource busy (a '
                                     f'mount point, or a folder in use, cannot be replaced); write into a new folder '
                                     f'inside it.'), did['renamed']
    assert not os.listdir(tmp_path / 'mnt') and sorted(os.listdir(tmp_path)) == ['mnt']  # nothing left beside it


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_out_that_is_a_symlink_loop_is_one_line(trainer_run, tmp_path):
    """--out a symlink loop was a RuntimeError traceback (Path.resolve)."""
    os.symlink(tmp_path / 'loop_b', tmp_path / 'loop_a')
    os.symlink(tmp_path / 'loop_a', tmp_path / 'loop_b')
    proc = _publish_cli('cra_resnet18.mine', Path(trainer_run) / 'last.pth', '--out', tmp_path / 'loop_a')
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and 'Traceback' not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"error: --out {tmp_path / 'loop_a'} cannot be written: it cannot be reached (Too "
                               f"many levels of symbolic links)"), lines[0]


@pytest.mark.slow  # over ~15 s on 2 cores (many processes or epochs): CI step 2
@pytest.mark.skipif(not hasattr(os, 'mkfifo'), reason='needs FIFOs')
def test_fifo_inputs_are_refused_not_waited_on(trained, tmp_path):
    """A FIFO as the checkpoint, --results, a --label-names file, or the run's config.json / args.yaml next to the
    checkpoint would block publish forever on open: each is refused in one line, nothing written."""
    import shutil
    ckpt, results, *_ = trained
    fifo = tmp_path / 'fifo'
    os.mkfifo(fifo)
    run = tmp_path / 'run'
    run.mkdir()
    shutil.copy(ckpt, run / 'last.pth')
    os.mkfifo(run / 'config.json')
    run_yaml = tmp_path / 'run2'
    run_yaml.mkdir()
    shutil.copy(ckpt, run_yaml / 'last.pth')
    os.mkfifo(run_yaml / 'args.yaml')
    base = ['--num-classes', '5', '--out', tmp_path / 'r']
    for argv, needle in (([fifo, *base], f"Checkpoint {fifo} is a FIFO"),
                         ([ckpt, '--results', fifo, *base], f'--results {fifo} is a FIFO'),
                         ([ckpt, '--label-names', fifo, *base], f'--label-names file {fifo} is a FIFO'),
                         ([run / 'last.pth', *base], f"the run's config {run / 'config.json'} is a FIFO"),
                         ([run_yaml / 'last.pth', *base], f"the run's arguments {run_yaml / 'args.yaml'} is a FIFO")):
        proc = _publish_cli('cra_mobilenetv2_050.x', *argv, timeout=60)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and needle in lines[0], proc.stderr
        assert not (tmp_path / 'r').exists()


@pytest.mark.slow  # over ~15 s on 2 cores (many processes or epochs): CI step 2
def test_push_twice_to_the_same_repo_makes_a_new_commit(trained, hub, tmp_path, monkeypatch):
    """publish --push to a repo that exists (a rerun, or after a push that created the repo and failed) against the
    loopback Hub: create_repo(exist_ok=True) reads the 409's url, the upload is a new commit served to clients."""
    from huggingface_hub import HfApi, hf_hub_download
    from tests.hubserver.write_server import WritableHubServer
    ckpt, results, *_ = trained
    token = 'publish-push-token'
    root = tmp_path / 'hub-root'
    root.mkdir()
    with WritableHubServer(root, write_token=token) as server:
        hub.set_endpoint(server.endpoint)
        api = HfApi(endpoint=server.endpoint, token=token)
        api.create_repo('t-push/twice')  # what a push that failed after creating the repo leaves
        env = {'HF_TOKEN': token, 'HF_HUB_DISABLE_XET': '1'}
        commits = []
        for top1 in (61.25, 62.5, 62.5):
            res = tmp_path / f'results-{top1}.json'
            res.write_text(json.dumps(dict(json.loads(results.read_text()), top1=top1)))
            proc = _publish_cli('cra_mobilenetv2_050.twice', ckpt, '--num-classes', '5', '--results', res,
                                '--out', tmp_path / 'repo', '--overwrite', '--repo-id', 't-push/twice', '--push',
                                env=env)
            assert proc.returncode == 0 and 'Pushed: ' in proc.stdout, proc.stderr
            # a card that changed is said to be replaced (a colleague's edit on the Hub went without a word), with
            # the commit keeping the old one; the same card pushed again is not
            replaced = 'The push replaced the README.md of t-push/twice, which was not this card'
            assert (replaced in proc.stderr) == (len(commits) == 1), proc.stderr
            if len(commits) == 1:
                assert f"the previous one stays in the repo's history, at commit {commits[0]}." in proc.stderr
            commits.append(api.model_info('t-push/twice').sha)
            card = Path(hf_hub_download('t-push/twice', 'README.md', revision=commits[-1])).read_text()
            assert f'value: {top1}' in card
        assert commits[0] != commits[1]
        first = Path(hf_hub_download('t-push/twice', 'README.md', revision=commits[0])).read_text()
        assert 'value: 61.25' in first  # the first commit is still served, by its hash


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_push_makes_the_hub_repo_hold_the_folders_files_only(trained, hub, tmp_path):
    """publish --push to a repo holding files the published folder does not (a stale preprocessor_config.json, an
    old alt.safetensors, a file in a subfolder) kept them on the Hub, so transformers read another preprocessing
    than timm. The push's commit now deletes them (as --overwrite does locally), naming them; .gitattributes
    stays."""
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError
    from tests.hubserver.write_server import WritableHubServer
    ckpt, *_ = trained
    token, repo_id = 'publish-push-token', 't-push/stale'
    (tmp_path / 'hub-root').mkdir()
    old = tmp_path / 'old'
    (old / 'old').mkdir(parents=True)
    for name, text in [('.gitattributes', '*.safetensors filter=lfs diff=lfs merge=lfs -text\n'),
                       ('preprocessor_config.json', '{"image_mean": [0.1, 0.1, 0.1]}'), ('alt.safetensors', 'x'),
                       ('old/notes.txt', 'x'), ('README.md', 'old card')]:
        (old / name).write_text(text)
    with WritableHubServer(tmp_path / 'hub-root', write_token=token) as server:
        hub.set_endpoint(server.endpoint)
        api = HfApi(endpoint=server.endpoint, token=token)
        api.create_repo(repo_id)
        before = api.upload_folder(repo_id=repo_id, folder_path=str(old)).oid
        proc = _publish_cli('cra_mobilenetv2_050.stale', ckpt, '--num-classes', '5', '--out', tmp_path / 'repo',
                            '--repo-id', repo_id, '--push', env={'HF_TOKEN': token, 'HF_HUB_DISABLE_XET': '1'})
        assert proc.returncode == 0 and 'Pushed: ' in proc.stdout, proc.stderr
        # and says so (a colleague's NOTES.md went without a word): their names, and where the history keeps them
        assert (f'The push removed from {repo_id} the file(s) the folder does not hold: alt.safetensors, '
                f'old/notes.txt, preprocessor_config.json; they stay in the repo\'s history, at commit {before}.'
                in proc.stderr), proc.stderr
        assert (f"The push replaced the README.md of {repo_id}, which was not this card (an earlier publish's, or "
                f"edited on the Hub: edits are not merged), with the card built here; the previous one stays in the "
                f"repo's history, at commit {before}." in proc.stderr)
        published = sorted(os.listdir(tmp_path / 'repo'))
        assert sorted(api.list_repo_files(repo_id)) == sorted(published + ['.gitattributes'])
        gitattributes = Path(hf_hub_download(repo_id, '.gitattributes')).read_text()
        assert gitattributes == (old / '.gitattributes').read_text()
        with pytest.raises(EntryNotFoundError):
            hf_hub_download(repo_id, 'preprocessor_config.json')
        assert 'old/notes.txt' in api.list_repo_files(repo_id, revision=before)  # the history keeps them
    assert timm.create_model(f'local-dir:{tmp_path / "repo"}', pretrained=True).num_classes == 5


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_overwrite_of_a_git_clone_keeps_its_git(trained, tmp_path):
    """`publish --overwrite` into a local clone of a Hub repo deleted its .git (and the Hub's LFS rules in
    .gitattributes): the clone stays one, with the new files as changes to commit and push."""
    import shutil
    git = shutil.which('git')
    if git is None:
        pytest.skip('needs git')
    ckpt, results, *_ = trained
    clone = tmp_path / 'clone'
    proc = _publish_cli('cra_mobilenetv2_050.clone', ckpt, '--num-classes', '5', '--out', clone)
    assert proc.returncode == 0, proc.stderr

    def run_git(*argv):
        return subprocess.run([git, '-C', str(clone), '-c', 'user.name=t', '-c', 'user.email=t@t', *argv],
                              capture_output=True, text=True, check=True).stdout

    run_git('init', '-q')
    (clone / '.gitattributes').write_text('*.safetensors filter=lfs diff=lfs merge=lfs -text\n')
    run_git('add', '-A')
    run_git('commit', '-qm', 'first')
    head = run_git('rev-parse', 'HEAD')
    proc = _publish_cli('cra_mobilenetv2_050.clone', ckpt, '--num-classes', '5', '--results', results, '--out', clone,
                        '--overwrite')
    assert proc.returncode == 0, proc.stderr
    assert run_git('rev-parse', 'HEAD') == head and 'top1' not in run_git('show', 'HEAD:README.md')
    assert run_git('status', '--porcelain').split() == ['M', 'README.md']  # the card now has the results
    assert (clone / '.gitattributes').read_text().startswith('*.safetensors filter=lfs')
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith('.')] == []  # no staging or set-aside left


@pytest.mark.slow  # over ~15 s on 2 cores (many processes or epochs): CI step 2
def test_card_names_the_bundled_tag_not_a_local_path(tmp_path):
    """A fine-tune started offline from the copy of a registered tag bundled with timm-cra: the card's
    "Initial weights" names the tag and its Hub repo, never the local absolute path of the bundled file."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1', HF_HUB_OFFLINE='1',
               HF_HUB_CACHE=str(tmp_path / 'empty-cache'))
    train = subprocess.run([sys.executable, '-m', 'timm_cra.train', '--model', 'cra_cifar_resnet20.cifar10',
                            '--pretrained', '--config', 'cifar', '--data-dir', str(SHIPPED), '--train-split', 'test',
                            '--train-num-samples', '8', '--val-split', '', '--batch-size', '8', '--epochs', '1',
                            '--no-plot', '--workers', '0', '--output', str(tmp_path), '--experiment', 'ft'],
                           env=env, capture_output=True, text=True, timeout=300)
    assert train.returncode == 0, train.stderr[-2000:]
    proc = _publish_cli('cra_cifar_resnet20.ft', tmp_path / 'ft' / 'last.pth', '--out', tmp_path / 'repo',
                        env={'HF_HUB_OFFLINE': '1'})
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in (tmp_path / 'repo' / 'README.md').read_text().splitlines() if 'Initial weights' in ln)
    assert line == ('- **Initial weights:** `cra_cifar_resnet20.cifar10 (copy bundled with timm-cra of hf-hub '
                    'timm-cra/cra_cifar_resnet20.cifar10)`'), line
    assert str(ROOT) not in (tmp_path / 'repo' / 'README.md').read_text()


def test_control_characters_in_labels_are_refused_and_names_are_shown_escaped(tmp_path, capsys):
    """A class name holding a newline (or tab, escape) was published as is and forged lines of the card and of
    every log naming it: refused in one line, nothing written. A --out name holding a newline is written, and the
    'Wrote ...' line shows it escaped (one line)."""
    from timm_cra.utils.errors import run_cli
    ckpt = tmp_path / 'w.safetensors'
    save_file(timm.create_model('cra_cifar_resnet20', num_classes=3).state_dict(), str(ckpt))
    for bad in ('a\nb', 'tab\there', 'esc\x1b[31m'):
        with pytest.raises(SystemExit) as e:
            run_cli(publish.main, ['cra_cifar_resnet20.x', str(ckpt), '--out', str(tmp_path / 'bad'),
                                   '--label-names', f'{bad},b,c', '--num-classes', '3'])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count('\n') == 1, err
        assert f"label name {bad!r} holds a control character" in err, err
        assert not (tmp_path / 'bad').exists()
    # named by their kind, not called control characters
    for bad, kind in (('a\u00a0b', 'a space other than the plain space, U+00A0 NO-BREAK SPACE'),
                      ('a\u200bb', 'an invisible format character, U+200B ZERO WIDTH SPACE')):
        with pytest.raises(SystemExit):
            run_cli(publish.main, ['cra_cifar_resnet20.x', str(ckpt), '--out', str(tmp_path / 'bad'),
                                   '--label-names', f'{bad},b,c', '--num-classes', '3'])
        err = capsys.readouterr().err
        assert f"label name {bad!r} holds {kind}: rename that class (--label-names)" in err, err
        assert not (tmp_path / 'bad').exists()
    out = tmp_path / 'new\nline'
    publish.main(['cra_cifar_resnet20.x', str(ckpt), '--out', str(out), '--num-classes', '3', '--label-names', 'a,b,c'])
    printed = capsys.readouterr().out
    assert f'Wrote {tmp_path}/new\\nline (load it' in printed and len(printed.splitlines()) == 2, printed
    assert json.loads((out / 'config.json').read_text())['label_names'] == ['a', 'b', 'c']


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_a_run_from_random_init_claims_no_tag_and_publishes_truthfully(run_command, class_folder, tmp_path):
    """A run of cra_cifar_resnet20 from random init wrote config.json with "tag": "cifar10", the default tag of the
    architecture (weights it never used). The run folder's config names no tag (timm already drops hf_hub_id); it
    loads as local-dir:; publish gives it the published tag, and the card says it started from random init."""
    r = run_command('timm-cra-train', ['--model', 'cra_cifar_resnet20', '--data-dir', class_folder, '--epochs', '1',
                                       '--batch-size', '6', '-j', '0', '--no-plot', '--output', tmp_path / 'runs',
                                       '--experiment', 'run'])
    assert r.returncode == 0, r.stderr[-2000:]
    run = tmp_path / 'runs' / 'run'
    cfg = json.loads((run / 'config.json').read_text())['pretrained_cfg']
    assert 'tag' not in cfg and 'hf_hub_id' not in cfg, cfg
    loaded = timm.create_model(f'local-dir:{run}', pretrained=True)
    assert loaded.pretrained_cfg.get('tag') is None and loaded.num_classes == 3
    r = run_command('timm-cra-publish', ['cra_cifar_resnet20.pets', run / 'last.pth', '--results',
                                         run / 'results.json', '--out', tmp_path / 'repo'])
    assert r.returncode == 0, r.stderr[-2000:]
    config = json.loads((tmp_path / 'repo' / 'config.json').read_text())
    assert config['pretrained_cfg']['tag'] == 'pets' and 'hf_hub_id' not in config['pretrained_cfg']
    card = (tmp_path / 'repo' / 'README.md').read_text()
    assert '- **Initial weights:** random initialisation' in card and 'cifar10' not in card.lower().replace(
        'cra_cifar_resnet20', '')
    published = timm.create_model(f'local-dir:{tmp_path / "repo"}', pretrained=True)
    assert published.pretrained_cfg['tag'] == 'pets' and list(published.pretrained_cfg['label_names']) == [
        'cat', 'dog', 'emu']


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_a_fine_tune_checkpoint_copied_out_of_its_run_folder_publishes_like_the_run(run_command, class_folder,
                                                                                    tmp_path):
    """The README's fine-tune (`--model cra_cifar_resnet20.cifar10`, grey `--in-chans 1`), its last.pth copied
    alone: publish said "trained as cra_cifar_resnet20.cifar10, not cra_cifar_resnet20: publish it as
    cra_cifar_resnet20.cifar10.<tag>", and that name gave the same line (the tag named the starting weights). It
    publishes now, with the class names, class count and channels last.pth records; the repo's weights, labels and
    preprocessing are those of the same run published from its folder."""
    r = run_command('timm-cra-train', ['--config', 'finetune', '--model', 'cra_cifar_resnet20.cifar10',
                                       '--in-chans', '1', '--data-dir', class_folder, '--epochs', '1',
                                       '--batch-size', '6', '-j', '0', '--no-plot', '--output', tmp_path / 'runs',
                                       '--experiment', 'ft'])
    assert r.returncode == 0, r.stderr[-2000:]
    run, solo = tmp_path / 'runs' / 'ft', tmp_path / 'solo'
    solo.mkdir()
    shutil.copy(run / 'last.pth', solo / 'last.pth')
    for source, out in ((run / 'last.pth', tmp_path / 'from-run'), (solo / 'last.pth', tmp_path / 'from-solo')):
        r = run_command('timm-cra-publish', ['cra_cifar_resnet20.grey', source, '--out', out])
        assert r.returncode == 0, r.stderr[-2000:]
    a = json.loads((tmp_path / 'from-run' / 'config.json').read_text())
    b = json.loads((tmp_path / 'from-solo' / 'config.json').read_text())
    assert b['label_names'] == a['label_names'] == ['cat', 'dog', 'emu'] and b['num_classes'] == 3
    assert b['model_args'].get('in_chans') == a['model_args'].get('in_chans') == 1
    for key in ('input_size', 'mean', 'std', 'interpolation', 'crop_pct'):
        assert b['pretrained_cfg'][key] == a['pretrained_cfg'][key], key
    assert load_file(str(tmp_path / 'from-solo' / 'model.safetensors')).keys() == load_file(
        str(tmp_path / 'from-run' / 'model.safetensors')).keys()


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_a_finished_run_folder_as_out_is_refused_with_overwrite(trainer_run, tmp_path):
    """`publish <a copy of the checkpoint> --out <run folder> --overwrite` deleted the run folder (last.pth,
    args.yaml, metrics.csv, results.json): it held config.json + weights and no subfolder, so it passed for a repo.
    A folder holding the trainer's own run files is refused in one line, nothing touched."""
    import shutil
    run = Path(shutil.copytree(trainer_run, tmp_path / 'run'))
    ckpt = Path(shutil.copy(run / 'last.pth', tmp_path / 'copy.pth'))
    before = _tree(run)
    proc = _publish_cli('cra_resnet18.mine', ckpt, '--out', run, '--overwrite')
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"error: --out {run} is not a model repo folder (it is a training run's folder: it holds last.pth, "
        f"args.yaml, metrics.csv, results.json), and writing the repo replaces that folder: choose a new folder for "
        f"the repo (e.g. hub/<model_name>)."], proc.stderr
    assert _tree(run) == before


@pytest.mark.slow  # a real training in the background, and three CLIs against it
def test_a_live_runs_folder_and_checkpoint_are_never_replaced(tmp_path, run_command):
    """While a training runs (it holds its run folder's lock): publish/convert --out <run folder> --overwrite deleted
    the folder under it (the trainer then died: "no checkpoint of it is left there"), and `timm-cra-checkpoint
    upgrade <copy> <run>/last.pth` replaced its checkpoint. The repo writer refuses a run's folder; every write that
    replaces the run folder or a file in it waits for the lock, then is refused naming the training's pid. The
    training goes on."""
    import signal
    run = tmp_path / 'runs' / 'live'
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1', HF_HUB_OFFLINE='1')
    trainer = subprocess.Popen([sys.executable, '-m', 'timm_cra.train', '--model', 'cra_cifar_resnet20', '--config',
                                'cifar', '--data-dir', str(SHIPPED), '--train-split', 'test', '--train-num-samples',
                                '8', '--val-split', '', '--batch-size', '8', '--epochs', '100000', '--no-plot',
                                '--output', str(tmp_path / 'runs'), '--experiment', 'live'], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        import time
        deadline = time.monotonic() + 120
        while not (run / 'last.pth').exists() and trainer.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert (run / 'last.pth').exists() and trainer.poll() is None
        ckpt = Path(shutil.copy(run / 'last.pth', tmp_path / 'copy.pth'))
        proc = _publish_cli('cra_cifar_resnet20.mine', ckpt, '--out', run, '--overwrite')
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and "is a training run's folder" in lines[0], proc.stderr
        busy = f'another process (pid {trainer.pid}) is writing {run}: a training holds its run folder while it runs'
        proc = run_command('timm-cra-checkpoint', ['upgrade', ckpt, run / 'last.pth'])
        lines = proc.stderr.strip().splitlines()  # refused before the lock is asked: OUT sits beside a run's files
        assert proc.returncode == 2 and len(lines) == 1 and 'is in the folder of another run' in lines[0], proc.stderr
        proc = _publish_cli('cra_cifar_resnet20.mine', ckpt, '--out', run / 'hub')  # a new folder inside the run's
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and busy in lines[0], proc.stderr
        assert not (run / 'hub').exists() and (run / 'last.pth').is_file() and (run / 'args.yaml').is_file()
        assert trainer.poll() is None, trainer.stderr.read()  # the training goes on
    finally:
        trainer.send_signal(signal.SIGKILL)
        trainer.wait(timeout=30)


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_two_publishes_to_one_new_out_never_both_write_it(trained, tmp_path):
    """A folder created at --out while publish staged its repo (another publish, or someone's files) was set aside
    and deleted at the swap, without --overwrite, and both publishes printed "Wrote". Now the final rename replaces
    nothing: the second is refused in one line and the first's folder is left as it is."""
    ckpt, *_ = trained
    out = tmp_path / 'repo'
    hook = ("import os, sys, runpy, timm_cra.hub.repo as repo\n"
            "orig = repo.write_repo_metadata\n"
            "def hook(*a, **k):\n"
            "    out = sys.argv[sys.argv.index('--out') + 1]\n"
            "    os.makedirs(out, exist_ok=True); open(os.path.join(out, 'precious.txt'), 'w').write('mine')\n"
            "    return orig(*a, **k)\n"
            "repo.write_repo_metadata = hook\n"
            "runpy.run_module('timm_cra.hub.publish', run_name='__main__')\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1')
    for overwrite in ([], ['--overwrite']):
        proc = subprocess.run([sys.executable, '-c', hook, 'cra_mobilenetv2_050.race', str(ckpt), '--num-classes',
                               '5', '--out', str(out), *overwrite], env=env, capture_output=True, text=True,
                              timeout=120)
        again = ('write again (with overwrite, as now) to replace it' if overwrite else  # not "pass --overwrite"
                 'pass overwrite=True (CLI: --overwrite) to replace it')
        assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
            f'error: {out} was created by someone else while this one was written; it is left as it is: choose '
            f'another output folder, or {again}.'], proc.stderr
        assert 'Wrote' not in proc.stdout and os.listdir(out) == ['precious.txt']
        assert [p.name for p in tmp_path.iterdir()] == ['repo']
        shutil.rmtree(out)


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_push_is_refused_before_the_commit_when_the_hub_would_ignore_files(trained, hub, tmp_path):
    """A Hub repo whose .gitignore matches *.safetensors: preupload answers shouldIgnore, huggingface_hub leaves the
    weights out of the commit, and `publish --push` printed "Pushed" while the Hub served the new card over the old
    weights. The preupload answer is checked before the commit: one line naming the files and the fix, no commit."""
    from huggingface_hub import HfApi, hf_hub_download
    from tests.hubserver.write_server import WritableHubServer
    ckpt, *_ = trained
    token, repo_id = 'publish-push-token', 't-push/ignored'
    (tmp_path / 'hub-root').mkdir()
    old = tmp_path / 'old'
    old.mkdir()
    (old / 'README.md').write_text('old card')
    env = {'HF_TOKEN': token, 'HF_HUB_DISABLE_XET': '1'}
    server = WritableHubServer(tmp_path / 'hub-root', write_token=token, ignored_patterns=['*.safetensors'])
    with server:
        hub.set_endpoint(server.endpoint)
        api = HfApi(endpoint=server.endpoint, token=token)
        api.create_repo(repo_id)
        before = api.upload_folder(repo_id=repo_id, folder_path=str(old)).oid
        proc = _publish_cli('cra_mobilenetv2_050.ign', ckpt, '--num-classes', '5', '--out', tmp_path / 'repo',
                            '--repo-id', repo_id, '--push', env=env)
        assert proc.returncode == 2 and 'Pushed' not in proc.stdout, proc.stderr
        assert proc.stderr.strip().splitlines() == [
            f"error: {repo_id} at {server.endpoint} would ignore model.safetensors (its .gitignore matches them), so "
            f"the push would leave the repo's old files under the new card; nothing was committed: remove those "
            f"patterns from the Hub repo's .gitignore, then the repo folder {tmp_path / 'repo'} is complete: rerun "
            f"with --overwrite --push."]
        assert api.model_info(repo_id).sha == before
        assert Path(hf_hub_download(repo_id, 'README.md')).read_text() == 'old card'
        server.ignored_patterns.clear()  # the fix the line names: the Hub repo's .gitignore no longer matches
        proc = _publish_cli('cra_mobilenetv2_050.ign', ckpt, '--num-classes', '5', '--out', tmp_path / 'repo',
                            '--overwrite', '--repo-id', repo_id, '--push', env=env)
        assert proc.returncode == 0 and 'Pushed: ' in proc.stdout, proc.stderr
        assert 'model.safetensors' in api.list_repo_files(repo_id)


def test_a_trainer_card_names_the_split_the_run_read():
    """A run on CIFAR pickles with ``--val-split validation`` read their test batch: the card said 'validation'.
    The trainer records the split read; records written before that field existed still name the flag's split."""
    final = {'eval_top1': 50.0, 'eval_top5': 90.0}
    ckpt = {'args': {'val_split': 'validation', 'data_dir': '/data/cifar'}}
    read = publish.trainer_results({'final': final, 'optimizer_steps': 9, 'val_split': 'test'}, ckpt)
    older = publish.trainer_results({'final': final, 'optimizer_steps': 9}, ckpt)
    assert (read['split'], older['split']) == ('test', 'validation')
    assert "on the 'test' split" in read['notes']
    # the images scored: --val-num-samples 3 was carded as the whole split's top-1 (unreadable ones not counted)
    scored = publish.trainer_results({'final': dict(final, eval_skipped=1), 'optimizer_steps': 9, 'val_images': 4},
                                     ckpt)
    assert (scored['count'], older['count']) == (3, None)


def test_an_args_yaml_beside_the_weights_that_cannot_be_read_is_one_line(tmp_path):
    """A run's args.yaml (read for the card's provenance when the checkpoint records no args) holding a YAML merge
    key, bytes that are not UTF-8, or a list was skipped without a word: the card lost its lines on the training
    data. It is read as a training config is (``utils.strict_yaml.load_config_file``): one line naming the file and
    the problem, nothing written."""
    run = tmp_path / 'run'
    run.mkdir()
    torch.save({'state_dict': timm.create_model('cra_cifar_resnet20', num_classes=3).state_dict()}, run / 'last.pth')
    for text, why in ((b'base: &b {lr: 0.1}\nrun:\n  <<: *b\n', 'uses the YAML alias *b (line 3)'),
                      (b'data_dir: \xff\n', 'is not UTF-8 text'),
                      (b'- a\n- b\n', 'must be a mapping of argument names to values')):
        (run / 'args.yaml').write_bytes(text)
        with pytest.raises(UsageError) as e:
            publish.main(['cra_cifar_resnet20.y', str(run / 'last.pth'), '--num-classes', '3', '--out',
                          str(tmp_path / 'out')])
        assert str(e.value).startswith(f"the run's arguments '{run / 'args.yaml'}' {why}"), str(e.value)
        assert not (tmp_path / 'out').exists()


def test_the_run_arguments_a_card_quotes_are_text_never_markup(tmp_path):
    """A run's args.yaml with ``train_split: "tr`ain\\n- **Licence:** mit"`` and ``initial_weights`` holding a link and
    a heading wrote a licence line and a heading into the card (exit 0); ``dataset: 123`` was a traceback. A line
    break or a value that is not text is one line naming the key; a backtick stays inside its code span."""
    import yaml
    from timm_cra.hub.card import code_span
    run = tmp_path / 'run'
    run.mkdir()
    torch.save({'state_dict': timm.create_model('cra_cifar_resnet20', num_classes=3).state_dict()}, run / 'last.pth')
    base = {'model': 'cra_cifar_resnet20', 'data_dir': '/data/shapes', 'dataset': ''}
    for edit, needle in ((dict(train_split='tr`ain\n- **Licence:** mit'), "'train_split' that holds a control character (newline, tab, escape), U+000A"),
                         (dict(initial_weights='](http://evil.example)\n# H1'), "'initial_weights' that holds a control character"),
                         (dict(dataset=123), "'dataset' that is int 123, not text")):
        (run / 'args.yaml').write_text(yaml.safe_dump(dict(base, **edit)))
        with pytest.raises(UsageError) as e:
            publish.main(['cra_cifar_resnet20.q', str(run / 'last.pth'), '--num-classes', '3', '--out',
                          str(tmp_path / 'out')])
        assert needle in str(e.value) and '\n' not in str(e.value), str(e.value)
        assert not (tmp_path / 'out').exists()
    (run / 'args.yaml').write_text(yaml.safe_dump(dict(base, train_split='tr`ain **x**',
                                                       initial_weights='](http://evil.example) <b>')))
    publish.main(['cra_cifar_resnet20.q', str(run / 'last.pth'), '--num-classes', '3', '--out', str(tmp_path / 'out')])
    card = (tmp_path / 'out' / 'README.md').read_text()
    assert f"- **Trained on:** `shapes` (training split {code_span('tr`ain **x**')})" in card
    assert code_span('tr`ain **x**') == '`` tr`ain **x** ``'
    assert f"- **Initial weights:** {code_span('](http://evil.example) <b>')}" in card
