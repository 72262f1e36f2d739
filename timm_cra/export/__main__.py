"""``python -m timm_cra.export --model NAME --output FILE.onnx [--img-size N]``: ONNX export (see ``cli``)."""
from ..utils.errors import run_cli
from .cli import main

if __name__ == '__main__':
    run_cli(main)
