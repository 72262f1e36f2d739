"""Docs that cannot rot: relative links resolve, documented commands use flags their CLI has, and the tests
that docs/reliability.md names exist."""
import ast
import contextlib
import importlib
import inspect
import io
import re
import runpy
import shlex
from functools import lru_cache
from pathlib import Path
from unittest import mock

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / 'README.md', ROOT / 'CONTRIBUTING.md', *sorted((ROOT / 'docs').glob('*.md'))]
_LINK_RE = re.compile(r'\]\(([^)\s]+)\)')
_FENCE_RE = re.compile(r'```(\w*)\n(.*?)```', re.S)


def _slug(heading: str) -> str:
    """GitHub's anchor of a markdown heading."""
    text = re.sub(r'[^\w\- ]', '', heading.strip().lower())
    return text.replace(' ', '-')


def _anchors(path: Path):
    return {_slug(m.group(1)) for m in re.finditer(r'^#+ (.+)$', path.read_text(encoding='utf-8'), re.M)}


def _relative_links():
    for doc in DOCS:
        text = _FENCE_RE.sub('', doc.read_text(encoding='utf-8'))
        for target in _LINK_RE.findall(text):
            if not re.match(r'^[a-z]+:', target):
                yield doc, target


@pytest.mark.parametrize('doc,target', list(_relative_links()),
                         ids=lambda v: v.name if isinstance(v, Path) else v)
def test_relative_link_resolves(doc, target):
    path_part, _, anchor = target.partition('#')
    path = (doc.parent / path_part).resolve() if path_part else doc
    assert path.exists(), f'{doc.relative_to(ROOT)} links to missing {target}'
    if anchor and path.suffix == '.md':
        assert anchor in _anchors(path), f'{doc.relative_to(ROOT)}: no heading #{anchor} in {path.name}'


def _commands():
    """``(doc, cli, argv)`` for every documented command of this repository's CLIs: console scripts (checked as
    the module they run), ``python -m timm_cra...`` and ``scripts/`` / ``tools/`` files."""
    from timm_cra.cli import COMMANDS
    for doc in DOCS:
        for lang, block in _FENCE_RE.findall(doc.read_text(encoding='utf-8')):
            if lang not in ('', 'bash', 'sh'):
                continue
            for line in block.replace('\\\n', ' ').splitlines():
                line = line.split(' #', 1)[0].strip()
                try:
                    words = shlex.split(line)
                except ValueError:
                    continue
                for i, word in enumerate(words):
                    if word in COMMANDS:
                        yield doc, COMMANDS[word], words[i + 1:]
                        break
                    if re.fullmatch(r'(scripts|tools)/\w+\.py', word):
                        yield doc, word, words[i + 1:]
                        break
                    if word == '-m' and i + 1 < len(words) and words[i + 1].startswith('timm_cra'):
                        yield doc, words[i + 1], words[i + 2:]
                        break


@lru_cache(maxsize=None)
def _cli_help(cli: str) -> str:
    if cli.endswith('.py'):
        main = runpy.run_path(str(ROOT / cli), run_name='docs_check')['main']
    else:
        from timm_cra.cli import _MAIN_MODULES  # where `python -m <package>` finds the CLI's main
        main = importlib.import_module(_MAIN_MODULES.get(cli, cli)).main
    out = io.StringIO()
    takes_argv = bool(inspect.signature(main).parameters)
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit), \
            mock.patch('sys.argv', [cli, '--help']):
        main(['--help']) if takes_argv else main()
    return out.getvalue()


@pytest.mark.parametrize('doc,cli,argv', list(_commands()),
                         ids=lambda v: v.name if isinstance(v, Path) else (v if isinstance(v, str) else None))
def test_documented_command_flags_exist(doc, cli, argv):
    help_text = _cli_help(cli)
    known = set(re.findall(r'(?<![\w-])(--?[A-Za-z][\w-]*)', help_text))
    used = [a.split('=', 1)[0] for a in argv if a.startswith('-') and not re.fullmatch(r'-?\d+(\.\d+)?', a)]
    unknown = [f for f in used if f not in known and f != '...']
    assert not unknown, f'{doc.relative_to(ROOT)}: `{cli}` has no {unknown}'


