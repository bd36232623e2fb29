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

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .._dtensor import any_dtensor, local
from ..backends import load, triton_device, unavailable_reason
from ..backends.base import Facts, Hyper
from ..lowbit.codecs import num_blocks
from ..lowbit.forms import MIN_INT8_NUMEL, StateForm, Storage, row_shards
from ..lowbit.state import ALL_BUFFERS, new_step_dtype
from .clipping import check_mesh
from .settings import Settings
from .validation import FLOATING

REAL_FLOATS = frozenset(FLOATING[:4])
COMPLEX = frozenset(FLOATING[4:])
#: parameter dtype -> the dtypes its gradient and state buffers may have
_HOLDS = {dtype: COMPLEX if dtype.is_complex else REAL_FLOATS for dtype in FLOATING}
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
    settings: Settings
    hp: Hyper  # the settings' (a stand-in's where one runs: ``_stand_in_while_loading``)
    impl: str  # the back end ("none": no gradients; "sparse-lazy": sparse rows only)
    owners: list[Tensor]  # the parameters with a gradient, as the optimizer holds them
    positions: list[int]  # their positions in the group
    params: list[Tensor]  # their local tensors (a DTensor's shard)
    grads: list[Tensor]  # their gradients as given (dense in sparse_mode="dense")
    fresh: list[int]  # indices (into these lists) of tensors whose state is completed first
    states: list[dict[str, Any] | None] = field(default_factory=list)  # None: none yet
    tasks: list[Task] = field(default_factory=list)
    passed_over: dict[str, str] = field(default_factory=dict)  # auto: back end -> why not
    sharded: bool = False

    @property
    def form(self) -> StateForm:
        return self.settings.form

    def summary(self) -> PlanSummary:
        tasks = tuple((t.mode, len(t.index), t.facts.storage.name.lower()) for t in self.tasks)
        notes = ()
        if self.form.state_dtype == "int8" and any(s == "float" for _, _, s in tasks):
            notes = (f"state_dtype='int8' keeps float state for tensors below {MIN_INT8_NUMEL:,} "
                     "elements (8-bit blocks would not save memory there), complex ones and "
                     "shards that would split its 256-element blocks",)  # fmt: skip
        return PlanSummary(self.impl, tasks, dict(self.passed_over), notes)


@dataclass(frozen=True)
class PlanSummary:
    """What a group's last step ran (``RMSprop.last_plan[i]``): the back end, each call's
    mode, tensor count and state storage, and why ``auto`` passed faster ones over."""

    impl: str
    tasks: tuple[tuple[str, int, str], ...]
    passed_over: dict[str, str]
    notes: tuple[str, ...] = ()  # what the group's settings do here that one might not expect

    def __str__(self) -> str:
        parts = [
            f"{n} tensor(s) {_MODES[mode]} ({storage} state)" for mode, n, storage in self.tasks
        ]
        text = f"{self.impl}: " + ("; ".join(parts) or "no gradients")
        for name, why in self.passed_over.items():
            text += f"\n  passed over {name}: {why}"
        for note in self.notes:
            text += f"\n  note: {note}"
        return text


_MODES = {"native": "as stored", "widened": "one at a time on working copies",
          "sparse": "row by row (sparse gradients)"}  # fmt: skip


# ---------------------------------------------------------------------- the plan
def plan_group(index: int, group: dict[str, Any], state: Mapping[Tensor, dict[str, Any]],
               reduce: bool = False) -> Plan:  # fmt: skip
    """Check group ``index`` and decide how it runs. ``state``: the optimizer's state (read,
    never written); ``reduce``: the step will reduce the gradients across ranks."""
    settings = Settings.from_group(group)
    return plan_tensors(index, settings, *gather(group["params"], settings), state, reduce)


