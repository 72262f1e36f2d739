"""What ships: the wheel holds the package (no repository tooling), its core dependencies are exactly what
``import timm_cra; timm.create_model(...)`` needs, the package imports point one way (layers -> models ->
hub / train / eval, tools outside), and without the ``train`` extra the core works while training says
which extra to install."""
import ast
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from collections import defaultdict
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = REPO_ROOT / 'timm_cra'

CORE_REQUIREMENTS = {'torch', 'timm', 'huggingface_hub', 'safetensors'}
#: not installed in the "core only" runs below: the train extra's packages that no core dependency pulls in
#: (pyyaml and tqdm come with timm and huggingface_hub)
TRAIN_ONLY = ('datasets', 'matplotlib')
TRAIN_INSTALL = 'pip install "timm-cra[train]"'


def _requirement_name(line: str) -> str:
    spec = line.split(':', 1)[1].split(';')[0].strip()
    for sep in '<>=!~[ (':
        spec = spec.split(sep)[0]
    return spec


@pytest.fixture(scope='module')
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """The wheel built from a copy of the checkout (a stale in-tree build/ cannot leak into it)."""
    pytest.importorskip('setuptools', reason='building the wheel needs setuptools (the [test] extra has it)')
    src = tmp_path_factory.mktemp('src') / 'timm-cra'
    shutil.copytree(REPO_ROOT, src, ignore=shutil.ignore_patterns(
        '.git', '.venv', 'build', 'dist', '*.egg-info', '__pycache__', '.pytest_cache', 'output', '.timm-sdist'))
    out = tmp_path_factory.mktemp('wheel')
    proc = subprocess.run([sys.executable, '-m', 'pip', 'wheel', str(src), '--no-deps', '--no-build-isolation',
                           '--no-index', '-q', '-w', str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = out.glob('timm_cra-*.whl')
    with zipfile.ZipFile(path) as zf:
        yield zf


def test_wheel_holds_the_package_and_no_tooling(wheel):
    names = wheel.namelist()
    top = {n.split('/')[0] for n in names}
    assert {t for t in top if not t.endswith('.dist-info')} == {'timm_cra'}
    shipped = {n for n in names if n.startswith('timm_cra/')}
    modules = {p.relative_to(REPO_ROOT).as_posix() for p in PACKAGE.rglob('*.py')}
    assert modules <= shipped
    recipes = {p.relative_to(REPO_ROOT).as_posix() for p in (PACKAGE / 'train' / 'recipes').glob('*.yaml')}
    assert recipes and recipes <= shipped
    # the small Hub repos' weights (the bytes and sha256 are checked in tests/hub/test_bundled_weights.py)
    from timm_cra.models._weight_checks import BUNDLED_WEIGHTS
    bundled = {f'timm_cra/models/bundled/{repo}/model.safetensors' for repo in BUNDLED_WEIGHTS}
    assert bundled and bundled <= shipped
    # nothing but modules, recipes and those weights; the repository tooling lives outside the package
    assert shipped == modules | recipes | bundled
    assert not any('campaign' in n or 'tables' in n for n in shipped)


def test_wheel_console_scripts_and_read_only_mirror(wheel):
    """Every command of timm_cra.cli.COMMANDS is a console script of the wheel, its module is in the wheel, and
    the Hub server shipped is the read-only mirror (the write side is test infrastructure, in tests/hubserver)."""
    import configparser
    from timm_cra.cli import COMMANDS
    (entry_points,) = [n for n in wheel.namelist() if n.endswith('.dist-info/entry_points.txt')]
    parser = configparser.ConfigParser()
    parser.read_string(wheel.read(entry_points).decode())
    scripts = dict(parser['console_scripts'])
    assert set(scripts) == set(COMMANDS)
    names = set(wheel.namelist())
    for script, target in scripts.items():
        module, _, func = target.partition(':')
        assert module == 'timm_cra.cli' and func == script[len('timm-cra-'):].replace('-', '_'), (script, target)
        path = COMMANDS[script].replace('.', '/')
        assert {f'{path}.py', f'{path}/__main__.py'} & names, f'{script}: python -m {COMMANDS[script]} is not shipped'
    server = wheel.read('timm_cra/hub/server.py').decode()
    assert '_WriteRoutes' not in server and 'allow-write' not in server and 'atomic_write' not in server
    assert not any('write_server' in n or n.startswith('tests/') for n in names)


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_python_m_of_every_command_runs_without_a_runpy_warning():
    """``python -m <module>`` of every command runs a module its package has not imported before (runpy's
    *found in sys.modules after import of package* warning: two copies of one module, e.g. of its error classes)."""
    from timm_cra.cli import COMMANDS
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS='1')
    procs = {module: subprocess.Popen([sys.executable, '-W', 'error::RuntimeWarning', '-m', module, '--help'],
                                      env=env, cwd=str(REPO_ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True) for module in COMMANDS.values()}
    for module, proc in procs.items():
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0 and out.startswith('usage: ') and not err, (module, err[-2000:])


def test_wheel_core_requirements(wheel):
    (metadata,) = [n for n in wheel.namelist() if n.endswith('.dist-info/METADATA')]
    requires = [ln for ln in wheel.read(metadata).decode().splitlines() if ln.startswith('Requires-Dist:')]
    core = {_requirement_name(ln) for ln in requires if 'extra ==' not in ln}
    assert core == CORE_REQUIREMENTS
    train = {_requirement_name(ln) for ln in requires if 'extra == "train"' in ln}
    assert train == {'datasets', 'fsspec', 'pyyaml', 'tqdm', 'matplotlib'}
    assert any(_requirement_name(ln) == 'timm-cra' and 'extra == "test"' in ln for ln in requires)  # test pulls train
    version = next(ln for ln in wheel.read(metadata).decode().splitlines() if ln.startswith('Version:'))
    assert f"__version__ = '{version.split()[1]}'" in (PACKAGE / '__init__.py').read_text()


# --- import layers ---------------------------------------------------------------------------------------
#: subpackage -> the other subpackages its modules may import ('' = the top-level ``timm_cra``, which is
#: layers + models and the error root). Tooling (tools/, scripts/) is never imported by the package.
ALLOWED = {
    '': {'layers', 'models', 'utils'},  # utils: the error root (TimmCraError); utils.cli: whether this process is the torch-free Hub mirror
    'cli': {'utils'},  # the console scripts import their CLI module only when run (importlib)
    'layers': set(),
    'models': {'layers', 'utils'},  # the safe readers (utils.weights, utils.io) and the error root
    'utils': set(),
    'data': {'utils'},
    'benchmark': {'', 'models', 'layers', 'utils'},
    'hub': {'', 'models', 'layers', 'data', 'utils'},
    'eval': {'', 'models', 'layers', 'data', 'utils'},
    'train': {'', 'models', 'layers', 'data', 'utils', 'eval'},  # the trainer validates with eval's loop
    'detection': {'', 'models', 'layers', 'utils'},
    'export': {'', 'models', 'layers', 'utils'},
}
#: module -> subpackages it may import beyond its subpackage's rule (lazily, inside a function)
EXCEPTIONS = {
    'timm_cra.train.export': {'hub'},  # the run folder is a Hub repo: written by hub.repo's one config layout
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix('').parts)
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _imports(path: Path):
    """Absolute names of every module ``path`` imports, at the top or inside functions."""
    name = _module_name(path)
    package = name if path.name == '__init__.py' else name.rsplit('.', 1)[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                base = '.'.join(package.split('.')[:len(package.split('.')) - node.level + 1] + ([base] if base else []))
            yield base
            if not node.module:  # from . import models
                yield from (f'{base}.{a.name}' for a in node.names)


def _subpackage(module: str) -> str:
    parts = module.split('.')
    return parts[1] if len(parts) > 1 else ''


def test_imports_point_one_way():
    assert set(ALLOWED) >= {_subpackage(_module_name(p)) for p in PACKAGE.rglob('*.py')}, 'new subpackage: place it'
    wrong = defaultdict(set)
    for path in PACKAGE.rglob('*.py'):
        module = _module_name(path)
        own = _subpackage(module)
        allowed = ALLOWED[own] | EXCEPTIONS.get(module, set()) | {own}
        for imported in _imports(path):
            top = imported.split('.')[0]
            if top in ('tools', 'scripts', 'tests'):
                wrong[module].add(imported)
            elif top == 'timm_cra' and _subpackage(imported) not in allowed:
                wrong[module].add(imported)
    assert not wrong, f'imports against the layering: {dict(wrong)}'


def test_tools_import_the_package_not_the_reverse():
    # tools/ is what maintains the repository: it builds on timm_cra, in one direction.
    users = [p for p in (REPO_ROOT / 'tools').glob('*.py') if 'timm_cra' in {n.split('.')[0] for n in _imports(p)}]
    assert users
    shipped = {n.split('.')[0] for p in PACKAGE.rglob('*.py') for n in _imports(p)}
    assert not shipped & {'tools', 'scripts', 'tests'}


# --- core install without the train extra ---------------------------------------------------------------
@pytest.fixture(scope='module')
def core_env(tmp_path_factory):
    """Environment whose interpreters behave as if only the core dependencies were installed: a
    ``sitecustomize`` blocks the train extra's own packages (nothing is uninstalled)."""
    site = tmp_path_factory.mktemp('core-only')
    (site / 'sitecustomize.py').write_text(textwrap.dedent(f'''
        import sys

        class _NotInstalled:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in {TRAIN_ONLY!r}:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)

        sys.meta_path.insert(0, _NotInstalled())
    '''))
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(REPO_ROOT)]), OMP_NUM_THREADS='1')


