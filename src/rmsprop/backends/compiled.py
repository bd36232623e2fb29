"""``impl="compiled"``: the single-tensor path under ``torch.compile`` (Inductor fuses each
tensor's update into a few loops). For comparison with the hand-written kernels; compile
time is paid on the first step and whenever the shapes or switches change. The lr is
passed as a 0-d tensor so that an LR schedule does not trigger recompilation.
"""

from __future__ import annotations

import torch

from . import single
from .base import Batch, Facts, Hyper

NAME = "compiled"
_compiled = torch.compile(single.single_tensor_rmsprop, dynamic=False)


def refusal(facts: Facts, hp: Hyper) -> str | None:
    if hp.differentiable:
        return "impl='compiled' does not support differentiable=True (use impl='single')"
    return None


native = single.native


def step(batch: Batch, lr, hp: Hyper) -> None:
    if not isinstance(lr, torch.Tensor):
        lr = torch.tensor(float(lr), dtype=torch.float64)
    _compiled(batch.params, batch.grads, *batch.buffers(hp), batch.steps, lr=lr, hp=hp)
