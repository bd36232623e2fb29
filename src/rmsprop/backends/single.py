"""The single-tensor path: one parameter at a time, readable, the torch-side oracle.

With torch's switches (eps outside, v0 = 0, lr outside momentum, coupled decay,
``ema_form="torch"``) every operation is the one ``torch.optim.RMSprop``'s
``_single_tensor_rmsprop`` performs, in the same order, so results are equal bit for bit.
Step numbers refer to :data:`rmsprop.algorithm.ALGORITHM`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..algorithm import variance_weights
from ..lowbit.forms import Storage
from .base import (
    LOW_PRECISION,
    Batch,
    Facts,
    Hyper,
    any_low_precision,
    as_real,
    step_value,
    to_scalar_lr,
    upcast,
)


def ema_square_(square_avg: Tensor, grad: Tensor, alpha: float, form: str) -> None:
    """(4) ``v ← α v + (1 − α) g²`` in place, written as ``form`` writes it."""
    if form == "delta":
        square_avg.add_(grad * grad - square_avg, alpha=1 - alpha)  # timm / TF kernels
    else:
        square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)  # torch / Keras / optax


def ema_mean_(grad_avg: Tensor, grad: Tensor, alpha: float, form: str) -> None:
    """(5) ``ḡ ← α ḡ + (1 − α) g`` in place."""
    if form == "torch":
        grad_avg.lerp_(grad, 1 - alpha)
    elif form == "delta":
        grad_avg.add_(grad - grad_avg, alpha=1 - alpha)
    else:
        grad_avg.mul_(alpha).add_(grad, alpha=1 - alpha)


def denominator(square_avg: Tensor, grad_avg: Tensor | None, step: float, hp: Hyper) -> Tensor:
    """(6)-(7) ``d = sqrt(s) + eps`` or ``sqrt(s + eps)``, ``s = v̂ − ḡ̂²``; a new tensor."""
    if hp.bias_correction:  # (6)
        correction = 1 - hp.alpha**step
        s = square_avg / correction
        if grad_avg is not None:
            mean = grad_avg / correction
            s.addcmul_(mean, mean, value=-1)
    elif grad_avg is not None:
        s = square_avg.addcmul(grad_avg, grad_avg, value=-1)
    else:
        s = square_avg  # not copied: (7) below makes the new tensor
    if grad_avg is not None and hp.centered_clamp:
        s = s.clamp_min_(0)
    return with_eps(s, square_avg, hp)


def with_eps(s: Tensor, square_avg: Tensor, hp: Hyper) -> Tensor:
    """(7) ``sqrt(s + eps)`` or ``sqrt(s) + eps``, a new tensor (``s`` is ``square_avg``
    itself, which must not change, or a temporary that may)."""
    if hp.ieee_sqrt:
        if hp.eps_in_sqrt:
            return ieee_sqrt_(s.add(hp.eps))
        root = ieee_sqrt_(s, torch.empty_like(s) if s is square_avg else s)
        return root.add_(hp.eps)
    if hp.eps_in_sqrt:
        return s.add(hp.eps).sqrt_()
    avg = s.sqrt() if s is square_avg else s.sqrt_()
    return avg.add(hp.eps) if hp.differentiable else avg.add_(hp.eps)


def ieee_sqrt_(s: Tensor, out: Tensor | None = None) -> Tensor:
    """The correctly rounded square root of ``s`` written into ``out`` (``s`` itself by
    default): the fused kernels' IEEE sqrt (``ieee_sqrt_each_`` of one tensor)."""
    return ieee_sqrt_each_([s], [s if out is None else out])[0]


def ieee_sqrt_each_(tensors: list[Tensor], outs: list[Tensor]) -> list[Tensor]:
    """The correctly rounded square root of each of ``tensors`` written into the matching
    ``outs`` (the same tensors for in place): on the CPU NumPy's, computed on the tensors'
    own memory (no copy), since torch's CPU ``sqrt`` (MKL's vector math) is not always
    correctly rounded; on CUDA torch's, which is. Any shape (0-d included) and strides. A
    negative value (a centered variance that rounds below zero) gives NaN without a
    warning, as torch's ``sqrt`` and the fused kernels do."""
    with np.errstate(invalid="ignore"):
        for s, out in zip(tensors, outs):
            if s.is_cpu:  # (temporaries and state: no autograd history to detach from)
                np.sqrt(s.numpy(), out=out.numpy())
            else:
                torch.sqrt(s, out=out)
    return outs


