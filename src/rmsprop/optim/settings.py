"""How one parameter group steps, as one record: what ``rmsprop.RMSprop`` reads from each of
its parameter groups at every step, and what ``rmsprop.optim.functional.rmsprop`` takes
directly. The planner, the clipping and the executor read this record, never a group dict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from ..backends.base import Hyper
from ..lowbit.forms import StateForm


@dataclass(frozen=True)
class Settings:
    """One group's step: the switches of the math (``hp``), the learning rate, how state is
    stored (``form``), how to run (``impl``, ``foreach``), how bf16 parameters are written
    (``stochastic_rounding``), sparse gradients (``sparse_mode``) and Keras's clipping (at
    most one of ``clipvalue``, ``clipnorm``, ``global_clipnorm``)."""

    hp: Hyper
    lr: float | Tensor
    form: StateForm = StateForm.parse(None)  # noqa: RUF009 (a frozen record: shared safely)
    impl: str = "auto"
    foreach: bool | None = None
    stochastic_rounding: bool = False
    sparse_mode: str = "lazy"
    clipvalue: float | None = None
    clipnorm: float | None = None
    global_clipnorm: float | None = None

    @classmethod
    def from_group(cls, group: dict[str, Any]) -> Settings:
        """The settings of a parameter group checked by ``validation.check_group``."""
        return cls(
            Hyper.from_group(group), group["lr"], StateForm.parse(group["state_dtype"]),
            group["impl"], group["foreach"], group["stochastic_rounding"],
            group["sparse_mode"] or "lazy", group["clipvalue"], group["clipnorm"],
            group["global_clipnorm"],
        )  # fmt: skip

    @property
    def reads_every_rank(self) -> bool:
        """Does clipping by norm make this group's step read every rank's gradients?"""
        return self.clipnorm is not None or self.global_clipnorm is not None