def _named_tests():
    rows = [line for line in (ROOT / 'docs' / 'reliability.md').read_text(encoding='utf-8').splitlines()
            if line.startswith('|')]
    for cell in re.findall(r'`((?:\w+/)+\w+\.py(?:::\w+)?|::test_\w+)`', '\n'.join(rows)):
        yield cell


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_reliability_doc_names_existing_tests():
    names = list(_named_tests())
    assert len(names) > 20
    current = None
    for name in names:
        path, _, test = name.partition('::')
        if path:
            current = ROOT / 'tests' / path
            assert current.is_file(), f'docs/reliability.md names missing {path}'
        if test:
            functions = {n.name for n in ast.walk(ast.parse(current.read_text())) if isinstance(n, ast.FunctionDef)}
            assert test in functions, f'docs/reliability.md names missing {current.name}::{test}'


# --- The docs show users the data and weights they can get; tests run them on this project's local copies ----
#: Data sources the docs give users (downloaded from the Hub on first use) -> the local copy the tests run the
#: same commands on (no network here). Docs never name ../shared: that folder exists only on this project's
#: machines (tests and CI).
LOCAL_DATA = {'--dataset hfds/uoft-cs/cifar10': '--data-dir {shared}/cifar10'}
USER_DOCS = [d for d in DOCS if d.name != 'CONTRIBUTING.md']  # CONTRIBUTING is for developers of this repo


def _blocks(doc: Path, *langs: str):
    return [block for lang, block in _FENCE_RE.findall(doc.read_text(encoding='utf-8')) if lang in langs]


@pytest.mark.parametrize('doc', USER_DOCS, ids=lambda d: d.name)
def test_user_docs_commands_do_not_point_at_shared_data(doc):
    for block in _blocks(doc, '', 'bash', 'sh', 'python'):
        assert '../shared' not in block and '/work/' not in block, f'{doc.name}: {block.strip()[:200]}'


def _section_block(doc: Path, heading: str, lang: str) -> str:
    text = doc.read_text(encoding='utf-8')
    section = text.split(f'\n## {heading}\n', 1)[1].split('\n## ', 1)[0]
    (block,) = [b for la, b in _FENCE_RE.findall(section) if la == lang][:1]
    return block


def _local(command: str, shared: Path) -> list:
    for user_source, local in LOCAL_DATA.items():
        command = command.replace(user_source, local.format(shared=shared))
    assert '{shared}' not in command
    return shlex.split(command)


