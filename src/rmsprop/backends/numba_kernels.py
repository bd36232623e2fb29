"""The fused CPU kernels (numba): one pass over memory per step, every switch. The back
end around them (what they take, the host side of a step, compiling in the background)
is ``numba_cpu``; this module is imported only when a kernel runs or compiles.

One call per parameter group and dtype: the kernel receives the addresses of every
tensor (param, grad, square_avg, grad_avg, momentum_buffer), splits the work into chunks
of ``CHUNK`` elements and runs them in parallel (``prange``). Each element is read once
and written once, so plain RMSprop moves 20 bytes per fp32 parameter (read p, g, v; write
p, v) instead of the ~52 of torch's multi-pass kernels.

Op order and rounding: each line below is the operation the single-tensor path
(``rmsprop.backends.single``) performs, in the same order, with the multiply-adds
that torch's CPU kernels contract into one FMA (``addcmul``, ``add(alpha=)``, ``lerp``)
written as an FMA here too; no ``fastmath``. The one difference: the square root here is
IEEE (correctly rounded), while torch's vectorised CPU ``sqrt`` is not always (measured
on an AVX-512 machine: 17% of float32 roots one ulp away). So results agree with the
single-tensor path to about one ulp per step, and with the float64 reference to 1e-12.

Compact state and pure-bf16 training (the same ``step`` entry point, ``batch.storage``):
the same update between a decode and an encode in registers, bf16 state with stochastic
rounding, blockwise 8-bit codes (each block of 256 decoded, updated, its new scale taken
as an integer maximum of the bit patterns, re-encoded while in L1), and bf16 params
(``stochastic_rounding=True``) widened to fp32 and written back stochastically rounded,
with any of the three state forms. The codecs are integer adds, shifts and selects, so
the loops vectorise; the uint32 arithmetic is wrapped in ``uint32`` at each step because
numba widens it to 64 bits, which halves the vector lanes.

Compiled once per switch combination and dtype, cached on disk (``_jit``: keyed by the
variant, one index file per variant).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch
from torch import Tensor

try:
    import numba
    from llvmlite import ir
    from numba import njit, prange
    from numba.core import cgutils, types
    from numba.core.caching import FunctionCache
    from numba.extending import intrinsic
except ImportError as err:  # pragma: no cover - exercised where numba is missing
    raise ImportError(
        "impl='numba' needs numba: pip install numba (in rmsprop's clone: pip install -e '.[torch]')"
    ) from err

from .._torch_compile import opaque_to_dynamo
from ..lowbit.codecs import (
    INF_BITS,
    S_BASE,
    S_SHIFT,
    TINY_LIFT,
    TINY_SCALE,
    U_BASE,
    U_SHIFT,
    noise_field,
)
from ..lowbit.forms import Storage
from ..lowbit.state import BUFFERS
from . import host
from .base import Hyper
from .host import (
    ALPHA,
    DECAY,
    EPS,
    LERP_REST,
    LR,
    MOMENTUM,
    NEG_LR,
    NEG_LR_MOM,
    NEG_MOM,
    ONE_MINUS_ALPHA,
    WD,
)

CHUNK = 1 << 15

# flag slots
MAXIMIZE, WD_MODE, EMA, CENTERED, CLAMP, BIAS, EPS_IN_SQRT, MOMENTUM_MODE, NESTEROV = range(9)


@intrinsic
def _fma(typingctx, a, b, c):
    """``a*b + c`` with one rounding (llvm.fma), as torch's CPU kernels compute it."""
    common = typingctx.unify_types(a, b, c)
    sig = common(common, common, common)

    def codegen(context, builder, signature, args):
        t = args[0].type
        fn = builder.module.declare_intrinsic("llvm.fma", [t], ir.FunctionType(t, [t, t, t]))
        return builder.call(fn, args)

    return sig, codegen


@intrinsic
def _as_pointer(typingctx, address):
    sig = types.voidptr(address)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)

    return sig, codegen


@njit(inline="always")
def _mean_(ema, mi, gi, s, lerp_low):
    """(5) ``ḡ ← α ḡ + (1 − α) g``, written as ``ema`` writes it."""
    oma = s[ONE_MINUS_ALPHA]
    if ema == 0:  # grad_avg.lerp_(g, 1-alpha)
        if lerp_low:
            return _fma(oma, gi - mi, mi)
        return _fma(-s[LERP_REST], gi - mi, gi)
    if ema == 1:  # grad_avg.mul_(alpha).add_(g, alpha=1-alpha)
        return _fma(oma, gi, mi * s[ALPHA])
    return _fma(oma, gi - mi, mi)  # grad_avg.add_(g - grad_avg, alpha=1-alpha)


