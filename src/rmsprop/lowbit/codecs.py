"""Codecs for compact optimizer state: pure functions, tested on their own.

Blockwise 8-bit codes (``quantize_blockwise`` / ``dequantize_blockwise``): blocks of 256
elements, one fp32 scale per block (the block's absolute maximum); each element is stored
as the nearest code of ``x = value * (1 / scale)``, a number in [-1, 1].

The code map is dynamic (exponent-spaced): a code is a tiny floating-point number, its
values spaced evenly within each power of two, so the relative precision is the same over
sixteen binades (2**-16 .. 1) instead of being spent on large values as a linear map
does. Both maps keep 1.0 exact (the block maximum decodes to the scale itself):

- unsigned (``square_avg``, never negative), 4 exponent + 4 mantissa bits: code 0 is 0.0,
  code ``c`` in 1..255 is the float32 whose bits are ``(c + 1777) << 19``, from
  2**-16 * 1.125 up to 1.0; nearest-code error at most 1/32 of the value (3.1%).
  A positive value never becomes code 0 (it is rounded up to code 1): a ``square_avg``
  decoded as 0 would turn ``g / (sqrt(v) + eps)`` into ``g / eps``.
- signed (``momentum_buffer``, ``grad_avg``), sign + 4 exponent + 3 mantissa bits: the
  top bit is the sign, magnitude ``m`` in 1..127 is the float32 with bits
  ``(m + 889) << 20`` (2**-16 * 1.25 .. 1.0), ``m = 0`` is 0.0 (code 128: -0.0); error at
  most 1/16 of the value (6.25%). Magnitudes below 2**-16 * 1.125 of the block maximum
  flush to 0 (the bit arithmetic has no binade below the smallest code).

Nearest code = round the float32 bit pattern to the code's precision (add half a code
step, shift): within a binade the codes are evenly spaced, so this is the nearest value,
ties rounded away from zero. Encoding and decoding are integer adds, shifts, minima and
maxima, no table and no search, so the numba and Triton kernels compute them in vector
registers and get the same bits as this torch version. This differs from bitsandbytes'
dynamic map (seven decimal decades split linearly, encoded by a search over a sorted
table): that map is finer near the block maximum (0.4%) and coarser below a tenth of it
(7% and worse); here the precision is even, and encoding vectorises.

Stochastic rounding (what the optimizer's state uses): add random bits below the kept
ones instead of half a step. The three 8-bit buffers of a tensor share one 32-bit hash
per element and step, split into fields (``NOISE_FIELDS``: 11 bits for ``square_avg``,
11 for ``grad_avg``, 10 for ``momentum_buffer``), each placed at the top of its buffer's
rounding window: one hash instead of three is what lets the fused CPU kernel keep up
with fp32 state (``code_noise``). Ten or eleven random bits bound the rounding bias at
2**-11 of a code step.

Blocks of zeros and of tiny (even subnormal) values: an all-zero block has scale 0 and
codes 0; a block whose largest magnitude is below 2**-64 is lifted by 2**64 (exact, a
power of two) before it is normalised, so ``1 / scale`` never overflows and 0 stays 0.

NaN and Inf (a NaN gradient with ``nonfinite="update"``, torch's behaviour: the parameter
becomes NaN) never enter a block's scale, so the other 255 values of the block keep their
state; the non-finite element itself gets the largest code: the block maximum (with its
sign in the signed map; -Inf is 0 in the unsigned one, like every value <= 0).

``hash32`` and ``stochastic_round_to_bf16``: a counter-based random stream (a 32-bit
integer hash of the element index, the step and a seed), written with integer arithmetic
that torch, numba and Triton all compute identically, so stochastic rounding gives the
same bits in every implementation.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor

BLOCK = 256
MASK32 = 0xFFFFFFFF
ONE_BITS = 0x3F800000  # float32 1.0
INF_BITS = 0x7F800000  # float32 +Inf: magnitudes at or above it are not finite
U_SHIFT, U_BASE = 19, (ONE_BITS >> 19) - 255  # unsigned: code c <-> bits (c + U_BASE) << U_SHIFT
S_SHIFT, S_BASE = 20, (ONE_BITS >> 20) - 127  # signed magnitude m <-> bits (m + S_BASE) << S_SHIFT
# blocks whose largest magnitude is below TINY_SCALE are normalised after a lift by TINY_LIFT
TINY_SCALE, TINY_LIFT = 2.0**-64, 2.0**64
# the rounding noise of each 8-bit buffer: (first bit, width) of the element's shared hash
NOISE_FIELDS = {"square_avg": (0, 11), "grad_avg": (11, 11), "momentum_buffer": (22, 10)}


def code_values(signed: bool) -> np.ndarray:
    """The value of each of the 256 codes, indexed by code (float32)."""
    codes = np.arange(256, dtype=np.uint32)
    if signed:
        magnitude = codes & 127
        values = ((magnitude + S_BASE) << S_SHIFT).view(np.float32).copy()
        values[magnitude == 0] = 0.0
        return np.where(codes & 128, -values, values).astype(np.float32)
    values = ((codes + U_BASE) << U_SHIFT).view(np.float32).copy()
    values[0] = 0.0
    return values


def num_blocks(numel: int, block: int = BLOCK) -> int:
    return (numel + block - 1) // block


def block_factors(scale: Tensor) -> tuple[Tensor, Tensor]:
    """(lift, inverse) of each block: a value is normalised as ``(value * lift) * inverse``,
    the same two products in every back end. ``lift`` is 1, or ``TINY_LIFT`` for a block
    whose largest magnitude is below ``TINY_SCALE`` (there ``1 / scale`` would overflow
    float32 for subnormal scales, and 0 would normalise to NaN): the power of two makes the
    block's values normal, exactly. ``inverse`` is ``1 / (scale * lift)``, 0 for an
    all-zero block."""
    lift = torch.where(scale < TINY_SCALE, TINY_LIFT, 1.0).to(torch.float32)
    lifted = scale * lift
    return lift, torch.where(lifted > 0, 1.0 / lifted, torch.zeros_like(scale))


def encode_normalized(x: Tensor, signed: bool, noise: Tensor | None = None) -> Tensor:
    """The code (int32, 0..255) of each float32 ``x`` in [-1, 1]: the nearest one, or with
    ``noise`` (integers in [0, 2**shift), ``code_noise``) added to the bit pattern in place
    of half a step, the one above or below with probability given by the distance
    (stochastic rounding: the expected value is ``x``). Unsigned: a positive value never
    gets code 0, a value <= 0 gets 0, NaN and +Inf get 255. Signed: the sign bit is kept,
    NaN and ±Inf get the largest magnitude."""
    bits = x.contiguous().view(torch.int32).long() & MASK32
    shift, base, top = (S_SHIFT, S_BASE, 127) if signed else (U_SHIFT, U_BASE, 255)
    add = (1 << (shift - 1)) if noise is None else noise.long()
    if not signed:
        code = (((bits + add) >> shift) - base).clamp(1, top)
        return torch.where(x <= 0, 0, code).int()
    magnitude = (((bits & 0x7FFFFFFF) + add) >> shift) - base
    return (magnitude.clamp(0, top) | ((bits >> 24) & 128)).int()


def decode_codes(codes: Tensor, signed: bool) -> Tensor:
    """The float32 value of each code (an integer tensor, 0..255)."""
    c = codes.to(torch.int32)
    if not signed:
        value = ((c + U_BASE) << U_SHIFT).view(torch.float32)
        return torch.where(c > 0, value, 0.0)
    magnitude = c & 127
    value = ((magnitude + S_BASE) << S_SHIFT).view(torch.float32)
    value = torch.where(magnitude > 0, value, 0.0)
    return torch.where(c >= 128, -value, value)


def quantize_blockwise(x: Tensor, signed: bool, block: int = BLOCK, *,
                       noise: Tensor | None = None) -> tuple[Tensor, Tensor]:  # fmt: skip
    """``x`` (any shape) -> (uint8 codes of ``x``'s shape, fp32 scale per block).

    Nearest codes, or stochastically rounded ones with ``noise`` (one integer per element,
    ``code_noise``): the optimizer's state uses those, because an average that moves by 1%
    a step (alpha = 0.99) would otherwise stick to its code.

    A NaN or Inf does not enter its block's scale (it would turn every other value of the
    block into 0 or NaN); it is stored with the largest code (see ``encode_normalized``).
    """
    flat = x.detach().reshape(-1).float()
    n = flat.numel()
    pad = num_blocks(n, block) * block - n
    padded = torch.nn.functional.pad(flat, (0, pad)).view(-1, block)
    magnitude = padded.abs()
    scale = torch.where(torch.isfinite(magnitude), magnitude, 0.0).amax(dim=1)
    if noise is not None:
        noise = torch.nn.functional.pad(noise.reshape(-1).long(), (0, pad)).view(padded.shape)
    lift, inverse = block_factors(scale)
    codes = encode_normalized(padded * lift.unsqueeze(1) * inverse.unsqueeze(1), signed, noise)
    return codes.reshape(-1)[:n].to(torch.uint8).view(x.shape), scale


def dequantize_blockwise(codes: Tensor, scale: Tensor, signed: bool, block: int = BLOCK) -> Tensor:
    """The fp32 tensor the codes stand for (``codes``' shape; ``scale`` of any shape holding
    one value per block, in order)."""
    n = codes.numel()
    scale = scale.reshape(-1)
    values = decode_codes(codes.reshape(-1), signed)
    padded = torch.nn.functional.pad(values, (0, num_blocks(n, block) * block - n)).view(-1, block)
    return (padded * scale.unsqueeze(1)).reshape(-1)[:n].view(codes.shape)


STREAMS = {"square_avg": 0, "grad_avg": 1, "momentum_buffer": 2, "param": 3}
#: a buffer's slot: ``grad_var`` is stored in place of ``square_avg`` (``lowbit.state``)
STREAM_OF = {**{name: name for name in STREAMS}, "grad_var": "square_avg"}


def stream_seed(rounding_seed: int, position: int, stream: str) -> int:
    """The ``seed`` of one tensor's random stream: the optimizer's ``rounding_seed``, the
    parameter's position in it, and which of its four streams (``STREAMS``)."""
    return rounding_seed * 7919 + position * len(STREAMS) + STREAMS[STREAM_OF[stream]]


