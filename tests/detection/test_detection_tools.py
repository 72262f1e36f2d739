"""tools/make_shapes_dataset.py and tools/detection_experiment.py, run as a user runs them (subprocesses)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / 'tools'


def _run(cli_env, script, *argv, timeout=300):
    return subprocess.run([sys.executable, str(TOOLS / script), *map(str, argv)], env=cli_env, cwd=str(REPO),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope='module')
def shapes(cli_env, tmp_path_factory):
    out = tmp_path_factory.mktemp('shapes')
    r = _run(cli_env, 'make_shapes_dataset.py', '--out', out, '--n-train', 12, '--n-val', 4)
    assert r.returncode == 0, r.stderr
    return out


def test_shapes_are_deterministic_and_boxes_valid(cli_env, shapes, tmp_path):
    again = tmp_path / 'again'
    assert _run(cli_env, 'make_shapes_dataset.py', '--out', again, '--n-train', 12, '--n-val', 4).returncode == 0
    for split, n in (('train', 12), ('val', 4)):
        meta = json.loads((shapes / split / 'annotations.json').read_text())
        assert meta == json.loads((again / split / 'annotations.json').read_text())
        assert len(meta['images']) == n and meta['classes'] == ['square', 'circle', 'triangle']
        for rec in meta['images']:
            a = np.asarray(Image.open(shapes / split / rec['file']))
            assert a.shape == (128, 128, 3)
            assert np.array_equal(a, np.asarray(Image.open(again / split / rec['file'])))
            assert len(rec['boxes']) == len(rec['labels']) >= 1 and set(rec['labels']) <= {1, 2, 3}
            for x1, y1, x2, y2 in rec['boxes']:
                assert 0 <= x1 < x2 <= 128 and 0 <= y1 < y2 <= 128
    train = json.loads((shapes / 'train' / 'annotations.json').read_text())['images']
    val = json.loads((shapes / 'val' / 'annotations.json').read_text())['images']
    assert [r['boxes'] for r in train[:4]] != [r['boxes'] for r in val]  # held-out images are other images
    assert not list(shapes.glob('.*.tmp'))


@pytest.mark.slow  # ~15 s alone, ~45 s on busy shared cores
def test_experiment_runs_end_to_end_on_the_generated_set(cli_env, shapes, tmp_path):
    pytest.importorskip('torchmetrics', reason="the 'detection' extra (torchmetrics) is not installed")
    pytest.importorskip('pycocotools', reason="the 'detection' extra (pycocotools) is not installed")
    out = tmp_path / 'res.json'
    r = _run(cli_env, 'detection_experiment.py', '--data', shapes, '--models', 'cra_resnet18', '--epochs', 1,
             '--batch-size', 6, '--out', out)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    (run,) = res['runs']
    assert run['model'] == 'cra_resnet18' and len(run['history']) == 1
    assert 0.0 <= run['map_50'] <= 1.0 and np.isfinite(run['history'][0]['loss'])
    assert res['config']['n_train'] == 12 and res['config']['n_val'] == 4
    assert res['summary']['cra_resnet18']['map_50'] == [round(run['map_50'], 4)]
