"""``python -m timm_cra.train ...``: the training CLI, run as the ``timm-cra-train`` console script runs it."""
from ..utils.extras import run_command

if __name__ == '__main__':
    run_command('timm_cra.train.trainer')
