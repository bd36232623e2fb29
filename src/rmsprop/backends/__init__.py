"""The implementations of one RMSprop step, behind one protocol (``base``): the
single-tensor and foreach torch paths, the fused numba (CPU) and Triton (CUDA) kernels,
torch.compile; plus the per-tensor adapter for state a kernel does not take as stored
(``widen``), lazy sparse rows (``sparse``), and the host glue the two fused kernels share
(``host``). They import nothing from ``rmsprop.optim``; which one runs a group is decided
by ``rmsprop.optim.planner``.
"""

from .registry import (
    IMPLS,
    NAMES,
    available,
    load,
    nonfinite_check,
    triton_device,
    unavailable_reason,
)

__all__ = [
    "IMPLS", "NAMES", "available", "load", "nonfinite_check", "triton_device",
    "unavailable_reason",
]  # fmt: skip
