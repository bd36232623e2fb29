"""How compact state is stored in ``optimizer.state[p]`` and turned into fp32 and back.

``state_dtype=torch.bfloat16``: ``square_avg`` / ``grad_avg`` / ``momentum_buffer`` are
bf16 tensors, written with stochastic rounding (a counter-based stream, see
:mod:`.codecs`). ``state_dtype="int8"``: for tensors of at least ``MIN_INT8_NUMEL``
elements each buffer is stored as ``<name>_codes`` (uint8, the parameter's shape) and
``<name>_scale`` (fp32, one per block of 256): the unsigned map for ``square_avg``, the
signed map for the others, stochastically rounded with fields of one hash per element
(the ``square_avg`` stream, ``codecs.code_noise``); smaller tensors keep fp32 under the
plain name. Every key is a tensor, so ``state_dict`` holds the compact form and loads
with ``weights_only=True``.

The scales have the shape ``(rows, blocks per row)`` when each row of the parameter (its
dimension 0) is a whole number of blocks, ``(blocks,)`` otherwise (``scale_shape``): the
same blocks either way, but the 2-D form shards along dimension 0 exactly as the
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
    BLOCK,
    code_noise,
    dequantize_blockwise,
    hash32,
    num_blocks,
    quantize_blockwise,
    stochastic_round_to_bf16,
    stream_seed,
)

MIN_INT8_NUMEL = 4096
BUFFERS = ("square_avg", "grad_avg", "momentum_buffer")
SIGNED = {"square_avg": False, "grad_avg": True, "momentum_buffer": True}
COMPACT = (torch.bfloat16, "int8")


def buffers_in_use(centered: bool, momentum: float) -> list[str]:
    """The state buffers a group with these switches keeps, in ``BUFFERS`` order."""
    return [name for name, on in zip(BUFFERS, (True, centered, momentum > 0)) if on]


def kernel_table(params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]],
                 names: list[str], int8: bool, stored: torch.dtype,
                 impl: str) -> tuple[list[int], list[int]]:  # fmt: skip
    """The tensors as the fused compact-state kernels (numba, Triton) take them: per
    tensor, the data pointers of (p, g, v, ḡ, b) and of the 8-bit block scales of (v, ḡ,
    b), 0 where a buffer is not kept, flattened row after row. Raises ``RuntimeError``
    (naming ``impl``) before anything runs unless every param and kept buffer (``names``;
    the uint8 codes for ``int8``) is contiguous and every buffer is of dtype ``stored``.

    One pass, a few operations per tensor: with thousands of small tensors this table is
    most of a step's cost outside the kernel."""
    keys = [f"{n}_codes" if int8 else n for n in names]
    scale_keys = [f"{n}_scale" for n in names] if int8 else []
    slots = [BUFFERS.index(n) for n in names]
    pointers: list[int] = []
    scales: list[int] = []
    for p, g, st in zip(params, grads, states):
        row, scale_row = [p.data_ptr(), g.data_ptr(), 0, 0, 0], [0, 0, 0]
        ok = p.is_contiguous()
        for slot, key in zip(slots, keys):
            buffer = st[key]
            ok = ok and buffer.is_contiguous() and buffer.dtype == stored
            row[2 + slot] = buffer.data_ptr()
        for slot, key in zip(slots, scale_keys):
            scale_row[slot] = st[key].data_ptr()
        if not ok:
            raise RuntimeError(
                f"impl={impl!r} needs contiguous parameters and contiguous {stored} state here"
            )
        pointers += row
        scales += scale_row
    return pointers, scales


def scale_shape(param: Tensor) -> tuple[int, ...]:
    """The shape of the 8-bit block scales of ``param`` (global shape for a DTensor):
    ``(rows, blocks per row)`` when a row (dimension 0) is whole blocks, else ``(blocks,)``."""
    n = param.numel()
    if param.dim() >= 2 and param.shape[0] > 0 and (n // param.shape[0]) % BLOCK == 0:
        return (param.shape[0], n // param.shape[0] // BLOCK)
    return (num_blocks(n),)


def _keeps_blocks(param: Tensor) -> bool:
    """A DTensor's shards hold whole blocks: replicated, or sharded along dimension 0 of a
    parameter whose rows are whole blocks. Any other tensor: True."""
    from torch.distributed.tensor import Replicate, Shard

    if not is_dtensor(param):
        return True
    rows_whole = len(scale_shape(param)) == 2
    return all(
        isinstance(pl, Replicate) or (pl == Shard(0) and rows_whole) for pl in param.placements
    )


def int8_applies(param: Tensor, state_dtype: Any) -> bool:
    return (
        state_dtype == "int8"
        and param.numel() >= MIN_INT8_NUMEL
        and not torch.is_complex(param)
        and _keeps_blocks(param)
    )


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
    for DTensor state)."""
    if f"{name}_codes" in state:
        codes, scale = local(state[f"{name}_codes"]), local(state[f"{name}_scale"])
        return dequantize_blockwise(codes, scale, SIGNED[name])
    value = local(state[name])
    return value if value.dtype == torch.float32 or torch.is_complex(value) else value.float()


def encode(state: dict[str, Any], values: dict[str, Tensor], param: Tensor, state_dtype: Any,
           step: int, seed: int, salt: int) -> None:  # fmt: skip
    """Store each fp32 buffer of ``values`` (name -> value) in ``state_dtype``'s form. The
    8-bit codes of all of them draw on one hash per element (computed once here). For a
    DTensor ``param``, the values are this rank's part and the state is stored as DTensors."""
    first = first_element(param)
    hashes = None
    for name, value in values.items():
        for key in (name, f"{name}_codes", f"{name}_scale"):
            state.pop(key, None)
        if int8_applies(param, state_dtype):
            if hashes is None:  # the square_avg stream, shared by the buffers
                index = torch.arange(first, first + value.numel(), device=value.device)
                hashes = hash32(index, step, stream_seed(seed, salt, "square_avg"))
            codes, scale = quantize_blockwise(value, SIGNED[name], noise=code_noise(hashes, name))
            rows = scale_shape(param)
            local_shape = (value.shape[0], rows[1]) if len(rows) == 2 else rows
            state[f"{name}_codes"] = _like(param, codes)
            state[f"{name}_scale"] = _like(param, scale.view(local_shape), rows)
        elif torch.is_complex(value):
            state[name] = _like(param, value.to(param.dtype))
        elif state_dtype == torch.bfloat16:
            seed_of_buffer = stream_seed(seed, salt, name)
            state[name] = _like(param, stochastic_round_to_bf16(value, step, seed_of_buffer, first))
        elif state_dtype is None:
            state[name] = _like(param, value.to(param.dtype))
        else:
            state[name] = _like(
                param, value.to(state_dtype if state_dtype != "int8" else torch.float32)
            )


def state_bytes(state: dict[str, Any]) -> int:
    """Bytes of the buffers (not ``step``) of one parameter's state."""
    return sum(
        t.numel() * t.element_size() for k, t in state.items() if k != "step" and torch.is_tensor(t)
    )


def in_form(state: dict[str, Any], name: str, param: Tensor, state_dtype: Any) -> bool:
    """Is buffer ``name`` already stored the way ``state_dtype`` stores it?"""
    if int8_applies(param, state_dtype):
        return f"{name}_codes" in state
    if name not in state:
        return False
    want = param.dtype if state_dtype is None or torch.is_complex(param) else state_dtype
    return state[name].dtype == (torch.float32 if want == "int8" else want)
