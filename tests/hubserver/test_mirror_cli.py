"""timm-cra-hub-mirror's command line (``python -m timm_cra.hub.server``) in its own process: its request log, its
arguments and where it listens, with huggingface_hub's download client (and timm through ``hf-hub:``) as clients."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CIFAR_ID = 'timm-cra/cra_cifar_resnet20.cifar10'
ENV = dict(os.environ, PYTHONPATH=str(REPO_ROOT))


def _mirror(*args, stderr, shell_redirect=''):
    """The mirror over ``hub/`` (request log on: no ``--quiet``) with stdout on a pipe: ``(process, endpoint)``."""
    cmd = [sys.executable, '-m', 'timm_cra.hub.server', '--root', str(REPO_ROOT / 'hub'), '--port', '0', *args]
    if shell_redirect:  # what a shell does to the process before it starts, e.g. 2>&- (stderr closed)
        cmd = ['sh', '-c', f'exec "$@" {shell_redirect}', 'sh', *cmd]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, text=True, env=ENV)
    line = proc.stdout.readline()
    assert 'HF_ENDPOINT=' in line, line
    return proc, line.split('HF_ENDPOINT=')[1].rstrip(')\n')


@pytest.mark.parametrize('log_to', ['stderr closed', '/dev/full', 'a pipe whose reader left'])
def test_a_request_log_that_cannot_be_written_never_costs_an_answer(hub, log_to):
    """The request log is written inside the answer, before its status line: with stderr closed (``2>&-``), full
    (``2>/dev/full``) or a pipe whose reader exited after the first line (``2>&1 | head -1``), the mirror printed its
    endpoint and then answered every request with nothing (the client: httpx ``RemoteProtocolError``). Logging is
    best-effort now: the first line that fails turns it off, and the mirror goes on serving."""
    import timm_cra
    from huggingface_hub import HfApi, hf_hub_download
    with open('/dev/full', 'w') as full:
        if log_to == 'stderr closed':
            proc, endpoint = _mirror(stderr=None, shell_redirect='2>&-')
        elif log_to == '/dev/full':
            proc, endpoint = _mirror(stderr=full)
        else:
            proc, endpoint = _mirror(stderr=subprocess.STDOUT)
            proc.stdout.close()  # `| head -1`: the first line read, the reader is gone
    hub.set_endpoint(endpoint)
    try:
        served = Path(hf_hub_download(CIFAR_ID, 'config.json')).read_bytes()
        assert HfApi(endpoint=endpoint).model_info(CIFAR_ID).sha  # more requests after logging stopped
        model = timm_cra.create_model(f'hf-hub:{CIFAR_ID}', pretrained=True)
    finally:
        proc.terminate()
        notice = proc.stdout.read() if not proc.stdout.closed else ''
        proc.wait(timeout=30)
    assert served == (REPO_ROOT / 'hub' / CIFAR_ID / 'config.json').read_bytes()
    assert model.pretrained_cfg['hf_hub_id'] == CIFAR_ID
    if log_to != 'a pipe whose reader left':  # stdout still takes a line: the one notice that logging stopped
        assert notice.count('\n') == 1 and notice.startswith('warning: the request log cannot be written to stderr')
        assert 'requests are served, no longer logged' in notice, notice


def test_a_written_request_log_logs_each_request(hub):
    """The best-effort log still logs: one line per request on stderr."""
    from huggingface_hub import hf_hub_download
    proc, endpoint = _mirror(stderr=subprocess.PIPE)
    hub.set_endpoint(endpoint)
    try:
        hf_hub_download(CIFAR_ID, 'config.json')
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    # HEAD of main: a 307 to the commit's URL, whose HEAD and GET are served (huggingface_hub downloads from there)
    assert out == '' and f'"HEAD /{CIFAR_ID}/resolve/main/config.json HTTP/1.1" 307' in err, err
    assert re.search(f'"GET /{CIFAR_ID}/resolve/[0-9a-f]{{40}}/config.json HTTP/1.1" 200', err), err


@pytest.mark.parametrize('args, says', [
    (['--root', '', '--host', ''], '--root is empty'),
    (['--root', '.', '--host', ''], '--host is empty (it would listen on every interface): leave it out for 127.0.0.1'),
    (['--root', ''], '--root is empty: name the folder holding <org>/<repo>/ repos (--root . for the current one)'),
    (['--root', '.', '--root', ''], '--root is empty'),
], ids=['both', 'host', 'root', 'second root'])
def test_empty_root_or_host_is_refused_in_one_line(tmp_path, args, says):
    """``--root "$ROOT" --host "$HOST"`` with both unset served the current folder on every interface (0.0.0.0):
    a file two folders down was anyone's. An empty value is one line naming the fix, exit 2, nothing listens."""
    (tmp_path / 'work' / 'proj').mkdir(parents=True)
    (tmp_path / 'work' / 'proj' / 'notes.txt').write_text('PRIVATE')
    try:
        done = subprocess.run([sys.executable, '-m', 'timm_cra.hub.server', *args, '--port', '0', '--quiet'],
                              cwd=tmp_path, capture_output=True, text=True, env=ENV, timeout=30)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f'the mirror started: {e.stdout!r}')
    assert done.returncode == 2 and done.stdout == '', (done.returncode, done.stdout)
    assert done.stderr.startswith('error: ') and done.stderr.count('\n') == 1 and says in done.stderr, done.stderr


def test_help_states_the_defaults_and_a_network_address_warns(hub):
    """``--help`` says where the mirror listens by default (127.0.0.1, port 8808); an address beyond this machine
    (here 0.0.0.0, every interface) is served, with one warning line on stderr saying anyone reaching it reads every
    file under the roots; the default (loopback) says nothing."""
    from huggingface_hub import hf_hub_download
    helped = subprocess.run([sys.executable, '-m', 'timm_cra.hub.server', '--help'], capture_output=True, text=True,
                            env=ENV, timeout=60)
    text = ' '.join(helped.stdout.split())
    assert helped.returncode == 0 and '(default: 127.0.0.1, this machine only;' in text, text
    assert '(default: 8808; 0 picks a free port)' in text, text
    for host, warns in [('0.0.0.0', True), ('127.0.0.1', False)]:
        proc, endpoint = _mirror('--host', host, '--quiet', stderr=subprocess.PIPE)
        hub.set_endpoint(endpoint.replace('0.0.0.0', '127.0.0.1'))
        try:
            hf_hub_download(CIFAR_ID, 'config.json', force_download=True)
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=30)
        if warns:
            assert err.count('\n') == 1 and err.startswith('warning: listening on 0.0.0.0:'), err
            assert f'can read every file under {REPO_ROOT / "hub"} (no authentication)' in err, err
        else:
            assert err == '', err
