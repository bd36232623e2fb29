"""The planner: how each parameter group runs this step, decided and checked before
anything is written.

``plan_group`` reads one group (its parameters, their gradients and their state; it
creates nothing) and returns a :class:`Plan`: the back end that runs the group, and for
each set of its tensors that share :class:`~rmsprop.backends.base.Facts`, how: in the
back end's own kernel (``"native"``), on fp32 working copies one tensor at a time
(``"widened"``, ``rmsprop.backends.widen``) or row by row for a sparse gradient
(``"sparse"``). On the way every tensor is checked: the parameter is floating-point or
complex; its gradient has its shape, dtype and device; every state buffer it has has its
shape and device and a dtype some form can hold; a step counter is a float tensor. A
check that fails raises ``RuntimeError`` naming the group, the parameter, what was found
and what is allowed. ``impl="auto"`` picks the first of triton, numba, foreach (CUDA),
single whose checks pass for these exact tensors, preferring one that runs them all
natively; an explicit ``impl`` whose checks fail raises, saying why.

The two edges live here too: sparse gradients (``sparse_mode="dense"`` makes them dense,
``"lazy"`` ones get their own task) and DTensors (the plan holds their local shards).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .._dtensor import any_dtensor, local
from ..backends import load, triton_device, unavailable_reason
from ..backends.base import Facts, Hyper
from ..lowbit.codecs import num_blocks
from ..lowbit.forms import StateForm, Storage
from .clipping import check_mesh
from .validation import FLOATING

REAL_FLOATS = frozenset(FLOATING[:4])
COMPLEX = frozenset(FLOATING[4:])
STEP_DTYPES = (torch.float32, torch.float64)


class Problem(Exception):
    """A tensor no implementation can update (raised as RuntimeError with its place)."""


@dataclass(frozen=True)
class Task:
    """One back-end call: the tensors at ``index`` (positions in the plan's lists), which
    share ``facts``, run ``"native"``, ``"widened"`` or ``"sparse"``."""

    mode: str
    facts: Facts
    index: tuple[int, ...]


@dataclass
class Plan:
    """How one parameter group runs this step."""

    index: int  # the group's position in ``param_groups``
    group: dict[str, Any]
    hp: Hyper
    form: StateForm
    impl: str  # the back end ("none": no gradients; "sparse-lazy": sparse rows only)
    owners: list[Tensor]  # the parameters with a gradient, as the optimizer holds them
    params: list[Tensor]  # their local tensors (a DTensor's shard)
    grads: list[Tensor]  # their gradients as given (dense in sparse_mode="dense")
    fresh: list[int]  # positions whose state is created or completed before the run
    tasks: list[Task] = field(default_factory=list)
    passed_over: dict[str, str] = field(default_factory=dict)  # auto: back end -> why not
    sharded: bool = False

    def summary(self) -> PlanSummary:
        return PlanSummary(
            self.impl,
            tuple((t.mode, len(t.index), t.facts.storage.name.lower()) for t in self.tasks),
            dict(self.passed_over),
        )


@dataclass(frozen=True)
class PlanSummary:
    """What a group's last step ran (``RMSprop.last_plan[i]``): the back end, each call's
    mode, tensor count and state storage, and why ``auto`` passed faster ones over."""

    impl: str
    tasks: tuple[tuple[str, int, str], ...]
    passed_over: dict[str, str]

    def __str__(self) -> str:
        parts = [
            f"{n} tensor(s) {_MODES[mode]} ({storage} state)" for mode, n, storage in self.tasks
        ]
        text = f"{self.impl}: " + ("; ".join(parts) or "no gradients")
        for name, why in self.passed_over.items():
            text += f"\n  passed over {name}: {why}"
        return text


_MODES = {"native": "as stored", "widened": "one at a time on working copies",
          "sparse": "row by row (sparse gradients)"}  # fmt: skip


# ---------------------------------------------------------------------- the plan
def plan_group(index: int, group: dict[str, Any], state: Mapping[Tensor, dict[str, Any]],
               reduce: bool = False) -> Plan:  # fmt: skip
    """Check group ``index`` and decide how it runs. ``state``: the optimizer's state (read,
    never written); ``reduce``: the step will reduce the gradients across ranks."""
    return plan_tensors(index, group, *gather(group), state, reduce)


def plan_tensors(index: int, group: dict[str, Any], owners: list[Tensor], positions: list[int],
                 grads: list[Tensor], state: Mapping[Tensor, dict[str, Any]],
                 reduce: bool = False) -> Plan:  # fmt: skip
    """``plan_group`` for given parameters (at ``positions`` in the group) and gradients."""
    hp, form = Hyper.from_group(group), StateForm.parse(group["state_dtype"])
    sharded = any_dtensor(owners)
    params = [local(p) for p in owners] if sharded else owners
    if sharded and reduce:
        check_mesh(grads)
    plan = Plan(index, group, hp, form, "none", owners, params, grads, [], sharded=sharded)
    buckets = _examine(plan, positions, state)
    if buckets:
        plan.impl, plan.passed_over = choose(index, group, hp, list(buckets))
        plan.tasks = [Task(_mode(plan.impl, f), f, tuple(ix)) for f, ix in buckets.items()]
        if all(t.mode == "sparse" for t in plan.tasks):
            plan.impl = "sparse-lazy"
    return plan


def gather(group: dict[str, Any]) -> tuple[list[Tensor], list[int], list[Tensor]]:
    """The parameters with a gradient, their positions in the group, and their gradients
    (the sparse edge: dense ones in ``sparse_mode="dense"``)."""
    owners, positions, grads = [], [], []
    dense = group["sparse_mode"] == "dense"
    for position, p in enumerate(group["params"]):
        g = p.grad
        if g is not None:
            if dense and g.is_sparse:
                g = g.to_dense()
            owners.append(p)
            positions.append(position)
            grads.append(g)
    return owners, positions, grads


def _examine(plan: Plan, positions: list[int],
             state: Mapping[Tensor, dict[str, Any]]) -> dict[Facts, list[int]]:  # fmt: skip
    """Check every tensor of the plan; its positions by ``Facts``, in order of appearance."""
    form, names = plan.form, plan.hp.buffers
    rounded_bf16 = plan.group["stochastic_rounding"]
    plain = form.state_dtype is None
    buckets: dict[Facts, list[int]] = {}
    for k, (owner, p, g) in enumerate(zip(plan.owners, plan.params, plan.grads)):
        st = state.get(owner)
        if plan.sharded:  # the DTensor edge: check the local shards
            g = local(g)
            st = {key: local(value) for key, value in st.items()} if st else st
        storage = Storage.FLOAT if plain else form.storage(owner)
        stored = p.dtype if plain else form.stored_dtype(owner, storage)
        try:
            in_form, dense, complete = check_tensor(p, g, st, storage, stored, names)
            facts = Facts(p.device, p.dtype, storage, stored, in_form, p.is_contiguous(), dense,
                          rounded_bf16 and p.dtype == torch.bfloat16, g.is_sparse,
                          None if g.dtype == p.dtype else g.dtype)  # fmt: skip
            if facts.sparse:
                _check_sparse(facts)
        except Problem as problem:
            raise RuntimeError(f"group {plan.index}, parameter {positions[k]}: {problem}") from None
        buckets.setdefault(facts, []).append(k)
        if not complete:
            plan.fresh.append(k)
    return buckets


def _mode(impl: str, facts: Facts) -> str:
    """How back end ``impl`` runs tensors with ``facts``. A gradient of another dtype than
    its parameter's (``Tensor.grad_dtype``) is cast to the math dtype first: widened."""
    if facts.sparse:
        return "sparse"
    return "native" if facts.grad_dtype is None and load(impl).native(facts) else "widened"