@njit(inline="always")
def _update(f, gi, pi, vi, mi, bi, s, lerp_low, corr):
    """Steps (1)-(10) for one element; ``f`` the switches (compile-time constants at every
    call site), ``s`` the scalars, ``corr`` the tensor's (c_t, 1/c_{t−1}, weight) of
    ``algorithm.variance_weights``. Returns the new (p, v, ḡ, b); in the variance form
    (centered compact state) ``vi`` is S = v − ḡ²/c."""
    maximize, wd_mode, ema, centered, clamp, bias, eps_in_sqrt, momentum_mode, nesterov = f[:9]
    variance = f[9]
    alpha, oma, eps, wd, lr, neg_lr = s[ALPHA], s[ONE_MINUS_ALPHA], s[EPS], s[WD], s[LR], s[NEG_LR]
    mu, decay, neg_lr_mu, neg_mu = s[MOMENTUM], s[DECAY], s[NEG_LR_MOM], s[NEG_MOM]
    correction = corr[0]
    if maximize:  # (1)
        gi = -gi
    if wd_mode == 2:  # (3) decoupled: param.mul_(1 - lr*wd)
        pi = pi * decay
    elif wd_mode == 1:  # (3) coupled: grad.add(param, alpha=wd)
        gi = _fma(wd, pi, gi)
    if variance:  # (4') S ← αS + w (g − μ)², μ = ḡ/c_{t−1}; (5); (6) s = S/c_t
        delta = gi - mi * corr[1]
        vi = _fma(corr[2] * delta, delta, vi * alpha)
        mi = _mean_(ema, mi, gi, s, lerp_low)
        si = vi / correction if bias else vi
    else:
        if ema == 2:  # (4) square_avg.add_(g*g - v, alpha=1-alpha)
            vi = _fma(oma, gi * gi - vi, vi)
        else:  # (4) square_avg.mul_(alpha).addcmul_(g, g, value=1-alpha)
            vi = _fma(oma * gi, gi, vi * alpha)
        si = vi
        if centered:  # (5)
            mi = _mean_(ema, mi, gi, s, lerp_low)
            if bias:  # (6)
                mean = mi / correction
                si = _fma(-mean, mean, vi / correction)
            else:
                si = _fma(-mi, mi, vi)
            if clamp and si < 0:
                si = si - si  # +0, as clamp_min(s, 0)
        elif bias:
            si = vi / correction
    if eps_in_sqrt:  # (7)
        d = np.sqrt(si + eps)
    else:
        d = np.sqrt(si) + eps
    if momentum_mode == 0:  # (8)-(10) param.addcdiv_(g, d, value=-lr)
        pi = pi + (neg_lr * gi) / d
    elif momentum_mode == 1:  # lr outside: buf.mul_(mu).addcdiv_(g, d)
        bi = bi * mu + gi / d
        if nesterov:
            pi = _fma(neg_lr_mu, bi, pi + (neg_lr * gi) / d)
        else:
            pi = _fma(neg_lr, bi, pi)
    else:  # lr inside: buf.mul_(mu).addcdiv_(g, d, value=lr)
        bi = bi * mu + (lr * gi) / d
        if nesterov:
            pi = _fma(neg_mu, bi, pi) + (neg_lr * gi) / d
        else:
            pi = pi - bi
    return pi, vi, mi, bi


