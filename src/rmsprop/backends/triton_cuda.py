"""The fused GPU back end (Triton): one launch per group of tensors, every switch.

The launch gets a table of tensor addresses (param, grad, square_avg, grad_avg,
momentum_buffer per tensor) and a table of work blocks (tensor, first element); each
program updates ``BLOCK`` elements of one tensor in one pass over memory. Switches are
``tl.constexpr``, so each combination compiles to branch-free code. fp16/bf16 tensors are
loaded, updated in fp32 and stored back in their dtype.

One kernel (``_kernel``) for every state storage: the same update between a load and a
store of float state, or a decode and an encode in registers: bf16 state with stochastic
rounding, or 8-bit codes with one program per block of 256 (the block's new scale is a
``tl.max`` over its finite magnitudes); bf16 parameters written with stochastic rounding.
The codecs are the integer arithmetic of ``rmsprop.lowbit.codecs``, so the bits equal the
torch and numba ones.

Rounding: multiply-adds are ``tl.fma`` where torch's CPU kernels use an FMA, and the
square root and divisions are the IEEE ones (``sqrt_rn``, ``div_rn``), so the GPU kernel
computes what the numba kernel computes. Correctness is tested on the CPU under
``TRITON_INTERPRET=1``; speed needs a GPU.
"""

from __future__ import annotations

import numpy as np
import torch

try:
    import triton
    import triton.language as tl
except ImportError as err:  # pragma: no cover - exercised where triton is missing
    raise ImportError(
        "impl='triton' needs triton: pip install triton (in rmsprop's clone: pip install -e '.[gpu]')"
    ) from err

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
from . import host
from .base import Batch, Facts, Hyper, to_scalar_lr
from .registry import triton_device

NAME = "triton"
IEEE_SQRT = True  # its kernels' square root is correctly rounded (widen uses it too)
BLOCK = 1024
# the codec constants, as Triton wants its globals
_U_BASE, _U_SHIFT = tl.constexpr(U_BASE), tl.constexpr(U_SHIFT)
_S_BASE, _S_SHIFT = tl.constexpr(S_BASE), tl.constexpr(S_SHIFT)
_INF_BITS = tl.constexpr(INF_BITS)
_TINY_SCALE, _TINY_LIFT = tl.constexpr(TINY_SCALE), tl.constexpr(TINY_LIFT)


# codecs.noise_field of each 8-bit buffer: (first bit, mask, lift) of its field of the hash
_V_FIRST, _V_MASK, _V_LIFT = (tl.constexpr(x) for x in noise_field("square_avg"))
_M_FIRST, _M_MASK, _M_LIFT = (tl.constexpr(x) for x in noise_field("grad_avg"))
_B_FIRST, _B_MASK, _B_LIFT = (tl.constexpr(x) for x in noise_field("momentum_buffer"))


@triton.jit
def _mean(g, m, alpha, oma, lerp_rest, EMA: tl.constexpr, LERP_LOW: tl.constexpr):
    """(5) ``ḡ ← α ḡ + (1 − α) g``, written as EMA writes it."""
    if EMA == 0:
        if LERP_LOW:
            m = tl.fma(oma, g - m, m)
        else:
            m = tl.fma(-lerp_rest, g - m, g)
    elif EMA == 1:
        m = tl.fma(oma, g, m * alpha)
    else:
        m = tl.fma(oma, g - m, m)
    return m