def plan_tensors(index: int, settings: Settings, owners: list[Tensor], positions: list[int],
                 grads: list[Tensor], state: Mapping[Tensor, dict[str, Any]],
                 reduce: bool = False) -> Plan:  # fmt: skip
    """``plan_group`` for given parameters (at ``positions`` in the group) and gradients."""
    sharded = any_dtensor(owners)
    params = [local(p) for p in owners] if sharded else owners
    if sharded and reduce:
        check_mesh(grads)
    plan = Plan(index, settings, settings.hp, "none", owners, positions, params, grads, [],
                sharded=sharded)  # fmt: skip
    buckets = _examine_uniform(plan, state) or _examine(plan, positions, state)
    _check_step_values(plan, list(buckets))
    if buckets:
        plan.impl, plan.passed_over = choose(index, settings, list(buckets))
        plan.tasks = [Task(_mode(plan.impl, f), f, tuple(ix)) for f, ix in buckets.items()]
        if settings.impl == "auto":
            _stand_in_while_loading(plan)
        if all(t.mode == "sparse" for t in plan.tasks):
            plan.impl = "sparse-lazy"
    return plan


def _stand_in_while_loading(plan: Plan) -> None:
    """``auto``'s choice has a kernel these tensors need still loading: the back end says
    what runs this step instead (its ``stand_in``, ``backends.base``)."""
    hook = getattr(load(plan.impl), "stand_in", None)
    if hook is None:
        return
    stand_in = hook(plan.hp, [(t.facts, t.mode) for t in plan.tasks], plan.params)
    if stand_in is not None:
        plan.passed_over[plan.impl] = stand_in.why
        plan.impl, plan.hp = stand_in.impl, stand_in.hp
        plan.tasks = [Task(_mode(stand_in.impl, t.facts), t.facts, t.index) for t in plan.tasks]


def gather(params: list[Tensor],
           settings: Settings) -> tuple[list[Tensor], list[int], list[Tensor]]:  # fmt: skip
    """The parameters with a gradient, their positions in the group, and their gradients
    (the sparse edge: dense ones in ``sparse_mode="dense"``)."""
    owners, positions, grads = [], [], []
    dense = settings.sparse_mode == "dense"
    for position, p in enumerate(params):
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
    """Check every tensor of the plan; their positions by ``Facts``, in order of appearance.
    Records each tensor's state (None where there is none yet) in ``plan.states``."""
    form, plain = plan.form, plan.form.state_dtype is None
    names = {storage: plan.hp.buffers(storage) for storage in Storage}
    kinds: dict[tuple[Any, ...], list[int]] = {}
    last, index, states, fresh = None, [], plan.states, plan.fresh
    rounds = plan.settings.stochastic_rounding
    for k, (owner, p, g) in enumerate(zip(plan.owners, plan.params, plan.grads)):
        st = state.get(owner)
        states.append(st)
        if plan.sharded:  # the DTensor edge: check the local shards
            g = local(g)
            st = {key: local(value) for key, value in st.items()} if st else st
        storage = Storage.FLOAT if plain else form.storage(owner)
        try:
            kind, complete = inspect(p, g, st, storage,
                                     p.dtype if plain else form.stored_dtype(owner, storage),
                                     names[storage])  # fmt: skip
        except Problem as problem:
            raise RuntimeError(f"group {plan.index}, parameter {positions[k]}: {problem}") from None
        if plan.sharded and (storage is Storage.BF16 or (rounds and p.dtype == torch.bfloat16)):
            # a shard that draws on a random stream (bf16 state, a rounded bf16
            # parameter): is it one range of its stream (a kernel's one start)?
            kind = (*kind, row_shards(owner))
        if kind != last:  # most tensors share the kind of the one before: no hashing
            index = kinds.setdefault(kind, [])
            last = kind
        index.append(k)
        if not complete:
            fresh.append(k)
    return {_facts(kind, plan, positions[index[0]]): index for kind, index in kinds.items()}


