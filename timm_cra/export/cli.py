"""``python -m timm_cra.export``: export a model (registry name, ``local-dir:`` / ``hf-hub:`` tag, or checkpoint)
to ONNX with a dynamic batch dimension, checked against PyTorch in onnxruntime before the file is written."""
import argparse
import os
import sys
from typing import Optional, Sequence


from ..models import check_model_name
from ..utils.cli import (CommandParser, add_in_chans_arg, check_use_ema, input_files, keyword_args_action,
                         resolve_pretrained)
from ..utils.errors import TimmCraError, UsageError, printable
from ..utils.io import check_output_file
from ..utils.weights import load_fitting_weights, recorded_data_config
from .onnx import OnnxMismatchError, check_export_args, export_onnx, require_onnx

__all__ = ['create_parser', 'main']


def create_parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog='timm-cra-export', allow_abbrev=False,
        description='Export a timm / timm-cra model to ONNX (dynamic batch, fixed input size), '
                    'verified in onnxruntime.')
    add = p.add_argument
    add('--model', '-m', required=True, help='model name (cra_resnet50, cra_resnet50.paper_in1k), '
        'hf-hub:org/repo or local-dir:PATH')
    add('--output', '-o', required=True, metavar='FILE', help='the .onnx file to write')
    add('--pretrained', action=argparse.BooleanOptionalAction, default=None,
        help='load the named weights (default: on for hf-hub: / local-dir: names, off for registry names)')
    add('--checkpoint', default='', metavar='PATH', help='model.safetensors, state dict, or trainer checkpoint')
    add('--use-ema', action='store_true', default=False, help='use the EMA weights of a trainer checkpoint')
    add('--num-classes', type=int, default=None)
    add_in_chans_arg(p)
    add('--model-kwargs', nargs='*', default={}, action=keyword_args_action(), metavar='K=V',
        help='extra create_model kwargs')
    add('--img-size', type=int, default=None, help="square input size (default: the model's)")
    add('--input-size', type=int, nargs=3, default=None, metavar=('C', 'H', 'W'))
    add('--opset', type=int, default=None, help="ONNX opset (default: the exporter's)")
    add('--dynamo', action='store_true', default=False,
        help="use torch.export's ONNX exporter (needs onnxscript; slower) instead of the TorchScript one")
    add('--atol', type=float, default=1e-4, help='max abs output difference allowed in the onnxruntime check')
    add('--no-verify', action='store_true', default=False, help='skip the onnxruntime check')
    return p


def _create_model(args):
    import timm_cra
    check_model_name(args.model, flag='--model')
    kwargs = dict(args.model_kwargs or {})
    if args.in_chans is not None:
        kwargs['in_chans'] = args.in_chans
    if args.num_classes is not None:
        kwargs['num_classes'] = args.num_classes
    pretrained = resolve_pretrained(args.pretrained, args.model)

    def create(**from_weights):
        try:
            return timm_cra.create_model(args.model, pretrained=pretrained, **kwargs, **from_weights)
        except (TimmCraError, TypeError) as e:  # TypeError: --model-kwargs the architecture does not take
            raise UsageError(f"Cannot create model '{args.model}': {' '.join(str(e).split())}") from e

    model = create()
    if args.checkpoint:  # its class count and channels, unless the flags set them (validate reads it the same way)
        model, ckpt = load_fitting_weights(model, args.checkpoint, create, keep=kwargs, use_ema=args.use_ema)
        if args.input_size is None and args.img_size is None:  # the size it was trained at, as validate reads it
            run_args = ckpt.get('args') if isinstance(ckpt, dict) and isinstance(ckpt.get('args'), dict) else None
            recorded, where = recorded_data_config(args.checkpoint, run_args)
            size = recorded.get('input_size') or [recorded.get('img_size')] * 2
            try:
                if size[-1] is not None:  # the model's channels: the data followed them in the run
                    args.input_size = [getattr(model, 'in_chans', 3), int(size[-2]), int(size[-1])]
            except (TypeError, ValueError, IndexError):
                raise UsageError(printable(f'The input size recorded in {where} ({size!r:.60}) is not H W: pass '
                                           f'--img-size or --input-size.')) from None
    return model


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = create_parser().parse_args(argv)
    if args.atol is not None and not 0 <= args.atol < float('inf'):  # nan too; inf: the check could never fail
        raise UsageError(f'--atol must be a finite number >= 0, got {args.atol}.')
    check_use_ema(args.use_ema, args.checkpoint)
    check_export_args(args.input_size, args.img_size, args.opset, args.dynamo)
    require_onnx('onnx', *(('onnxscript',) if args.dynamo else ()), *(() if args.no_verify else ('onnxruntime',)))
    # Before the model is built: a device, a folder or the command's own input is refused.
    check_output_file(args.output, '--output', input_files(args.model, args.checkpoint), new_folders=False)
    if not str(args.output).lower().endswith('.onnx'):  # `-o runs/y/last.pth` replaced a checkpoint with ONNX
        held = ' (an existing file, which the export would replace)' if os.path.lexists(args.output) else ''
        raise UsageError(printable(f'--output {args.output}{held} is not named .onnx: give the ONNX file a name of its '
                                   f'own ending in .onnx (e.g. model.onnx).'))
    model = _create_model(args)
    try:
        result = export_onnx(model, args.output, input_size=args.input_size, img_size=args.img_size, opset=args.opset,
                             dynamo=args.dynamo, verify_atol=None if args.no_verify else args.atol)
    except OnnxMismatchError as e:
        print(f'error: {printable(e)}', file=sys.stderr)
        sys.exit(1)
    c, h, w = result['input_size']
    checked = ', '.join(f'batch {b}: {d:.2g}' for b, d in result['max_abs_diff'].items())
    print(f"wrote {printable(args.output)}: input (batch, {c}, {h}, {w}), dynamic batch"
          + (f"; onnxruntime vs PyTorch max abs diff {checked}" if checked else ''))
    return result
