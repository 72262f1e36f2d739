"""``python -m timm_cra.train ...``: the training CLI (the ``timm-cra-train`` console script runs the same ``main``)."""
from ..utils.errors import run_cli
from .trainer import main

if __name__ == '__main__':
    run_cli(main)