def _examine_uniform(plan: Plan,
                     state: Mapping[Tensor, dict[str, Any]]) -> dict[Facts, list[int]] | None:  # fmt: skip
    """``_examine`` at a glance for the usual step of a large model: real parameters of one
    dtype and device, contiguous, dense gradients of their shape and dtype, complete state
    in the group's form (under int8: 8-bit for the large tensors, fp32 for the small),
    contiguous, of their shape and device. The same checks in one pass, without
    ``inspect``'s paths for what is uncommon or wrong. Returns None (``_examine``
    decides, tensor by tensor) when anything differs."""
    params, n = plan.params, len(plan.params)
    if plan.sharded or not n or params[0].dtype not in REAL_FLOATS:
        return None
    states = [state.get(p) for p in plan.owners]
    parts = _storage_parts(plan)
    buckets = {}
    for storage, index in parts.items():
        pick = (lambda values: values) if len(parts) == 1 else (lambda v: [v[i] for i in index])  # noqa: B023
        kind = _uniform_kind(pick(params), pick(plan.grads), pick(states), storage, plan.form,
                             plan.hp.buffers(storage))  # fmt: skip
        if kind is None:
            return None
        buckets[_facts(kind, plan, 0)] = list(index)
    plan.states[:] = states
    return buckets


def _storage_parts(plan: Plan) -> dict[Storage, range | list[int]]:
    """The group's positions by storage: one part, or under int8 the tensors large enough
    for 8-bit state and the others (``forms.int8_applies`` for unsharded real tensors)."""
    if plan.form.state_dtype != "int8":
        return {plan.form.storage(plan.params[0]): range(len(plan.params))}
    large = [p.numel() >= MIN_INT8_NUMEL for p in plan.params]
    parts = {Storage.INT8: [i for i, big in enumerate(large) if big],
             Storage.FLOAT: [i for i, big in enumerate(large) if not big]}  # fmt: skip
    ordered = sorted((index[0], storage) for storage, index in parts.items() if index)
    return {storage: parts[storage] for _, storage in ordered}  # in order of appearance


def _uniform_kind(params: list[Tensor], grads: list[Tensor], states: list[Any], storage: Storage,
                  form: StateForm, names: list[str]) -> tuple[Any, ...] | None:  # fmt: skip
    """The kind ``inspect`` would give every one of these tensors, or None if they differ
    or any check would fail. One pass, each attribute read once (measured faster than
    comparing columns of attributes, for 6 tensors and for 400)."""
    first = params[0]
    dtype, device, cpu = first.dtype, first.device, first.is_cpu
    stored = form.stored_dtype(first, storage)
    int8 = storage is Storage.INT8
    keys = [f"{name}_codes" if int8 else name for name in names]
    step_dtype = None
    try:
        for p, g, st in zip(params, grads, states):
            shape = p.shape
            if (p.dtype is not dtype or g.dtype is not dtype or g.shape != shape or g.is_sparse
                    or not p.is_contiguous()
                    or not (p.is_cpu and g.is_cpu if cpu else p.device == device == g.device)):  # fmt: skip
                return None
            for key in keys:
                b = st[key]
                if (b.dtype is not stored or b.shape != shape or not b.is_contiguous()
                        or not (b.is_cpu if cpu else b.device == device)):  # fmt: skip
                    return None
            if int8 and not _scales_fit(st, names, shape, device, cpu):
                return None
            step = st["step"]
            step_dtype = step_dtype or step.dtype
            if step.dtype is not step_dtype or step.numel() != 1 or (cpu and not step.is_cpu):
                return None
    except (AttributeError, TypeError, KeyError):  # a state, buffer or step missing or odd
        return None  # (never compared with ``in``: ``tensor == None`` is slow)
    if step_dtype not in STEP_DTYPES:
        return None
    return (device, dtype, storage, stored, True, True, True, False, None, step_dtype)


def _scales_fit(state: dict[str, Any], names: list[str], shape: torch.Size,
                device: torch.device, cpu: bool) -> bool:  # fmt: skip
    """8-bit state: each buffer's float32 block scales, one per block, contiguous."""
    blocks = num_blocks(shape.numel())
    for name in names:
        scale = state[f"{name}_scale"]
        if (scale.dtype is not torch.float32 or scale.numel() != blocks
                or not scale.is_contiguous()
                or not (scale.is_cpu if cpu else scale.device == device)):  # fmt: skip
            return False
    return True


