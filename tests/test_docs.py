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
    """``(doc, cli, argv)`` for every documented command of this repository's CLIs."""
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
        module = importlib.import_module(cli)
        main = getattr(module, 'main', None) or importlib.import_module(f'{cli}.__main__').main
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
