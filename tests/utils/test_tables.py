from pathlib import Path

import pytest
import timm
import torch

import timm_cra  # noqa: F401
from timm_cra.utils import count_macs
from timm_cra.utils.tables import complexity_markdown, complexity_rows, replace_marked_block

README = Path(__file__).resolve().parents[2] / 'README.md'


def test_cra_adds_the_papers_074M_macs_to_resnet50():
    extra = count_macs(timm.create_model('cra_resnet50')) - count_macs(timm.create_model('resnet50'))
    # One 7x7 dot product per channel of every bottleneck output: sum(outplanes) * 49.
    assert extra == 49 * (3 * 256 + 4 * 512 + 6 * 1024 + 3 * 2048)
    assert round(extra / 1e6, 2) == 0.74


def test_macs_counted_by_flop_counter():
    conv = torch.nn.Conv2d(2, 4, 3, padding=1, bias=False)
    # 4 * 2 * 3 * 3 multiply-adds per output pixel, 5x5 pixels; counted on a meta copy, model untouched
    assert count_macs(conv, (2, 5, 5)) == 4 * 2 * 9 * 25
    assert conv.weight.device.type == 'cpu'


def test_readme_model_table_is_current():
    text = README.read_text()
    table = complexity_markdown(complexity_rows())
    assert table in text, 'README model table is stale: run python scripts/model_table.py --update-readme'


def test_replace_marked_block(tmp_path):
    p = tmp_path / 'doc.md'
    p.write_text('a\n<!-- t:start -->\nold\n<!-- t:end -->\nb\n')
    assert replace_marked_block(p, 't', 'new\n')
    assert p.read_text() == 'a\n<!-- t:start -->\nnew\n<!-- t:end -->\nb\n'
    assert not replace_marked_block(p, 't', 'new\n')
    with pytest.raises(ValueError, match='no <!-- x:start -->'):
        replace_marked_block(p, 'x', '')
