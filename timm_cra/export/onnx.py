"""ONNX export of ``cra_*`` (and any timm) models, checked against PyTorch in onnxruntime.

Export goes through timm's own helper (:func:`timm.utils.onnx.onnx_export`: the TorchScript exporter, or
torch.export's with ``dynamo=True``) with a dynamic batch dimension at a fixed input size. ``torch.onnx`` has no
rule for adaptive max pooling whose output size does not divide the input (CRA pools 9x9 -> 7x7 at 288 px), so
:func:`export_friendly` first swaps each :class:`~timm_cra.layers.CraAttn` for :class:`CraAttnExport`: the same
module with its input size fixed, so that its pool takes PyTorch's exact adaptive windows (start ``floor(i*H/P)``,
end ``ceil((i+1)*H/P)``) as static slices and max/mean reductions, or a strided pool when the size divides
(:func:`~timm_cra.layers.cra_static.static_window_pool`). The sizes come from one probe forward pass at the export
size. The swap works on a copy; the given model is untouched.
"""
import copy
from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from ..layers import CraAttn
from ..layers.cra_static import adaptive_windows, static_window_pool  # noqa: F401 (part of this API)
from ..utils.errors import TimmCraError, UsageError
from ..utils.cli import check_input_size
from ..utils.io import atomic_path, check_output_file

__all__ = [
    'OnnxMismatchError', 'CraAttnExport', 'adaptive_windows', 'static_window_pool', 'export_friendly', 'export_onnx',
    'onnx_session', 'onnx_run', 'compare_onnx', 'require_onnx', 'check_export_args', 'EXPORT_EXTRA',
]

#: The pip extra that installs the export dependencies.
EXPORT_EXTRA = 'pip install "timm-cra[export]"'


def require_onnx(*modules: str) -> None:
    """Raise one line naming the extra when onnx / onnxruntime / onnxscript is missing."""
    import importlib
    for name in modules or ('onnx', 'onnxruntime'):
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise UsageError(f"ONNX export needs '{name}', which is not installed: {EXPORT_EXTRA}") from e


