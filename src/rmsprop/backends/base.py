"""What every back end shares: the switches as one record, the batch of tensors a back end
updates, the facts about a tensor that decide which back ends can take it, and small
helpers. Nothing here imports the optimizer: the optimizer imports the back ends.

A back end is a module with::

    NAME: str
    def refusal(facts: Facts, hp: Hyper) -> str | None   # why it cannot take such a tensor
    def native(facts: Facts) -> bool     # in its own kernel (else per tensor on fp32 copies)
    def step(batch: Batch, lr, hp: Hyper) -> None        # steps (1), (3)-(10), in place

and, where it has them, its special cases:

    def available() -> str | None          # why it cannot run in this process at all
    def stand_in(hp, kinds: list[(Facts, mode)], params) -> StandIn | None
        # impl="auto" chose it but a kernel these tensors need is not loaded yet: what runs
        # this step instead (the numba back end while its background compile runs)
    IEEE_SQRT: bool                        # its square root is correctly rounded

``step`` receives batches that the planner (``rmsprop.optim.planner``) built from tensors
it checked first: every gradient and state buffer has the parameter's shape and device,
every dtype is the one ``Facts`` names, and for a ``native`` batch every tensor of it has
the same ``Facts``. The registry (``rmsprop.backends.registry``) loads them by name.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from ..lowbit.forms import StateForm, Storage
from ..lowbit.state import buffer_names

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
    capturable: bool = False
    initial_accumulator_value: float = 0.0  # where square_avg starts (lowbit.state.init_state)
    ieee_sqrt: bool = False  # the single-tensor path with a correctly rounded sqrt (numba's)

    @classmethod
    def from_group(cls, group: dict[str, Any]) -> Hyper:
        return cls(**{name: group[name] for name in _HYPER_FIELDS if name in group})

    def buffers(self, storage: Storage = Storage.FLOAT) -> list[str]:
        """The state buffers these switches keep with ``storage`` (``lowbit.state``)."""
        return buffer_names(self.centered, self.momentum, storage)

    def variance_form(self, storage: Storage) -> bool:
        """Centered with bf16 or 8-bit state: ``grad_var`` in place of ``square_avg``."""
        return self.centered and storage is not Storage.FLOAT

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


_HYPER_FIELDS = tuple(f.name for f in fields(Hyper))


class Facts(NamedTuple):
    """What decides which back ends can update a parameter, and how: the same for every
    tensor of a native batch."""

    device: torch.device
    dtype: torch.dtype  # the parameter's (and its gradient's)
    storage: Storage  # how its state is to be stored
    state_dtype: torch.dtype  # the dtype each buffer is kept in (uint8 codes for INT8)
    in_form: bool  # every existing buffer is stored as ``storage`` / ``state_dtype`` say
    contiguous: bool  # the parameter is contiguous
    state_contiguous: bool  # every existing buffer (codes and scales too) is contiguous
    rounded: bool  # a bf16 parameter written back with stochastic rounding
    sparse: bool = False  # a sparse gradient, updated row by row (``backends.sparse``)
    grad_dtype: torch.dtype | None = None  # the gradient's, when not the parameter's
    step_dtype: torch.dtype = torch.float32  # the step counter's (float32, or float64)
    #: the shard is one range of the global element order (``forms.row_shards``), so its
    #: part of a random stream is one range too (the fused kernels take one start per tensor)
    stream_range: bool = True


class StandIn(NamedTuple):
    """What runs a step in place of a back end whose kernel is not loaded yet: another
    back end, the switches it runs with (e.g. ``ieee_sqrt`` for the kernel's bits) and
    why, in words (``RMSprop.last_plan``'s "passed over")."""

    impl: str
    hp: Hyper
    why: str


@dataclass
class Batch:
    """The tensors of one back-end call, with their state (every buffer the switches use
    is present). ``params``/``grads`` are local tensors (a DTensor's shard);
    ``owners`` are the parameters as the optimizer knows them (the DTensors), where the
    state of each lives (its random streams start at ``firsts``, its global offset)."""

    params: list[Tensor]
    grads: list[Tensor]
    states: list[dict[str, Any]]
    form: StateForm = field(default_factory=StateForm)
    storage: Storage = Storage.FLOAT
    round_param: bool = False
    seed: int = 0
    salts: Sequence[int] = ()  # each parameter's random-stream position (``codecs.stream_seed``)
    owners: Sequence[Tensor] = ()
    sharded: bool = False

    def __len__(self) -> int:
        return len(self.params)

    @property
    def steps(self) -> list[Tensor]:
        return [state["step"] for state in self.states]

    @cached_property
    def views(self) -> list[dict[str, Any]]:
        """The states with every buffer as this rank's local tensor."""
        if not self.sharded:
            return self.states
        from .._dtensor import local

        return [{key: local(value) for key, value in state.items()} for state in self.states]

    def buffers(self, hp: Hyper) -> tuple[list[Tensor], list[Tensor | None], list[Tensor | None]]:
        """(square_avgs, grad_avgs, momentum_buffers) as local tensors, ``None`` for a buffer
        these switches do not use (a ``grad_avg`` kept from before centered was turned off
        is not passed on)."""
        views, absent = self.views, [None] * len(self.params)
        return (
            [state["square_avg"] for state in views],
            [state["grad_avg"] for state in views] if hp.centered else absent,
            [state["momentum_buffer"] for state in views] if hp.momentum > 0 else absent,
        )

    def firsts(self) -> Sequence[int]:
        """The global index of each tensor's first element (0 unless sharded)."""
        if not self.sharded:
            return np.zeros(len(self.params), np.int64)
        from ..lowbit.state import first_element

        return [first_element(owner) for owner in self.owners]


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


def any_low_precision(tensors: Sequence[Tensor | None]) -> bool:
    """Is any of ``tensors`` fp16 or bf16 (so ``upcast`` computes on fp32 copies)?"""
    return any(t is not None and t.dtype in LOW_PRECISION for t in tensors)


@contextmanager
def upcast(tensors: Sequence[Tensor | None]) -> Iterator[tuple[Tensor | None, ...]]:
    """Yield fp32 working copies of fp16/bf16 tensors (others as they are); on exit, write
    the copies of param and state (every tensor but index 1, the gradient) back.

    The update math therefore runs in fp32 whatever the storage dtype, as torch's fused
    Adam does; ``torch.optim.RMSprop`` computes in the parameter's dtype instead.
    """
    if not any_low_precision(tensors):
        yield tuple(tensors)
        return
    work = tuple(t.float() if t is not None and t.dtype in LOW_PRECISION else t for t in tensors)
    yield work
    for i, (orig, new) in enumerate(zip(tensors, work)):
        if i != 1 and orig is not None and new is not orig:
            orig.copy_(new)
