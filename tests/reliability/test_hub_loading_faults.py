"""Faults between the Hub and a pretrained load: unreachable endpoints, server errors, altered downloads,
integer weights, and ``hf-hub:`` names. Each fails with one :class:`PretrainedWeightsError` naming the fix."""
import contextlib
import hashlib
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import timm
import timm_cra
from timm_cra import PretrainedWeightsError, UnknownModelError, UnknownPretrainedTagError
from timm_cra.hub.repo import export_repo

from ..conftest import closed_port_endpoint, connection_closing_endpoint

ROOT = Path(__file__).resolve().parents[2]
ARCH = 'cra_mobilenetv2_050'
NUM_CLASSES = 10


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = timm.create_model(ARCH, num_classes=NUM_CLASSES)
    return export_repo(model, tmp_path_factory.mktemp('export') / 'repo', model_name=f'{ARCH}.test_c10')


def _overlay(repo_id):
    return dict(pretrained=True, num_classes=NUM_CLASSES,
                pretrained_cfg_overlay=dict(hf_hub_id=repo_id, num_classes=NUM_CLASSES))


@pytest.fixture
def sleeps(monkeypatch):
    """huggingface_hub's back-off sleeps, recorded instead of slept."""
    calls = []
    monkeypatch.setattr('huggingface_hub.utils._http.time.sleep', calls.append)
    return calls


def _weight_blobs(hub):
    return [f for f in hub.cached_files() if '/blobs/' in f or f.endswith('.incomplete')]


@pytest.mark.parametrize('endpoint', ['closed-port', 'http://no-such-host.invalid'])
def test_unreachable_endpoint_fails_at_once(hub, sleeps, endpoint):
    hub.set_endpoint(closed_port_endpoint() if endpoint == 'closed-port' else endpoint)
    with pytest.raises(PretrainedWeightsError, match=r"is unreachable.*not in the local cache.*HF_ENDPOINT.*file="):
        timm.create_model(ARCH, **_overlay('t-fault/anything'))
    assert sleeps == []  # no back-off: refused connections and unknown names do not heal by waiting


def test_endpoint_that_closes_connections_is_unreachable_at_once(hub, sleeps):
    """A server that accepts and closes every connection (httpx's RemoteProtocolError) was a traceback after
    huggingface_hub's retries; it is as unreachable as a refused connection."""
    with connection_closing_endpoint() as endpoint:
        hub.set_endpoint(endpoint)
        with pytest.raises(PretrainedWeightsError, match=r"is unreachable \(no answer: Server disconnected.*not in "
                                                         r"the local cache.*HF_ENDPOINT.*file="):
            timm.create_model(ARCH, **_overlay('t-fault/anything'))
    assert sleeps == []


def test_unreachable_message_names_the_local_copy(hub, sleeps):
    # A pinned revision has no bundled copy to fall back to (the default revision loads it: test_bundled_weights).
    hub.set_endpoint(closed_port_endpoint())
    with pytest.raises(PretrainedWeightsError, match=r"is unreachable.*local-dir:hub/timm-cra/cra_cifar_resnet20"):
        timm.create_model('cra_cifar_resnet20.cifar10', pretrained=True, pretrained_cfg_overlay=dict(
            hf_hub_id='timm-cra/cra_cifar_resnet20.cifar10@main'))
    assert sleeps == []


class _Always500(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def _answer(self):
        body = b'{"error": "internal"}'
        self.send_response(500)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(body)

    do_GET = do_HEAD = _answer

    def log_message(self, *args):
        pass


def test_server_error_is_reported_as_a_server_error_after_retries(hub, sleeps):
    with ThreadingHTTPServer(('127.0.0.1', 0), _Always500) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            hub.set_endpoint(f'http://127.0.0.1:{server.server_address[1]}')
            with pytest.raises(PretrainedWeightsError, match=r"answered HTTP 500.*retried") as info:
                timm.create_model(ARCH, **_overlay('t-fault/server-error'))
        finally:
            server.shutdown()
    assert 'unreachable' not in str(info.value)
    assert sleeps, 'a 5xx answer keeps huggingface_hub\'s retries (it may heal)'


def _flip_tensor_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    header_len = int.from_bytes(data[:8], 'little')
    for i in range(8 + header_len + 16, len(data), 997):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_altered_download_is_refused_dropped_and_heals_on_retry(hub, exported, monkeypatch):
    from timm_cra.hub import server as server_module
    repo_dir = hub.add_repo('t-fault/altered', exported)
    weights = repo_dir / 'model.safetensors'
    good = weights.read_bytes()
    advertised = hashlib.sha256(good).hexdigest()
    _flip_tensor_bytes(weights)  # valid header, other tensor bytes, same size
    real_sha = server_module._open_digest  # the sha256 of the file a download answers from
    monkeypatch.setattr(server_module, '_open_digest',
                        lambda f, *a: advertised if Path(f.name) == weights else real_sha(f, *a))
    with pytest.raises(PretrainedWeightsError, match=r"does not match the sha256 the Hub advertised"):
        timm.create_model(ARCH, **_overlay('t-fault/altered'))
    assert _weight_blobs(hub) == []  # nothing corrupt stays in the cache
    weights.write_bytes(good)  # the fault is gone: the same call now loads the right weights
    model = timm.create_model(ARCH, **_overlay('t-fault/altered'))
    expected = load_file(str(exported / 'model.safetensors'))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in expected.items())