def _facts(kind: tuple[Any, ...], plan: Plan, position: int) -> Facts:
    """The ``Facts`` of the tensors whose ``inspect`` returned ``kind`` (a plain tuple there:
    cheaper for thousands of tensors)."""
    device, dtype, storage, stored, in_form, contiguous, dense, sparse, grad_dtype, step = kind[:10]
    rounded = plan.settings.stochastic_rounding and dtype == torch.bfloat16
    facts = Facts(device, dtype, storage, stored, in_form, contiguous, dense, rounded, sparse,
                  grad_dtype, step, kind[10] if len(kind) > 10 else True)  # fmt: skip
    if sparse and (storage is not Storage.FLOAT or rounded or not in_form):
        raise RuntimeError(
            f"group {plan.index}, parameter {position}: sparse gradients with "
            "state_dtype=bfloat16/'int8' or stochastic_rounding are not supported: use "
            "sparse_mode='dense' (or fp32 state)"
        )
    return facts


def _check_step_values(plan: Plan, kinds: list[Facts]) -> None:
    """Where a step's value enters the math (bias correction, the random streams of
    stochastic rounding), each counter must be a whole number >= 0 (read only then: a
    read costs about 0.2 µs a tensor)."""
    if not (plan.hp.bias_correction or any(f.storage is not Storage.FLOAT or f.rounded
                                           for f in kinds)):  # fmt: skip
        return
    for k, st in enumerate(plan.states):
        if st and "step" in st:
            value = float(st["step"])
            if not (math.isfinite(value) and 0 <= value < 2**53 and value == int(value)):
                raise RuntimeError(
                    f"group {plan.index}, parameter {plan.positions[k]}: state 'step' is "
                    f"{value!r}; a step counter is a whole number >= 0"
                )


def _mode(impl: str, facts: Facts) -> str:
    """How back end ``impl`` runs tensors with ``facts``. A gradient of another dtype than
    its parameter's (``Tensor.grad_dtype``) is cast to the math dtype first: widened."""
    if facts.sparse:
        return "sparse"
    return "native" if facts.grad_dtype is None and load(impl).native(facts) else "widened"


# ---------------------------------------------------------------------- the checks
_CPU = torch.device("cpu")


def inspect(p: Tensor, g: Tensor, state: dict[str, Any] | None, storage: Storage,
            stored: torch.dtype, names: list[str]) -> tuple[tuple[Any, ...], bool]:  # fmt: skip
    """Raise ``Problem`` unless some implementation can update ``p`` with gradient ``g``
    and ``state`` (local tensors). Returns the ``Facts`` fields as a tuple, and whether the
    state has a step and every buffer of ``names``. (The hot loop of a step with many
    tensors: each attribute is read once.)"""
    dtype, shape, cpu = p.dtype, p.shape, p.is_cpu
    holds = _HOLDS.get(dtype)
    if holds is None:
        raise Problem(f"dtype {dtype}; RMSprop updates floating-point or complex parameters")
    grad_dtype = g.dtype
    if (g.shape != shape or not (g.is_cpu if cpu else g.device == p.device)
            or (grad_dtype is not dtype and grad_dtype not in holds)):  # fmt: skip
        raise _gradient_problem(p, g)
    if g.is_sparse and g.sparse_dim() > 1 and not p.is_contiguous():
        raise Problem(
            "lazy sparse rows of a non-contiguous parameter need a gradient with one sparse "
            "dimension; use sparse_mode='dense'"
        )
    in_form, dense, complete, step_dtype = True, True, bool(state), None
    if state:
        step_dtype = _check_step(state.get("step"), cpu)
        complete = step_dtype is not None
        int8 = storage is Storage.INT8
        for name in names:  # the buffers in use
            buffer = state.get(name)
            if buffer is not None:
                kept = buffer.dtype if isinstance(buffer, Tensor) else None
                if not (kept in holds and buffer.shape == shape
                        and (buffer.is_cpu if cpu else buffer.device == p.device)):  # fmt: skip
                    raise _buffer_problem(name, buffer, p)
                in_form = in_form and kept is stored and not int8
                dense = dense and buffer.is_contiguous()
            elif (codes := state.get(f"{name}_codes")) is not None:
                scale = _check_codes(name, codes, state.get(f"{name}_scale"), p)
                in_form = in_form and int8
                dense = dense and codes.is_contiguous() and scale.is_contiguous()
            else:
                complete = False
        if not complete:  # the state is completed from what is there (lowbit.state.conform)
            _check_unused(state, names, p, holds)
    kind = (_CPU if cpu else p.device, dtype, storage, stored, in_form, p.is_contiguous(), dense,
            g.is_sparse, None if grad_dtype is dtype else grad_dtype, step_dtype or new_step_dtype())  # fmt: skip
    return kind, complete


