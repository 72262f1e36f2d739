"""The docs' speed and memory tables (tools/benchmark_table.py): rendered from the benchmark's real JSON,
and every block in the docs matches the results files it cites."""
import dataclasses
import json
import re
from pathlib import Path

from timm_cra.benchmark import benchmark_models
from timm_cra.benchmark.report import load_run
from tools.benchmark_table import DEFAULT_BLOCK, speed_tables
from tools.doc_blocks import ROOT, doc_files


def test_tables_from_a_benchmark_json(tmp_path):
    res = benchmark_models('cra_resnet18', variants=['base', 'cra', 'se'], batch_sizes=[1], modes=['train'],
                           settings=['eager'], img_size=32, rounds=2, warmup=1, train_batch_size=2, log=lambda _: None)
    # the JSON as tools/benchmark.py writes it
    meta = dict(date='d', device='cpu', torch='t', rounds=2, bf16=False)
    path = tmp_path / 'run.json'
    path.write_text(json.dumps(dict(meta=meta, results=[dataclasses.asdict(r) for r in res])))
    table = speed_tables([('run.json', *load_run(path))])
    cra = next(r for r in res if r.variant == 'cra')
    assert '| cra_resnet18 | eager, fp32 | train | 2 |' in table
    assert f'{cra.ratio_min:.3f} ({cra.ratio_median:.3f})' in table
    assert '| cra_resnet18 |' in table.split('ratio to the base model:')[1]
    assert 'Rendered by `python tools/benchmark_table.py results/run.json --update-docs`' in table


def test_docs_speed_tables_match_the_results_files():
    # One marked block per machine measured, in README.md or docs/*.md; every file a block cites must
    # render to it, with the command the block states.
    blocks = [(doc, name, block) for doc in doc_files() for name, block in
              re.findall(r'<!-- (speed-table[\w-]*):start -->\n(.*?)<!-- \1:end -->', doc.read_text(), re.S)]
    assert DEFAULT_BLOCK in [name for _, name, _ in blocks]
    for doc, name, block in blocks:
        where = f'{doc.relative_to(ROOT)} {name}'
        command = re.search(r'Rendered by `python tools/benchmark_table.py (.*?) --update-docs`', block)
        assert command, f'{where} does not say how it was rendered (python tools/benchmark_table.py ...)'
        args = command.group(1).split()
        target = args[args.index('--block') + 1] if '--block' in args else DEFAULT_BLOCK
        assert target == name, f'{where} says it renders into {target}'
        files = [Path(f).name for f in args if f.endswith('.json')]
        cited = set(re.findall(r'\| (benchmark-[\w.-]+\.json) \|', block))
        assert cited and cited <= set(files)
        runs = [(f, *load_run(ROOT / 'results' / f)) for f in files]
        assert speed_tables(runs, block=name) == block, (
            f'{where} is stale: run python tools/benchmark_table.py <files> --block {name} --update-docs')
