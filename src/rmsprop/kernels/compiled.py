"""``impl="compiled"``: the single-tensor path under ``torch.compile`` (Inductor fuses each
tensor's update into a few loops). For comparison with the hand-written kernels; compile
time is paid on the first step and whenever the shapes or switches change. The lr is
passed as a 0-d tensor so that an LR schedule does not trigger recompilation.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..optim._common import Hyper
from ..optim._single_tensor import single_tensor_rmsprop

_compiled = torch.compile(single_tensor_rmsprop, dynamic=False)


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
    if not isinstance(lr, Tensor):
        lr = torch.tensor(float(lr), dtype=torch.float64)
    _compiled(params, grads, square_avgs, grad_avgs, momentum_buffers, state_steps, lr=lr, hp=hp)
