"""The host side of the fused kernels (numba and Triton), written once for both: the
scalars in the math dtype, the bias corrections, the address tables, the work items and
the random-stream offsets.

Every function here reads tensors the planner has already checked (shape, dtype, device,
layout: ``rmsprop.optim.planner``); none of them writes anything.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..algorithm import variance_weights
from ..lowbit.codecs import stream_offsets
from ..lowbit.forms import Storage
from ..lowbit.state import SLOT
from .base import Batch, Hyper

# The scalars' slots in the array both kernels take.
ALPHA, ONE_MINUS_ALPHA, EPS, WD, LR, NEG_LR, MOMENTUM, DECAY, NEG_LR_MOM, NEG_MOM, LERP_REST = (
    range(11)
)

NUMPY_DTYPES = {
    torch.float32: np.dtype(np.float32),
    torch.float64: np.dtype(np.float64),
    torch.float16: np.dtype(np.float32),  # fp16/bf16 parameters: fp32 math
    torch.bfloat16: np.dtype(np.float32),
}


def scalars(hp: Hyper, lr: float, dtype: np.dtype) -> np.ndarray:
    """The update's scalars, computed in double (as Python computes them for torch) and
    stored in the math dtype (as torch casts a Python scalar to the tensor's dtype). The
    lerp complement ``1 - w`` is computed in the math dtype from ``w = 1 - alpha`` in that
    dtype, as torch's ``lerp_`` kernel does with its weight."""
    values = np.zeros(11, dtype)
    values[[ALPHA, ONE_MINUS_ALPHA, EPS, WD, LR, NEG_LR, MOMENTUM]] = (
        hp.alpha, 1 - hp.alpha, hp.eps, hp.weight_decay, lr, -lr, hp.momentum,
    )  # fmt: skip
    values[[DECAY, NEG_LR_MOM, NEG_MOM]] = (1 - lr * hp.weight_decay, -lr * hp.momentum,
                                            -hp.momentum)  # fmt: skip
    values[LERP_REST] = dtype.type(1) - values[ONE_MINUS_ALPHA]
    return values


def lerp_low(values: np.ndarray) -> bool:
    """Which of its two formulas torch's ``lerp_`` uses: its weight (``1 - alpha`` in the
    math dtype) below one half."""
    return bool(values[ONE_MINUS_ALPHA] < 0.5)


def corrections(hp: Hyper, steps: np.ndarray | None, count: int, dtype: np.dtype) -> np.ndarray:
    """Per tensor, (c_t, 1/c_{t−1}, weight) of ``algorithm.variance_weights`` in the math
    dtype: (6) the bias correction ``1 - alpha**step`` (1 without), and the two numbers of
    the variance form (4'). Computed in double by Python, as torch computes a scalar, once
    per distinct step value."""
    if not hp.bias_correction or steps is None:
        row = variance_weights(hp.alpha, 1.0, False)
        return np.tile(np.array(row, np.float64).astype(dtype), (count, 1))
    distinct, where = np.unique(np.asarray(steps, np.float64), return_inverse=True)
    rows = [variance_weights(hp.alpha, float(step), True) for step in distinct]
    return np.array(rows, np.float64)[where].astype(dtype)


def next_steps(steps: list[Tensor]) -> np.ndarray:
    """The counters' values after this step's (1), read before it is taken."""
    return np.array([s.item() for s in steps], np.float64) + 1


def needs_steps(hp: Hyper, batch: Batch) -> bool:
    """Does the kernel need the step counters' values (bias correction, random streams)?"""
    return hp.bias_correction or batch.storage is not Storage.FLOAT or batch.round_param


def address_table(batch: Batch, grads: list[Tensor], names: list[str]) -> tuple[np.ndarray, ...]:
    """The data pointers the kernels take: per tensor (p, g, v, ḡ, b) and the 8-bit block
    scales of (v, ḡ, b), 0 where a buffer is not kept; ``grads`` are the batch's gradients
    made contiguous (alive until the kernel returns). Built column by column."""
    int8, views, count = batch.storage is Storage.INT8, batch.views, len(batch)
    pointers = np.zeros((5, count), np.int64)
    scales = np.zeros((3, count), np.int64)
    pointers[0] = [p.data_ptr() for p in batch.params]
    pointers[1] = [g.data_ptr() for g in grads]
    for name in names:
        slot = SLOT[name]
        key = f"{name}_codes" if int8 else name
        pointers[2 + slot] = [state[key].data_ptr() for state in views]
        if int8:
            scales[slot] = [state[f"{name}_scale"].data_ptr() for state in views]
    return np.ascontiguousarray(pointers.T), np.ascontiguousarray(scales.T)


def offsets(batch: Batch, steps: np.ndarray | None) -> np.ndarray:
    """The random-stream offsets of (v, ḡ, b, param) per tensor at this step (zeros when
    nothing is rounded stochastically)."""
    if steps is None or (batch.storage is Storage.FLOAT and not batch.round_param):
        return np.zeros((len(batch), 4), np.uint64)
    return stream_offsets(steps, batch.seed, batch.salts, batch.firsts())


_WORK: dict[tuple[int, tuple[int, ...]], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


def work_items(sizes: tuple[int, ...], block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tensor, first element, end) of every piece of at most ``block`` elements, over
    all tensors; cached per size list (the same model steps with the same sizes)."""
    key = (block, sizes)
    if key not in _WORK:
        counts = [(n + block - 1) // block for n in sizes]
        tensor = np.repeat(np.arange(len(sizes), dtype=np.int64), counts)
        first_piece = np.repeat(np.cumsum([0, *counts[:-1]]), counts) if counts else tensor
        start = ((np.arange(len(tensor)) - first_piece) * block).astype(np.uint64)
        stop = np.minimum(start + np.uint64(block), np.array(sizes, np.uint64)[tensor])
        if len(_WORK) > 64:
            _WORK.clear()
        _WORK[key] = (tensor, start, stop.astype(np.uint64))
    return _WORK[key]
