"""The foreach path: ``torch._foreach_*`` ops over each (device, dtype) bucket.

With torch's switches it performs the operations of ``torch.optim.RMSprop``'s
``_multi_tensor_rmsprop`` in the same order, so results are equal bit for bit. Step
numbers refer to :data:`rmsprop.algorithm.ALGORITHM`.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.optim import Optimizer

from ..lowbit.forms import Storage
from .base import LOW_PRECISION, Batch, Facts, Hyper, step_value, to_scalar_lr
from .single import ieee_sqrt_each_


def _ema_square_(square_avgs: list[Tensor], grads: list[Tensor], alpha: float, form: str) -> None:
    """(4)"""
    if form == "delta":
        squares = torch._foreach_mul(grads, grads)
        torch._foreach_sub_(squares, square_avgs)
        torch._foreach_add_(square_avgs, squares, alpha=1 - alpha)
    else:
        torch._foreach_mul_(square_avgs, alpha)
        torch._foreach_addcmul_(square_avgs, grads, grads, value=1 - alpha)


def _ema_mean_(grad_avgs: list[Tensor], grads: list[Tensor], alpha: float, form: str) -> None:
    """(5)"""
    if form == "torch":
        torch._foreach_lerp_(grad_avgs, grads, 1 - alpha)
    elif form == "delta":
        deltas = torch._foreach_sub(grads, grad_avgs)
        torch._foreach_add_(grad_avgs, deltas, alpha=1 - alpha)
    else:
        torch._foreach_mul_(grad_avgs, alpha)
        torch._foreach_add_(grad_avgs, grads, alpha=1 - alpha)


def _denominators(
    square_avgs: list[Tensor], grad_avgs: list[Tensor] | None, steps: list[Tensor], hp: Hyper
) -> list[Tensor]:
    """(6)-(7)"""
    if hp.bias_correction:  # (6)
        corrections = [1 - hp.alpha ** step_value(s) for s in steps]
        s = torch._foreach_div(square_avgs, corrections)
        if grad_avgs is not None:
            means = torch._foreach_div(grad_avgs, corrections)
            torch._foreach_addcmul_(s, means, means, value=-1)
    elif grad_avgs is not None:
        s = torch._foreach_addcmul(square_avgs, grad_avgs, grad_avgs, value=-1)
    else:
        s = square_avgs
    if grad_avgs is not None and hp.centered_clamp:
        torch._foreach_clamp_min_(s, 0)
    if hp.eps_in_sqrt:  # (7)
        avg = torch._foreach_add(s, hp.eps)
        _sqrt_(avg, hp)
        return avg
    if s is square_avgs:
        avg = [torch.empty_like(v) for v in s] if hp.ieee_sqrt else torch._foreach_sqrt(s)
        if hp.ieee_sqrt:
            ieee_sqrt_each_(s, avg)
    else:
        _sqrt_(s, hp)
        avg = s
    torch._foreach_add_(avg, hp.eps)
    return avg


def _sqrt_(tensors: list[Tensor], hp: Hyper) -> None:
    """(7)'s square root in place: torch's, or the fused kernels' correctly rounded one."""
    if hp.ieee_sqrt:
        ieee_sqrt_each_(tensors, tensors)
    else:
        torch._foreach_sqrt_(tensors)


def _apply_steps_(
    params: list[Tensor], grads: list[Tensor], avg: list[Tensor], bufs: list[Tensor] | None,
    lr, hp: Hyper, capturable: bool,
) -> None:  # fmt: skip
    """(8)-(10)"""
    tensor_lr = capturable and isinstance(lr, Tensor)
    if bufs is None:
        if tensor_lr:  # torch's capturable form: g / (avg / -lr)
            torch._foreach_div_(avg, -lr)
            torch._foreach_addcdiv_(params, grads, avg)
        else:
            torch._foreach_addcdiv_(params, grads, avg, value=-lr)
        return
    torch._foreach_mul_(bufs, hp.momentum)
    if hp.lr_in_momentum:
        torch._foreach_addcdiv_(bufs, grads, avg, value=lr)
        if hp.nesterov:
            torch._foreach_add_(params, bufs, alpha=-hp.momentum)
            torch._foreach_addcdiv_(params, grads, avg, value=-lr)
        else:
            torch._foreach_sub_(params, bufs)
        return
    torch._foreach_addcdiv_(bufs, grads, avg)
    if hp.nesterov:
        torch._foreach_addcdiv_(params, grads, avg, value=-lr)
        torch._foreach_add_(params, bufs, alpha=-lr * hp.momentum)
    elif tensor_lr:
        torch._foreach_add_(params, torch._foreach_mul(bufs, -lr))
    else:
        torch._foreach_add_(params, bufs, alpha=-lr)


