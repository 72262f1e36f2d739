"""``python -m timm_cra.eval ...``: the validation CLI (the ``timm-cra-validate`` console script runs the same
``main``)."""
from ..utils.errors import run_cli
from .validate import main

if __name__ == '__main__':
    run_cli(main)
