"""Generated blocks of the docs: text between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` markers."""
import re
from pathlib import Path
from typing import Dict, List, Optional

__all__ = ['ROOT', 'doc_files', 'find_block_file', 'read_block', 'replace_marked_block', 'readme_weight_tags']

ROOT = Path(__file__).resolve().parents[1]


def _pattern(name: str) -> 're.Pattern':
    return re.compile(rf'(<!-- {re.escape(name)}:start -->\n)(.*?)(<!-- {re.escape(name)}:end -->)', re.S)


def doc_files(root: Path = ROOT) -> List[Path]:
    """README.md and every markdown file under docs/: where generated blocks may live."""
    return [p for p in [root / 'README.md', *sorted((root / 'docs').rglob('*.md'))] if p.is_file()]


def find_block_file(name: str, root: Path = ROOT) -> Path:
    """The one doc file holding block ``name``."""
    found = [p for p in doc_files(root) if _pattern(name).search(p.read_text())]
    if len(found) != 1:
        where = ', '.join(str(p.relative_to(root)) for p in found) or 'none of README.md, docs/*.md'
        raise ValueError(f'block <!-- {name}:start --> must be in exactly one doc file, found in: {where}.')
    return found[0]


def read_block(path: Path, name: str) -> Optional[str]:
    """The text of block ``name`` in ``path`` (None if the file has no such block)."""
    m = _pattern(name).search(Path(path).read_text())
    return m.group(2) if m else None


def replace_marked_block(path: Path, name: str, content: str) -> bool:
    """Replace the text between ``<!-- {name}:start -->`` and ``<!-- {name}:end -->``; True if changed."""
    text = path.read_text()
    pattern = _pattern(name)
    if not pattern.search(text):
        raise ValueError(f'{path}: no <!-- {name}:start --> ... <!-- {name}:end --> block to fill.')
    new = pattern.sub(lambda m: m.group(1) + content + m.group(3), text)
    if new != text:
        tmp = path.with_suffix(path.suffix + '.tmp')
        tmp.write_text(new)
        tmp.replace(path)
    return new != text


def readme_weight_tags(root: Path = ROOT) -> Dict[str, str]:
    """The README's weight-tag table as written by hand: ``{'<arch>.<tag>': '<top-1 text>'}`` for each row whose
    second cell is a percentage (``| `cra_cifar_resnet20.cifar10` | 82.91% (CIFAR-10 test ...) | ...``)."""
    rows = re.findall(r'^\| `([a-z0-9_]+\.[a-z0-9_]+)` \| (\d+\.\d+)% ', (root / 'README.md').read_text(), re.M)
    return dict(rows)
