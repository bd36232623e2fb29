"""The fused CPU back end (numba): one pass over memory per step, every switch.

One call per parameter group and dtype: the kernel receives the addresses of every
tensor (param, grad, square_avg, grad_avg, momentum_buffer), splits the work into chunks
of ``CHUNK`` elements and runs them in parallel (``prange``). Each element is read once
and written once, so plain RMSprop moves 20 bytes per fp32 parameter (read p, g, v; write
p, v) instead of the ~52 of torch's multi-pass kernels.

Op order and rounding: each line below is the operation the single-tensor path
(``rmsprop.optim._single_tensor``) performs, in the same order, with the multiply-adds
that torch's CPU kernels contract into one FMA (``addcmul``, ``add(alpha=)``, ``lerp``)
written as an FMA here too; no ``fastmath``. The one difference: the square root here is
IEEE (correctly rounded), while torch's vectorised CPU ``sqrt`` is not always (measured
on an AVX-512 machine: 17% of float32 roots one ulp away). So results agree with the
single-tensor path to about one ulp per step, and with the float64 reference to 1e-12.

Compiled once per dtype (float32, float64) and cached on disk (``cache=True``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

try:
    import numba
    from llvmlite import ir
    from numba import njit, prange
    from numba.core import cgutils, types
    from numba.extending import intrinsic
except ImportError as err:  # pragma: no cover - exercised where numba is missing
    raise ImportError("impl='numba' needs numba: pip install 'rmsprop[fast]'") from err

from ..optim._common import Hyper, step_value, to_scalar_lr

CHUNK = 1 << 15

# flag slots
MAXIMIZE, WD_MODE, EMA, CENTERED, CLAMP, BIAS, EPS_IN_SQRT, MOMENTUM_MODE, NESTEROV = range(9)
# scalar slots
ALPHA, ONE_MINUS_ALPHA, EPS, WD, LR, NEG_LR, MOMENTUM, DECAY, NEG_LR_MOM, NEG_MOM, LERP_REST = (
    range(11)
)


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


def _make_kernel(flags: tuple[int, ...]):
    """A kernel specialised for one combination of switches.

    The switches are compile-time constants of the closure, so untaken branches vanish and
    the element loop vectorises (LLVM does not reliably do that for runtime flags); numba's
    disk cache keys closures by their captured values, so each variant compiles once.
    Element indices are unsigned, which spares numba's negative-index wraparound test.
    """
    maximize, wd_mode, ema, centered, clamp, bias, eps_in_sqrt, momentum_mode, nesterov = flags

    @njit(parallel=True, cache=True)
    def run(addresses, sizes, corrections, chunk_tensor, chunk_start, chunk_stop, s):
        """``addresses[t]``: data pointers of tensor ``t`` (p, g, v, m, b; 0 if absent);
        ``s``: the scalars, in the tensor dtype."""
        alpha, oma, eps, wd, lr, neg_lr = (
            s[ALPHA],
            s[ONE_MINUS_ALPHA],
            s[EPS],
            s[WD],
            s[LR],
            s[NEG_LR],
        )
        mu, decay, neg_lr_mu, neg_mu, lerp_rest = (
            s[MOMENTUM],
            s[DECAY],
            s[NEG_LR_MOM],
            s[NEG_MOM],
            s[LERP_REST],
        )
        lerp_low = oma < 0.5
        for c in prange(chunk_tensor.shape[0]):
            t = chunk_tensor[c]
            n = sizes[t]
            p = numba.carray(_as_pointer(addresses[t, 0]), n, s.dtype)
            g = numba.carray(_as_pointer(addresses[t, 1]), n, s.dtype)
            v = numba.carray(_as_pointer(addresses[t, 2]), n, s.dtype)
            m = numba.carray(_as_pointer(addresses[t, 3] or addresses[t, 2]), n, s.dtype)
            b = numba.carray(_as_pointer(addresses[t, 4] or addresses[t, 2]), n, s.dtype)
            correction = corrections[t]
            for i in range(chunk_start[c], chunk_stop[c]):
                gi = g[i]
                if maximize:  # (1)
                    gi = -gi
                pi = p[i]
                if wd_mode == 2:  # (3) decoupled: param.mul_(1 - lr*wd)
                    pi = pi * decay
                elif wd_mode == 1:  # (3) coupled: grad.add(param, alpha=wd)
                    gi = _fma(wd, pi, gi)
                vi = v[i]
                if ema == 2:  # (4) square_avg.add_(g*g - v, alpha=1-alpha)
                    vi = _fma(oma, gi * gi - vi, vi)
                else:  # (4) square_avg.mul_(alpha).addcmul_(g, g, value=1-alpha)
                    vi = _fma(oma * gi, gi, vi * alpha)
                v[i] = vi
                si = vi
                if centered:  # (5)
                    mi = m[i]
                    if ema == 0:  # grad_avg.lerp_(g, 1-alpha)
                        if lerp_low:
                            mi = _fma(oma, gi - mi, mi)
                        else:
                            mi = _fma(-lerp_rest, gi - mi, gi)
                    elif ema == 1:  # grad_avg.mul_(alpha).add_(g, alpha=1-alpha)
                        mi = _fma(oma, gi, mi * alpha)
                    else:  # grad_avg.add_(g - grad_avg, alpha=1-alpha)
                        mi = _fma(oma, gi - mi, mi)
                    m[i] = mi
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
                    bi = b[i] * mu + gi / d
                    b[i] = bi
                    if nesterov:
                        pi = _fma(neg_lr_mu, bi, pi + (neg_lr * gi) / d)
                    else:
                        pi = _fma(neg_lr, bi, pi)
                else:  # lr inside: buf.mul_(mu).addcdiv_(g, d, value=lr)
                    bi = b[i] * mu + (lr * gi) / d
                    b[i] = bi
                    if nesterov:
                        pi = _fma(neg_mu, bi, pi) + (neg_lr * gi) / d
                    else:
                        pi = pi - bi
                p[i] = pi

    return run


_KERNELS: dict[tuple[int, ...], object] = {}


_CHUNKS: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


def _chunks(sizes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Work items of at most ``CHUNK`` elements over all tensors (cached per size list)."""
    if sizes not in _CHUNKS:
        tensor, start, stop = [], [], []
        for t, n in enumerate(sizes):
            for lo in range(0, n, CHUNK):
                tensor.append(t), start.append(lo), stop.append(min(n, lo + CHUNK))
        if len(_CHUNKS) > 64:
            _CHUNKS.clear()
        _CHUNKS[sizes] = (
            np.array(tensor, np.int64),
            np.array(start, np.uint64),
            np.array(stop, np.uint64),
        )
    return _CHUNKS[sizes]