def _update_bucket_(
    params: list[Tensor], grads: list[Tensor], square_avgs: list[Tensor],
    grad_avgs: list[Tensor] | None, bufs: list[Tensor] | None, steps: list[Tensor],
    lr, hp: Hyper, capturable: bool,
) -> None:  # fmt: skip
    """One (device, dtype) bucket, steps (1)-(10); clipping (2) happened before."""
    if hp.maximize:  # (1)
        grads = torch._foreach_neg(grads)
    if not torch.compiler.is_compiling() and steps[0].is_cpu:
        torch._foreach_add_(steps, torch.tensor(1.0, device="cpu"), alpha=1.0)
    else:
        torch._foreach_add_(steps, 1)
    if hp.weight_decay != 0:  # (3)
        if hp.decoupled_weight_decay:
            torch._foreach_mul_(params, 1 - lr * hp.weight_decay)
        elif hp.maximize:  # grads is already a copy
            torch._foreach_add_(grads, params, alpha=hp.weight_decay)
        else:
            grads = torch._foreach_add(grads, params, alpha=hp.weight_decay)
    _ema_square_(square_avgs, grads, hp.alpha, hp.ema_form)  # (4)
    if grad_avgs is not None:
        _ema_mean_(grad_avgs, grads, hp.alpha, hp.ema_form)  # (5)
    avg = _denominators(square_avgs, grad_avgs, steps, hp)  # (6)-(7)
    _apply_steps_(params, grads, avg, bufs, lr, hp, capturable)  # (8)-(10)


def foreach_rmsprop(
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
    """Update every tensor, one (device, dtype) bucket at a time. fp16/bf16 buckets compute
    in fp32 copies written back at the end."""
    if not params:
        return
    lr, capturable = to_scalar_lr(lr), hp.capturable
    buckets = Optimizer._group_tensors_by_device_and_dtype(
        [params, grads, square_avgs, grad_avgs, momentum_buffers, state_steps]  # type: ignore[list-item]
    )
    for (ps, gs, vs, ms, bs, steps), _ in buckets.values():
        ms = ms if hp.centered else None
        bs = bs if hp.momentum > 0 else None
        if any(torch.is_complex(p) for p in ps):
            ps, gs, vs = _real(ps), _real(gs), _real(vs)
            ms, bs = (_real(ms) if ms else ms), (_real(bs) if bs else bs)
        low = ps[0].dtype in LOW_PRECISION or vs[0].dtype in LOW_PRECISION
        if not low:
            _update_bucket_(ps, gs, vs, ms, bs, steps, lr, hp, capturable)
            continue
        # fp16 / bf16: the math runs in fp32 copies, written back at the end
        work = [_f32(x) if x is not None else None for x in (ps, gs, vs, ms, bs)]
        _update_bucket_(*work[:5], steps, lr, hp, capturable)
        for orig, new in zip((ps, vs, ms, bs), (work[0], work[2], work[3], work[4])):
            if orig is not None and new is not orig:
                torch._foreach_copy_(orig, new)


def _real(tensors: list[Tensor]) -> list[Tensor]:
    return [torch.view_as_real(t) if torch.is_complex(t) else t for t in tensors]


def _f32(tensors: list[Tensor]) -> list[Tensor]:
    if all(t.dtype == torch.float32 for t in tensors):
        return tensors
    return [t.float() for t in tensors]


# ------------------------------------------------------------------ the back-end protocol
NAME = "foreach"


def refusal(facts: Facts, hp: Hyper) -> str | None:
    """The foreach path takes every tensor but a differentiable step."""
    if hp.differentiable:
        return "the foreach implementation does not support differentiable=True"
    return None


def native(facts: Facts) -> bool:
    """Float state stored as the group asks, of the parameter's dtype (torch's foreach ops
    need one dtype per tensor position)."""
    return (
        facts.in_form
        and facts.storage is Storage.FLOAT
        and not facts.rounded
        and facts.state_dtype == facts.dtype
    )


def step(batch: Batch, lr, hp: Hyper) -> None:
    foreach_rmsprop(batch.params, batch.grads, *batch.buffers(hp), batch.steps, lr=lr, hp=hp)
