"""What every torch implementation shares: the switches as one record, and small helpers."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

LOW_PRECISION = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class Hyper:
    """The hyperparameters and switches of one parameter group (everything but lr)."""

    alpha: float
    eps: float
    weight_decay: float
    momentum: float
    centered: bool
    maximize: bool
    differentiable: bool = False
    eps_in_sqrt: bool = False
    nesterov: bool = False
    lr_in_momentum: bool = False
    decoupled_weight_decay: bool = False
    bias_correction: bool = False
    ema_form: str = "torch"
    centered_clamp: bool = False

    @classmethod
    def from_group(cls, group: dict[str, Any]) -> Hyper:
        return cls(**{f.name: group[f.name] for f in fields(cls)})

    def kernel_switches(self) -> dict[str, int]:
        """The switches as the fused kernels take them (compile-time constants), in the
        order of their flag slots; weight decay, EMA form and momentum as small codes."""
        return {
            "MAXIMIZE": int(self.maximize),
            "WD_MODE": 0 if self.weight_decay == 0 else (2 if self.decoupled_weight_decay else 1),
            "EMA": {"torch": 0, "multiply": 1, "delta": 2}[self.ema_form],
            "CENTERED": int(self.centered),
            "CLAMP": int(self.centered_clamp),
            "BIAS": int(self.bias_correction),
            "EPS_IN_SQRT": int(self.eps_in_sqrt),
            "MOMENTUM_MODE": 0 if self.momentum == 0 else (2 if self.lr_in_momentum else 1),
            "NESTEROV": int(self.nesterov),
        }


def to_scalar_lr(lr: float | Tensor) -> float | Tensor:
    """A 1-element tensor lr becomes 0-d, as torch's ``_to_scalar``; floats pass through."""
    if isinstance(lr, Tensor) and lr.dim() != 0:
        return lr.squeeze()
    return lr


def step_value(step: Tensor) -> float:
    return float(step.item())


def as_real(*tensors: Tensor | None) -> tuple[Tensor | None, ...]:
    """``view_as_real`` of each complex tensor (real and imaginary parts as two coordinates)."""
    return tuple(
        torch.view_as_real(t) if t is not None and torch.is_complex(t) else t for t in tensors
    )


@contextmanager
def upcast(tensors: Sequence[Tensor | None]) -> Iterator[tuple[Tensor | None, ...]]:
    """Yield fp32 working copies of fp16/bf16 tensors (others as they are); on exit, write
    the copies of param and state (every tensor but index 1, the gradient) back.

    The update math therefore runs in fp32 whatever the storage dtype, as torch's fused
    Adam does; ``torch.optim.RMSprop`` computes in the parameter's dtype instead.
    """
    if not any(t is not None and t.dtype in LOW_PRECISION for t in tensors):
        yield tuple(tensors)
        return
    work = tuple(t.float() if t is not None and t.dtype in LOW_PRECISION else t for t in tensors)
    yield work
    for i, (orig, new) in enumerate(zip(tensors, work)):
        if i != 1 and orig is not None and new is not orig:
            orig.copy_(new)
