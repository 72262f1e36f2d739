"""``python -m timm_cra.eval ...``: the validation CLI from a pip install (same as ``scripts/validate.py``)."""
from ..utils.errors import run_cli
from .validate import main

if __name__ == '__main__':
    run_cli(main)
