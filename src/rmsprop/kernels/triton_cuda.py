"""The fused GPU back end (Triton): one launch per group of tensors, every switch.

The launch gets a table of tensor addresses (param, grad, square_avg, grad_avg,
momentum_buffer per tensor) and a table of work blocks (tensor, first element); each
program updates ``BLOCK`` elements of one tensor in one pass over memory. Switches are
``tl.constexpr``, so each combination compiles to branch-free code. fp16/bf16 tensors are
loaded, updated in fp32 and stored back in their dtype.

Rounding: multiply-adds are ``tl.fma`` where torch's CPU kernels use an FMA, and the
square root and divisions are the IEEE ones (``sqrt_rn``, ``div_rn``), so the GPU kernel
computes what the numba kernel computes. Correctness is tested on the CPU under
``TRITON_INTERPRET=1``; speed needs a GPU.
"""

from __future__ import annotations

import torch
from torch import Tensor

try:
    import triton
    import triton.language as tl
except ImportError as err:  # pragma: no cover - exercised where triton is missing
    raise ImportError("impl='triton' needs triton: pip install 'rmsprop[gpu]'") from err

from ..optim._common import Hyper, step_value, to_scalar_lr

BLOCK = 1024


@triton.jit
def _rmsprop_kernel(
    addr_ptr, size_ptr, corr_ptr, block_tensor_ptr, block_start_ptr,
    alpha, oma, eps, wd, lr, neg_lr, mu, decay, neg_lr_mu, neg_mu, lerp_rest,
    PARAM_T: tl.constexpr, STATE_T: tl.constexpr,
    MAXIMIZE: tl.constexpr, WD_MODE: tl.constexpr, EMA: tl.constexpr, CENTERED: tl.constexpr,
    CLAMP: tl.constexpr, BIAS: tl.constexpr, EPS_IN_SQRT: tl.constexpr,
    MOMENTUM_MODE: tl.constexpr, NESTEROV: tl.constexpr, LERP_LOW: tl.constexpr,
    BLOCK: tl.constexpr,
):  # fmt: skip
    block = tl.program_id(0)
    t = tl.load(block_tensor_ptr + block)
    offs = tl.load(block_start_ptr + block) + tl.arange(0, BLOCK)
    mask = offs < tl.load(size_ptr + t)
    p_ptr = tl.load(addr_ptr + t * 5 + 0).to(tl.pointer_type(PARAM_T))
    g_ptr = tl.load(addr_ptr + t * 5 + 1).to(tl.pointer_type(PARAM_T))
    v_ptr = tl.load(addr_ptr + t * 5 + 2).to(tl.pointer_type(STATE_T))
    p = tl.load(p_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    v = tl.load(v_ptr + offs, mask=mask, other=1.0).to(tl.float32)
    if MAXIMIZE:  # (1)
        g = -g
    if WD_MODE == 2:  # (3) decoupled: param.mul_(1 - lr*wd)
        p = p * decay
    elif WD_MODE == 1:  # (3) coupled: grad.add(param, alpha=wd)
        g = tl.fma(wd, p, g)
    if EMA == 2:  # (4) v + (1-alpha)(g*g - v)
        v = tl.fma(oma, g * g - v, v)
    else:  # (4) v*alpha + ((1-alpha)*g)*g
        v = tl.fma(oma * g, g, v * alpha)
    tl.store(v_ptr + offs, v.to(STATE_T), mask=mask)
    s = v
    if CENTERED:  # (5)
        m_ptr = tl.load(addr_ptr + t * 5 + 3).to(tl.pointer_type(STATE_T))
        m = tl.load(m_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if EMA == 0:
            if LERP_LOW:
                m = tl.fma(oma, g - m, m)
            else:
                m = tl.fma(-lerp_rest, g - m, g)
        elif EMA == 1:
            m = tl.fma(oma, g, m * alpha)
        else:
            m = tl.fma(oma, g - m, m)
        tl.store(m_ptr + offs, m.to(STATE_T), mask=mask)
        if BIAS:  # (6)
            correction = tl.load(corr_ptr + t)
            mean = tl.div_rn(m, correction)
            s = tl.fma(-mean, mean, tl.div_rn(v, correction))
        else:
            s = tl.fma(-m, m, v)
        if CLAMP:
            s = tl.where(s < 0, 0.0, s)
    elif BIAS:
        s = tl.div_rn(v, tl.load(corr_ptr + t))
    if EPS_IN_SQRT:  # (7)
        d = tl.sqrt_rn(s + eps)
    else:
        d = tl.sqrt_rn(s) + eps
    if MOMENTUM_MODE == 0:  # (8)-(10)
        p = p + tl.div_rn(neg_lr * g, d)
    else:
        b_ptr = tl.load(addr_ptr + t * 5 + 4).to(tl.pointer_type(STATE_T))
        b = tl.load(b_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if MOMENTUM_MODE == 1:  # lr outside the buffer
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
        tl.store(b_ptr + offs, b.to(STATE_T), mask=mask)
    tl.store(p_ptr + offs, p.to(PARAM_T), mask=mask)


_TL = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}


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
    """One launch per (param dtype, state dtype) bucket of the group."""
    lr = float(to_scalar_lr(lr))
    torch._foreach_add_(state_steps, 1.0)  # (1)
    buckets: dict[tuple[torch.dtype, torch.dtype], list[int]] = {}
    for i, p in enumerate(params):
        if p.dtype not in _TL or square_avgs[i].dtype not in _TL:
            raise RuntimeError(
                f"impl='triton' supports float32, float16 and bfloat16, not {p.dtype}"
            )
        buckets.setdefault((p.dtype, square_avgs[i].dtype), []).append(i)
    device = params[0].device
    for (ptype, stype), index in buckets.items():
        addresses, sizes, blocks_t, blocks_s, corrections = [], [], [], [], []
        for row, i in enumerate(index):
            g = grads[i].contiguous()
            grads[i] = g  # keep the contiguous copy alive until the launch is done
            state = (square_avgs[i], grad_avgs[i] if hp.centered else None,
                     momentum_buffers[i] if hp.momentum > 0 else None)  # fmt: skip
            if not params[i].is_contiguous() or any(
                s is not None and not s.is_contiguous() for s in state
            ):
                raise RuntimeError(
                    "impl='triton' needs contiguous parameters and state (use impl='foreach')"
                )
            addresses += [params[i].data_ptr(), g.data_ptr(), state[0].data_ptr(),
                          state[1].data_ptr() if state[1] is not None else 0,
                          state[2].data_ptr() if state[2] is not None else 0]  # fmt: skip
            n = params[i].numel()
            sizes.append(n)
            corrections.append(
                1 - hp.alpha ** step_value(state_steps[i]) if hp.bias_correction else 1.0
            )
            for start in range(0, n, BLOCK):
                blocks_t.append(row)
                blocks_s.append(start)
        if not blocks_t:
            continue

        def table(values, dtype):
            return torch.tensor(values, dtype=dtype, device=device)

        _rmsprop_kernel[(len(blocks_t),)](
            table(addresses, torch.int64), table(sizes, torch.int64), table(corrections, torch.float32),
            table(blocks_t, torch.int64), table(blocks_s, torch.int64),
            hp.alpha, 1 - hp.alpha, hp.eps, hp.weight_decay, lr, -lr, hp.momentum,
            1 - lr * hp.weight_decay, -lr * hp.momentum, -hp.momentum, 1 - (1 - hp.alpha),
            PARAM_T=_TL[ptype], STATE_T=_TL[stype],
            MAXIMIZE=hp.maximize, WD_MODE=0 if hp.weight_decay == 0 else (2 if hp.decoupled_weight_decay else 1),
            EMA={"torch": 0, "multiply": 1, "delta": 2}[hp.ema_form], CENTERED=hp.centered,
            CLAMP=hp.centered_clamp, BIAS=hp.bias_correction, EPS_IN_SQRT=hp.eps_in_sqrt,
            MOMENTUM_MODE=0 if hp.momentum == 0 else (2 if hp.lr_in_momentum else 1),
            NESTEROV=hp.nesterov, LERP_LOW=(1 - hp.alpha) < 0.5, BLOCK=BLOCK,
        )  # fmt: skip