@pytest.mark.slow  # ~40 s on 2 busy cores: subprocesses importing torch, real data / weights
def test_readme_train_and_validate_commands_run(shared_data, tmp_path):
    """The README's two commands, in order, on the local CIFAR-10 copy (LOCAL_DATA), shortened with flags that
    only limit the work; the second validates what the first wrote."""
    import json
    import os
    import subprocess
    import sys
    train, validate = [ln for ln in _section_block(ROOT / 'README.md', 'Train and validate', 'bash').splitlines()
                       if ln.strip()]
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE='1', HF_DATASETS_OFFLINE='1', OMP_NUM_THREADS='1')
    short = {'train': ['--epochs', '1', '--train-num-samples', '64', '--val-num-samples', '32', '--batch-size',
                       '32', '--no-plot'], 'eval': ['--num-samples', '32']}
    from timm_cra.cli import COMMANDS
    for command, extra in ((train, short['train']), (validate, short['eval'])):
        argv = _local(command, shared_data)
        assert argv[0] in COMMANDS, command  # the console script, run here as `python -m` from this checkout
        proc = subprocess.run([sys.executable, '-m', COMMANDS[argv[0]], *argv[1:], *extra], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f'{command}\n{proc.stderr[-3000:]}'
    assert (tmp_path / 'output' / 'train' / 'r20' / 'model.safetensors').is_file()
    result = json.loads(proc.stdout[proc.stdout.index('{'):])
    assert result['top1'] is not None and result.get('count', 32) == 32


@pytest.mark.slow  # ~40 s on 2 busy cores: subprocesses importing torch, real data / weights
def test_readme_python_blocks_run_as_written(tmp_path):
    """Each Python block of the README, in order, in a fresh interpreter (so a block that forgets an import
    fails). Hub downloads go to a loopback Hub: hub/ (the CIFAR repos) and a stand-in of timm's
    timm/resnet50.a1_in1k repo (random weights in timm's own file layout) for the gates-untrained tag."""
    import os
    import subprocess
    import sys
    import timm
    from timm.models import get_pretrained_cfg, save_for_hf
    import timm_cra  # noqa: F401
    from timm_cra.hub.server import HubFolderServer
    blocks = _blocks(ROOT / 'README.md', 'python')
    assert len(blocks) >= 2
    bases = set(re.findall(r"'(cra_\w+)\.(\w+)_gates_untrained'", '\n'.join(blocks)))
    assert bases, 'the README shows a gates-untrained tag'
    root = tmp_path / 'hub'
    for arch, _ in bases:
        repo = get_pretrained_cfg(f"{arch}.{_}_gates_untrained").hf_hub_id
        base_arch = repo.split('/')[1].split('.')[0]
        save_for_hf(timm.create_model(base_arch), root / repo, safe_serialization=True)
    with HubFolderServer([root, ROOT / 'hub']) as hub:
        env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE='0', HF_ENDPOINT=hub.endpoint,
                   HF_HUB_CACHE=str(tmp_path / 'cache'), NO_PROXY='127.0.0.1,localhost', OMP_NUM_THREADS='1')
        for i, block in enumerate(blocks):
            proc = subprocess.run([sys.executable, '-c', block], cwd=tmp_path, env=env, capture_output=True,
                                  text=True, timeout=300)
            assert proc.returncode == 0, f'README python block {i + 1}:\n{block}\n{proc.stderr[-3000:]}'
            if i == 0:
                assert "'cra_resnet50'" in proc.stdout and 'cra_cifar_resnet20.cifar10' in proc.stdout


def test_hub_offline_weights_file_recipe_loads_the_files_head(tmp_path, monkeypatch):
    """docs/hub.md's offline recipe, run as written on real files: a file of the tag's class count and a
    fine-tune of another count both load their own classifier. The old recipe (the count only as an argument)
    silently kept a random head: timm drops the classifier when num_classes differs from the cfg's."""
    import timm
    import torch
    from safetensors.torch import save_file
    import timm_cra  # noqa: F401
    block = _section_block(ROOT / 'docs' / 'hub.md', 'Offline use', 'python')
    (tmp_path / 'path' / 'to').mkdir(parents=True)
    files = {}
    for name, classes in (('model', 10), ('cifar100', 100)):
        torch.manual_seed(classes)
        files[name] = timm.create_model('cra_cifar_resnet20', num_classes=classes).state_dict()
        save_file(files[name], tmp_path / 'path' / 'to' / f'{name}.safetensors')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    namespace = {}
    exec(compile(block, 'docs/hub.md', 'exec'), namespace)  # noqa: S102  (the docs' own code)
    for var, name in (('model', 'model'), ('finetuned', 'cifar100')):
        loaded = namespace[var].state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in files[name].items()), var
    # What the recipe guards against: without the overlay's count, the 100-class head is not the file's.
    random_head = timm.create_model('cra_cifar_resnet20', pretrained=True, num_classes=100,
                                    pretrained_cfg_overlay=dict(file='path/to/cifar100.safetensors'))
    assert not torch.equal(random_head.state_dict()['fc.weight'], files['cifar100']['fc.weight'])


def test_readme_weight_tag_numbers_are_the_results_files():
    """The README's weight-tag table is written by hand; its top-1 must be the tag's results file (a republish of
    another seed changed the card and results, and the README row went on quoting the old seed)."""
    import json
    from tools.doc_blocks import ROOT, readme_weight_tags
    rows = readme_weight_tags()
    assert {'cra_cifar_resnet20.cifar10', 'cra_cifar_resnet20.cifar10_e50', 'cra_resnet50.paper_in1k'} <= set(rows)
    for name, shown in rows.items():
        result = json.loads((ROOT / 'results' / f'{name}.json').read_text())
        top1 = result['top1'] if result.get('top1') is not None else 100 - result['top1_err']
        assert f'{top1:.2f}' == shown, f'README.md shows {shown}% for {name}; results/{name}.json has {top1:.2f}'
