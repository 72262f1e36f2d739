"""Real clients of a published repo folder, shared by tests/hub and tests/journeys: timm, transformers (its
pipeline, or image processor + model) and the card's own usage code run as a user would run it."""
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Sequence

import torch
from PIL import Image

from timm_cra.hub.card import USAGE_IMAGE

from tests.conftest import REPO_ROOT


def python_blocks(card: str) -> List[str]:
    """Every ```python block of a model card."""
    return re.findall(r'```python\n(.*?)```', card, flags=re.S)


def run_card_code(folder: Path, image: Path, env: Dict[str, str] = None) -> List[str]:
    """Run each python block of ``folder/README.md`` in a fresh interpreter, with ``your_image.png`` replaced by
    ``image``; returns their stdouts (each block must exit 0)."""
    card = (Path(folder) / 'README.md').read_text()
    blocks = python_blocks(card)
    assert blocks and all(USAGE_IMAGE in b for b in blocks), 'every usage block opens the user image'
    outputs = []
    for code in blocks:
        proc = subprocess.run([sys.executable, '-c', code.replace(USAGE_IMAGE, str(image))], cwd=str(folder),
                              env=dict(env or os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS='1'),
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f'card code failed:\n{code}\n{proc.stderr[-3000:]}'
        outputs.append(proc.stdout)
    return outputs


def timm_top1(model, images: Sequence[Image.Image]) -> List[int]:
    """Top-1 class of each image with timm's own eval transform of the model's data config."""
    import timm
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model), is_training=False)
    with torch.no_grad():
        return model.eval()(torch.stack([transform(img) for img in images])).argmax(-1).tolist()


def transformers_model(folder: Path):
    import timm_cra  # noqa: F401  (transformers builds the model with timm.create_model: cra_* must exist)
    from transformers import AutoModelForImageClassification
    return AutoModelForImageClassification.from_pretrained(str(folder)).eval()


def pipeline_top1(folder: Path, images: Sequence[Image.Image]) -> List[str]:
    """Top-1 label of each image through ``pipeline('image-classification')`` (which loads images as RGB)."""
    import timm_cra  # noqa: F401
    from transformers import pipeline
    classify = pipeline('image-classification', model=str(folder))
    return [classify(img, top_k=1)[0]['label'] for img in images]


def processor_top1(folder: Path, images: Sequence[Image.Image]) -> List[int]:
    """Top-1 index through transformers' image processor + model, images passed in their own mode (e.g. 'L')."""
    from transformers import AutoImageProcessor
    model = transformers_model(folder)
    processor = AutoImageProcessor.from_pretrained(str(folder))
    with torch.no_grad():
        return model(**processor(list(images))).logits.argmax(-1).tolist()
