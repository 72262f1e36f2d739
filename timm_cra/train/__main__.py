"""``python -m timm_cra.train ...``: the training CLI from a pip install (same as ``scripts/train.py``)."""
from ..utils.errors import run_cli
from .trainer import main

if __name__ == '__main__':
    run_cli(main)