# ---------------------------------------------------------------------- the checks
def check_tensor(p: Tensor, g: Tensor, state: dict[str, Any] | None, storage: Storage,
                 stored: torch.dtype, names: list[str]) -> tuple[bool, bool, bool]:  # fmt: skip
    """Raise ``Problem`` unless some implementation can update ``p`` with gradient ``g``
    and ``state`` (local tensors). Returns (every existing buffer is in the wanted form,
    every existing buffer is contiguous, the state has a step and every buffer)."""
    if p.dtype not in FLOATING:
        raise Problem(f"dtype {p.dtype}; RMSprop updates floating-point or complex parameters")
    if (
        g.shape != p.shape
        or g.device != p.device
        or (g.dtype != p.dtype and g.dtype not in (COMPLEX if p.is_complex() else REAL_FLOATS))
    ):
        raise Problem(
            f"the gradient is {_describe(g)}, the parameter {_describe(p)}; a gradient must "
            "have its parameter's shape and device, and a floating-point dtype (complex for "
            "a complex parameter)"
        )
    if not state:
        return True, True, False
    _check_step(state.get("step"))
    in_form = dense = complete = True
    int8 = storage is Storage.INT8
    for name in names:
        buffer = state.get(name)
        if buffer is not None:
            _check_buffer(name, buffer, p)
            in_form = in_form and not int8 and buffer.dtype == stored
            dense = dense and buffer.is_contiguous()
        elif (codes := state.get(f"{name}_codes")) is not None:
            scale = _check_codes(name, codes, state.get(f"{name}_scale"), p)
            in_form = in_form and int8
            dense = dense and codes.is_contiguous() and scale.is_contiguous()
        else:
            complete = False
    return in_form, dense, complete and "step" in state


