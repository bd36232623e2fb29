"""Any back end, for a tensor its kernel does not take as stored: per tensor, the state
decoded to the math dtype (fp32, fp64 for fp64 parameters), the parameter widened to it,
the back end's own float path run on these working copies, then the parameter written
back (stochastically rounded for rounded bf16 parameters) and the state encoded in the
group's form (``lowbit.state``). One tensor's copies exist at a time.

This is how ``impl="single"`` and ``"foreach"`` run bf16 or 8-bit state (centered: the
variance form, ``single.update_variance_``) and rounded bf16 parameters, and how every
back end runs state found in another form than the group's (a strided buffer, another
dtype): the result is the same bits as the fused kernels, which decode, update and
encode the same way in registers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from ..lowbit.codecs import stochastic_round_to_bf16, stream_seed
from ..lowbit.forms import Storage
from ..lowbit.state import decode, encode, stream_index
from .base import Batch, Hyper, to_scalar_lr
from .single import update_variance_


def math_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the update is computed in: fp64 for fp64, complex as is, else fp32."""
    return dtype if dtype in (torch.float64, torch.complex64, torch.complex128) else torch.float32


def step(run: Callable[[Batch, Any, Hyper], None], batch: Batch, lr, hp: Hyper,
         ieee_sqrt: bool = False) -> None:  # fmt: skip
    """``run`` (a back end's native ``step``) on working copies of each tensor in turn; in
    the variance form (centered compact state) the single-tensor ``update_variance_``,
    which computes what the fused kernels compute (with their correctly rounded square
    root where ``ieee_sqrt``: the fused back ends')."""
    names, variance = hp.buffers(batch.storage), hp.variance_form(batch.storage)
    if variance and ieee_sqrt and not hp.ieee_sqrt:
        hp = replace(hp, ieee_sqrt=True)
    for i in range(len(batch)):
        param, owner, state = batch.params[i], batch.owners[i], batch.states[i]
        math = math_dtype(param.dtype)
        work = {name: _working(decode(state, name), math) for name in names}
        param_work = param if param.dtype == math else param.to(math)
        grad_work = batch.grads[i].to(math)
        if variance:
            update_variance_(param_work, grad_work, work["grad_var"], work["grad_avg"],
                             work.get("momentum_buffer"), state["step"], to_scalar_lr(lr), hp)  # fmt: skip
        else:
            run(Batch([param_work], [grad_work], [{**work, "step": state["step"]}]), lr, hp)
        step_, salt = int(state["step"]), batch.salts[i]
        if batch.round_param:  # (10) θ stored with stochastic rounding: small updates survive
            seed = stream_seed(batch.seed, salt, "param")
            param.copy_(stochastic_round_to_bf16(param_work, step_, seed, stream_index(owner)))
        elif param_work is not param:
            param.copy_(param_work)
        encode(state, work, owner, batch.form, step_, batch.seed, salt)


def _working(value: Tensor, math: torch.dtype) -> Tensor:
    """A contiguous tensor of dtype ``math`` holding ``value`` (``value`` itself when it is
    one already: its update then happens in place)."""
    return value.to(math).contiguous()


__all__ = ["Storage", "math_dtype", "step"]