def _scalars(hp: Hyper, lr: float, dtype: np.dtype) -> np.ndarray:
    """Scalars computed in double (as Python computes them for torch), stored in the tensor
    dtype (as torch casts them); the lerp complement is computed in the tensor dtype."""
    w = dtype.type(1 - hp.alpha)
    values = [0.0] * 11
    values[ALPHA], values[ONE_MINUS_ALPHA], values[EPS], values[WD] = (
        hp.alpha,
        1 - hp.alpha,
        hp.eps,
        hp.weight_decay,
    )
    values[LR], values[NEG_LR], values[MOMENTUM] = lr, -lr, hp.momentum
    values[DECAY], values[NEG_LR_MOM], values[NEG_MOM] = (
        1 - lr * hp.weight_decay,
        -lr * hp.momentum,
        -hp.momentum,
    )
    out = np.array(values, dtype=dtype)
    out[LERP_REST] = dtype.type(1) - w
    return out


def kernel_for(hp: Hyper):
    """The compiled kernel for ``hp``'s switches (built on first use)."""
    flags = _flags(hp)
    if flags not in _KERNELS:
        _KERNELS[flags] = _make_kernel(flags)
    return _KERNELS[flags]


def _flags(hp: Hyper) -> tuple[int, ...]:
    flags = [0] * 9
    flags[MAXIMIZE] = hp.maximize
    flags[WD_MODE] = 0 if hp.weight_decay == 0 else (2 if hp.decoupled_weight_decay else 1)
    flags[EMA] = {"torch": 0, "multiply": 1, "delta": 2}[hp.ema_form]
    flags[CENTERED], flags[CLAMP], flags[BIAS] = hp.centered, hp.centered_clamp, hp.bias_correction
    flags[EPS_IN_SQRT] = hp.eps_in_sqrt
    flags[MOMENTUM_MODE] = 0 if hp.momentum == 0 else (2 if hp.lr_in_momentum else 1)
    flags[NESTEROV] = hp.nesterov
    return tuple(int(x) for x in flags)


