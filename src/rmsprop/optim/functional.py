"""The functional API: one RMSprop step over lists of tensors, as torch's
``torch.optim._functional`` style, through the same checks and choice of implementation as
``rmsprop.RMSprop`` (``planner``), with float state in the parameters' dtype.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ..backends import IMPLS
from ..backends.base import Hyper
from .executor import execute
from .planner import plan_tensors


def rmsprop(
    params: list[Tensor],
    grads: list[Tensor],
    square_avgs: list[Tensor],
    grad_avgs: list[Tensor | None],
    momentum_buffers: list[Tensor | None],
    state_steps: list[Tensor],
    *,
    lr: float | Tensor,
    hp: Hyper,
    impl: str = "auto",
    foreach: bool | None = None,
) -> str:
    """One step over dense tensors, in place; returns the implementation that ran.
    ``grad_avgs`` / ``momentum_buffers`` hold tensors where ``hp`` is centered / has
    momentum (``None`` otherwise). Raises before any write if a tensor cannot be updated."""
    if not params:
        return "none"
    state = {p: _state(v, m, b, s) for p, v, m, b, s
             in zip(params, square_avgs, grad_avgs, momentum_buffers, state_steps)}  # fmt: skip
    group: dict[str, Any] = {
        **{k: getattr(hp, k) for k in hp.__dataclass_fields__}, "params": params, "lr": lr,
        "impl": impl, "foreach": foreach, "state_dtype": None, "sparse_mode": "lazy",
        "stochastic_rounding": False,
    }  # fmt: skip
    plan = plan_tensors(0, group, list(params), list(range(len(params))), list(grads), state)
    execute(plan, plan.grads, state, 0, 0)
    return plan.impl


def _state(v, m, b, step) -> dict[str, Tensor]:
    buffers = {"square_avg": v, "grad_avg": m, "momentum_buffer": b, "step": step}
    return {k: t for k, t in buffers.items() if t is not None}


__all__ = ["IMPLS", "rmsprop"]