@triton.jit
def _update(g, p, v, m, b, correction, inverse_before, weight,
            alpha, oma, eps, wd, lr, neg_lr, mu, decay, neg_lr_mu, neg_mu, lerp_rest,
            MAXIMIZE: tl.constexpr, WD_MODE: tl.constexpr, EMA: tl.constexpr,
            CENTERED: tl.constexpr, CLAMP: tl.constexpr, BIAS: tl.constexpr,
            EPS_IN_SQRT: tl.constexpr, MOMENTUM_MODE: tl.constexpr, NESTEROV: tl.constexpr,
            VARIANCE: tl.constexpr, LERP_LOW: tl.constexpr):  # fmt: skip
    """Steps (1)-(10) on fp32 values; returns the new (p, v, ḡ, b). With VARIANCE (centered
    compact state) ``v`` is S = v − ḡ²/c, updated by (4') with ``algorithm.variance_weights``
    (``correction``, ``inverse_before``, ``weight``)."""
    if MAXIMIZE:  # (1)
        g = -g
    if WD_MODE == 2:  # (3) decoupled: param.mul_(1 - lr*wd)
        p = p * decay
    elif WD_MODE == 1:  # (3) coupled: grad.add(param, alpha=wd)
        g = tl.fma(wd, p, g)
    if VARIANCE:  # (4') S ← αS + w (g − μ)², μ = ḡ/c_{t−1}; (5); (6) s = S/c_t
        delta = g - m * inverse_before
        v = tl.fma(weight * delta, delta, v * alpha)
        m = _mean(g, m, alpha, oma, lerp_rest, EMA, LERP_LOW)
        s = v
        if BIAS:
            s = tl.div_rn(v, correction)
    else:
        if EMA == 2:  # (4) v + (1-alpha)(g*g - v)
            v = tl.fma(oma, g * g - v, v)
        else:  # (4) v*alpha + ((1-alpha)*g)*g
            v = tl.fma(oma * g, g, v * alpha)
        s = v
        if CENTERED:  # (5)
            m = _mean(g, m, alpha, oma, lerp_rest, EMA, LERP_LOW)
            if BIAS:  # (6)
                mean = tl.div_rn(m, correction)
                s = tl.fma(-mean, mean, tl.div_rn(v, correction))
            else:
                s = tl.fma(-m, m, v)
            if CLAMP:
                s = tl.where(s < 0, 0.0, s)
        elif BIAS:
            s = tl.div_rn(v, correction)
    if EPS_IN_SQRT:  # (7)
        d = tl.sqrt_rn(s + eps)
    else:
        d = tl.sqrt_rn(s) + eps
    if MOMENTUM_MODE == 0:  # (8)-(10)
        p = p + tl.div_rn(neg_lr * g, d)
    elif MOMENTUM_MODE == 1:  # lr outside the buffer
        b = b * mu + tl.div_rn(g, d)
        if NESTEROV:
            p = tl.fma(neg_lr_mu, b, p + tl.div_rn(neg_lr * g, d))
        else:
            p = tl.fma(neg_lr, b, p)
    else:  # lr inside the buffer
        b = b * mu + tl.div_rn(lr * g, d)
        if NESTEROV:
            p = tl.fma(neg_mu, b, p) + tl.div_rn(neg_lr * g, d)
        else:
            p = p - b
    return p, v, m, b


# ------------------------------------------------------------------ compact state
# The codecs of rmsprop.lowbit.codecs, element-wise in registers: the same integer
# arithmetic, so the same bits as the torch and numba versions.


@triton.jit
def _hash32(index, offset):
    """``codecs.hash32`` (lowbias32 of ``index + offset``), uint32 arithmetic mod 2**32."""
    x = index.to(tl.uint32) + offset.to(tl.uint32)
    x = x ^ (x >> 16)
    x = x * tl.full((), 0x7FEB352D, tl.uint32)
    x = x ^ (x >> 15)
    x = x * tl.full((), 0x846CA68B, tl.uint32)
    return x ^ (x >> 16)


@triton.jit
def _bf16_decode(bits16):
    return (bits16.to(tl.uint32) << 16).to(tl.float32, bitcast=True)


@triton.jit
def _to_stored(value, T: tl.constexpr):
    """fp32 ``value`` stored as dtype ``T``, rounded to nearest even (as torch's ``.to``);
    bf16 through its bits, so Triton's interpreter (whose bf16 cast truncates) and the GPU
    write the same bits. NaN becomes the canonical bf16 NaN."""
    if T == tl.bfloat16:  # noqa: SIM300 (T is a compile-time dtype, not a constant)
        bits = value.to(tl.uint32, bitcast=True)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        nan = (bits & 0x7FFFFFFF) > 0x7F800000
        rounded = tl.where(nan, tl.full((), 0x7FC0, tl.uint32), rounded)
        return rounded.to(tl.uint16).to(tl.bfloat16, bitcast=True)
    return value.to(T)


@triton.jit
def _bf16_round(value, hashes):
    """``codecs.stochastic_round_to_bf16``: add 16 random low bits (of ``hashes``, the
    stream's ``_hash32``), truncate; NaN becomes the canonical bf16 NaN, ±Inf stays."""
    bits = value.to(tl.uint32, bitcast=True)
    noise = hashes & 0xFFFF
    magnitude = bits & 0x7FFFFFFF
    rounded = (bits + noise) >> 16
    rounded = tl.where(magnitude < 0x7F800000, rounded, bits >> 16)
    rounded = tl.where(magnitude > 0x7F800000, tl.full((), 0x7FC0, tl.uint32), rounded)
    return rounded.to(tl.uint16)