def apply_step_(
    param: Tensor, grad: Tensor, avg: Tensor, buf: Tensor | None, lr, hp: Hyper
) -> None:
    """(8)-(10) ``u = g / d``; momentum with the lr inside or outside; ``θ ← θ − Δ``."""
    if buf is None:
        param.addcdiv_(grad, avg, value=-lr)
    elif hp.lr_in_momentum:
        buf.mul_(hp.momentum).addcdiv_(grad, avg, value=lr)
        if hp.nesterov:
            param.add_(buf, alpha=-hp.momentum).addcdiv_(grad, avg, value=-lr)
        else:
            param.sub_(buf)
    else:
        buf.mul_(hp.momentum).addcdiv_(grad, avg)
        if hp.nesterov:
            param.addcdiv_(grad, avg, value=-lr).add_(buf, alpha=-lr * hp.momentum)
        else:
            param.add_(buf, alpha=-lr)


def begin_step_(param: Tensor, grad: Tensor, step: Tensor, lr, hp: Hyper) -> Tensor:
    """(1) count the step and negate for ``maximize``; (3) weight decay, coupled (into the
    returned gradient) or decoupled (``param`` scaled in place)."""
    grad = -grad if hp.maximize else grad  # (1)
    step += 1
    if hp.weight_decay != 0:  # (3)
        if hp.decoupled_weight_decay:
            param.mul_(1 - lr * hp.weight_decay)
        else:
            grad = grad.add(param, alpha=hp.weight_decay)
    return grad


def update_one_(
    param: Tensor,
    grad: Tensor,
    square_avg: Tensor,
    grad_avg: Tensor | None,
    buf: Tensor | None,
    step: Tensor,
    lr,
    hp: Hyper,
) -> None:
    """One parameter, steps (1)-(10). Gradient clipping (2) happened before."""
    grad = begin_step_(param, grad, step, lr, hp)  # (1), (3)
    if torch.is_complex(param):  # each of re, im is a coordinate (torch's convention)
        param, grad, square_avg, grad_avg, buf = as_real(param, grad, square_avg, grad_avg, buf)
    ema_square_(square_avg, grad, hp.alpha, hp.ema_form)  # (4)
    if grad_avg is not None:
        ema_mean_(grad_avg, grad, hp.alpha, hp.ema_form)  # (5)
    avg = denominator(square_avg, grad_avg, step_value(step) if hp.bias_correction else 0.0, hp)
    apply_step_(param, grad, avg, buf, lr, hp)  # (8)-(10)


def single_tensor_rmsprop(
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
    """Update each parameter in turn. fp16/bf16 tensors compute in fp32 (see ``upcast``)."""
    lr = to_scalar_lr(lr)
    for i, param in enumerate(params):
        tensors = (param, grads[i], square_avgs[i], grad_avgs[i], momentum_buffers[i])
        if any_low_precision(tensors):
            with upcast(tensors) as (p, g, v, m, b):
                update_one_(p, g, v, m, b, state_steps[i], lr, hp)
        else:  # the usual case, without the context manager's cost
            update_one_(*tensors, state_steps[i], lr, hp)


def update_variance_(
    param: Tensor,
    grad: Tensor,
    grad_var: Tensor,
    grad_avg: Tensor,
    buf: Tensor | None,
    step: Tensor,
    lr,
    hp: Hyper,
) -> None:
    """One parameter, steps (1)-(10) in the variance form of centered RMSprop (bf16 or
    8-bit state: ``grad_var`` holds S = v − ḡ²/c; see ``rmsprop.algorithm``), the operations
    of the fused kernels in their order."""
    grad = begin_step_(param, grad, step, lr, hp)  # (1), (3)
    correction, inverse_before, weight = variance_weights(hp.alpha, step_value(step),
                                                          hp.bias_correction)  # fmt: skip
    delta = grad - grad_avg * inverse_before  # (4') the deviation from the old mean
    grad_var.mul_(hp.alpha).addcmul_(delta, delta, value=weight)
    ema_mean_(grad_avg, grad, hp.alpha, hp.ema_form)  # (5)
    s = grad_var / correction if hp.bias_correction else grad_var  # (6)
    apply_step_(param, grad, with_eps(s, grad_var, hp), buf, lr, hp)  # (7)-(10)


# ------------------------------------------------------------------ the back-end protocol
NAME = "single"


def refusal(facts: Facts, hp: Hyper) -> str | None:
    """The single-tensor path takes every tensor (any device, dtype and layout)."""
    return None


def native(facts: Facts) -> bool:
    """Float state stored as the group asks, of the parameter's dtype (or fp32 next to an
    fp16/bf16 parameter: the math is fp32 either way, see ``upcast``)."""
    return (
        facts.in_form
        and facts.storage is Storage.FLOAT
        and not facts.rounded
        and (facts.state_dtype == facts.dtype
             or (facts.dtype in LOW_PRECISION and facts.state_dtype == torch.float32))
    )  # fmt: skip


def step(batch: Batch, lr, hp: Hyper) -> None:
    """Update each tensor of the batch in turn (``single_tensor_rmsprop``)."""
    single_tensor_rmsprop(batch.params, batch.grads, *batch.buffers(hp), batch.steps, lr=lr, hp=hp)
