"""``python -m timm_cra.export --model NAME --output FILE.onnx [--img-size N]``: ONNX export (see ``cli``), run as
the ``timm-cra-export`` console script runs it."""
from ..utils.extras import run_command

if __name__ == '__main__':
    run_command('timm_cra.export.cli')
