"""Running a plan: the state a plan found missing is created, then each of its tasks is
handed to its back end. Nothing here checks anything: ``planner`` did, for every tensor,
before the first write of the step; what is created here (state, contiguous gradients,
working copies) is correct by construction.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import numpy as np
from torch import Tensor

from .._dtensor import local
from ..backends import load, sparse, widen
from ..backends.base import Batch
from ..lowbit.forms import Storage
from ..lowbit.state import init_state
from .planner import Plan, Task


def execute(plan: Plan, grads: list[Tensor], state: MutableMapping[Tensor, dict[str, Any]],
            seed: int, first_salt: int) -> None:  # fmt: skip
    """Steps (1), (3)-(10) for the group of ``plan`` with gradients ``grads`` (clipped).
    ``seed``: the optimizer's ``rounding_seed``; ``first_salt``: the random-stream position
    of the group's first parameter (the parameters before it in the optimizer)."""
    states, hp = plan.states, plan.settings.hp
    for k in plan.fresh:
        owner = plan.owners[k]
        states[k] = state[owner]  # a new entry of the optimizer's state where there was none
        init_state(states[k], owner, plan.form, hp, seed, first_salt + plan.positions[k])
    if plan.sharded:
        grads = [local(g) for g in grads]
    for task in plan.tasks:
        _run(plan, task, _batch(plan, task, grads, states, seed, first_salt))


def _batch(plan: Plan, task: Task, grads: list[Tensor], states: list[dict[str, Any]], seed: int,
           first_salt: int) -> Batch:  # fmt: skip
    whole = len(task.index) == len(plan.params)

    def pick(values: list[Any]) -> list[Any]:
        return values if whole else [values[i] for i in task.index]

    facts = task.facts
    streams = task.mode != "native" or facts.storage is not Storage.FLOAT or facts.rounded
    salts = first_salt + np.asarray(pick(plan.positions), np.int64) if streams else ()
    return Batch(pick(plan.params), pick(grads), pick(states), plan.form, facts.storage,
                 facts.rounded, seed, salts, pick(plan.owners), plan.sharded)  # fmt: skip


def _run(plan: Plan, task: Task, batch: Batch) -> None:
    lr, hp = plan.settings.lr, plan.hp
    if task.mode == "sparse":
        sparse.step(batch, lr, hp)
    elif task.mode == "native":
        load(plan.impl).step(batch, lr, hp)
    else:
        backend = load(plan.impl)
        widen.step(backend.step, batch, lr, hp, getattr(backend, "IEEE_SQRT", False))
