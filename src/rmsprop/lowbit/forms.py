"""How optimizer state is stored: the one vocabulary, parsed once from ``state_dtype``.

A user writes ``state_dtype`` as ``None``, ``torch.float32``, ``torch.bfloat16`` or
``"int8"``; everything below the optimizer speaks :class:`Storage` (per tensor) and
:class:`StateForm` (per group). This is the only place that knows the mapping:

=================  ====================================================================
``state_dtype``    what each state buffer of a parameter is stored as
=================  ====================================================================
``None``           ``Storage.FLOAT`` in the parameter's dtype (as ``torch.optim``)
``torch.float32``  ``Storage.FLOAT`` in float32
``torch.bfloat16`` ``Storage.BF16``: bf16 written with stochastic rounding (a DTensor
                   whose shards are not ranges of rows, ``row_shards``: float32)
``"int8"``         ``Storage.INT8``: blockwise 8-bit codes + one fp32 scale per block, for
                   tensors of at least ``MIN_INT8_NUMEL`` elements whose blocks a shard
                   keeps whole; ``Storage.FLOAT`` in float32 for the others
=================  ====================================================================

Complex parameters keep ``Storage.FLOAT`` in their own dtype whatever ``state_dtype`` says.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import torch
from torch import Tensor

from .._dtensor import is_dtensor
from .codecs import BLOCK, num_blocks

MIN_INT8_NUMEL = 4096
STATE_DTYPES = (None, torch.float32, torch.bfloat16, "int8")


class Storage(IntEnum):
    """How one parameter's state buffers are stored (the fused kernels' format switch)."""

    FLOAT = 0  # a float tensor per buffer
    BF16 = 1  # bf16 bits, written with stochastic rounding
    INT8 = 2  # ``<name>_codes`` (uint8) and ``<name>_scale`` (fp32 per block of 256)


@dataclass(frozen=True)
class StateForm:
    """A group's ``state_dtype``, parsed: what each of its parameters' buffers is stored as."""

    state_dtype: Any = None

    @classmethod
    def parse(cls, state_dtype: Any) -> StateForm:
        """The form of ``state_dtype``; ``ValueError`` naming the allowed values otherwise."""
        for allowed, form in zip(STATE_DTYPES, _FORMS):
            if state_dtype is allowed or (isinstance(state_dtype, str) and state_dtype == allowed):
                return form
        raise ValueError(
            f"state_dtype={state_dtype!r} is not supported: it must be None (the parameter's "
            "dtype), torch.float32, torch.bfloat16 or 'int8'"
        )

    @property
    def compact(self) -> bool:
        """bf16 or 8-bit state (stored in a form other than a float tensor per buffer)."""
        return self.state_dtype is torch.bfloat16 or self.state_dtype == "int8"

    def storage(self, param: Tensor) -> Storage:
        """How ``param``'s buffers are stored (``param``: the global tensor for a DTensor)."""
        if self.state_dtype is None or self.state_dtype is torch.float32 or param.is_complex():
            return Storage.FLOAT
        if self.state_dtype is torch.bfloat16:
            return Storage.BF16
        return Storage.INT8 if int8_applies(param) else Storage.FLOAT

    def float_dtype(self, param: Tensor) -> torch.dtype:
        """The dtype of ``param``'s buffers when they are stored as ``Storage.FLOAT``."""
        if self.state_dtype is None or param.is_complex():
            return param.dtype
        return torch.float32

    def stored_dtype(self, param: Tensor, storage: Storage) -> torch.dtype:
        """The dtype of the tensor each buffer (the codes for 8-bit) is kept in."""
        if storage is Storage.FLOAT:
            return self.float_dtype(param)
        return torch.bfloat16 if storage is Storage.BF16 else torch.uint8


_FORMS = tuple(StateForm(s) for s in STATE_DTYPES)


def int8_applies(param: Tensor) -> bool:
    """Does ``param`` keep 8-bit state under ``state_dtype="int8"``? Large enough, real, and
    (a DTensor) sharded so that every shard keeps whole blocks."""
    return param.numel() >= MIN_INT8_NUMEL and not param.is_complex() and _keeps_blocks(param)


def scale_shape(param: Tensor) -> tuple[int, ...]:
    """The shape of the 8-bit block scales of ``param`` (global shape for a DTensor):
    ``(rows, blocks per row)`` when a row (dimension 0) is whole blocks, else ``(blocks,)``."""
    n = param.numel()
    if param.dim() >= 2 and param.shape[0] > 0 and (n // param.shape[0]) % BLOCK == 0:
        return (param.shape[0], n // param.shape[0] // BLOCK)
    return (num_blocks(n),)


def _keeps_blocks(param: Tensor) -> bool:
    """A DTensor's shards hold whole blocks: replicated, or each shard a range of whole
    rows (``row_shards``) of a parameter whose rows are whole blocks. Any other tensor:
    True."""
    if not is_dtensor(param) or all(pl.is_replicate() for pl in param.placements):
        return True
    return row_shards(param) and len(scale_shape(param)) == 2


def row_shards(param: Tensor) -> bool:
    """Is every shard of ``param`` one contiguous range of rows (dimension 0), so one range
    of the global (row-major) element order, where its part of the random stream starts at
    ``state.first_element``? True for an ordinary tensor, and for DTensors placed on any
    number of mesh dimensions by ``Replicate``, ``Shard(0)``, and the ``_StridedShard(0)``
    that ``fully_shard`` puts before a tensor-parallel ``Shard(0)`` (ColwiseParallel's
    weight under FSDP x TP: its split factor is the size of the dimensions sharding
    dimension 0 after it). False for ``Shard(1)`` (RowwiseParallel's weight: a shard is a
    block of columns) and ``Partial``: there bf16 state and rounded bf16 parameters draw
    on each element's own global index (``state.stream_index``, off the fused kernels,
    which take one start per tensor), and 8-bit state keeps float32 (its blocks would
    straddle shards)."""
    if not is_dtensor(param):
        return True
    from torch.distributed.tensor.placement_types import _StridedShard

    sizes, placements = param.device_mesh.shape, param.placements
    for d, pl in enumerate(placements):
        if pl.is_replicate() or pl.is_shard(0):
            continue
        if isinstance(pl, _StridedShard) and pl.dim == 0:
            later = math.prod(
                sizes[e] for e in range(d + 1, len(sizes)) if placements[e].is_shard(0)
            )
            if pl.split_factor == later:
                continue
        return False
    return True