def stream_offset(step: int, seed: int) -> int:
    """What ``hash32`` adds to the element index at ``step`` (mod 2**32)."""
    return (step * 0x9E3779B9 + seed * 0x85EBCA6B) & MASK32


def stream_offsets(steps: ArrayLike, rounding_seed: int, positions: ArrayLike,
                   firsts: ArrayLike) -> np.ndarray:  # fmt: skip
    """The offsets of the four streams (``STREAMS`` order) of many tensors, one row per
    tensor at its step: the table the fused kernels take. ``firsts``: the stream index of
    each tensor's first element (a shard's global offset), folded into its offsets.

    ``stream_offset(step, stream_seed(...)) + first`` mod 2**32 for every cell, computed in
    numpy's wrapping uint64 arithmetic (one pass for all tensors, not a Python loop per
    tensor and stream): exact, since only the low 32 bits of each sum are kept and the
    low 32 bits of a product depend only on the low 32 bits of its factors. The columns
    may be lists or arrays (steps as floats, the counters' values)."""
    u64 = np.uint64
    step, position, first = _low32(steps), _low32(positions), _low32(firsts)
    streams = np.arange(len(STREAMS), dtype=u64)  # stream_seed, one column per stream
    seed = u64(rounding_seed % 2**32 * 7919) + position * u64(len(STREAMS)) + streams
    return (step * u64(0x9E3779B9) + seed * u64(0x85EBCA6B) + first) & u64(MASK32)


