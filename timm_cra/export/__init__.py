"""Deployment exports: ONNX (``python -m timm_cra.export``), checked in onnxruntime."""
from .onnx import (
    EXPORT_EXTRA, CraAttnExport, OnnxMismatchError, adaptive_windows, compare_onnx, export_friendly, export_onnx,
    onnx_run, onnx_session, require_onnx, static_window_pool,
)

__all__ = [
    'CraAttnExport', 'EXPORT_EXTRA', 'OnnxMismatchError', 'adaptive_windows', 'compare_onnx', 'export_friendly',
    'export_onnx', 'onnx_run', 'onnx_session', 'require_onnx', 'static_window_pool',
]
