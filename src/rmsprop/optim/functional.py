r"""The functional API: one RMSprop step over lists of tensors you hold, as
``torch.optim.rmsprop.rmsprop`` — the layer under ``rmsprop.RMSprop``, usable on its own.

It runs what the class runs for one parameter group, in the same order: every tensor
checked and the back end chosen (``planner.plan_tensors``), the gradients clipped
(``clipping.clip_gradients``, step (2)), then steps (1), (3)-(10) on the chosen back end
(``executor.execute``). The state is the buffers you pass, updated in place, in any float
dtype the parameter can hold (torch's functional API keeps them in the parameter's
dtype); compact state (``state_dtype``), the non-finite guard (``nonfinite``) and the
random streams of stochastic rounding belong to the class, which owns its state and
counters.

Differences from ``torch.optim.rmsprop.rmsprop``:
  The switches are keyword arguments with ``rmsprop.RMSprop``'s names (``eps_in_sqrt``,
  ``lr_in_momentum``, ``clipnorm``, ``impl``, ...); ``has_complex`` is not needed; a
  missing buffer the switches need raises ``ValueError`` naming the list (torch fails
  inside its loop); every check runs before the first write, so a call that raises changes
  nothing; ``impl="auto"`` may run the fused kernel (torch's own paths: ``foreach=False``
  / ``True``, bit for bit).

Examples:
  >>> import torch
  >>> from rmsprop.optim.functional import rmsprop
  >>> p, g = torch.ones(3), torch.full((3,), 0.5)
  >>> v, step = torch.zeros(3), torch.tensor(0.0)
  >>> rmsprop([p], [g], [v], [None], [None], [step], lr=0.01, alpha=0.99, eps=1e-8,
  ...         weight_decay=0.0, momentum=0.0, centered=False, foreach=False)
  'single'
  >>> float(step), round(float(p[0]), 4)
  (1.0, 0.9)
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from .._validation import unknown_arguments
from ..backends import IMPLS
from ..backends.base import Hyper
from .clipping import clip_gradients
from .executor import execute
from .planner import plan_tensors
from .settings import Settings
from .validation import GROUP_KEYS, check_group

_CORE = ("lr", "alpha", "eps", "weight_decay", "momentum", "centered", "impl", "foreach")
_OWNED_BY_THE_CLASS = ("state_dtype", "nonfinite", "stochastic_rounding")
#: what the functional step takes besides the core hyperparameters: a parameter group's
#: switches, less those about state the class owns (``_OWNED_BY_THE_CLASS``)
SWITCHES = tuple(k for k in GROUP_KEYS if k not in (*_CORE, *_OWNED_BY_THE_CLASS))


def rmsprop(
    params: list[Tensor],
    grads: list[Tensor],
    square_avgs: list[Tensor],
    grad_avgs: list[Tensor | None],
    momentum_buffers: list[Tensor | None],
    state_steps: list[Tensor],
    *,
    lr: float | Tensor,
    alpha: float,
    eps: float,
    weight_decay: float,
    momentum: float,
    centered: bool,
    impl: str = "auto",
    foreach: bool | None = None,
    **switches: Any,
) -> str:
    """One step over dense or sparse gradients, in place; returns the implementation that
    ran (as ``RMSprop.last_impl``).

    ``grad_avgs[i]`` is a tensor when ``centered``, ``momentum_buffers[i]`` when
    ``momentum > 0`` (``None`` otherwise); ``state_steps[i]`` is a one-element float
    tensor, incremented by the step. ``switches``: any of ``SWITCHES``, with the meaning
    and default they have in ``rmsprop.RMSprop``. Raises before any write: ``TypeError`` /
    ``ValueError`` for an argument (named), ``RuntimeError`` for a tensor no
    implementation can update (naming its position)."""
    settings = _settings(lr, alpha, eps, weight_decay, momentum, centered, impl, foreach,
                         switches)  # fmt: skip
    state = _state(params, grads, square_avgs, grad_avgs, momentum_buffers, state_steps,
                   settings.hp)  # fmt: skip
    if not params:
        return "none"
    dense = settings.sparse_mode == "dense"
    grads = [g.to_dense() if dense and g.is_sparse else g for g in grads]
    plan = plan_tensors(0, settings, list(params), list(range(len(params))), grads, state)
    execute(plan, clip_gradients(plan.grads, settings), state, 0, 0)
    return plan.impl


def _settings(lr, alpha, eps, weight_decay, momentum, centered, impl, foreach,
              switches: dict[str, Any]) -> Settings:  # fmt: skip
    """The arguments, checked as ``RMSprop`` checks a parameter group."""
    owned = [name for name in switches if name in _OWNED_BY_THE_CLASS]
    if owned:
        raise TypeError(
            f"rmsprop.optim.functional.rmsprop() does not take {', '.join(owned)}: compact "
            "state, the non-finite guard and stochastic rounding belong to rmsprop.RMSprop, "
            "which owns its state and counters"
        )
    message = unknown_arguments(switches, (*_CORE, *SWITCHES), "rmsprop.optim.functional.rmsprop()")
    if message is not None:
        raise TypeError(message)
    group = check_group({
        "lr": lr, "alpha": alpha, "eps": eps, "weight_decay": weight_decay,
        "momentum": momentum, "centered": centered, "impl": impl, "foreach": foreach,
        "maximize": False, **switches,
    })  # fmt: skip
    return Settings(
        Hyper.from_group(group), group["lr"], impl=impl, foreach=foreach,
        sparse_mode=group.get("sparse_mode") or "lazy", clipvalue=group.get("clipvalue"),
        clipnorm=group.get("clipnorm"), global_clipnorm=group.get("global_clipnorm"),
    )  # fmt: skip


def _state(params, grads, square_avgs, grad_avgs, momentum_buffers, state_steps,
           hp: Hyper) -> dict[Tensor, dict[str, Tensor]]:  # fmt: skip
    """Each parameter's state as the planner reads it, after checking that every list has
    one entry per parameter and holds the buffers these switches use."""
    lists = {"grads": grads, "square_avgs": square_avgs, "grad_avgs": grad_avgs,
             "momentum_buffers": momentum_buffers, "state_steps": state_steps}  # fmt: skip
    for name, values in lists.items():
        if len(values) != len(params):
            raise ValueError(
                f"{name} has {len(values)} entries for {len(params)} parameters: one per "
                "parameter, in the same order"
            )
    needed = {"grads": True, "square_avgs": True, "grad_avgs": hp.centered,
              "momentum_buffers": hp.momentum > 0, "state_steps": True}  # fmt: skip
    for name, values in lists.items():
        for i, value in enumerate(values):
            if needed[name] and not isinstance(value, Tensor):
                why = {"grad_avgs": "centered=True", "momentum_buffers": "momentum > 0"}
                raise ValueError(
                    f"{name}[{i}] is {type(value).__name__}; "
                    + (f"{why[name]} needs a tensor there" if name in why else "a tensor is needed")
                )  # fmt: skip
    keys = ("square_avg", "grad_avg", "momentum_buffer", "step")
    return {
        p: {key: t for key, t, used in zip(keys, (v, m, b, s), (True, hp.centered,
            hp.momentum > 0, True)) if used}
        for p, v, m, b, s in zip(params, square_avgs, grad_avgs, momentum_buffers, state_steps)
    }  # fmt: skip


__all__ = ["IMPLS", "SWITCHES", "rmsprop"]
