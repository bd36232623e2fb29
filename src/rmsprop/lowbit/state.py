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

Centered RMSprop with bf16 or 8-bit state keeps ``grad_var``, the variance form
S = v − ḡ²/c (``rmsprop.algorithm``), in place of ``square_avg``: quantized separately, v
and ḡ² would leave v − ḡ² all rounding error when the variance is small next to ḡ².
``init_state`` converts between the two when the centered switch or the storage changes.

The scales have the shape ``(rows, blocks per row)`` when each row of the parameter (its
dimension 0) is a whole number of blocks, ``(blocks,)`` otherwise (``forms.scale_shape``):
the same blocks either way, but the 2-D form shards along dimension 0 exactly as the
parameter does. That is what makes FSDP2 (DTensor) parameters work: each rank keeps the
compact state of its shard as DTensors with the parameter's placements (the scales as
the same row shards), so ``torch.distributed.checkpoint`` saves and reshards them, and
the random stream is indexed by the global element, so a sharded run gives the bits of
a one-process run. The same holds on two-dimensional meshes (HSDP's (replicate, shard),
FSDP x TP): a shard that is one range of rows (``Replicate``, ``Shard(0)``, and the
``_StridedShard(0)`` that ``fully_shard`` puts before ColwiseParallel's ``Shard(0)``:
``forms.row_shards``) keeps compact state, updated by the fused kernels. A shard that is
a block of columns (RowwiseParallel's ``Shard(1)``) keeps bf16 state too, each element
rounded from its own global place of the stream (``stream_index``; such a shard is updated
on fp32 working copies, ``backends.widen``), and fp32 state under ``"int8"``: its blocks
would straddle ranks, as they would for a parameter whose rows are not whole blocks.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor

from .._dtensor import is_dtensor, local
from ..algorithm import variance_weights
from .codecs import (
    code_noise,
    dequantize_blockwise,
    hash32,
    quantize_blockwise,
    stochastic_round_to_bf16,
    stream_seed,
)
from .forms import MIN_INT8_NUMEL, StateForm, Storage, int8_applies, row_shards, scale_shape

BUFFERS = ("square_avg", "grad_avg", "momentum_buffer")  # torch's names
VARIANCE = "grad_var"  # S = v − ḡ²/c: centered compact state keeps it in place of square_avg
ALL_BUFFERS = (*BUFFERS, VARIANCE)
SLOT = {"square_avg": 0, VARIANCE: 0, "grad_avg": 1, "momentum_buffer": 2}  # kernels' columns
SIGNED = {"square_avg": False, VARIANCE: False, "grad_avg": True, "momentum_buffer": True}
COMPACT = (torch.bfloat16, "int8")


class Switches(Protocol):
    """The switches that decide a parameter's state (``rmsprop.backends.base.Hyper`` has
    them; any object with these attributes will do)."""

    centered: bool
    momentum: float
    alpha: float
    bias_correction: bool
    capturable: bool
    initial_accumulator_value: float


__all__ = [
    "ALL_BUFFERS", "BUFFERS", "COMPACT", "MIN_INT8_NUMEL", "SIGNED", "SLOT", "VARIANCE",
    "Switches", "buffer_names", "conform", "decode", "encode", "first_element", "has",
    "in_form", "init_state", "int8_applies", "scale_shape", "state_bytes", "stream_index",
]  # fmt: skip


def buffer_names(centered: bool, momentum: float, storage: Storage) -> list[str]:
    """The buffers a parameter keeps with these switches and this storage: ``square_avg``
    (``grad_var``, the variance form, when centered with bf16 or 8-bit state), then
    ``grad_avg`` when centered, ``momentum_buffer`` with momentum."""
    first = VARIANCE if centered and storage is not Storage.FLOAT else "square_avg"
    return [first] + ["grad_avg"] * centered + ["momentum_buffer"] * (momentum > 0)


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


def stream_index(param: Tensor) -> int | Tensor:
    """Where this rank's elements of ``param`` are in its random streams: the first one's
    global index when they are one range (an ordinary tensor, row shards:
    ``forms.row_shards``), else each element's global (row-major) index, a tensor of the
    local shard's shape (a block of columns: RowwiseParallel's ``Shard(1)``)."""
    if row_shards(param):
        return first_element(param)
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    shape, offset = compute_local_shape_and_global_offset(
        param.shape, param.device_mesh, param.placements
    )
    stride = torch.empty(param.shape, device="meta").stride()
    index = torch.zeros((), dtype=torch.int64)
    for d, (size, start) in enumerate(zip(shape, offset)):
        along = (torch.arange(size, dtype=torch.int64) + start) * stride[d]
        index = index.unsqueeze(-1) + along  # broadcast: dimension d last so far
    return index.reshape(shape)


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
    for DTensor state; float64 and complex buffers as they are)."""
    if f"{name}_codes" in state:
        codes, scale = local(state[f"{name}_codes"]), local(state[f"{name}_scale"])
        return dequantize_blockwise(codes, scale, SIGNED[name])
    value = local(state[name])
    keep = value.dtype in (torch.float32, torch.float64) or torch.is_complex(value)
    return value if keep else value.float()


def encode(state: dict[str, Any], values: dict[str, Tensor], param: Tensor, form: StateForm,
           step: int, seed: int, salt: int) -> None:  # fmt: skip
    """Store each buffer of ``values`` (name -> fp32/fp64 value) in ``form``'s storage for
    ``param``. The 8-bit codes of all of them draw on one hash per element (computed once
    here). For a DTensor ``param`` the values are this rank's part and the state is stored
    as DTensors."""
    storage, hashes = form.storage(param), None
    first = stream_index(param) if storage is Storage.BF16 else first_element(param)
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


def init_state(state: dict[str, Any], param: Tensor, form: StateForm, hp: Switches, seed: int,
               salt: int) -> None:  # fmt: skip
    """Complete ``state`` for ``param`` under the switches ``hp``: ``step`` (0) if there is
    none, ``square_avg`` / ``grad_var`` converted from one another if the centered switch
    or the storage changed (``conform``), and each missing buffer of ``buffer_names``:
    ``square_avg`` or ``grad_var`` at ``initial_accumulator_value``, the others at 0 (so
    momentum turned on after the first step starts there)."""
    if "step" not in state:
        device = param.device if hp.capturable else None
        state["step"] = torch.zeros((), dtype=new_step_dtype(), device=device)
    conform(state, param, form, hp, seed, salt)
    storage = form.storage(param)
    missing = [n for n in buffer_names(hp.centered, hp.momentum, storage)
               if not has(state, n)]  # fmt: skip
    start = {name: hp.initial_accumulator_value if name in ("square_avg", VARIANCE) else 0.0
             for name in missing}  # fmt: skip
    if storage is Storage.FLOAT:
        for name in missing:
            state[name] = torch.full_like(param, start[name], dtype=form.float_dtype(param),
                                          memory_format=torch.preserve_format)  # fmt: skip
    elif missing:
        shard = local(param)
        values = {
            name: torch.full_like(shard, start[name], dtype=torch.float32) for name in missing
        }
        encode(state, values, param, form, int(float(state["step"])), seed, salt)


def conform(state: dict[str, Any], param: Tensor, form: StateForm, hp: Switches, seed: int,
            salt: int) -> None:  # fmt: skip
    """Every buffer the switches ``hp`` use in ``form`` for ``param``: ``square_avg`` and
    ``grad_var`` computed from one another where the group needs the other one
    (v = S + ḡ²/c, S = max(v − ḡ²/c, 0)), laid out like the parameter, then every buffer in
    use that is in another form decoded and encoded (buffers not in use are left alone)."""
    step = float(state["step"]) if "step" in state else 0.0
    first = buffer_names(hp.centered, hp.momentum, form.storage(param))[0]
    if not has(state, first) and has(state, _OTHER[first]):
        value = _converted_first(state, first, hp, step)
        value = torch.empty_like(local(param), dtype=value.dtype).copy_(value)  # param's layout
        for key in (_OTHER[first], f"{_OTHER[first]}_codes", f"{_OTHER[first]}_scale"):
            state.pop(key, None)
        encode(state, {first: value}, param, form, int(step), seed, salt)
    names = buffer_names(hp.centered, hp.momentum, form.storage(param))
    stale = {name: decode(state, name) for name in names
             if has(state, name) and not in_form(state, name, param, form)}  # fmt: skip
    if stale:
        encode(state, stale, param, form, int(step), seed, salt)


def in_form(state: dict[str, Any], name: str, param: Tensor, form: StateForm) -> bool:
    """Is buffer ``name`` stored the way ``form`` stores it for ``param``?"""
    storage = form.storage(param)
    if f"{name}_codes" in state:
        return storage is Storage.INT8
    return name in state and state[name].dtype == form.stored_dtype(param, storage)


_OTHER = {"square_avg": VARIANCE, VARIANCE: "square_avg"}


def _converted_first(state: dict[str, Any], name: str, hp: Switches, step: float) -> Tensor:
    """``name`` (``square_avg`` or ``grad_var``) computed from the other and ``grad_avg``:
    v = S + ḡ²/c, S = max(v − ḡ²/c, 0), c the bias correction at ``step`` (1 without)."""
    other = decode(state, _OTHER[name])
    if "grad_avg" not in state and "grad_avg_codes" not in state:
        return other.clone()
    mean = decode(state, "grad_avg").to(other.dtype)
    c = variance_weights(hp.alpha, step, hp.bias_correction)[0] if step else 1.0
    squared = mean * mean / c if c > 0 else torch.zeros_like(mean)
    return other + squared if name == "square_avg" else (other - squared).clamp_min(0)


def new_step_dtype() -> torch.dtype:
    """The dtype of a new ``step`` counter: torch's (float64 when that is the default dtype)."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def state_bytes(state: dict[str, Any]) -> int:
    """Bytes of the buffers (not ``step``) of one parameter's state."""
    return sum(
        t.numel() * t.element_size() for k, t in state.items() if k != "step" and torch.is_tensor(t)
    )
