"""Markdown tables the README embeds, generated from the registry so they never drift."""
import re
from pathlib import Path
from typing import List, Optional, Sequence

import timm

from .complexity import model_complexity

__all__ = ['complexity_rows', 'complexity_markdown', 'replace_marked_block']


def complexity_rows(model_names: Optional[Sequence[str]] = None) -> List[dict]:
    """Params and GMACs of each ``cra_*`` model and of the model it adds CRA to (``cra_`` removed), at the
    input size of the model's pretrained cfg."""
    rows = []
    for name in model_names or timm.list_models('cra_*'):
        base_name = name[len('cra_'):]
        input_size = timm.get_pretrained_cfg(name).input_size
        cra = model_complexity(timm.create_model(name), input_size)
        base = model_complexity(timm.create_model(base_name), input_size)
        rows.append(dict(
            model=name, input=input_size[-1], params=cra['params'], gmacs=cra['gmacs'],
            base_model=base_name, base_params=base['params'], base_gmacs=base['gmacs'],
        ))
    return rows


def complexity_markdown(rows: Sequence[dict]) -> str:
    lines = [
        '| model | input | params | GMACs | base model | base params | base GMACs | CRA params | CRA MMACs |',
        '|---|---:|---:|---:|---|---:|---:|---:|---:|',
    ]
    for r in rows:
        lines.append(
            f"| `{r['model']}` | {r['input']} | {r['params']:,} | {r['gmacs']:.3f} | `{r['base_model']}` | {r['base_params']:,} "
            f"| {r['base_gmacs']:.3f} | +{r['params'] - r['base_params']:,} "
            f"| +{(r['gmacs'] - r['base_gmacs']) * 1e3:.2f} |")
    return '\n'.join(lines) + '\n'


def replace_marked_block(path: Path, name: str, content: str) -> bool:
    """Replace the text between ``<!-- {name}:start -->`` and ``<!-- {name}:end -->``; True if changed."""
    text = path.read_text()
    pattern = re.compile(rf'(<!-- {re.escape(name)}:start -->\n).*?(<!-- {re.escape(name)}:end -->)', re.S)
    if not pattern.search(text):
        raise ValueError(f'{path}: no <!-- {name}:start --> ... <!-- {name}:end --> block to fill.')
    new = pattern.sub(lambda m: m.group(1) + content + m.group(2), text)
    if new != text:
        tmp = path.with_suffix(path.suffix + '.tmp')
        tmp.write_text(new)
        tmp.replace(path)
    return new != text