def _run(env, *args):
    return subprocess.run([sys.executable, *args], env=env, cwd=str(REPO_ROOT), capture_output=True, text=True,
                          timeout=120)


def test_core_import_and_create_model_without_the_extra(core_env):
    proc = _run(core_env, '-c', textwrap.dedent(f'''
        import sys
        for m in {TRAIN_ONLY!r}:
            try:
                __import__(m)
            except ImportError:
                pass
            else:
                raise SystemExit(f'{{m}} is importable: the blocker does not work')
        import timm, torch
        import timm_cra, timm_cra.hub.publish, timm_cra.hub.repo
        model = timm.create_model('cra_resnet18', num_classes=3).eval()
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)
        try:
            import timm_cra.train
        except ImportError as e:
            print(e)
        else:
            raise SystemExit('timm_cra.train imported without the train extra')
    '''))
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = proc.stdout.strip()
    assert line == f'timm_cra.train needs datasets, matplotlib, not installed: {TRAIN_INSTALL}'


@pytest.mark.parametrize('script', ['timm-cra-train', 'timm-cra-validate', 'timm-cra-checkpoint'])
def test_cli_help_without_the_extra(core_env, script):
    """The console script (as its wrapper runs it) prints its help without the extra: the parser imports none of
    the extra's modules."""
    proc = _run(core_env, '-c', f'from timm_cra.cli import {script[9:]}; {script[9:]}()', '--help')
    assert proc.returncode == 0 and proc.stdout.startswith(f'usage: {script} '), proc.stderr[-3000:]


