"""Shared fixtures. ``hub``: a loopback Hugging Face Hub (timm_cra.hub.server) that huggingface_hub talks to;
training / validation runs (a tiny CRA model, the CLI runner, a 2-epoch CIFAR slice run); the
shared read-only data (``../shared/data``; ``TIMM_CRA_SHARED_DATA`` overrides it, tests needing it skip
with the reason when absent) and tiny synthetic image sets.

Nothing in the suite may reach the real Hub (unreachable here, and a stalled download retries for ~20 s):
``HF_HUB_OFFLINE=1`` is the default for every test and subprocess; the ``hub`` fixture lifts it only while
huggingface_hub points at the loopback server.
"""
import contextlib
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, Union

# Before anything imports huggingface_hub (it reads these once, at import time).
os.environ['HF_HUB_OFFLINE'] = '1'
os.environ.setdefault('HF_HUB_DISABLE_TELEMETRY', '1')
os.environ.setdefault('HF_DATASETS_OFFLINE', '1')

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]


def sigint_as_a_shell_leaves_it() -> None:
    """``preexec_fn`` of a command a test stops with SIGINT: SIGINT at its default, as an interactive shell starts a
    command. A test run started in the background (``nohup pytest &``, a CI runner's job) ignores SIGINT, every child
    inherits that, and the command then rightly keeps ignoring it (a Ctrl-C test would wait for nothing)."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def closed_port_endpoint() -> str:
    """An endpoint URL on a loopback port nothing listens on (connections are refused)."""
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    return f'http://127.0.0.1:{port}'


@contextlib.contextmanager
def connection_closing_endpoint() -> Iterator[str]:
    """An endpoint URL on a loopback server that accepts each connection, reads the request and closes it
    without an answer (a proxy or load balancer dropping the Hub): httpx's RemoteProtocolError."""
    import socket
    import socketserver
    import threading

    class Close(socketserver.BaseRequestHandler):
        def handle(self):
            self.request.settimeout(5)
            with contextlib.suppress(OSError):
                self.request.recv(65536)
                self.request.shutdown(socket.SHUT_RDWR)

    with socketserver.ThreadingTCPServer(('127.0.0.1', 0), Close) as server:
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield f'http://127.0.0.1:{server.server_address[1]}'
        finally:
            server.shutdown()


HUB_DIR = REPO_ROOT / 'hub'  # generated repo folders, served read-only behind the test-made ones


@pytest.fixture(scope='session')
def hub_server(tmp_path_factory):
    """Session-wide loopback Hub serving ``<tmp>/<org>/<repo>`` (test-made repos) and then ``hub/``."""
    from timm_cra.hub.server import HubFolderServer
    test_root = tmp_path_factory.mktemp('hub-repos')
    with HubFolderServer([test_root, HUB_DIR]) as server:
        server.test_root = test_root
        yield server


@dataclass
class LocalHub:
    """Handle on the loopback Hub for one test: where repos go, which cache is used, online/offline switch."""
    server: object
    endpoint: str
    cache_dir: Path
    _monkeypatch: pytest.MonkeyPatch
    added: list = field(default_factory=list)

    def add_repo(self, repo_id: str, files: Union[Path, Dict[str, bytes]]) -> Path:
        """Publish a repo: copy a folder, or write ``{filename: bytes}``. Returns the served folder, which is
        removed when the test ends (a hostile repo put behind a registered tag must not outlive its test)."""
        repo_dir = Path(self.server.test_root, *repo_id.split('/'))
        self.added.append(repo_dir)
        if repo_dir.exists():
            shutil.rmtree(repo_dir)
        if isinstance(files, (str, os.PathLike)):
            shutil.copytree(files, repo_dir)
        else:
            repo_dir.mkdir(parents=True)
            for name, data in files.items():
                (repo_dir / name).write_bytes(data)
        return repo_dir

    def set_offline(self, offline: bool = True) -> None:
        """What ``HF_HUB_OFFLINE=1`` does, for this process (the env var is read only at import)."""
        from huggingface_hub import constants
        self._monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', offline)
        self._monkeypatch.setenv('HF_HUB_OFFLINE', '1' if offline else '0')

    def set_endpoint(self, endpoint: str) -> None:
        """Point the download client at ``endpoint`` (what ``HF_ENDPOINT`` does at import time)."""
        from huggingface_hub import constants
        endpoint = endpoint.rstrip('/')
        self._monkeypatch.setattr(constants, 'ENDPOINT', endpoint)
        self._monkeypatch.setattr(
            constants, 'HUGGINGFACE_CO_URL_TEMPLATE', endpoint + '/{repo_id}/resolve/{revision}/{filename}')
        self._monkeypatch.setenv('HF_ENDPOINT', endpoint)
        self.endpoint = endpoint

    def cached_files(self):
        """Every file and link in the HF cache (to prove failed loads leave nothing behind)."""
        return sorted(p.relative_to(self.cache_dir).as_posix() for p in self.cache_dir.rglob('*')
                      if p.is_file() or p.is_symlink())


@pytest.fixture
def hub(hub_server, tmp_path, monkeypatch) -> Iterator[LocalHub]:
    """huggingface_hub (and so timm's ``pretrained=True`` / ``hf-hub:``) talking to the loopback Hub.

    Patches the client's module constants (endpoint, URL template, cache, offline flag) and the matching
    env vars for subprocesses, with a fresh HF cache per test; pytest restores everything afterwards.
    """
    from huggingface_hub import constants
    cache_dir = tmp_path / 'hf-cache'
    cache_dir.mkdir()
    local = LocalHub(hub_server, hub_server.endpoint, cache_dir, monkeypatch)
    local.set_endpoint(hub_server.endpoint)
    local.set_offline(False)
    monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(cache_dir))
    monkeypatch.setenv('HF_HUB_CACHE', str(cache_dir))
    monkeypatch.setenv('NO_PROXY', '127.0.0.1,localhost')
    yield local
    for repo_dir in local.added:
        shutil.rmtree(repo_dir, ignore_errors=True)


