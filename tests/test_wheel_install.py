"""A user with only the wheel: build it, install it (not editable) into a fresh venv, and from a folder outside
the repository, offline with an empty HF cache, get the published CIFAR weights and run the README's
fine-tune command with its console script, validate what it wrote, and serve a folder with the read-only Hub
mirror (which imports no torch).

The venv sees the test interpreter's third-party packages (torch, timm, datasets, ...) through a ``.pth``
line: ``venv --system-site-packages`` would expose the base interpreter's packages, not this venv's. A
``.pth`` *line* only extends ``sys.path`` (the ``.pth`` files of that folder, among them the editable finder of
a development install, are not run), so ``timm_cra`` can come only from the installed wheel; the test checks
``timm_cra.__file__`` to prove it.
"""
import hashlib
import json
import os
import shutil
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = REPO_ROOT / 'hub' / 'timm-cra' / 'cra_cifar_resnet20.cifar10' / 'model.safetensors'
README_FINETUNE = ('timm-cra-train --config finetune --model cra_cifar_resnet20.cifar10 --in-chans 1 '
                   '--data-dir DIR')


def _run(cmd, **kw):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300, **kw)
    assert proc.returncode == 0, f'{cmd}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}'
    return proc


@pytest.fixture(scope='module')
def wheel_venv(tmp_path_factory):
    """``(python, env, workdir)``: a venv holding the wheel built from a copy of the checkout."""
    pytest.importorskip('setuptools', reason='building the wheel needs setuptools (the [test] extra has it)')
    tmp = tmp_path_factory.mktemp('wheel-user')
    src = tmp / 'src' / 'timm-cra'
    shutil.copytree(REPO_ROOT, src, ignore=shutil.ignore_patterns(
        '.git', '.venv', 'build', 'dist', '*.egg-info', '__pycache__', '.pytest_cache', 'output', '.timm-sdist'))
    _run([sys.executable, '-m', 'pip', 'wheel', src, '--no-deps', '--no-build-isolation', '--no-index', '-q',
          '-w', tmp / 'dist'])
    (wheel,) = (tmp / 'dist').glob('timm_cra-*.whl')
    venv = tmp / 'venv'
    _run([sys.executable, '-m', 'venv', '--without-pip', venv])
    python = venv / 'bin' / 'python'
    _run([sys.executable, '-m', 'pip', '--python', python, 'install', '--no-deps', '--no-index', '-q', wheel])
    own_site = Path(_run([python, '-c', 'import sysconfig; print(sysconfig.get_path("purelib"))']).stdout.strip())
    (own_site / 'outer-packages.pth').write_text('\n'.join(site.getsitepackages()) + '\n')
    work = tmp / 'work'  # outside the repository: no timm_cra/ beside the current directory
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(('PYTHON', 'HF_', 'VIRTUAL_ENV'))}
    env.update(HF_HUB_OFFLINE='1', HF_DATASETS_OFFLINE='1', HF_HUB_CACHE=str(tmp / 'empty-hf-cache'),
               OMP_NUM_THREADS='1', HF_HUB_DISABLE_TELEMETRY='1')
    return python, env, work, own_site


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_wheel_user_gets_the_published_weights_offline(wheel_venv):
    python, env, work, own_site = wheel_venv
    proc = _run([python, '-c', textwrap.dedent('''
        import hashlib, json, logging
        logging.basicConfig(level=logging.WARNING)
        import timm, timm_cra
        from safetensors.torch import save
        model = timm.create_model('cra_cifar_resnet20.cifar10', pretrained=True)
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        print(json.dumps({'file': timm_cra.__file__, 'weights': model.pretrained_cfg['file'],
                          'keys': sorted(state), 'sha': {k: hashlib.sha256(v.numpy().tobytes()).hexdigest()
                                                        for k, v in state.items()}}))
    ''')], cwd=work, env=env)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(out['file']).is_relative_to(own_site), out['file']  # the wheel's code, not the checkout's
    assert Path(out['weights']).is_relative_to(own_site)
    assert 'loading the copy bundled with timm-cra' in proc.stderr  # says where the weights came from
    from safetensors.torch import load_file
    published = load_file(str(PUBLISHED))
    assert out['keys'] == sorted(published)
    for k, v in published.items():
        assert out['sha'][k] == hashlib.sha256(v.contiguous().numpy().tobytes()).hexdigest(), k
    assert not Path(env['HF_HUB_CACHE']).exists() or not any(Path(env['HF_HUB_CACHE']).rglob('*.safetensors'))


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_wheel_user_runs_the_readme_finetune_command(wheel_venv):
    python, env, work, _ = wheel_venv
    assert README_FINETUNE in (REPO_ROOT / 'README.md').read_text()  # the command below is the README's
    data = work / 'grey'
    rng = np.random.default_rng(0)
    for split, n in (('train', 4), ('val', 2)):
        for c in ('a', 'b'):
            for i in range(n):
                (data / split / c).mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8), mode='L').save(
                    data / split / c / f'{i}.png')
    script, *argv = README_FINETUNE.replace('DIR', str(data)).split()
    proc = _run([python.parent / script, *argv, '--epochs', '1', '--batch-size', '4', '--workers', '0', '--no-plot',
                 '--output', work / 'out', '--experiment', 'ft'], cwd=work, env=env)
    log = proc.stdout + proc.stderr
    assert 'loading the copy bundled with timm-cra' in log and 'Weights: pretrained cra_cifar_resnet20.cifar10' in log
    results = json.loads((work / 'out' / 'ft' / 'results.json').read_text())
    assert results['final']['eval_top1'] is not None
    config = json.loads((work / 'out' / 'ft' / 'config.json').read_text())
    assert config['num_classes'] == 2 and config['pretrained_cfg']['input_size'] == [1, 32, 32]
    # timm-cra-validate reads the run folder the training wrote (a Hub repo folder) and its val images
    proc = _run([python.parent / 'timm-cra-validate', '--model', f"local-dir:{work / 'out' / 'ft'}", '--pretrained',
                 '--data-dir', data, '--split', 'val', '--workers', '0', '--no-progress'], cwd=work, env=env)
    result = json.loads(proc.stdout[proc.stdout.index('{'):])
    assert result['count'] == 4 and result['top1'] is not None


