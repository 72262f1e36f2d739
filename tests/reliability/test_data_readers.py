"""What a stranger found in the data readers (campaign 5), fed the real inputs through the real CLIs and readers."""
import json

import numpy as np
import pytest
from PIL import Image

from .test_data_strangers import _run


def _class_folders(root, h, w, n=4):
    """train/ and val/ with classes cat and dog of ``h`` x ``w`` PNGs; the top half tells the class."""
    rng = np.random.default_rng(0)
    for split in ('train', 'val'):
        for ci, c in enumerate(('cat', 'dog')):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                a[:h // 2] = 200 if ci else 30
                Image.fromarray(a).save(root / split / c / f'{i}.png')
    return root


@pytest.mark.parametrize('h,w', [(48, 32), (32, 48)])
def test_in_memory_training_evaluates_like_validate_on_non_square_images(tmp_path, cli_env, h, w):
    """--in-memory evaluated 48x32 images at 48x32 and squashed 32x48 ones to 32x32, while validate resizes and
    centre-crops to the recorded input_size (3, 32, 32): best_top1 100.00 vs validate 90.625 on the same weights.
    Now the in-memory images are brought to the input size by validate's own transform: the trainer's final eval
    is validate's result on the weights it exported."""
    data = _class_folders(tmp_path / 'ns', h, w)
    r = _run('timm_cra.train', ['--config', 'cifar', '--model', 'cra_cifar_resnet20', '--in-memory', '-b', '4',
                                '--workers', '0', '--epochs', '1', '--data-dir', data, '--val-split', 'val',
                                '--output', tmp_path / 'out', '--experiment', 'run', '--no-plot'], cli_env, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    final = json.loads((tmp_path / 'out' / 'run' / 'results.json').read_text())['final']
    r = _run('timm_cra.eval', ['--model', f'local-dir:{tmp_path / "out" / "run"}', '--data-dir', data, '--split', 'val',
                               '--workers', '0', '--no-progress', '--results-file', tmp_path / 'v.json'],
             cli_env, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    validated = json.loads((tmp_path / 'v.json').read_text())
    assert validated['count'] == 8 and validated['img_size'] == 32
    assert final['eval_top1'] == pytest.approx(validated['top1'], abs=1e-3)
    assert final['eval_loss'] == pytest.approx(validated['loss'], abs=1e-5)