@triton.jit
def _int8_decode(codes, scale, SIGNED: tl.constexpr):
    """``codecs.decode_codes`` times the block's scale."""
    c = codes.to(tl.int32)
    if SIGNED:
        magnitude = c & 127
        value = ((magnitude + _S_BASE) << _S_SHIFT).to(tl.float32, bitcast=True)
        value = tl.where(magnitude > 0, value, 0.0)
        value = tl.where(c >= 128, -value, value)
    else:
        value = ((c + _U_BASE) << _U_SHIFT).to(tl.float32, bitcast=True)
        value = tl.where(c > 0, value, 0.0)
    return value * scale


@triton.jit
def _state_noise(offs, hashes, offsets_row, K: tl.constexpr, FORMAT: tl.constexpr):
    """The rounding noise of state buffer ``K`` (0: v, 1: ḡ, 2: b): with bf16 state a hash
    of the buffer's own stream; with 8-bit codes its field of the element's shared
    ``hashes`` (``codecs.code_noise``); unused with fp32 state."""
    if FORMAT == 1:
        return _hash32(offs, tl.load(offsets_row + K))
    if K == 0:
        return ((hashes >> _V_FIRST) & _V_MASK) << _V_LIFT
    if K == 1:
        return ((hashes >> _M_FIRST) & _M_MASK) << _M_LIFT
    return ((hashes >> _B_FIRST) & _B_MASK) << _B_LIFT


@triton.jit
def _int8_encode(value, mask, noise, SIGNED: tl.constexpr):
    """``codecs.quantize_blockwise`` for one block, stochastically rounded with ``noise``
    (``_state_noise``): (codes, new scale = the largest finite magnitude of the block)."""
    bits = value.to(tl.uint32, bitcast=True)
    magnitude_bits = bits & 0x7FFFFFFF
    top = tl.max(tl.where(mask & (magnitude_bits < _INF_BITS), magnitude_bits, 0), axis=0)
    scale = top.to(tl.float32, bitcast=True)
    one = tl.full((), 1.0, tl.float32)
    lift = tl.where(scale < _TINY_SCALE, _TINY_LIFT, 1.0)  # codecs.block_factors
    lifted = scale * lift
    inverse = tl.where(lifted > 0.0, tl.div_rn(one, tl.where(lifted > 0.0, lifted, one)), 0.0)
    x = (value * lift) * inverse
    bits = x.to(tl.uint32, bitcast=True)
    if SIGNED:
        rounded = ((bits & 0x7FFFFFFF) + noise) >> _S_SHIFT
        magnitude = tl.minimum(tl.maximum(rounded, _S_BASE) - _S_BASE, 127)
        code = magnitude | ((bits >> 24) & 128)
    else:
        rounded = (bits + noise) >> _U_SHIFT
        code = tl.minimum(tl.maximum(rounded, _U_BASE + 1) - _U_BASE, 255)
        code = tl.where(x <= 0.0, 0, code)
    return code.to(tl.uint8), scale


@triton.jit
def _load_state(ptr_bits, scale_ptr, quant_block, offs, mask, FORMAT: tl.constexpr,
                SIGNED: tl.constexpr, STATE_T: tl.constexpr):  # fmt: skip
    if FORMAT == 0:  # a float tensor of dtype STATE_T
        return tl.load(ptr_bits.to(tl.pointer_type(STATE_T)) + offs, mask=mask, other=0.0).to(
            tl.float32
        )
    if FORMAT == 1:  # bf16 bits
        return _bf16_decode(
            tl.load(ptr_bits.to(tl.pointer_type(tl.uint16)) + offs, mask=mask, other=0)
        )
    codes = tl.load(ptr_bits.to(tl.pointer_type(tl.uint8)) + offs, mask=mask, other=0)
    return _int8_decode(
        codes, tl.load(scale_ptr.to(tl.pointer_type(tl.float32)) + quant_block), SIGNED
    )