@pytest.mark.slow  # a minute of subprocesses: the slow step keeps the fast suite near 10 minutes
def test_wheel_console_scripts_answer_help(wheel_venv):
    """Each console script of the wheel starts the wheel's CLI (its usage line names the script)."""
    from timm_cra.cli import COMMANDS
    python, env, work, _ = wheel_venv
    for script in COMMANDS:
        proc = _run([python.parent / script, '--help'], cwd=work, env=env)
        assert proc.stdout.startswith(f'usage: {script} '), (script, proc.stdout[:200])


def test_wheel_hub_mirror_serves_without_torch_and_ships_no_write_side(wheel_venv):
    """``timm-cra-hub-mirror`` from the wheel serves a repo folder to huggingface_hub's client, importing neither
    torch nor timm (``-X importtime`` lists every import); the wheel holds no upload side of the server."""
    import urllib.request
    python, env, work, own_site = wheel_venv
    server = (own_site / 'timm_cra' / 'hub' / 'server.py').read_text()
    assert '_WriteRoutes' not in server and '--allow-write' not in server
    assert not list(own_site.glob('tests')) and not list(own_site.rglob('write_server.py'))
    root = work / 'mirror'
    shutil.copytree(PUBLISHED.parent, root / 'timm-cra' / PUBLISHED.parent.name)
    proc = subprocess.Popen([python, '-X', 'importtime', python.parent / 'timm-cra-hub-mirror', '--root', root,
                             '--port', '0', '--quiet'], cwd=work, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        endpoint = proc.stdout.readline().split('HF_ENDPOINT=')[1].rstrip(')\n')
        url = f'{endpoint}/timm-cra/{PUBLISHED.parent.name}/resolve/main/model.safetensors'
        with urllib.request.urlopen(url, timeout=60) as resp:
            served = resp.read()
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    assert served == PUBLISHED.read_bytes()
    imported = {ln.rsplit('|', 1)[1].strip() for ln in stderr.splitlines() if ln.startswith('import time:')}
    # the entry point imports the server with importlib (not logged); http.server is its import statement's
    assert {'timm_cra', 'timm_cra.cli', 'http.server'} <= imported
    assert not {m for m in imported if m.split('.')[0] in ('torch', 'timm')}