def _check(tensors: list[Tensor], name: str) -> None:
    for t in tensors:
        if not t.is_contiguous():
            raise RuntimeError(
                f"impl='numba' needs contiguous tensors; a {name} is not (use impl='foreach')"
            )


@torch.compiler.disable  # numba code is opaque to dynamo: torch.compile(opt.step) calls it as is
def step(
    params: list[Tensor],
    grads: list[Tensor],
    square_avgs: list[Tensor],
    grad_avgs: list[Tensor | None],
    momentum_buffers: list[Tensor | None],
    state_steps: list[Tensor],
    *,
    lr,
    hp: Hyper,
) -> None:
    """One fused step over every tensor of the lists (grouped by dtype)."""
    lr = float(to_scalar_lr(lr))
    grads = [g if g.is_contiguous() else g.contiguous() for g in grads]
    torch._foreach_add_(
        state_steps, _ONE, alpha=1.0
    )  # (1) one wrapped scalar, as torch does on CPU
    centered, has_momentum = hp.centered, hp.momentum > 0
    by_dtype: dict[torch.dtype, list[int]] = {}
    for i, p in enumerate(params):
        by_dtype.setdefault(p.dtype, []).append(i)
    for dtype, index in by_dtype.items():
        tensors = [params[i] for i in index] + [square_avgs[i] for i in index]
        tensors += [grad_avgs[i] for i in index] if centered else []
        tensors += [momentum_buffers[i] for i in index] if has_momentum else []
        if not all(t.is_contiguous() for t in tensors):
            raise RuntimeError(
                "impl='numba' needs contiguous parameters and state (use impl='foreach')"
            )
        if any(t.dtype != dtype for t in tensors) or any(grads[i].dtype != dtype for i in index):
            raise RuntimeError("impl='numba' needs grads and state in the parameter's dtype")
        np_dtype = _NP_DTYPES[dtype]
        addresses = np.array(
            [(params[i].data_ptr(), grads[i].data_ptr(), square_avgs[i].data_ptr(),
              grad_avgs[i].data_ptr() if centered else 0,
              momentum_buffers[i].data_ptr() if has_momentum else 0) for i in index],
            dtype=np.int64,
        ).reshape(len(index), 5)  # fmt: skip
        sizes = tuple(params[i].numel() for i in index)
        if hp.bias_correction:  # (6) computed in double, used in the tensor dtype (as torch)
            corrections = np.array(
                [1 - hp.alpha ** step_value(state_steps[i]) for i in index], np_dtype
            )
        else:
            corrections = np.ones(len(index), np_dtype)
        chunk_tensor, chunk_start, chunk_stop = _chunks(sizes)
        kernel_for(hp)(addresses, np.array(sizes, np.int64), corrections, chunk_tensor, chunk_start,
                       chunk_stop, _scalars(hp, lr, np_dtype))  # fmt: skip


_ONE = torch.tensor(1.0)
_NP_DTYPES = {torch.float32: np.dtype(np.float32), torch.float64: np.dtype(np.float64)}


@njit(parallel=True, cache=True)
def triad(c, a, b, scale):
    """``c = a + scale*b``: the memory-bandwidth yardstick for ``rmsprop bench``."""
    n = np.uint64(c.shape[0])
    size = np.uint64(CHUNK)
    for k in prange((n + size - np.uint64(1)) // size):
        for i in range(np.uint64(k) * size, min(n, (np.uint64(k) + np.uint64(1)) * size)):
            c[i] = a[i] + scale * b[i]
