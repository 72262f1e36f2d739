"""tools/onnx_benchmark.py end to end on two tiny models: the JSON and Markdown it writes."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from timm_cra.utils.errors import run_cli

pytest.importorskip('onnxruntime', reason='needs the export extra: pip install "timm-cra[export]"')

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_onnx_benchmark_writes_interleaved_ratios(tmp_path):
    cmd = [sys.executable, str(REPO_ROOT / 'tools' / 'onnx_benchmark.py'), '--models', 'cra_cifar_resnet20',
           'cifar_resnet20', '--base', 'cifar_resnet20', '--batch-sizes', '1', '2', '--img-size', '32',
           '--threads', '1', '--rounds', '2', '--warmup', '1', '--min-time', '0.01', '--out-dir', str(tmp_path)]
    env = {'PYTHONPATH': str(REPO_ROOT), 'OMP_NUM_THREADS': '1', 'HF_HUB_OFFLINE': '1', 'PATH': '/usr/bin:/bin'}
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    (json_file,) = tmp_path.glob('onnx-*-cpu1.json')
    report = json.loads(json_file.read_text())
    rows = {(row['model'], row['batch']): row for row in report['results']}
    assert set(rows) == {(m, b) for m in ('cra_cifar_resnet20', 'cifar_resnet20') for b in (1, 2)}
    for (model, batch), row in rows.items():
        assert len(row['ms_rounds']) == 2 and row['ms_min'] == min(row['ms_rounds']) > 0
        assert row['ratio_min'] == pytest.approx(row['ms_min'] / rows['cifar_resnet20', batch]['ms_min'])
    assert rows['cifar_resnet20', 1]['ratio_min'] == 1.0
    md = json_file.with_suffix('.md').read_text()
    assert '| cra_cifar_resnet20 | 2 |' in md and 'ratio to cifar_resnet20' in md
    assert not list(tmp_path.glob('*.tmp'))


def test_onnx_benchmark_base_must_be_measured(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location('onnx_benchmark', REPO_ROOT / 'tools' / 'onnx_benchmark.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(tool.main, ['--models', 'cra_cifar_resnet20', '--base', 'resnet50', '--out-dir', str(tmp_path)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --base resnet50 must be one of --models ['cra_cifar_resnet20']."]
    assert list(tmp_path.iterdir()) == []
