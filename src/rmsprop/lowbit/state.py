"""A parameter's optimizer state as a dict of tensors: created, decoded to fp32, encoded.

``state_dtype=torch.bfloat16``: ``square_avg`` / ``grad_avg`` / ``momentum_buffer`` are
bf16 tensors, written with stochastic rounding (a counter-based stream, see
:mod:`.codecs`). ``state_dtype="int8"``: for tensors of at least ``MIN_INT8_NUMEL``
elements each buffer is stored as ``<name>_codes`` (uint8, the parameter's shape) and
``<name>_scale`` (fp32, one per block of 256): the unsigned map for ``square_avg``, the
signed map for the others, stochastically rounded with fields of one hash per element
(the ``square_avg`` stream, ``codecs.code_noise``); smaller tensors keep fp32 under the
plain name. Every key is a tensor, so ``state_dict`` holds the compact form and loads
with ``weights_only=True``. Which form a parameter gets is decided in :mod:`.forms`.

The scales have the shape ``(rows, blocks per row)`` when each row of the parameter (its
dimension 0) is a whole number of blocks, ``(blocks,)`` otherwise (``forms.scale_shape``):
the same blocks either way, but the 2-D form shards along dimension 0 exactly as the
parameter does. That is what makes FSDP2 (DTensor) parameters work: each rank keeps the
compact state of its shard as DTensors with the parameter's placements (the scales as
the same row shards), so ``torch.distributed.checkpoint`` saves and reshards them, and
the random stream is indexed by the global element, so a sharded run gives the bits of
a one-process run. A DTensor parameter whose rows are not whole blocks (its blocks would
straddle ranks) keeps fp32 state under ``"int8"``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .._dtensor import is_dtensor, local
from .codecs import (
    code_noise,
    dequantize_blockwise,
    hash32,
    quantize_blockwise,
    stochastic_round_to_bf16,
    stream_seed,
)
from .forms import MIN_INT8_NUMEL, StateForm, Storage, int8_applies, scale_shape

BUFFERS = ("square_avg", "grad_avg", "momentum_buffer")
SIGNED = {"square_avg": False, "grad_avg": True, "momentum_buffer": True}
COMPACT = (torch.bfloat16, "int8")

__all__ = [
    "BUFFERS", "COMPACT", "MIN_INT8_NUMEL", "SIGNED", "buffers_in_use", "decode", "encode",
    "first_element", "has", "init_state", "int8_applies", "scale_shape", "state_bytes",
]  # fmt: skip


def buffers_in_use(centered: bool, momentum: float) -> list[str]:
    """The state buffers a group with these switches keeps, in ``BUFFERS`` order."""
    return [name for name, on in zip(BUFFERS, (True, centered, momentum > 0)) if on]


def first_element(param: Tensor) -> int:
    """The global (row-major) index of this rank's first element of ``param``: where its
    part of the random stream starts (0 for an ordinary tensor)."""
    if not is_dtensor(param):
        return 0
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    _, offset = compute_local_shape_and_global_offset(
        param.shape, param.device_mesh, param.placements
    )
    stride = torch.empty(param.shape, device="meta").stride()
    return sum(o * st for o, st in zip(offset, stride))


def _like(param: Tensor, value: Tensor, shape: tuple[int, ...] | None = None) -> Tensor:
    """``value`` (this rank's part) as a DTensor placed like ``param`` when that is one."""
    if not is_dtensor(param):
        return value
    from torch.distributed.tensor import DTensor

    shape = tuple(param.shape) if shape is None else shape
    return DTensor.from_local(
        value, param.device_mesh, param.placements, run_check=False, shape=torch.Size(shape),
        stride=torch.empty(shape, device="meta").stride(),
    )  # fmt: skip


def has(state: dict[str, Any], name: str) -> bool:
    return name in state or f"{name}_codes" in state


def decode(state: dict[str, Any], name: str) -> Tensor:
    """The fp32 value of buffer ``name``, whatever form it is stored in (this rank's part
    for DTensor state; complex buffers as they are)."""
    if f"{name}_codes" in state:
        codes, scale = local(state[f"{name}_codes"]), local(state[f"{name}_scale"])
        return dequantize_blockwise(codes, scale, SIGNED[name])
    value = local(state[name])
    return value if value.dtype == torch.float32 or torch.is_complex(value) else value.float()


def encode(state: dict[str, Any], values: dict[str, Tensor], param: Tensor, form: StateForm,
           step: int, seed: int, salt: int) -> None:  # fmt: skip
    """Store each buffer of ``values`` (name -> fp32/fp64 value) in ``form``'s storage for
    ``param``. The 8-bit codes of all of them draw on one hash per element (computed once
    here). For a DTensor ``param`` the values are this rank's part and the state is stored
    as DTensors."""
    storage, first, hashes = form.storage(param), first_element(param), None
    for name, value in values.items():
        for key in (name, f"{name}_codes", f"{name}_scale"):
            state.pop(key, None)
        if storage is Storage.INT8:
            if hashes is None:  # the square_avg stream, shared by the buffers
                index = torch.arange(first, first + value.numel(), device=value.device)
                hashes = hash32(index, step, stream_seed(seed, salt, "square_avg"))
            codes, scale = quantize_blockwise(value, SIGNED[name], noise=code_noise(hashes, name))
            rows = scale_shape(param)
            local_shape = (value.shape[0], rows[1]) if len(rows) == 2 else rows
            state[f"{name}_codes"] = _like(param, codes)
            state[f"{name}_scale"] = _like(param, scale.view(local_shape), rows)
        elif storage is Storage.BF16:
            buffer_seed = stream_seed(seed, salt, name)
            state[name] = _like(param, stochastic_round_to_bf16(value, step, buffer_seed, first))
        else:
            state[name] = _like(param, value.to(form.float_dtype(param)))


def init_state(state: dict[str, Any], param: Tensor, form: StateForm, names: list[str],
               initial_accumulator_value: float, capturable: bool, seed: int,
               salt: int) -> None:  # fmt: skip
    """Create what ``state`` lacks of a parameter's state: ``step`` (0) and each buffer of
    ``names`` (``square_avg`` at ``initial_accumulator_value``, the others at 0), in
    ``form``. Buffers created later (momentum turned on after the first step) start there."""
    if "step" not in state:
        device = param.device if capturable else None
        state["step"] = torch.zeros((), dtype=new_step_dtype(), device=device)
    missing = [name for name in names if not has(state, name)]
    if not missing:
        return
    if form.storage(param) is Storage.FLOAT:
        dtype = form.float_dtype(param)
        for name in missing:
            start = initial_accumulator_value if name == "square_avg" else 0.0
            state[name] = torch.full_like(
                param, start, dtype=dtype, memory_format=torch.preserve_format
            )
        return
    shard = local(param)
    values = {name: torch.full_like(shard, initial_accumulator_value if name == "square_avg"
                                    else 0.0, dtype=torch.float32) for name in missing}  # fmt: skip
    encode(state, values, param, form, 0, seed, salt)


def new_step_dtype() -> torch.dtype:
    """The dtype of a new ``step`` counter: torch's (float64 when that is the default dtype)."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def state_bytes(state: dict[str, Any]) -> int:
    """Bytes of the buffers (not ``step``) of one parameter's state."""
    return sum(
        t.numel() * t.element_size() for k, t in state.items() if k != "step" and torch.is_tensor(t)
    )