class CraAttnExport(CraAttn):
    """:class:`~timm_cra.layers.CraAttn` fixed to one input size: its pool runs the ``static_windows``
    implementation (:mod:`timm_cra.layers.cra_static`), the rest is CraAttn's own forward, out of place. Shares the
    source module's conv and gate (same parameter names: state dicts still match).
    """

    def __init__(self, src: nn.Module, in_size: Tuple[int, int]):
        nn.Module.__init__(self)  # not CraAttn's: the conv and gate are src's own modules
        missing = [a for a in ('pool_size', 'pool_type', 'conv', 'gate') if not hasattr(src, a)]
        if missing:
            raise TypeError(f'CraAttnExport: {type(src).__name__} lacks {missing}; update timm_cra.export for it.')
        self.pool_size = tuple(int(v) for v in src.pool_size)
        self.pool_type = src.pool_type
        self.conv = src.conv
        self.gate = src.gate
        self.inplace = False
        self.in_size = (int(in_size[0]), int(in_size[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_tracing() and tuple(x.shape[-2:]) != self.in_size:
            raise ValueError(f'CraAttnExport was built for {self.in_size} inputs, got {tuple(x.shape[-2:])}: '
                             f'call export_friendly with the input size to export.')
        return super().forward(x)

    def extra_repr(self) -> str:
        return f'in_size={self.in_size}, {super().extra_repr()}'


def export_friendly(model: nn.Module, input_size: Sequence[int]) -> nn.Module:
    """A copy of ``model`` for export at ``input_size`` (C, H, W): each :class:`CraAttn` is replaced by a
    :class:`CraAttnExport` whose windows are fixed from the map size that layer sees (one probe forward pass).
    Nothing global is patched and ``model`` itself is untouched.
    """
    model = copy.deepcopy(model).eval()
    cra = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
           if isinstance(child, CraAttn)]
    if not cra:
        return model
    sizes = {}

    def record(module, args):
        sizes.setdefault(id(module), tuple(args[0].shape[-2:]))  # returns None: the input is left as it is

    hooks = [child.register_forward_pre_hook(record) for _, _, child in cra]
    try:
        with torch.inference_mode():
            model(torch.zeros((1,) + tuple(input_size)))
    finally:
        for h in hooks:
            h.remove()
    for parent, name, child in cra:
        setattr(parent, name, CraAttnExport(child, sizes[id(child)]))
    return model


def check_export_args(input_size: Optional[Sequence[int]] = None, img_size: Optional[int] = None,
                      opset: Optional[int] = None, dynamo: bool = False) -> None:
    """Refuse, in one line and before any model is built, an input size outside the bounds a ``config.json`` is
    held to (:func:`~timm_cra.utils.cli.check_input_size`) and an ``opset`` the installed torch exporter does not write (a traceback from
    inside the exporter)."""
    check_input_size(img_size, input_size)
    if opset is not None:
        low, high = _opset_range(dynamo)
        if not low <= opset <= high:
            exporter = "torch.export's exporter (--dynamo)" if dynamo else 'the TorchScript exporter'
            raise UsageError(f'--opset {opset}: {exporter} of torch {torch.__version__} writes opsets {low} to '
                             f'{high}; pass one of those, or leave --opset out for its default.')


def _opset_range(dynamo: bool) -> Tuple[int, int]:
    """The ONNX opsets the installed torch exporter writes (torch's own constants; these bounds if it lacks them)."""
    try:
        from torch.onnx import _constants as c
    except ImportError:  # a torch without them: the ONNX opsets torch 2.x has supported
        return 7, (23 if dynamo else 20)
    low = getattr(c, 'ONNX_MIN_OPSET', 7)
    high = getattr(c, 'ONNX_MAX_OPSET', 23) if dynamo else \
        getattr(c, 'ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET', getattr(c, 'ONNX_MAX_OPSET', 20))
    return low, high


def _input_size(model: nn.Module, input_size: Optional[Sequence[int]], img_size: Optional[int]) -> Tuple[int, int, int]:
    check_export_args(input_size, img_size)
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    # The model's own channels first: the cfg keeps describing the source weights (3 for RGB weights built with
    # in_chans=1).
    own = getattr(model, 'in_chans', None)
    chans = own if isinstance(own, int) else int(cfg.get('input_size', (3,))[0])
    if input_size:
        if len(input_size) != 3 or min(input_size) < 1:
            raise UsageError(f'input size must be C H W (three positive integers), got {list(input_size)}.')
        if isinstance(own, int) and input_size[0] != own:
            raise UsageError(f'--input-size {" ".join(map(str, input_size))} has {input_size[0]} channels but the '
                             f'model takes {own}: make them match (or use --img-size).')
        return tuple(int(v) for v in input_size)
    if img_size is not None:
        if img_size < 1:
            raise UsageError(f'--img-size must be positive, got {img_size}.')
        return chans, img_size, img_size
    if 'input_size' not in cfg:
        raise UsageError('the model has no default input size: give --img-size or --input-size.')
    return (chans, *(int(v) for v in cfg['input_size'][1:]))


class OnnxMismatchError(TimmCraError, RuntimeError):
    """The exported graph's outputs in onnxruntime differ from PyTorch's by more than the tolerance."""


def export_onnx(
        model: nn.Module,
        output_file: str,
        input_size: Optional[Sequence[int]] = None,
        img_size: Optional[int] = None,
        opset: Optional[int] = None,
        dynamo: bool = False,
        verify_atol: Optional[float] = 1e-4,
        verify_batch_sizes: Sequence[int] = (1, 4),
) -> Dict[str, object]:
    """Export ``model`` (eval mode) to ``output_file`` with a dynamic batch dimension at a fixed input size.

    The input size is ``input_size`` (C, H, W), else ``img_size`` (square, the model's channels), else the
    model's pretrained cfg. CRA layers go through :func:`export_friendly`; the export itself is timm's
    :func:`~timm.utils.onnx.onnx_export` (TorchScript exporter, or torch.export's with ``dynamo``) followed by
    ``onnx.checker``. Unless ``verify_atol`` is None, the graph is run in onnxruntime (CPU) at each of
    ``verify_batch_sizes`` against the original PyTorch model and :class:`OnnxMismatchError` is raised when the
    max abs output difference exceeds ``verify_atol``. The file is written under a temporary name beside
    ``output_file`` and renamed only after all checks pass.

    Returns ``{'input_size': (C, H, W), 'max_abs_diff': {batch: diff}}``.
    """
    require_onnx('onnx', *(('onnxscript',) if dynamo else ()), *(('onnxruntime',) if verify_atol is not None else ()))
    check_export_args(opset=opset, dynamo=dynamo)
    from timm.utils.onnx import onnx_export

    size = _input_size(model, input_size, img_size)
    check_output_file(output_file, 'ONNX output', new_folders=False)
    was_training = model.training
    export_model = export_friendly(model, size)
    try:
        with atomic_path(output_file) as tmp:  # renamed onto output_file only when every check passed
            example = torch.randn((2,) + size)  # batch >= 2 so the batch dimension stays dynamic
            onnx_export(export_model, tmp, example_input=example, opset=opset, check=True, use_dynamo=dynamo,
                        external_data=False)
            diffs = {}
            if verify_atol is not None:
                diffs = compare_onnx(model, tmp, size, batch_sizes=verify_batch_sizes)
                worst = max(diffs.values())
                if not worst <= verify_atol:
                    raise OnnxMismatchError(
                        f'onnxruntime output differs from PyTorch by {worst:.3g} > {verify_atol:g} (max abs, per '
                        f'batch size: {diffs}); {output_file} was not written.')
    finally:
        model.train(was_training)
    return {'input_size': size, 'max_abs_diff': diffs}


def onnx_session(onnx_file: str, threads: int = 0):
    """An onnxruntime CPU session (``threads`` intra-op threads; 0: onnxruntime's default)."""
    require_onnx('onnxruntime')
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    if threads:
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(onnx_file, opts, providers=['CPUExecutionProvider'])


def onnx_run(session, x: torch.Tensor) -> torch.Tensor:
    """Run ``session`` on one input tensor; returns its first output as a tensor."""
    name = session.get_inputs()[0].name
    return torch.from_numpy(session.run(None, {name: x.detach().cpu().numpy()})[0])


def compare_onnx(
        model: nn.Module,
        onnx_file: str,
        input_size: Sequence[int],
        batch_sizes: Sequence[int] = (1, 4),
        seed: int = 0,
) -> Dict[int, float]:
    """Max abs output difference between ``model`` (PyTorch, eval) and ``onnx_file`` (onnxruntime CPU) per batch size.

    Each batch size gets its own random input (the same one for both runtimes); the PyTorch side runs the
    original model, so the comparison covers :func:`export_friendly` too.
    """
    session = onnx_session(onnx_file)
    gen = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    diffs = {}
    try:
        for b in batch_sizes:
            x = torch.randn((b,) + tuple(input_size), generator=gen)
            with torch.inference_mode():
                ref = model(x.clone())
            out = onnx_run(session, x)
            if out.shape != ref.shape:
                raise RuntimeError(f'onnxruntime output shape {tuple(out.shape)} != PyTorch {tuple(ref.shape)}')
            diffs[b] = (out.float() - ref.float()).abs().max().item()
    finally:
        model.train(was_training)
    return diffs