@intrinsic
def _f32_from_bits(typingctx, bits):
    sig = types.float32(types.uint32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


@intrinsic
def _bits_from_f32(typingctx, value):
    sig = types.uint32(types.float32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return sig, codegen


@intrinsic
def _hash32(typingctx, index, offset):
    """``codecs.hash32``: lowbias32 of ``index + offset``, written as 32-bit LLVM integer
    operations (numba would widen uint32 arithmetic to 64 bits, and 64-bit vector
    multiplies are slow), so the loops around it vectorise 16 lanes wide."""
    sig = types.uint32(index, offset)

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)

        def as_i32(value, ty):
            width = ty.bitwidth
            return (
                value
                if width == 32
                else (builder.trunc(value, i32) if width > 32 else builder.zext(value, i32))
            )

        x = builder.add(as_i32(args[0], signature.args[0]), as_i32(args[1], signature.args[1]))
        for shift, factor in ((16, 0x7FEB352D), (15, 0x846CA68B)):
            x = builder.xor(x, builder.lshr(x, ir.Constant(i32, shift)))
            x = builder.mul(x, ir.Constant(i32, factor))
        return builder.xor(x, builder.lshr(x, ir.Constant(i32, 16)))

    return sig, codegen


@njit(inline="always")
def _bf16_decode(u16):
    return _f32_from_bits(np.uint32(u16) << np.uint32(16))


@njit(inline="always")
def _bf16_encode(value, index, offset):
    """``codecs.stochastic_round_to_bf16`` for one element (``offset`` from step and seed)."""
    u32 = np.uint32
    bits = _bits_from_f32(value)
    noise = u32(_hash32(index, offset) & u32(0xFFFF))
    rounded = u32(u32(bits + noise) >> u32(16))
    finite = u32(bits & u32(0x7FFFFFFF)) < u32(0x7F800000)
    nan = u32(bits & u32(0x7FFFFFFF)) > u32(0x7F800000)
    return np.uint16(rounded if finite else (u32(0x7FC0) if nan else u32(bits >> u32(16))))


@njit(inline="always")
def _load(x, i, bf16):
    """(2) Element ``i`` of a param or grad: as stored, or (``bf16``) its bf16 bits widened
    to fp32 (exact)."""
    return _bf16_decode(x[i]) if bf16 else x[i]


@njit(inline="always")
def _store(x, i, value, bf16, index, offset):
    """(10) Writes param element ``i``: as is, or (``bf16``) stochastically rounded to bf16
    from the param's stream, as ``codecs.stochastic_round_to_bf16``: the noise of
    ``index + offset`` (``i`` and the stream's offset, or a block-local index and an offset
    that includes the block's start: a 32-bit induction variable vectorises 16 lanes wide)."""
    if bf16:
        x[i] = _bf16_encode(value, index, offset)
    else:
        x[i] = value


@njit(inline="always")
def _param_and_grad(addresses, t, n, dtype):
    """Tensor ``t``'s param and grad as arrays of ``dtype`` (uint16: bf16 bits)."""
    return (numba.carray(_as_pointer(addresses[t, 0]), n, dtype),
            numba.carray(_as_pointer(addresses[t, 1]), n, dtype))  # fmt: skip


# The 8-bit codecs of ``lowbit.codecs`` for one element. numba widens uint32 arithmetic to
# 64 bits; wrapping each result in ``_u32`` lets LLVM keep 32-bit vector lanes.
_u32 = np.uint32


@njit(inline="always")
def _decode_unsigned(code):
    """``codecs.decode_codes(code, signed=False)``."""
    c = _u32(code)
    value = _f32_from_bits(_u32(_u32(c + _u32(U_BASE)) << _u32(U_SHIFT)))
    return value if c != _u32(0) else np.float32(0.0)


@njit(inline="always")
def _decode_signed(code):
    """``codecs.decode_codes(code, signed=True)``."""
    c = _u32(code)
    magnitude = _u32(c & _u32(127))
    value = _f32_from_bits(_u32(_u32(magnitude + _u32(S_BASE)) << _u32(S_SHIFT)))
    value = value if magnitude != _u32(0) else np.float32(0.0)
    return -value if c >= _u32(128) else value


@njit(inline="always")
def _encode_unsigned(x, noise):
    """``codecs.encode_normalized(x, signed=False, noise)``: add ``noise`` (< 2**19) to the
    bit pattern, keep 4 mantissa bits, clamp to codes 1..255; 0 for x <= 0."""
    rounded = _u32(_u32(_bits_from_f32(x) + noise) >> _u32(U_SHIFT))
    code = min(_u32(max(rounded, _u32(U_BASE + 1)) - _u32(U_BASE)), _u32(255))
    return np.uint8(_u32(0) if x <= np.float32(0.0) else code)


@njit(inline="always")
def _encode_signed(x, noise):
    """``codecs.encode_normalized(x, signed=True, noise)``: the magnitude's bit pattern plus
    ``noise`` (< 2**20), 3 mantissa bits kept, clamped to 0..127; the sign bit on top."""
    bits = _bits_from_f32(x)
    rounded = _u32(_u32(_u32(bits & _u32(0x7FFFFFFF)) + noise) >> _u32(S_SHIFT))
    magnitude = min(_u32(max(rounded, _u32(S_BASE)) - _u32(S_BASE)), _u32(127))
    return np.uint8(magnitude | _u32(_u32(bits >> _u32(24)) & _u32(128)))


@njit(inline="always")
def _magnitude_bits(x):
    """The bit pattern of ``|x|``: integers order like the floats, NaN/Inf above them all."""
    return _u32(_bits_from_f32(x) & _u32(0x7FFFFFFF))


@njit(inline="always")
def _finite_top(values, count, top):
    """The largest finite magnitude of ``values[:count]`` given ``top``, the largest
    magnitude: the same unless a NaN/Inf is there (rare: then one more pass)."""
    if top < _u32(INF_BITS):
        return top
    top = _u32(0)
    for j in range(count):
        magnitude = _magnitude_bits(values[j])
        top = max(top, magnitude if magnitude < _u32(INF_BITS) else _u32(0))
    return top


def _noise_field(name):
    """``codecs.code_noise`` for one buffer as a function of the element's hash (the field's
    position and the rounding window, ``codecs.noise_field``, are compile-time constants)."""
    first, mask, lift = (_u32(x) for x in noise_field(name))

    @njit(inline="always")
    def field(hashes):
        return _u32(_u32(_u32(hashes >> _u32(first)) & mask) << lift)

    return field


_V_NOISE, _M_NOISE, _B_NOISE = (_noise_field(name) for name in BUFFERS)


@njit(inline="always")
def _encode_codes(values, codes, start, count, top, buffer, hashes, offset):
    """``codecs.quantize_blockwise`` for one block of ``count`` fp32 values whose absolute
    maximum has the bit pattern ``top`` (the new scale): writes the stochastically rounded
    codes of ``value * (1 / scale)`` at ``codes[start:]``. ``buffer`` 0 (``square_avg``,
    encoded first) hashes each element (stream offset ``offset``) and keeps the hashes in
    ``hashes`` for buffers 1 (``grad_avg``) and 2 (``momentum_buffer``)."""
    scale = _f32_from_bits(top)
    lift = np.float32(TINY_LIFT) if scale < np.float32(TINY_SCALE) else np.float32(1.0)
    lifted = scale * lift  # codecs.block_factors
    inverse = np.float32(1.0) / lifted if lifted > np.float32(0.0) else np.float32(0.0)
    for i in range(start, start + count):
        x = (values[i - start] * lift) * inverse
        if buffer == 0:
            h = _hash32(i, offset)
            hashes[i - start] = h
            codes[i] = _encode_unsigned(x, _V_NOISE(h))
        elif buffer == 1:
            codes[i] = _encode_signed(x, _M_NOISE(hashes[i - start]))
        else:
            codes[i] = _encode_signed(x, _B_NOISE(hashes[i - start]))


@njit(inline="always")
def _int8_update(flags, s, lerp_low, correction, p, g, vq, mq, bq, start, count, scale, new,
                 offsets, bf16):  # fmt: skip
    """One block of 8-bit state, decoded and updated (1)-(10): the new fp32 values wait in
    ``new`` (in L1) for ``_int8_encode``; returns the bit patterns of their absolute
    maxima (integer maxima of the bit patterns, NaN/Inf above every finite value).
    ``offsets``: the tensor's stream offsets (v, ḡ, b, param); a bf16 param (``bf16``)
    draws on the param stream."""
    centered, momentum_mode = flags[CENTERED] == 1, flags[MOMENTUM_MODE] != 0
    top_v, top_m, top_b = _u32(0), _u32(0), _u32(0)
    p_offset = _u32(offsets[3] + _u32(start))  # noise of j + p_offset == of i + offsets[3]
    for j in range(count):
        i = start + j
        mi = _decode_signed(mq[i]) * scale[1] if centered else s[EPS]
        bi = _decode_signed(bq[i]) * scale[2] if momentum_mode else s[EPS]
        pi, vi, mi, bi = _update(flags, _load(g, i, bf16), _load(p, i, bf16),
                                 _decode_unsigned(vq[i]) * scale[0], mi, bi, s, lerp_low,
                                 correction)  # fmt: skip
        _store(p, i, pi, bf16, j, p_offset)
        new[0, j] = vi
        top_v = max(top_v, _magnitude_bits(vi))
        if centered:
            new[1, j] = mi
            top_m = max(top_m, _magnitude_bits(mi))
        if momentum_mode:
            new[2, j] = bi
            top_b = max(top_b, _magnitude_bits(bi))
    return top_v, top_m, top_b


@njit(inline="always")
def _int8_encode(flags, vq, mq, bq, start, count, new, tops, offsets, hashes):
    """The block's values in ``new`` re-encoded; returns the new scales (v, ḡ, b). A block
    where a maximum in ``tops`` is NaN/Inf takes its finite maximum in one more pass
    (``codecs.quantize_blockwise``: a NaN/Inf does not enter the scale); the codes draw on
    the v stream's hash."""
    centered, momentum_mode = flags[CENTERED] == 1, flags[MOMENTUM_MODE] != 0
    top_v = _finite_top(new[0], count, tops[0])
    top_m = _finite_top(new[1], count, tops[1]) if centered else tops[1]
    top_b = _finite_top(new[2], count, tops[2]) if momentum_mode else tops[2]
    _encode_codes(new[0], vq, start, count, top_v, 0, hashes, offsets[0])
    if centered:
        _encode_codes(new[1], mq, start, count, top_m, 1, hashes, offsets[0])
    if momentum_mode:
        _encode_codes(new[2], bq, start, count, top_b, 2, hashes, offsets[0])
    return _f32_from_bits(top_v), _f32_from_bits(top_m), _f32_from_bits(top_b)


class _VariantCache(FunctionCache):
    """numba's disk cache for a function of a kernel, keyed by the kernel's variant (the
    ``name`` ``_jit`` gives it: a hash of its switches, state format, param format) instead
    of numba's key, a pickle of the closure's cells: a cell that holds another compiled
    function pickles differently in every process (numba gives each a fresh id), so that
    key never matched again and every process compiled the kernel anew.

    The variant is in the function's name (``_jit``), so each variant has files of its own
    (numba names them by the function): with one index shared by the variants, numba
    numbers a new entry's data file by reading the index, taking the first free number and
    writing the index back, so two processes compiling two variants at once could take the
    same number, and one variant's key then loaded the other's code."""

    def __init__(self, py_func, variant: str):
        super().__init__(py_func)
        self._variant = variant

    def _index_key(self, sig, codegen):
        code = hashlib.sha256(self._py_func.__code__.co_code).hexdigest()
        return sig, codegen.magic_tuple(), (code, self._variant)


def _jit(variant: tuple[Any, ...], parallel: bool = False):
    """``njit`` for one function of a kernel variant, cached on disk by ``variant``.

    The kernel is split in two: the parallel loop over chunks (``parallel=True``) calls a
    function compiled on its own for the elements of one chunk. numba's parallel passes
    copy and re-analyse everything inside a ``prange`` body, which made the 8-bit kernels
    take about a minute each to compile (now 10-12 s; the float and bf16 ones 5-6 s ->
    2-3 s); the call per chunk of ``CHUNK`` elements costs nothing measurable. The chunk's
    function gets ``error_model="numpy"``, what numba gives a ``prange`` body (a division
    by zero gives inf or NaN): with Python's error model each division tests for zero and
    the loop no longer vectorises (measured 2.5x-6x slower)."""

    name = hashlib.sha256(repr(variant).encode()).hexdigest()[:16]

    def compile_lazily(py_func):
        # The variant in the function's name, so in its compiled symbol: numba names a
        # symbol by the function's name and a counter of the process that compiled it, so
        # two variants each compiled first in its own process had the same symbol, and a
        # program that loaded both from the cache ran the first one's code for the second
        # (one symbol per name in the process). The same variant: the same code.
        py_func.__qualname__ = f"{py_func.__qualname__}_{name}"
        options = {"parallel": True} if parallel else {"error_model": "numpy"}
        dispatcher = njit(**options)(py_func)
        dispatcher._cache = _VariantCache(py_func, name)  # what cache=True sets up
        return dispatcher

    return compile_lazily


def _make_kernel(flags: tuple[int, ...], state_format: str = "float", bf16_params: bool = False):
    """A kernel specialised for one combination of switches, one state format and one
    param format.

    The switches are compile-time constants of the closures (passed on to the inlined
    ``_update``), so untaken branches vanish and the element loop vectorises (LLVM does
    not reliably do that for runtime flags); numba's disk cache keys closures by their
    captured values, so each variant compiles once. Element indices are unsigned, which
    spares numba's negative-index wraparound test.

    ``state_format="float"``: state in the parameter's dtype (fp32 with bf16 params).
    ``"bf16"``: state stored as bf16 (uint16 bits), decoded in registers and written back
    with stochastic rounding, the same bits as ``lowbit.codecs.stochastic_round_to_bf16``.
    ``"int8"``: blockwise 8-bit codes (``lowbit.codecs.quantize_blockwise``).
    ``bf16_params``: param and grad are bf16 (uint16 bits), the math fp32, the param
    written back with stochastic rounding (``stochastic_rounding=True``).

    Every kernel takes ``(addresses, sizes, corrections, chunk_tensor, chunk_start,
    chunk_stop, s, scales, offsets)``: ``addresses[t]`` the data pointers of tensor ``t``
    (p, g, v, ḡ, b; 0 if absent), ``scales[t, k]`` those of buffer ``k``'s 8-bit block
    scales, ``offsets[t, k]`` the random-stream offsets of (v, ḡ, b, param) at this step;
    it runs ``chunk(..., t, start, stop, ...)`` for every chunk in parallel.
    """
    centered, momentum_mode = flags[3] == 1, flags[7] != 0
    # torch's lerp (the centered mean, EMA form "torch") takes one of two formulas by its
    # weight: the element loops are written once per formula, each with it a constant (a
    # per-element choice between two multiply-adds made LLVM's cost model refuse to
    # vectorise the compact-state loops: 5-6x slower); in other variants it is unused
    lerp_matters = centered and flags[EMA] == 0
    bf16 = bf16_params
    variant = (flags, state_format, bf16_params)

    @_jit(variant)
    def float_chunk(addresses, sizes, corrections, t, start, stop, s, scales, offsets):
        """Elements ``start:stop`` of tensor ``t``, state in the param's dtype."""
        lerp_low = s[ONE_MINUS_ALPHA] < 0.5
        n = sizes[t]
        p, g = _param_and_grad(addresses, t, n, np.uint16 if bf16 else s.dtype)
        v = numba.carray(_as_pointer(addresses[t, 2]), n, s.dtype)
        m = numba.carray(_as_pointer(addresses[t, 3] or addresses[t, 2]), n, s.dtype)
        b = numba.carray(_as_pointer(addresses[t, 4] or addresses[t, 2]), n, s.dtype)
        correction = (corrections[t, 0], corrections[t, 1], corrections[t, 2])
        if lerp_matters and not lerp_low:
            float_elements(p, g, v, m, b, start, stop, s, correction, offsets[t, 3], False)
        else:
            float_elements(p, g, v, m, b, start, stop, s, correction, offsets[t, 3], True)

    @njit(inline="always")
    def float_elements(p, g, v, m, b, start, stop, s, correction, p_offset, lerp_low):
        for i in range(start, stop):
            mi = m[i] if centered else s[EPS]
            bi = b[i] if momentum_mode else s[EPS]
            pi, vi, mi, bi = _update(flags, _load(g, i, bf16), _load(p, i, bf16), v[i], mi, bi, s,
                                     lerp_low, correction)  # fmt: skip
            _store(p, i, pi, bf16, i, p_offset)
            v[i] = vi
            if centered:
                m[i] = mi
            if momentum_mode:
                b[i] = bi

    @_jit(variant)
    def bf16_chunk(addresses, sizes, corrections, t, start, stop, s, scales, offsets):
        """Elements ``start:stop`` of tensor ``t``, state as bf16 bits."""
        lerp_low = s[ONE_MINUS_ALPHA] < 0.5
        n = sizes[t]
        p, g = _param_and_grad(addresses, t, n, np.uint16 if bf16 else s.dtype)
        v = numba.carray(_as_pointer(addresses[t, 2]), n, np.uint16)
        m = numba.carray(_as_pointer(addresses[t, 3] or addresses[t, 2]), n, np.uint16)
        b = numba.carray(_as_pointer(addresses[t, 4] or addresses[t, 2]), n, np.uint16)
        correction = (corrections[t, 0], corrections[t, 1], corrections[t, 2])
        if lerp_matters and not lerp_low:
            bf16_elements(p, g, v, m, b, start, stop, s, correction, offsets[t], False)
        else:
            bf16_elements(p, g, v, m, b, start, stop, s, correction, offsets[t], True)

    @njit(inline="always")
    def bf16_elements(p, g, v, m, b, start, stop, s, correction, offsets, lerp_low):
        v_offset, m_offset, b_offset, p_offset = offsets
        for i in range(start, stop):
            mi = _bf16_decode(m[i]) if centered else s[EPS]
            bi = _bf16_decode(b[i]) if momentum_mode else s[EPS]
            pi, vi, mi, bi = _update(flags, _load(g, i, bf16), _load(p, i, bf16),
                                     _bf16_decode(v[i]), mi, bi, s, lerp_low, correction)  # fmt: skip
            _store(p, i, pi, bf16, i, p_offset)
            v[i] = _bf16_encode(vi, i, v_offset)
            if centered:
                m[i] = _bf16_encode(mi, i, m_offset)
            if momentum_mode:
                b[i] = _bf16_encode(bi, i, b_offset)

    @_jit(variant)
    def int8_block(s, lerp_low, correction, p, g, vq, mq, bq, start, count, scale, new, offsets,
                   hashes):  # fmt: skip
        """One block of 8-bit state: decoded, updated, re-encoded (``_int8_update``,
        ``_int8_encode``) with this kernel's switches; returns the new scales. Compiled once
        and called at the two sites of ``int8_chunk`` (inlining it at both doubled the
        compile time)."""
        if lerp_matters and not lerp_low:
            tops = _int8_update(flags, s, False, correction, p, g, vq, mq, bq, start, count,
                                scale, new, offsets, bf16)  # fmt: skip
        else:
            tops = _int8_update(flags, s, True, correction, p, g, vq, mq, bq, start, count,
                                scale, new, offsets, bf16)  # fmt: skip
        return _int8_encode(flags, vq, mq, bq, start, count, new, tops, offsets, hashes)

    @_jit(variant)
    def int8_chunk(addresses, sizes, corrections, t, start, stop, s, scales, offsets):
        """Elements ``start:stop`` of tensor ``t`` (whole blocks but the tensor's last):
        ``addresses[t, 2:]`` point to uint8 codes. Each block of 256 is decoded, updated
        and re-encoded (new scale = the block's largest finite magnitude) while in cache."""
        lerp_low = s[ONE_MINUS_ALPHA] < 0.5
        n = np.uint64(sizes[t])  # unsigned throughout: int64/uint64 mixes become float64
        blocks = (n + np.uint64(255)) // np.uint64(256)
        p, g = _param_and_grad(addresses, t, n, np.uint16 if bf16 else s.dtype)
        vq = numba.carray(_as_pointer(addresses[t, 2]), n, np.uint8)
        mq = numba.carray(_as_pointer(addresses[t, 3] or addresses[t, 2]), n, np.uint8)
        bq = numba.carray(_as_pointer(addresses[t, 4] or addresses[t, 2]), n, np.uint8)
        vs = numba.carray(_as_pointer(scales[t, 0]), blocks, np.float32)
        ms = numba.carray(_as_pointer(scales[t, 1] or scales[t, 0]), blocks, np.float32)
        bs = numba.carray(_as_pointer(scales[t, 2] or scales[t, 0]), blocks, np.float32)
        new = np.empty((3, 256), np.float32)
        hashes = np.empty(256, np.uint32)
        correction = (corrections[t, 0], corrections[t, 1], corrections[t, 2])
        while start < stop:
            blk = start // np.uint64(256)
            scale = (vs[blk], ms[blk], bs[blk])
            if start + np.uint64(256) <= n:  # a whole block: a constant trip count
                top = int8_block(s, lerp_low, correction, p, g, vq, mq, bq, start, np.uint64(256),
                                 scale, new, offsets[t], hashes)  # fmt: skip
            else:
                top = int8_block(s, lerp_low, correction, p, g, vq, mq, bq, start, n - start,
                                 scale, new, offsets[t], hashes)  # fmt: skip
            vs[blk] = top[0]
            if centered:
                ms[blk] = top[1]
            if momentum_mode:
                bs[blk] = top[2]
            start += np.uint64(256)

    chunk = {"float": float_chunk, "bf16": bf16_chunk, "int8": int8_chunk}[state_format]

    @_jit(variant, parallel=True)
    def run(addresses, sizes, corrections, chunk_tensor, chunk_start, chunk_stop, s, scales,
            offsets):  # fmt: skip
        for c in prange(chunk_tensor.shape[0]):
            chunk(addresses, sizes, corrections, chunk_tensor[c], chunk_start[c], chunk_stop[c], s,
                  scales, offsets)  # fmt: skip

    return run


_KERNELS: dict[tuple[object, ...], object] = {}


def kernel_for(hp: Hyper, storage: Storage = Storage.FLOAT, bf16_params: bool = False):
    """The compiled kernel for ``hp``'s switches, the state storage and the param format
    (built on first use)."""
    return kernel_of(kernel_key(hp, storage, bf16_params))


def kernel_key(hp: Hyper, storage: Storage, bf16_params: bool) -> tuple[Any, ...]:
    """(switch flags, storage, bf16 params): what a kernel is specialised on."""
    return (*hp.kernel_switches().values(), int(hp.variance_form(storage))), storage, bf16_params


def kernel_of(key: tuple[Any, ...]):
    if key not in _KERNELS:
        flags, storage, bf16_params = key
        _KERNELS[key] = _make_kernel(flags, Storage(storage).name.lower(), bf16_params)
    return _KERNELS[key]


def _make_add_one(dtype):
    @_jit(("add_one", dtype.__name__))
    def add_one(addresses, values):
        """``step += 1`` for each counter (a one-element tensor of ``dtype``, by address);
        ``values`` receives the new values."""
        for i in range(addresses.shape[0]):
            x = numba.carray(_as_pointer(addresses[i]), 1, dtype)
            x[0] += dtype(1)
            values[i] = x[0]

    return add_one


_ADD_ONE = {torch.float32: _make_add_one(np.float32), torch.float64: _make_add_one(np.float64)}


def increment_steps(steps: list[Tensor], read: bool) -> np.ndarray | None:
    """(1) ``t ← t + 1`` for every counter (added in the counter's dtype, as torch does, so
    the bits are torch's); returns the new values when ``read``. The planner has checked
    that the counters of a batch are CPU tensors of one dtype, float32 or float64: one
    compiled loop over their addresses (torch's ``_foreach_add_`` costs ~0.4 µs a
    counter)."""
    values = np.empty(len(steps), np.float64)
    if steps:
        addresses = np.array([s.data_ptr() for s in steps], np.int64)
        _ADD_ONE[steps[0].dtype](addresses, values)
    return values if read else None


# ------------------------------------------------------------------ helpers for others
def _make_nonfinite_check(word, exponent):
    """A kernel counting the chunks of a tensor list that hold NaN/Inf: each element's
    magnitude bits compared with the all-ones exponent (integer max, vectorised)."""

    @_jit(("nonfinite", word.__name__), parallel=True)
    def count(addresses, sizes, chunk_tensor, chunk_start, chunk_stop):
        bad = np.zeros(chunk_tensor.shape[0], np.uint8)
        for c in prange(chunk_tensor.shape[0]):
            t = chunk_tensor[c]
            x = numba.carray(_as_pointer(addresses[t]), np.uint64(sizes[t]), word)
            worst = word(0)
            for i in range(chunk_start[c], chunk_stop[c]):
                worst = max(worst, word(x[i] & word(exponent | (exponent - 1))))
            bad[c] = worst >= word(exponent)
        return bad.sum()

    return count


_NONFINITE = {
    torch.float32: _make_nonfinite_check(np.uint32, 0x7F800000),
    torch.float64: _make_nonfinite_check(np.uint64, 0x7FF0000000000000),
}


@opaque_to_dynamo
def any_nonfinite(tensors: list[Tensor]) -> bool:
    """True if a tensor of the list (each ``nonfinite_checkable``) holds NaN or Inf: one
    parallel read (``torch.isfinite(t).all()`` makes a bool tensor and takes ~10x longer)."""
    by_dtype: dict[torch.dtype, list[Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    for dtype, group in by_dtype.items():
        sizes = tuple(t.numel() for t in group)
        addresses = np.array([t.data_ptr() for t in group], np.int64)
        if _NONFINITE[dtype](addresses, np.array(sizes, np.int64), *host.work_items(sizes, CHUNK)):
            return True
    return False


@njit(parallel=True, cache=True)
def triad(c, a, b, scale):
    """``c = a + scale*b``: the memory-bandwidth yardstick for ``rmsprop bench``."""
    n = np.uint64(c.shape[0])
    size = np.uint64(CHUNK)
    for k in prange((n + size - np.uint64(1)) // size):
        for i in range(np.uint64(k) * size, min(n, (np.uint64(k) + np.uint64(1)) * size)):
            c[i] = a[i] + scale * b[i]


__all__ = ["any_nonfinite", "increment_steps", "kernel_for", "kernel_key", "kernel_of", "triad"]


def compile_kernel(key: tuple[Any, ...], math: str) -> None:
    """Compile (or load from the disk cache) the kernel of ``key`` for ``math`` ("float32"
    or "float64"), for the argument types of a step, without running it: what the
    background compile process does, and a training process's loading thread."""
    _, storage, bf16_params = key
    storage = Storage(storage)
    dtype = np.dtype(math)
    n = 256
    param = np.zeros(n, np.uint16 if bf16_params else dtype)
    grad = np.zeros_like(param)
    kept = {Storage.FLOAT: np.float32 if bf16_params else dtype, Storage.BF16: np.uint16,
            Storage.INT8: np.uint8}[storage]  # fmt: skip
    buffers = [np.zeros(n, kept) for _ in range(3)]
    scales = [np.ones(1, np.float32) for _ in range(3)]
    pointers = np.array([[param.ctypes.data, grad.ctypes.data, *(b.ctypes.data for b in buffers)]],
                        np.int64)  # fmt: skip
    scale_pointers = np.array([[s.ctypes.data for s in scales]], np.int64)
    corrections = np.ones((1, 3), dtype)
    arguments = (pointers, np.array([n], np.int64), corrections, *host.work_items((n,), CHUNK),
                 np.full(11, 0.5, dtype), scale_pointers, np.zeros((1, 4), np.uint64))  # fmt: skip
    # compiled for these argument types, not run: no parallel launch from a loading thread
    kernel_of(key).compile(tuple(numba.typeof(a) for a in arguments))
