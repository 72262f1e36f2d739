"""``python -m timm_cra.eval ...``: the validation CLI, run as the ``timm-cra-validate`` console script runs it."""
from ..utils.extras import run_command

if __name__ == '__main__':
    run_command('timm_cra.eval.validate')