@pytest.mark.parametrize('cli', [['-m', 'timm_cra.eval'],
                                 ['-c', 'from timm_cra.cli import train; train()']])  # timm-cra-train
@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_clis_without_the_extra_name_the_install(core_env, cli):
    """``--help`` works; a run says which extra to install, in one line, once its arguments are parsed."""
    proc = _run(core_env, *cli, '--help')
    assert proc.returncode == 0 and proc.stdout.startswith('usage: timm-cra-'), proc.stderr[-3000:]
    proc = _run(core_env, *cli, '--model', 'cra_cifar_resnet20', '--data-dir', 'nowhere')
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1].startswith('error: timm-cra-')
    assert proc.stderr.strip().endswith(TRAIN_INSTALL) and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize('module,script', [('timm_cra.train', 'train'), ('timm_cra.eval', 'validate'),
                                           ('timm_cra.export', 'export')])
@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_python_m_behaves_as_the_console_script_without_the_extra(core_env, module, script):
    """`python -m timm_cra.train --help` without the extra (matplotlib) was a MissingExtraError traceback while the
    console script printed its help: both run through one runner (utils.extras.run_command), so both print the same
    help, and a run the same one line."""
    console = ['-c', f'from timm_cra.cli import {script}; {script}()']
    helps = [_run(core_env, *cli, '--help') for cli in (['-m', module], console)]
    assert all(p.returncode == 0 for p in helps) and helps[0].stdout == helps[1].stdout, helps[0].stderr[-3000:]
    if script != 'export':  # export needs none of the train extra
        runs = [_run(core_env, *cli, '--model', 'cra_cifar_resnet20', '--data-dir', 'nowhere')
                for cli in (['-m', module], console)]
        assert [p.returncode for p in runs] == [2, 2] and runs[0].stderr == runs[1].stderr, runs[0].stderr[-3000:]
        assert runs[0].stderr.count('\n') == 1 and runs[0].stderr.strip().endswith(TRAIN_INSTALL)


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_help_names_defaults_and_the_subcommand(run_command):
    """train --help showed no text for --output (./output/train by default); validate's --help did not say that
    hf-hub: / local-dir: models load their weights by default (export's did); timm-cra-checkpoint with no
    subcommand said "the following arguments are required: cmd", a name the usage line never showed."""
    train = run_command('timm-cra-train', ['--help'])
    assert train.returncode == 0 and 'written into (default: ./output/train)' in ' '.join(train.stdout.split())
    validate = run_command('timm-cra-validate', ['--help'])
    assert 'default: on for hf-hub: / local-dir: names' in ' '.join(validate.stdout.split())
    checkpoint = run_command('timm-cra-checkpoint', [])
    assert checkpoint.returncode == 2 and checkpoint.stderr.splitlines()[0].startswith(
        'usage: timm-cra-checkpoint [-h] {upgrade}')
    assert checkpoint.stderr.strip().endswith('the following arguments are required: {upgrade}')