@triton.jit
def _store_state(value, ptr_bits, scale_ptr, quant_block, offs, mask, noise, FORMAT: tl.constexpr,
                 SIGNED: tl.constexpr, STATE_T: tl.constexpr):  # fmt: skip
    """Encode and store one state buffer; ``noise`` from ``_state_noise``."""
    if FORMAT == 0:
        tl.store(ptr_bits.to(tl.pointer_type(STATE_T)) + offs, _to_stored(value, STATE_T),
                 mask=mask)  # fmt: skip
    elif FORMAT == 1:
        tl.store(
            ptr_bits.to(tl.pointer_type(tl.uint16)) + offs, _bf16_round(value, noise), mask=mask
        )
    else:
        codes, scale = _int8_encode(value, mask, noise, SIGNED)
        tl.store(ptr_bits.to(tl.pointer_type(tl.uint8)) + offs, codes, mask=mask)
        tl.store(scale_ptr.to(tl.pointer_type(tl.float32)) + quant_block, scale)


@triton.jit
def _kernel(
    addr_ptr, scale_ptr, offset_ptr, size_ptr, corr_ptr, block_tensor_ptr, block_start_ptr,
    alpha, oma, eps, wd, lr, neg_lr, mu, decay, neg_lr_mu, neg_mu, lerp_rest,
    PARAM_T: tl.constexpr, STATE_T: tl.constexpr, FORMAT: tl.constexpr, ROUND_PARAM: tl.constexpr,
    MAXIMIZE: tl.constexpr, WD_MODE: tl.constexpr, EMA: tl.constexpr, CENTERED: tl.constexpr,
    CLAMP: tl.constexpr, BIAS: tl.constexpr, EPS_IN_SQRT: tl.constexpr,
    MOMENTUM_MODE: tl.constexpr, NESTEROV: tl.constexpr, VARIANCE: tl.constexpr,
    LERP_LOW: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """Steps (1), (3)-(10) for ``BLOCK`` elements of one tensor: load, decode, update,
    encode, store. State FORMAT 0: float tensors of dtype STATE_T, 1: bf16 with stochastic
    rounding, 2: 8-bit blocks of 256 (one program per block); with ROUND_PARAM, bf16 params
    written with stochastic rounding. ``addr_ptr[t]``: (p, g, v, ḡ, b) of tensor ``t``,
    ``offset_ptr[t, k]``: the random-stream offsets of (v, ḡ, b, param), ``scale_ptr[t,
    k]``: the addresses of the 8-bit block scales."""
    block = tl.program_id(0)
    t = tl.load(block_tensor_ptr + block)
    start = tl.load(block_start_ptr + block)
    offs = start + tl.arange(0, BLOCK)
    mask = offs < tl.load(size_ptr + t)
    quant_block = start // 256
    p_ptr = tl.load(addr_ptr + t * 5 + 0).to(tl.pointer_type(PARAM_T))
    g_ptr = tl.load(addr_ptr + t * 5 + 1).to(tl.pointer_type(PARAM_T))
    v_ptr = tl.load(addr_ptr + t * 5 + 2)
    m_ptr = tl.load(addr_ptr + t * 5 + 3)
    b_ptr = tl.load(addr_ptr + t * 5 + 4)
    p = tl.load(p_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    v = _load_state(
        v_ptr, tl.load(scale_ptr + t * 3 + 0), quant_block, offs, mask, FORMAT, False, STATE_T
    )
    m = v
    b = v
    if CENTERED:
        m = _load_state(
            m_ptr, tl.load(scale_ptr + t * 3 + 1), quant_block, offs, mask, FORMAT, True, STATE_T
        )
    if MOMENTUM_MODE != 0:
        b = _load_state(
            b_ptr, tl.load(scale_ptr + t * 3 + 2), quant_block, offs, mask, FORMAT, True, STATE_T
        )
    p, v, m, b = _update(g, p, v, m, b, tl.load(corr_ptr + t * 3), tl.load(corr_ptr + t * 3 + 1),
                         tl.load(corr_ptr + t * 3 + 2),
                         alpha, oma, eps, wd, lr, neg_lr, mu, decay, neg_lr_mu, neg_mu, lerp_rest,
                         MAXIMIZE, WD_MODE, EMA, CENTERED, CLAMP, BIAS, EPS_IN_SQRT, MOMENTUM_MODE,
                         NESTEROV, VARIANCE, LERP_LOW)  # fmt: skip
    row = offset_ptr + t * 4
    hashes = offs.to(tl.uint32)  # 8-bit codes: one hash per element, split by _state_noise
    if FORMAT == 2:
        hashes = _hash32(offs, tl.load(row))
    _store_state(v, v_ptr, tl.load(scale_ptr + t * 3 + 0), quant_block, offs, mask,
                 _state_noise(offs, hashes, row, 0, FORMAT), FORMAT, False, STATE_T)  # fmt: skip
    if CENTERED:
        _store_state(m, m_ptr, tl.load(scale_ptr + t * 3 + 1), quant_block, offs, mask,
                     _state_noise(offs, hashes, row, 1, FORMAT), FORMAT, True, STATE_T)  # fmt: skip
    if MOMENTUM_MODE != 0:
        _store_state(b, b_ptr, tl.load(scale_ptr + t * 3 + 2), quant_block, offs, mask,
                     _state_noise(offs, hashes, row, 2, FORMAT), FORMAT, True, STATE_T)  # fmt: skip
    if ROUND_PARAM:  # (10) θ stored with stochastic rounding
        rounded = _bf16_round(p, _hash32(offs, tl.load(row + 3)))
        tl.store(p_ptr.to(tl.pointer_type(tl.uint16)) + offs, rounded, mask=mask)
    else:
        tl.store(p_ptr + offs, _to_stored(p, PARAM_T), mask=mask)


_TL = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}


# ------------------------------------------------------------------ the back-end protocol
def refusal(facts: Facts, hp: Hyper) -> str | None:
    """Why the Triton kernel cannot update a tensor with these facts (None: it can,
    natively or on fp32 copies)."""
    if facts.device.type != triton_device():
        return (
            "impl='triton' runs on CUDA tensors (CPU ones only under TRITON_INTERPRET=1); got "
            f"a {facts.device.type} tensor"
        )
    if facts.dtype not in _TL:
        return f"impl='triton' needs float32, float16 or bfloat16 params (got {facts.dtype})"
    if not facts.contiguous:
        return "impl='triton' needs contiguous parameters (use impl='foreach')"
    if hp.capturable:
        return (
            "impl='triton' cannot be captured in a CUDA graph (capturable=True): each step "
            "copies its address tables from the host; use impl='foreach' (auto does)"
        )
    return None


def native(facts: Facts) -> bool:
    """The kernel takes the tensor as stored: float state of one of its dtypes, bf16 or
    8-bit state, bf16 params rounded stochastically with fp32, bf16 or 8-bit state."""
    if not (facts.in_form and facts.state_contiguous):
        return False
    if not facts.stream_range:  # a block of columns: not one range of its random streams
        return False
    if facts.rounded:
        return facts.storage is not Storage.FLOAT or facts.state_dtype == torch.float32
    return facts.storage is not Storage.FLOAT or facts.state_dtype in _TL


def step(batch: Batch, lr, hp: Hyper) -> None:
    """One launch for the batch (one param dtype, one storage: see ``native``): the same
    bits as the numba kernel and the per-tensor path of ``lowbit.state``."""
    lr = float(to_scalar_lr(lr))
    grads = [g.contiguous() for g in batch.grads]  # alive until the launch is done
    pointers, scales = host.address_table(batch, grads, hp.buffers(batch.storage))
    values = host.next_steps(batch.steps) if host.needs_steps(hp, batch) else None
    block = 256 if batch.storage is Storage.INT8 else BLOCK
    sizes = tuple(p.numel() for p in batch.params)
    tensor, start, _ = host.work_items(sizes, block)
    device, scalars = batch.params[0].device, host.scalars(hp, lr, np.dtype(np.float32))
    state_t = batch.views[0]["square_avg"].dtype if batch.storage is Storage.FLOAT else None

    def table(values, dtype=torch.int64):
        return torch.as_tensor(values, dtype=dtype).to(device)

    tables = (table(pointers), table(scales), table(host.offsets(batch, values).astype(np.int64)),
              table(np.array(sizes)),
              table(host.corrections(hp, values, len(sizes), np.dtype(np.float32)), torch.float32),
              table(tensor), table(start.astype(np.int64)))  # fmt: skip
    torch._foreach_add_(batch.steps, 1.0)  # (1), after everything that could raise
    if not len(tensor):
        return
    # no contraction of a*b + c into one FMA beyond the tl.fma written: numba's and torch's
    # roundings (Triton fuses by default on a GPU; the interpreter never does)
    _kernel[(len(tensor),)](
        *tables, *(float(x) for x in scalars),
        PARAM_T=_TL[batch.params[0].dtype], STATE_T=_TL.get(state_t, tl.float32),
        FORMAT=int(batch.storage), ROUND_PARAM=batch.round_param, **hp.kernel_switches(),
        VARIANCE=hp.variance_form(batch.storage), LERP_LOW=host.lerp_low(scalars), BLOCK=block,
        enable_fp_fusion=False,
    )  # fmt: skip
