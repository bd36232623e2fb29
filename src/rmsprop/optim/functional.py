"""The functional API and the choice of implementation.

``rmsprop(params, grads, square_avgs, grad_avgs, momentum_buffers, state_steps, *, lr,
hp, impl)`` runs one step over lists of tensors; ``select_impl`` decides which back end
runs a group. Every back end computes the same algorithm (:data:`rmsprop.algorithm.ALGORITHM`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ._common import Hyper
from ._foreach import foreach_rmsprop
from ._single_tensor import single_tensor_rmsprop

IMPLS = ("auto", "single", "foreach", "numba", "triton", "compiled")


def _kernel_backends() -> dict[str, Callable[..., None]]:
    from ..kernels import available_backends

    return available_backends()


def select_impl(impl: str, foreach: bool | None, params: list[Tensor], differentiable: bool,
                rounded_bf16: bool = False) -> str:  # fmt: skip
    """The implementation that runs these tensors.

    An explicit ``impl`` that cannot run them raises ``RuntimeError`` saying why; ``"auto"``
    picks the fastest correct one for the device (see ``rmsprop.kernels.dispatch``).
    ``rounded_bf16``: bf16 params stored with stochastic rounding (fp32 math).
    """
    from ..kernels.dispatch import choose

    return choose(impl, foreach, params, differentiable, rounded_bf16)


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
    capturable: bool = False,
) -> str:
    """One RMSprop step over dense tensors, in place. Returns the implementation used."""
    if not params:
        return "none"
    chosen = select_impl(impl, foreach, params, hp.differentiable)
    args = (params, grads, square_avgs, grad_avgs, momentum_buffers, state_steps)
    if chosen == "single":
        single_tensor_rmsprop(*args, lr=lr, hp=hp)
    elif chosen == "foreach":
        foreach_rmsprop(*args, lr=lr, hp=hp, capturable=capturable)
    else:
        _kernel_backends()[chosen](*args, lr=lr, hp=hp)
    return chosen


__all__ = ["IMPLS", "rmsprop", "select_impl", "torch"]