@pytest.fixture
def small_disk(tmp_path):
    """``small_disk(name, size)``: a tmpfs of ``size`` mounted at ``tmp_path/name`` (root only: skipped where
    ``mount`` is not allowed), unmounted at the end."""
    mounted = []

    def _mount(name, size):
        path = tmp_path / name
        path.mkdir()
        r = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(path)], capture_output=True)
        if r.returncode != 0:
            pytest.skip(f'cannot mount a tmpfs here: {r.stderr.decode(errors="replace").strip()}')
        mounted.append(path)
        return path
    yield _mount
    for path in mounted:
        subprocess.run(['umount', str(path)], check=False)


def _shared_data() -> Path:
    return Path(os.environ.get('TIMM_CRA_SHARED_DATA', REPO_ROOT.parent / 'shared' / 'data')).resolve()


@pytest.fixture(scope='session')
def shared_data() -> Path:
    path = _shared_data()
    if not path.is_dir():
        pytest.skip(f'shared data not found at {path} (set TIMM_CRA_SHARED_DATA or place it at ../shared/data)')
    return path


@pytest.fixture(scope='session')
def cifar10_test() -> Path:
    """The repository's own CIFAR-10 test split (data/cifar10: 10,000 images, parquet): runs on a bare clone."""
    path = REPO_ROOT / 'data' / 'cifar10'
    if not (path / 'test-00000-of-00001.parquet').is_file():
        pytest.skip(f'CIFAR-10 test split not found in {path} (part of the repository)')
    return path


@pytest.fixture(scope='session')
def imagenet_sample(shared_data) -> Path:
    path = shared_data / 'imagenet_val_sample'
    if not path.is_dir():
        pytest.skip(f'ImageNet sample not found at {path}')
    return path


@pytest.fixture
def make_image():
    """``make_image(path, color, size)``: write a solid-colour image (format from the suffix)."""
    def _make(path: Path, color=(128, 64, 32), size=(32, 32)) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((size[1], size[0], 3), color, dtype=np.uint8)).save(path)
        return path
    return _make


@pytest.fixture
def class_folder(tmp_path) -> Path:
    """``data/train/`` and ``data/val/`` with 3 plain classes of tiny random images (fine-tuning layout); the test's
    outputs go beside ``data/`` (never inside the data a command reads)."""
    rng = np.random.default_rng(0)
    for split, n in (('train', 6), ('val', 2)):
        for c in ('cat', 'dog', 'emu'):
            for i in range(n):
                p = tmp_path / 'data' / split / c / f'{i}.png'
                p.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(p)
    return tmp_path / 'data'


# --- Training and validation runs (tests/train, tests/eval) ---
#: A CRA-ResNet with one block per stage: the CRA code paths of cra_resnet18 at a fraction of the cost.
TINY_MODEL = ['--model', 'cra_resnet18', '--model-kwargs', 'layers=(1,1,1,1)']


@pytest.fixture(scope='session')
def single_torch_thread():
    """In-process training / validation runs single-threaded, like ``cli_env``; restored afterwards.
    ``tests/train`` and ``tests/eval`` use it for every test."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope='session')
def tiny_model_args():
    return list(TINY_MODEL)


@pytest.fixture(scope='session')
def cli_env():
    # One intra-op thread: on shared, busy cores OpenMP spin-waiting makes 2 threads ~10x slower than 1.
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), HF_DATASETS_OFFLINE='1', HF_HUB_OFFLINE='1',
               PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    return env


@pytest.fixture(scope='session')
def run_command(cli_env):
    """``run_command('timm-cra-train', [...])`` -> CompletedProcess (text, both streams captured): the console
    script's module run as ``python -m`` (``prefix``: e.g. torchrun instead of python), from this checkout."""
    import subprocess
    import sys
    from timm_cra.cli import COMMANDS

    def _run(command, argv, timeout=120, prefix=None):
        cmd = (prefix or [sys.executable]) + ['-m', COMMANDS[command]] + [str(a) for a in argv]
        return subprocess.run(cmd, env=cli_env, cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=timeout)
    return _run


#: CIFAR slice run shared by several tests: 96 train / 32 val images, batch 16 -> 6 steps per epoch. Both
#: come from the repository's test split (the runs test the training machinery, not accuracy).
CIFAR_RUN = ['--config', 'cifar', '--train-num-samples', '96', '--val-num-samples', '32', '--batch-size', '16',
             '--log-interval', '2', '--lr', '0.05', '--train-split', 'test']


@pytest.fixture(scope='session')
def cifar_run_args(cifar10_test):
    return TINY_MODEL + CIFAR_RUN + ['--data-dir', str(cifar10_test)]


@pytest.fixture(scope='session')
def cifar_run(cifar_run_args, tmp_path_factory):
    """One in-process 2-epoch CIFAR training run: (summary, output dir)."""
    from timm_cra.train import train
    out = tmp_path_factory.mktemp('cifar_run')
    summary = train(cifar_run_args + ['--epochs', '2', '--output', str(out), '--experiment', 'run'])
    return summary, out / 'run'