def _describe(t: Tensor) -> str:
    return f"{tuple(t.shape)} {str(t.dtype).removeprefix('torch.')} on {t.device}"


def _check_step(step: Any) -> None:
    if step is not None and not (isinstance(step, Tensor) and step.dtype in STEP_DTYPES):
        found = step.dtype if isinstance(step, Tensor) else type(step).__name__
        raise Problem(
            f"state 'step' is {found}; it must be a float32 or float64 tensor (torch's convention)"
        )


def _check_buffer(name: str, buffer: Any, p: Tensor) -> None:
    if not isinstance(buffer, Tensor):
        raise Problem(f"state {name!r} is a {type(buffer).__name__}, not a tensor")
    if buffer.shape != p.shape or buffer.device != p.device:
        raise Problem(
            f"state {name!r} is {_describe(buffer)}, the parameter {_describe(p)}; state keeps "
            "its parameter's shape and device (was the parameter's .data replaced after the "
            "optimizer's first step?)"
        )
    if buffer.dtype not in (COMPLEX if p.is_complex() else REAL_FLOATS):
        raise Problem(
            f"state {name!r} has dtype {buffer.dtype}, which cannot hold the state of a "
            f"{p.dtype} parameter"
        )


def _check_codes(name: str, codes: Any, scale: Any, p: Tensor) -> Tensor:
    ok = isinstance(codes, Tensor) and isinstance(scale, Tensor)
    if not (ok and codes.dtype == torch.uint8 and codes.shape == p.shape
            and scale.dtype == torch.float32 and scale.numel() == num_blocks(p.numel())
            and codes.device == p.device == scale.device):  # fmt: skip
        raise Problem(
            f"8-bit state {name!r} must be uint8 codes of the parameter's shape {tuple(p.shape)} "
            f"and {num_blocks(p.numel())} float32 block scales on {p.device}"
        )
    return scale


def _check_sparse(facts: Facts) -> None:
    if facts.storage is not Storage.FLOAT or facts.rounded or not facts.in_form:
        raise Problem(
            "sparse gradients with state_dtype=bfloat16/'int8' or stochastic_rounding are not "
            "supported: use sparse_mode='dense' (or fp32 state)"
        )


# ---------------------------------------------------------------------- the choice
def choose(index: int, group: dict[str, Any], hp: Hyper,
           kinds: list[Facts]) -> tuple[str, dict[str, str]]:  # fmt: skip
    """The back end for a group whose tensors have these ``Facts``, and (``auto``) why
    each one tried before it was passed over."""
    dense = [f for f in kinds if not f.sparse]
    impl = group["impl"]
    if impl != "auto":
        reason = refusal(impl, dense, hp)
        if reason is not None:
            raise RuntimeError(f"group {index}: {reason}")
        return impl, {}
    passed, runnable = {}, []
    for name in candidates(group, hp, dense):
        reason = refusal(name, dense, hp)
        if reason is not None:
            passed[name] = reason
        elif all(load(name).native(f) for f in dense):
            return name, passed
        else:
            runnable.append(name)
    return runnable[0], passed


def candidates(group: dict[str, Any], hp: Hyper, kinds: list[Facts]) -> list[str]:
    """``auto``'s back ends, fastest first: the fused kernels for their devices, torch's
    foreach path on CUDA (as torch's default), the single-tensor path last (it takes
    everything). ``foreach=True/False`` and ``differentiable`` pin torch's paths."""
    if hp.differentiable or group["foreach"] is False:
        return ["single"]
    if group["foreach"]:
        return ["foreach"]
    devices = {f.device.type for f in kinds}
    names = ["triton"] if "cuda" in devices and triton_device() == "cuda" else []
    names += ["numba"] + (["foreach"] if devices == {"cuda"} else [])
    return [*names, "single"]


def refusal(name: str, kinds: list[Facts], hp: Hyper) -> str | None:
    """Why back end ``name`` cannot run tensors with these facts (None: it can)."""
    reason = unavailable_reason(name)
    if reason is not None:
        return f"impl={name!r} is not available here: {reason}"
    if hp.differentiable and name != "single":
        return f"differentiable=True needs impl='single' (got impl={name!r})"
    backend = load(name)
    for facts in kinds:
        reason = backend.refusal(facts, hp)
        if reason is not None:
            return reason
    return None