def test_integer_weights_are_refused(tmp_path, exported):
    state = load_file(str(exported / 'model.safetensors'))
    quantised = {k: (v * 10).to(torch.int8) if v.is_floating_point() else v for k, v in state.items()}
    save_file(quantised, str(tmp_path / 'model.safetensors'))
    with pytest.raises(PretrainedWeightsError, match=r"integer tensors for float parameters.*\(torch.int8\)"):
        timm.create_model(ARCH, pretrained=True, num_classes=NUM_CLASSES,
                          pretrained_cfg_overlay=dict(file=str(tmp_path / 'model.safetensors')))


def test_half_precision_weights_are_upcast(tmp_path, exported):
    state = load_file(str(exported / 'model.safetensors'))
    save_file({k: v.half() if v.is_floating_point() else v for k, v in state.items()},
              str(tmp_path / 'model.safetensors'))
    model = timm.create_model(ARCH, pretrained=True, num_classes=NUM_CLASSES,
                              pretrained_cfg_overlay=dict(file=str(tmp_path / 'model.safetensors')))
    assert model.conv_stem.weight.dtype == torch.float32
    assert torch.equal(model.conv_stem.weight, state['conv_stem.weight'].half().float())


# ---- hf-hub: / local-dir: names and unknown names, through timm_cra.create_model --------------------------

@pytest.mark.parametrize('prefix', ['hf-hub', 'hf_hub'])  # hf_hub: timm's alias (it was a 60-line traceback)
def test_hf_hub_missing_repo(hub, prefix):
    with pytest.raises(PretrainedWeightsError, match=r"'t-fault/no-such-repo' at http://127.0.0.1.* does not exist"):
        timm_cra.create_model(f'{prefix}:t-fault/no-such-repo', pretrained=True)


def test_hf_hub_bad_revision(hub, exported):
    hub.add_repo('t-fault/pinned', exported)
    with pytest.raises(PretrainedWeightsError, match=r"revision 'v9' does not exist.*drop '@v9'"):
        timm_cra.create_model('hf-hub:t-fault/pinned@v9', pretrained=True)


def test_hf_hub_offline_and_not_cached(hub):
    hub.set_offline(True)
    with pytest.raises(PretrainedWeightsError, match=r"HF_HUB_OFFLINE=1 is set.*not in the local cache"):
        timm_cra.create_model('hf-hub:t-fault/never-downloaded', pretrained=True)


def test_hf_hub_unreachable(hub, sleeps):
    hub.set_endpoint(closed_port_endpoint())
    with pytest.raises(PretrainedWeightsError, match=r"is unreachable"):
        timm_cra.create_model('hf-hub:t-fault/anything', pretrained=True)
    assert sleeps == []


def test_local_dir_without_config(tmp_path):
    with pytest.raises(PretrainedWeightsError, match=r"not a model folder: it needs config.json"):
        timm_cra.create_model(f'local-dir:{tmp_path}', pretrained=True)


def test_unknown_model_names_close_matches():
    with pytest.raises(UnknownModelError, match=r"unknown model 'cra_resnet5O'.*Did you mean: cra_resnet50"):
        timm_cra.create_model('cra_resnet5O')


def test_not_published_and_no_weights_are_pretrained_weights_errors():
    with pytest.raises(PretrainedWeightsError, match=r"no pretrained weights exist for 'cra_resnet18.untrained'"):
        timm.create_model('cra_resnet18', pretrained=True)
    with pytest.raises(UnknownPretrainedTagError, match=r"unknown pretrained tag") as info:
        timm.create_model('cra_resnet18.nope', pretrained=True)
    assert isinstance(info.value, ValueError)


# ---- J4: the same from a fresh interpreter, as a user meets it ----------------------------------------------

