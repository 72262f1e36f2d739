"""Speed and memory of CRA against its base model and other channel gates (SE, ECA, a bare gate)."""
from .variants import (ATTENTION_VARIANTS, INFERENCE_ONLY_VARIANTS, ConvKernelCraAttn, MeanGate, NaiveCraAttn,
                       swap_attention)
from .runner import (BenchResult, benchmark_layers, benchmark_models, benchmark_primitives, cpu_description,
                     saved_activation_bytes)

__all__ = [
    'ATTENTION_VARIANTS', 'INFERENCE_ONLY_VARIANTS', 'ConvKernelCraAttn', 'MeanGate', 'NaiveCraAttn', 'swap_attention',
    'BenchResult', 'benchmark_layers', 'benchmark_models', 'benchmark_primitives', 'cpu_description',
    'saved_activation_bytes',
]