@pytest.mark.parametrize('command, argv, flag', [
    ('timm-cra-train', ['--model', 'cra_cifar_resnet20', '--output', ''], '--output'),
    ('timm-cra-publish', ['cra_cifar_resnet20.pets', 'last.pth', '--out', ''], '--out'),
    ('timm-cra-checkpoint', ['upgrade', 'last.pth', ''], 'OUT'),
])
@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_an_empty_output_path_is_refused_in_one_line(run_command, tmp_path, command, argv, flag):
    """An empty output path (an unset shell variable): train --output '' wrote its run into the current folder,
    exit 0; publish / convert --out '' said "--out  is the current folder"; checkpoint upgrade's OUT '' "Free space
    or choose a writable OUT". One line naming the flag, exit 2, before any work (utils.io.check_path_given)."""
    (tmp_path / 'last.pth').write_bytes(b'')  # an input that exists: the empty output is what is refused
    r = run_command(command, [str(tmp_path / a) if a.endswith('.pth') else a for a in argv])
    assert r.returncode == 2 and r.stderr == f'error: {flag} is an empty path (an unset shell variable?): give the ' \
                                             f"path to write ('.' for the current folder).\n", r.stderr[-2000:]


@pytest.mark.parametrize('command, argv, flag', [
    ('timm-cra-validate', ['--model', 'cra_cifar_resnet20', '--results-file', '-'], '--results-file'),
    ('timm-cra-export', ['--model', 'cra_cifar_resnet20', '-o', '-'], '--output'),
])
@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_a_dash_output_path_is_refused_not_written_as_a_file_named_dash(run_command, tmp_path, command, argv, flag):
    """'-' reads as stdout, but these paths are files: validate --results-file - wrote a file named '-' in the
    current folder. One line naming the flag and './-' for that name, exit 2, nothing written."""
    r = run_command(command, argv)
    assert r.returncode == 2 and r.stderr == f"error: {flag} is '-', which would be a file named '-', not standard " \
                                             f"output: give a path to write ('./-' if that name is meant).\n", r.stderr[-2000:]
    assert not (REPO_ROOT / '-').exists()