_LOAD = ("import sys, timm, timm_cra\n"
         "try:\n"
         "    timm.create_model(sys.argv[1], pretrained=True)\n"
         "except timm_cra.PretrainedWeightsError as e:\n"
         "    print('PretrainedWeightsError:', e); raise SystemExit(3)\n")


@pytest.mark.parametrize('tag,mode', [('cra_cifar_resnet20.cifar10', 'offline'),
                                      ('cra_resnet18.a1_in1k_gates_untrained', 'offline'),
                                      ('cra_resnet18.a1_in1k_gates_untrained', 'unreachable'),
                                      ('cra_cifar_resnet20.cifar10', 'closes-connections')])
@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_j4_fresh_process_fails_fast_with_the_fix(tmp_path, mode, tag):
    """Journey J4's two commands: without a Hub, the CIFAR tags load the copy bundled with the package (and say
    so; unreachable: tests/hub/test_bundled_weights.py); a tag whose weights only the Hub has (timm's base
    weights here) fails with the fix. Either way within seconds. An endpoint that accepts and closes every
    connection (it was an httpx RemoteProtocolError traceback, rc 1) is unreachable too."""
    with contextlib.ExitStack() as stack:
        endpoint = stack.enter_context(connection_closing_endpoint()) if mode == 'closes-connections' \
            else closed_port_endpoint()
        env = dict(os.environ, HF_HUB_CACHE=str(tmp_path / 'cache'), HF_ENDPOINT=endpoint,
                   HF_HUB_OFFLINE='1' if mode == 'offline' else '0')
        start = time.monotonic()
        proc = subprocess.run([sys.executable, '-c', _LOAD, tag], env=env, cwd=tmp_path, capture_output=True,
                              text=True, timeout=120)
        elapsed = time.monotonic() - start
    expected = 'HF_HUB_OFFLINE=1' if mode == 'offline' else 'is unreachable'
    if tag.startswith('cra_cifar'):
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert expected in proc.stderr and 'loading the copy bundled with timm-cra' in proc.stderr
    else:
        assert proc.returncode == 3, proc.stderr[-2000:]
        assert expected in proc.stdout and 'HF_ENDPOINT' in proc.stdout and 'file=' in proc.stdout
    assert 'Retrying in' not in proc.stderr
    # No back-off: the whole process (mostly importing torch and timm, slow on a busy 2-core machine) ends
    # well before the ~47 s of retries it replaces.
    assert elapsed < 30, f'{mode}: {elapsed:.1f} s'


@pytest.mark.parametrize('kind', ['file', 'fifo'])
@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_hf_home_that_is_not_a_folder_is_one_line_naming_it(tmp_path, kind):
    """HF_HOME pointing at a file or a FIFO: huggingface_hub's NotADirectoryError on HF_HOME/token came as a
    traceback; timm_cra.create_model (every CLI's) gives one PretrainedWeightsError naming the variable and the fix."""
    home = tmp_path / 'hf-home'
    home.write_text('x') if kind == 'file' else os.mkfifo(home)
    env = {k: v for k, v in os.environ.items() if k not in ('HF_HUB_CACHE', 'HF_TOKEN_PATH', 'HF_TOKEN')}
    env.update(HF_HOME=str(home), HF_HUB_OFFLINE='1')
    load = _LOAD.replace('timm.create_model(', 'timm_cra.create_model(')  # the package's: hf-hub: failures explained
    assert load != _LOAD
    proc = subprocess.run([sys.executable, '-c', load, 'hf-hub:timm-cra/cifar_resnet20.cifar10'], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert f'which is under HF_HOME={home}: point HF_HOME at a folder you can write, or unset it.' in proc.stdout


def test_the_reachability_probe_leaves_the_shared_client_alone(hub, monkeypatch):
    """The probe before a download swapped the transport of huggingface_hub's shared client for the whole process:
    loads in other threads had their downloads cut by its 5 s deadline (*broke off*, 2-4 of 24 loads) and a later
    download could keep it. It now sends its HEAD through a client of its own (utils.hub_session.bounded_client)."""
    from huggingface_hub import get_session
    from timm_cra.models import _weight_checks
    from timm_cra.utils import hub_session
    shared, seen = get_session()._transport, []
    real = hub_session._DeadlineTransport.handle_request

    def handle_request(self, request):
        seen.append(get_session()._transport)  # what other threads' requests would go through at this moment
        return real(self, request)
    monkeypatch.setattr(hub_session._DeadlineTransport, 'handle_request', handle_request)
    _weight_checks.check_hub_reachable('t-fault/any', None)
    assert seen and all(t is shared for t in seen) and get_session()._transport is shared
