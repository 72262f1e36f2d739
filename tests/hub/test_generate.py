"""hub/ is generated from the registry and results/: regenerating must not change a byte."""
import json
from pathlib import Path

import timm
import timm_cra  # noqa: F401
from timm.models import PretrainedCfg

from tools.generate_hub import generate_hub, weight_tags
from timm_cra.models import WEIGHTS_GATES_UNTRAINED, weight_status_tags

ROOT = Path(__file__).resolve().parents[2]


def _files(root: Path):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob('*'))
            if p.is_file() and p.name in ('config.json', 'README.md')}


def test_weight_tags_cover_the_registry():
    tags = weight_tags()
    assert 'cra_resnet50.paper_in1k' in tags
    # Gates-untrained tags load another network's repo (timm's, or cifar_resnet20.cifar10): no folder of their own.
    borrowed = set(weight_status_tags(WEIGHTS_GATES_UNTRAINED))
    assert borrowed and not borrowed & set(tags)
    assert set(timm.list_pretrained('cra_*')) - borrowed <= set(tags)
    assert set(timm.list_pretrained('*cifar_resnet*')) - borrowed <= set(tags)
    assert not any(t.endswith('.untrained') for t in tags)


def test_committed_hub_folder_has_no_drift(tmp_path):
    generate_hub(tmp_path, ROOT / 'results')
    fresh, committed = _files(tmp_path), _files(ROOT / 'hub')
    assert sorted(fresh) == sorted(committed), 'run tools/generate_hub.py and commit hub/'
    for name in fresh:
        assert fresh[name] == committed[name], f'{name} drifted: run tools/generate_hub.py and commit hub/'


def test_paper_card_and_config():
    repo = ROOT / 'hub' / 'timm-cra' / 'cra_resnet50.paper_in1k'
    config = json.loads((repo / 'config.json').read_text())
    assert config['architecture'] == 'cra_resnet50' and config['num_classes'] == 1000
    PretrainedCfg(**config['pretrained_cfg'])  # only fields timm accepts
    card = (repo / 'README.md').read_text()
    assert card.startswith('---\nlibrary_name: timm\nlicense: unknown\n')
    for needle in ('Weights pending', 'value: 77.23', 'value: 93.53', '22.77', '6.47', "authors",
                   'carries no licence file', 'arXiv:2010.05605', 'import timm_cra', 'Params (M):** 26.31'):
        assert needle in card, needle
    assert not (repo / 'model.safetensors').exists()


def test_nothing_is_written_unless_every_input_is_right(tmp_path):
    """A mistyped --results wrote every card without its numbers (exit 0); a bad results file stopped the run after
    four repos were written; a symlinked README.md in --out had the card written through it, outside --out."""
    import shutil
    import pytest
    from timm_cra.utils.errors import UsageError
    out = tmp_path / 'hub'
    for bad in ('', victim_file := tmp_path / 'a-file'):
        victim_file.write_text('x')
        with pytest.raises(UsageError, match='--out'):
            generate_hub(bad, ROOT / 'results')
    with pytest.raises(UsageError, match=r'--results .*missing is not a folder'):
        generate_hub(out, tmp_path / 'missing')
    results = tmp_path / 'results'
    shutil.copytree(ROOT / 'results', results, ignore=shutil.ignore_patterns('*.png', 'cifar10*', 'detection',
                                                                              'retrofit', 'benchmark*', 'onnx*'))
    (results / f'{weight_tags()[-1]}.json').write_text('{"top1": "abc"}')
    with pytest.raises(UsageError):
        generate_hub(out, results)
    assert not out.exists()
    (results / f'{weight_tags()[-1]}.json').unlink()
    victim = tmp_path / 'victim.txt'
    victim.write_text('keep')
    repo = out / 'timm-cra' / weight_tags()[0]
    repo.mkdir(parents=True)
    (repo / 'README.md').symlink_to(victim)
    with pytest.raises(UsageError, match=r'README.md is a symlink: generate writes only into --out'):
        generate_hub(out, results)
    assert victim.read_text() == 'keep' and list(repo.iterdir()) == [repo / 'README.md']