def _low32(values: ArrayLike) -> np.ndarray:
    """The low 32 bits of each whole number of ``values``, as a uint64 column."""
    array = np.asarray(values)
    if array.dtype.kind == "f":  # step counters: whole numbers below 2**53
        array = array.astype(np.int64)
    elif array.dtype.kind not in "iu":  # Python integers beyond 64 bits
        array = np.array([int(v) % 2**32 for v in values], np.int64)
    return (array.astype(np.int64, copy=False) & MASK32).astype(np.uint64).reshape(-1, 1)


def hash32(index: Tensor, step: int, seed: int) -> Tensor:
    """A 32-bit integer hash of ``index + (step, seed) mix`` (Wellons' lowbias32), computed
    in int64 with explicit 32-bit masks so every backend gets the same bits."""
    x = (index.long() + stream_offset(step, seed)) & MASK32
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & MASK32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & MASK32
    return x ^ (x >> 16)


def noise_field(name: str) -> tuple[int, int, int]:
    """(first bit, mask, lift) of 8-bit buffer ``name``'s noise: ``(hash >> first) & mask``
    is its field of ``NOISE_FIELDS``, ``<< lift`` puts it at the top of the buffer's
    rounding window (``U_SHIFT`` or ``S_SHIFT`` bits). The kernels take these constants."""
    slot = STREAM_OF[name]
    first, width = NOISE_FIELDS[slot]
    shift = U_SHIFT if slot == "square_avg" else S_SHIFT
    return first, (1 << width) - 1, shift - width


def code_noise(hashes: Tensor, name: str) -> Tensor:
    """The stochastic-rounding noise of 8-bit buffer ``name`` from the element hashes
    (``hash32`` of the tensor's ``square_avg`` stream): see ``noise_field``."""
    first, mask, lift = noise_field(name)
    return ((hashes.long() >> first) & mask) << lift


def stochastic_round_to_bf16(x: Tensor, step: int, seed: int, first: int | Tensor = 0) -> Tensor:
    """Round fp32 ``x`` to bf16 up or down with probability given by the distance (the
    expected value is ``x``): add 16 random low bits, truncate. NaN/Inf pass unchanged.
    ``first``: the stream index of ``x``'s first element (a shard's global offset), or a
    tensor of each element's index (a shard that is not one range of the global order)."""
    x32 = x.float().contiguous()
    bits = x32.view(torch.int32).long() & MASK32
    if isinstance(first, Tensor):
        index = first.to(device=x.device, dtype=torch.int64).reshape(x32.shape)
    else:
        index = torch.arange(first, first + x32.numel(), device=x.device).view(x32.shape)
    noise = hash32(index, step, seed) & 0xFFFF
    rounded = ((bits + noise) & 0xFFFF0000) & MASK32
    as_int32 = torch.where(rounded >= 2**31, rounded - 2**32, rounded).to(torch.int32)
    out = as_int32.view(torch.float32)
    out = torch.where(torch.isfinite(x32), out, x32)
    return out.to(torch.bfloat16)