def _gradient_problem(p: Tensor, g: Tensor) -> Problem:
    return Problem(
        f"the gradient is {_describe(g)}, the parameter {_describe(p)}; a gradient must have "
        "its parameter's shape and device, and a floating-point dtype (complex for a complex "
        "parameter)"
    )


def _check_unused(state: dict[str, Any], names: list[str], p: Tensor, holds: frozenset) -> None:
    """The buffers not in use that completing the state may read (``square_avg`` for
    ``grad_var`` and back, ``grad_avg``) are valid tensors of the parameter's shape."""
    for name in ALL_BUFFERS:
        buffer = state.get(name)
        if name in names or (buffer is None and f"{name}_codes" not in state):
            continue
        if buffer is None:
            _check_codes(name, state[f"{name}_codes"], state.get(f"{name}_scale"), p)
        elif not (isinstance(buffer, Tensor) and buffer.dtype in holds
                  and buffer.shape == p.shape and buffer.device == p.device):  # fmt: skip
            raise _buffer_problem(name, buffer, p)


def _describe(t: Tensor) -> str:
    return f"{tuple(t.shape)} {str(t.dtype).removeprefix('torch.')} on {t.device}"


def _check_step(step: Any, cpu: bool) -> torch.dtype | None:
    """A step counter is a one-element float32/float64 tensor, on the CPU for a CPU
    parameter (the fused CPU kernel adds 1 to it in place, through its address). Returns
    its dtype, None when there is none."""
    if step is None:
        return None
    if not (isinstance(step, Tensor) and step.dtype in STEP_DTYPES and step.numel() == 1
            and (step.is_cpu or not cpu)):  # fmt: skip
        found = (
            f"{tuple(step.shape)} {step.dtype} on {step.device}"
            if isinstance(step, Tensor)
            else type(step).__name__
        )
        raise Problem(
            f"state 'step' is {found}; it must be a one-element float32 or float64 tensor "
            "(torch's convention), on the CPU for a CPU parameter"
        )
    return step.dtype


def _buffer_problem(name: str, buffer: Any, p: Tensor) -> Problem:
    if not isinstance(buffer, Tensor):
        return Problem(f"state {name!r} is a {type(buffer).__name__}, not a tensor")
    if buffer.shape != p.shape or buffer.device != p.device:
        return Problem(
            f"state {name!r} is {_describe(buffer)}, the parameter {_describe(p)}; state keeps "
            "its parameter's shape and device (was the parameter's .data replaced after the "
            "optimizer's first step?)"
        )
    return Problem(
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


# ---------------------------------------------------------------------- the choice
def choose(index: int, settings: Settings, kinds: list[Facts]) -> tuple[str, dict[str, str]]:
    """The back end for a group whose tensors have these ``Facts``, and (``auto``) why
    each one tried before it was passed over."""
    dense = [f for f in kinds if not f.sparse]
    impl, hp = settings.impl, settings.hp
    if impl != "auto":
        reason = refusal(impl, dense, hp)
        if reason is not None:
            raise RuntimeError(f"group {index}: {reason}")
        return impl, {}
    passed, runnable = {}, []
    for name in candidates(settings, dense):
        reason = refusal(name, dense, hp)
        if reason is not None:
            passed[name] = reason
        elif all(load(name).native(f) for f in dense):
            return name, passed
        else:
            runnable.append(name)
    return runnable[0], passed


def candidates(settings: Settings, kinds: list[Facts]) -> list[str]:
    """``auto``'s back ends, fastest first: the fused kernels for their devices, torch's
    foreach path on CUDA (as torch's default), the single-tensor path last (it takes
    everything). ``foreach=True/False`` and ``differentiable`` pin torch's paths."""
    if settings.hp.differentiable or settings.foreach is False:
        return ["single"]
    if settings.foreach:
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
