"""Codecs for compact optimizer state: pure functions, tested on their own.

- ``dynamic_map(signed)``: 256 exponent-spaced code values in [-1, 1] (signed) or [0, 1]
  (unsigned), the "dynamic" quantisation of Dettmers et al., 8-bit Optimizers via
  Block-wise Quantization (2022): seven decades, 1e-6 .. 1, each split linearly, with
  finer steps in the larger decades. The unsigned map spends every code on values >= 0
  (an RMSprop ``square_avg`` is never negative; bitsandbytes uses its signed map for it
  and so wastes half of the codes).
- ``quantize_blockwise`` / ``dequantize_blockwise``: blocks of 256 elements, one fp32
  scale (the block's absolute maximum) per block, each element the nearest code of
  ``x / scale``. For unsigned maps a positive value never becomes 0: it is rounded up to
  the smallest positive code, because a ``square_avg`` decoded as 0 turns
  ``g / (sqrt(v) + eps)`` into ``g / eps``.
- ``hash32`` and ``stochastic_round_to_bf16``: a counter-based random stream (a 32-bit
  integer hash of the element index, the step and a seed), written with integer
  arithmetic that torch, numba and Triton all compute identically, so stochastic rounding
  gives the same bits in every implementation.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

BLOCK = 256
MASK32 = 0xFFFFFFFF


def dynamic_map(signed: bool) -> np.ndarray:
    """The 256 code values, sorted, float32. Code 0 of the unsigned map is 0.0."""
    values: list[float] = [0.0, 1.0]
    decades = 7
    for i in range(decades):
        # decade i covers 10^(i-6) * (0.1, 1]; larger decades get more steps
        count = 2**i if signed else 2 ** (i + 1)
        edges = np.linspace(0.1, 1.0, count + 1)
        mids = (edges[:-1] + edges[1:]) / 2 * 10.0 ** (i - (decades - 1))
        values += mids.tolist()
        if signed:
            values += (-mids).tolist()
    if signed:  # 2 + 2*127 = 256
        assert len(values) == 256
    else:  # 2 + 254 = 256
        assert len(values) == 256
    return np.array(sorted(values), dtype=np.float32)


_MAPS: dict[tuple[bool, torch.device], Tensor] = {}


def code_map(signed: bool, device: torch.device | str = "cpu") -> Tensor:
    key = (signed, torch.device(device))
    if key not in _MAPS:
        _MAPS[key] = torch.from_numpy(dynamic_map(signed)).to(key[1])
    return _MAPS[key]


def num_blocks(numel: int, block: int = BLOCK) -> int:
    return (numel + block - 1) // block


def quantize_blockwise(x: Tensor, signed: bool, block: int = BLOCK) -> tuple[Tensor, Tensor]:
    """``x`` (any shape, finite) -> (uint8 codes of ``x``'s shape, fp32 scale per block).

    Raises ``FloatingPointError`` for NaN/Inf: one of them would poison the scale of its
    whole block; the optimizer's ``nonfinite="skip"`` keeps them out of the state.
    """
    flat = x.detach().reshape(-1).float()
    if not bool(torch.isfinite(flat).all()):
        raise FloatingPointError(
            "cannot quantize NaN or Inf into 8-bit state (use nonfinite='skip')"
        )
    n = flat.numel()
    padded = torch.nn.functional.pad(flat, (0, num_blocks(n, block) * block - n)).view(-1, block)
    scale = padded.abs().amax(dim=1)
    normalized = padded / torch.where(scale > 0, scale, torch.ones_like(scale)).unsqueeze(1)
    cmap = code_map(signed, x.device)
    upper = torch.searchsorted(cmap, normalized.contiguous()).clamp(1, 255)
    lower = upper - 1
    nearer_upper = (cmap[upper] - normalized) < (normalized - cmap[lower])
    codes = torch.where(nearer_upper, upper, lower)
    if not signed:  # a positive value must not decode to 0
        codes = torch.where((normalized > 0) & (codes == 0), torch.ones_like(codes), codes)
    return codes.reshape(-1)[:n].to(torch.uint8).view(x.shape), scale


def dequantize_blockwise(codes: Tensor, scale: Tensor, signed: bool, block: int = BLOCK) -> Tensor:
    """The fp32 tensor the codes stand for (``codes``' shape)."""
    n = codes.numel()
    values = code_map(signed, codes.device)[codes.reshape(-1).long()]
    padded = torch.nn.functional.pad(values, (0, num_blocks(n, block) * block - n)).view(-1, block)
    return (padded * scale.unsqueeze(1)).reshape(-1)[:n].view(codes.shape)


def hash32(index: Tensor, step: int, seed: int) -> Tensor:
    """A 32-bit integer hash of ``index + (step, seed) mix`` (Wellons' lowbias32), computed
    in int64 with explicit 32-bit masks so every backend gets the same bits."""
    x = (index.long() + ((step * 0x9E3779B9 + seed * 0x85EBCA6B) & MASK32)) & MASK32
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & MASK32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & MASK32
    return x ^ (x >> 16)


def stochastic_round_to_bf16(x: Tensor, step: int, seed: int) -> Tensor:
    """Round fp32 ``x`` to bf16 up or down with probability given by the distance (the
    expected value is ``x``): add 16 random low bits, truncate. NaN/Inf pass unchanged."""
    x32 = x.float().contiguous()
    bits = x32.view(torch.int32).long() & MASK32
    noise = hash32(torch.arange(x32.numel(), device=x.device).view(x32.shape), step, seed) & 0xFFFF
    rounded = ((bits + noise) & 0xFFFF0000) & MASK32
    as_int32 = torch.where(rounded >= 2**31, rounded - 2**32, rounded).to(torch.int32)
    out = as_int32.view(torch.float32)
    out = torch.where(torch.isfinite(x32), out, x32)
    return out.to(torch.bfloat16)
