"""The generated model table (tools/model_table.py) and the marked doc blocks it is written into."""
import pytest

from tools.doc_blocks import find_block_file, read_block, replace_marked_block
from tools.model_table import (BLOCK, TAGS_BLOCK, UPDATE_COMMAND, complexity_markdown, complexity_rows,
                               gates_untrained_markdown)


@pytest.mark.slow  # over ~15 s on 2 cores (many processes or epochs): CI step 2
def test_docs_model_table_is_current():
    block = read_block(find_block_file(BLOCK), BLOCK)
    assert block == complexity_markdown(complexity_rows()), f"the docs' model table is stale: run {UPDATE_COMMAND}"


def test_docs_gates_untrained_table_is_current():
    block = read_block(find_block_file(TAGS_BLOCK), TAGS_BLOCK)
    assert block == gates_untrained_markdown(), f"the docs' gates-untrained tag table is stale: run {UPDATE_COMMAND}"


def test_replace_marked_block(tmp_path):
    p = tmp_path / 'doc.md'
    p.write_text('a\n<!-- t:start -->\nold\n<!-- t:end -->\nb\n')
    assert replace_marked_block(p, 't', 'new\n')
    assert p.read_text() == 'a\n<!-- t:start -->\nnew\n<!-- t:end -->\nb\n'
    assert not replace_marked_block(p, 't', 'new\n')
    with pytest.raises(ValueError, match='no <!-- x:start -->'):
        replace_marked_block(p, 'x', '')


def test_find_block_file_searches_readme_and_docs(tmp_path):
    (tmp_path / 'docs' / 'deep').mkdir(parents=True)
    (tmp_path / 'README.md').write_text('<!-- a:start -->\n<!-- a:end -->\n')
    (tmp_path / 'docs' / 'deep' / 'x.md').write_text('<!-- b:start -->\nB\n<!-- b:end -->\n<!-- a:start -->\n<!-- a:end -->\n')
    assert find_block_file('b', tmp_path) == tmp_path / 'docs' / 'deep' / 'x.md'
    assert read_block(find_block_file('b', tmp_path), 'b') == 'B\n'
    with pytest.raises(ValueError, match='exactly one doc file, found in: README.md, docs/deep/x.md'):
        find_block_file('a', tmp_path)
    with pytest.raises(ValueError, match='found in: none of'):
        find_block_file('c', tmp_path)
