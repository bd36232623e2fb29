"""How compact state is stored in ``optimizer.state[p]`` and turned into fp32 and back.

``state_dtype=torch.bfloat16``: ``square_avg`` / ``grad_avg`` / ``momentum_buffer`` are
bf16 tensors, written with stochastic rounding (a counter-based stream, see
:mod:`.codecs`). ``state_dtype="int8"``: for tensors of at least ``MIN_INT8_NUMEL``
elements each buffer is stored as ``<name>_codes`` (uint8, the parameter's shape) and
``<name>_scale`` (fp32, one per block of 256): the unsigned map for ``square_avg``, the
signed map for the others, stochastically rounded with fields of one hash per element
(the ``square_avg`` stream, ``codecs.code_noise``); smaller tensors keep fp32 under the
plain name. Every key is a
tensor, so ``state_dict`` holds the compact form and loads with ``weights_only=True``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .codecs import (
    code_noise,
    dequantize_blockwise,
    hash32,
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


def int8_applies(param: Tensor, state_dtype: Any) -> bool:
    return state_dtype == "int8" and param.numel() >= MIN_INT8_NUMEL and not torch.is_complex(param)


def has(state: dict[str, Any], name: str) -> bool:
    return name in state or f"{name}_codes" in state


def decode(state: dict[str, Any], name: str) -> Tensor:
    """The fp32 value of buffer ``name``, whatever form it is stored in."""
    if f"{name}_codes" in state:
        return dequantize_blockwise(state[f"{name}_codes"], state[f"{name}_scale"], SIGNED[name])
    value = state[name]
    return value if value.dtype == torch.float32 or torch.is_complex(value) else value.float()


def encode(state: dict[str, Any], name: str, value: Tensor, param: Tensor, state_dtype: Any,
           step: int, seed: int, salt: int) -> None:  # fmt: skip
    """Store fp32 ``value`` as buffer ``name`` in ``state_dtype``'s form."""
    for key in (name, f"{name}_codes", f"{name}_scale"):
        state.pop(key, None)
    if int8_applies(param, state_dtype):
        index = torch.arange(value.numel(), device=value.device)
        hashes = hash32(index, step, stream_seed(seed, salt, "square_avg"))  # shared by buffers
        state[f"{name}_codes"], state[f"{name}_scale"] = quantize_blockwise(
            value, SIGNED[name], noise=code_noise(hashes, name)
        )
    elif torch.is_complex(value):
        state[name] = value.to(param.dtype)
    elif state_dtype == torch.bfloat16:
        state[name] = stochastic_round_to_bf16(value, step, stream_seed(seed, salt, name))
    elif state_dtype is None:
        state[name] = value.to(param.dtype)
    else:
        state[name] = value.to(state_dtype if state_dtype != "int8" else torch.float32)


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
