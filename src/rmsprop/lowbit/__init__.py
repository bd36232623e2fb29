"""Compact optimizer state: bf16 with stochastic rounding, and blockwise 8-bit codes."""

from .codecs import (
    BLOCK,
    code_noise,
    code_values,
    dequantize_blockwise,
    hash32,
    quantize_blockwise,
    stochastic_round_to_bf16,
)

__all__ = [
    "BLOCK",
    "code_noise",
    "code_values",
    "dequantize_blockwise",
    "hash32",
    "quantize_blockwise",
    "stochastic_round_to_bf16",
]
