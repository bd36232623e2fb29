"""Building blocks of the RMSprop family, NumPy only.

Each block is a small :class:`~rmsprop.reference.base.Transform`; each per-element
formula is a small pure function above it, numbered with the step of the algorithm box
(:data:`rmsprop.algorithm.ALGORITHM`). Blocks pass a *descent direction* down the chain
(positive means "decrease θ"); :func:`negate` at the end of an alias turns it into the
update that :func:`~rmsprop.reference.base.apply_updates` adds. Buffers therefore keep
the sign the frameworks use (``momentum_buffer`` as in torch, ``momentum`` as in Keras).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .. import formula
from .base import EmptyState, Transform, check_inputs
from .schedules import Schedule, as_schedule
from .tree import Tree, as_float_arrays, flatten, tree_map, tree_map_n

# ----------------------------------------------------------------------------------------
# Per-element math: steps (4)-(7) are ``rmsprop.formula``'s, written once for every array
# front end; NumPy's functions and op order are these.
# ----------------------------------------------------------------------------------------

NUMPY_OPS = formula.ArrayOps(
    sqrt=np.sqrt,
    rsqrt=lambda x: 1 / np.sqrt(x),
    square=lambda g: g * g,
    abs_sq=lambda m: m * m,
    clamp_at_zero=lambda s: np.maximum(s, 0),
    lerp_in_dtype=False,  # the weight and its complement as Python floats
)


def bias_correction(moment: np.ndarray, decay: float, step: int) -> np.ndarray:
    """(6) ``moment / (1 - decay**step)`` (optax ``bias_correction=True``)."""
    return moment / (1 - decay**step)


# ----------------------------------------------------------------------------------------
# States: immutable records named after their block, with torch's state names.
# ----------------------------------------------------------------------------------------


class RmsState(NamedTuple):
    """State of :func:`scale_by_rms`: the step count and ``v`` (torch ``square_avg``)."""

    step: int
    square_avg: Tree


class StddevState(NamedTuple):
    """State of :func:`scale_by_stddev`: ``v`` and the centered mean ``ḡ`` (``grad_avg``)."""

    step: int
    square_avg: Tree
    grad_avg: Tree


class TraceState(NamedTuple):
    """State of :func:`trace`: the momentum buffer ``b``."""

    momentum_buffer: Tree


class ScheduleState(NamedTuple):
    """Steps taken so far; the next update uses ``lr(step)``."""

    step: int


class GuardState(NamedTuple):
    """State of :func:`guard_nonfinite`: the inner state and how many steps were skipped."""

    inner: Any
    skipped: int


class RssState(NamedTuple):
    """State of :func:`scale_by_rss` (Adagrad): the running sum of squares."""

    sum: Tree


# ----------------------------------------------------------------------------------------
# Blocks.
# ----------------------------------------------------------------------------------------


def negate() -> Transform:
    """Multiply by -1: ``maximize`` at the start of a chain (1), descent -> update at its end (10)."""

    def init(params: Tree) -> EmptyState:
        del params
        return EmptyState()

    def update(grads: Tree, state: EmptyState, params: Tree | None = None) -> tuple[Tree, Any]:
        del params
        return tree_map(np.negative, check_inputs(grads, None)), state

    return Transform(init, update)


def _stateless(fn: Any) -> Transform:
    def init(params: Tree) -> EmptyState:
        del params
        return EmptyState()

    def update(grads: Tree, state: EmptyState, params: Tree | None = None) -> tuple[Tree, Any]:
        return fn(check_inputs(grads, params), params), state

    return Transform(init, update)


def clip(max_delta: float) -> Transform:
    """(2) ``clamp(g, -max_delta, max_delta)`` per element (Keras ``clipvalue``)."""
    return _stateless(lambda grads, _: tree_map(lambda g: np.clip(g, -max_delta, max_delta), grads))


def clip_by_norm(max_norm: float) -> Transform:
    """(2) ``g * max_norm / max(‖g‖, max_norm)`` for each tensor (Keras ``clipnorm``)."""

    def clip_one(g: np.ndarray) -> np.ndarray:
        norm = np.sqrt(np.sum(g * g))
        return g * max_norm / np.maximum(norm, max_norm)

    return _stateless(lambda grads, _: tree_map(clip_one, grads))


def global_norm(tree: Tree) -> float:
    """``sqrt(sum of squares)`` over every leaf, accumulated in float64."""
    leaves, _ = flatten(tree)
    return float(np.sqrt(sum(np.sum(np.square(leaf, dtype=np.float64)) for leaf in leaves)))


def clip_by_global_norm(max_norm: float) -> Transform:
    """(2) ``g * max_norm / max(‖G‖, max_norm)`` with ``G`` all gradients together
    (Keras ``global_clipnorm``). A non-finite norm makes every update NaN, as in Keras."""

    def clip_all(grads: Tree, _: Any) -> Tree:
        norm = global_norm(grads)
        scale = max_norm / max(norm, max_norm) if np.isfinite(norm) else float("nan")
        return tree_map(lambda g: g * scale, grads)

    return _stateless(clip_all)


def add_decayed_weights(weight_decay: float) -> Transform:
    """(3) coupled L2: ``g + weight_decay * θ`` (torch ``weight_decay``)."""

    def add(grads: Tree, params: Tree | None) -> Tree:
        if params is None:
            raise ValueError("add_decayed_weights needs params: call update(grads, state, params)")
        return tree_map(lambda g, p: g + weight_decay * p, grads, as_float_arrays(params, "params"))

    return _stateless(add)


def scale_by_rms(
    alpha: float = 0.99,
    eps: float = 1e-8,
    *,
    eps_in_sqrt: bool = False,
    initial_accumulator_value: float = 0.0,
    bias_correction_: bool = False,
    ema_form: str = "torch",
) -> Transform:
    """(4), (6)-(8): ``g / d`` with ``d = sqrt(v) + eps`` or ``sqrt(v + eps)``.

    ``v`` starts at ``initial_accumulator_value`` (0 in torch, Keras, optax; 1 in TF1, timm).
    """

    def init(params: Tree) -> RmsState:
        params = as_float_arrays(params, "params")
        return RmsState(0, tree_map(lambda p: np.full_like(p, initial_accumulator_value), params))

    def update(grads: Tree, state: RmsState, params: Tree | None = None) -> tuple[Tree, RmsState]:
        del params
        grads = check_inputs(grads, None)
        step = state.step + 1  # (1)

        def one(g: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            v = formula.ema_of_square(v, g, alpha, ema_form, NUMPY_OPS)  # (4)
            s = bias_correction(v, alpha, step) if bias_correction_ else v  # (6)
            return g / formula.denominator(s, eps, eps_in_sqrt, NUMPY_OPS), v  # (7), (8)

        updates, square_avg = tree_map_n(one, 2, grads, state.square_avg)
        return updates, RmsState(step, square_avg)

    return Transform(init, update)


def scale_by_stddev(
    alpha: float = 0.99,
    eps: float = 1e-8,
    *,
    eps_in_sqrt: bool = False,
    initial_accumulator_value: float = 0.0,
    bias_correction_: bool = False,
    ema_form: str = "torch",
    centered_clamp: bool = False,
) -> Transform:
    """(4)-(8), centered (Graves 2013): ``g / d`` with ``d`` from ``s = v - ḡ²``.

    ``s`` can round below zero; ``centered_clamp=True`` uses ``max(s, 0)`` (no framework does
    this; with eps outside the sqrt and no clamp a negative ``s`` gives NaN, as in torch).
    """

    def init(params: Tree) -> StddevState:
        params = as_float_arrays(params, "params")
        square_avg = tree_map(lambda p: np.full_like(p, initial_accumulator_value), params)
        return StddevState(0, square_avg, tree_map(np.zeros_like, params))

    def update(grads: Tree, state: StddevState, params: Tree | None = None) -> tuple[Tree, Any]:
        del params
        grads = check_inputs(grads, None)
        step = state.step + 1  # (1)

        def one(g: np.ndarray, v: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, ...]:
            v = formula.ema_of_square(v, g, alpha, ema_form, NUMPY_OPS)  # (4)
            m = formula.ema_of_mean(m, g, alpha, ema_form, NUMPY_OPS)  # (5)
            if bias_correction_:  # (6)
                v_hat, m_hat = bias_correction(v, alpha, step), bias_correction(m, alpha, step)
            else:
                v_hat, m_hat = v, m
            s = formula.variance(v_hat, m_hat, centered_clamp, NUMPY_OPS)
            return g / formula.denominator(s, eps, eps_in_sqrt, NUMPY_OPS), v, m  # (7), (8)

        updates, square_avg, grad_avg = tree_map_n(one, 3, grads, state.square_avg, state.grad_avg)
        return updates, StddevState(step, square_avg, grad_avg)

    return Transform(init, update)


def trace(momentum: float, *, nesterov: bool = False) -> Transform:
    """(9) heavy-ball momentum ``b = momentum*b + x``; outputs ``b`` (or ``x + momentum*b``
    with ``nesterov``). Placed after :func:`scale_by_learning_rate` it puts the lr inside
    the buffer (TF1, Keras, optax); before it, outside (torch)."""

    def init(params: Tree) -> TraceState:
        return TraceState(tree_map(np.zeros_like, as_float_arrays(params, "params")))

    def update(grads: Tree, state: TraceState, params: Tree | None = None) -> tuple[Tree, Any]:
        del params

        def one(x: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            b = momentum * b + x
            return (x + momentum * b if nesterov else b), b

        out, buffers = tree_map_n(one, 2, check_inputs(grads, None), state.momentum_buffer)
        return out, TraceState(buffers)

    return Transform(init, update)


def scale_by_learning_rate(lr: float | Schedule) -> Transform:
    """(9) multiply by ``lr(step)`` (``step`` = 0 on the first update). The sign is not
    flipped here (unlike optax): the alias ends with :func:`negate`."""
    schedule = as_schedule(lr)

    def init(params: Tree) -> ScheduleState:
        del params
        return ScheduleState(0)

    def update(grads: Tree, state: ScheduleState, params: Tree | None = None) -> tuple[Tree, Any]:
        del params
        rate = float(schedule(state.step))
        return tree_map(lambda x: x * rate, check_inputs(grads, None)), ScheduleState(
            state.step + 1
        )

    return Transform(init, update)


def add_decoupled_weight_decay(weight_decay: float, lr: float | Schedule) -> Transform:
    """(3) decoupled: adds ``lr(step) * weight_decay * θ`` to the descent direction, so
    ``θ ← θ − η λ θ`` outside any momentum (Keras 3 ``weight_decay``)."""
    schedule = as_schedule(lr)

    def init(params: Tree) -> ScheduleState:
        del params
        return ScheduleState(0)

    def update(grads: Tree, state: ScheduleState, params: Tree | None = None) -> tuple[Tree, Any]:
        if params is None:
            raise ValueError(
                "decoupled weight decay needs params: call update(grads, state, params)"
            )
        factor = float(schedule(state.step)) * weight_decay
        grads = check_inputs(grads, params)
        out = tree_map(lambda x, p: x + factor * p, grads, as_float_arrays(params, "params"))
        return out, ScheduleState(state.step + 1)

    return Transform(init, update)


def scale_by_rss(initial_accumulator_value: float = 0.0, eps: float = 1e-10) -> Transform:
    """Adagrad's scaling: ``sum += g²``; ``g / (sqrt(sum) + eps)`` (torch ``Adagrad``)."""

    def init(params: Tree) -> RssState:
        params = as_float_arrays(params, "params")
        return RssState(tree_map(lambda p: np.full_like(p, initial_accumulator_value), params))

    def update(grads: Tree, state: RssState, params: Tree | None = None) -> tuple[Tree, Any]:
        del params

        def one(g: np.ndarray, total: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            total = total + g * g
            return g / (np.sqrt(total) + eps), total

        out, sums = tree_map_n(one, 2, check_inputs(grads, None), state.sum)
        return out, RssState(sums)

    return Transform(init, update)


def guard_nonfinite(inner: Transform, mode: str = "skip") -> Transform:
    """Wrap ``inner`` so that a step whose gradients contain NaN or Inf either changes
    nothing (``"skip"``: zero updates, the inner state kept as it was, ``skipped`` + 1) or
    raises ``FloatingPointError`` before anything is computed (``"raise"``)."""

    def init(params: Tree) -> GuardState:
        return GuardState(inner.init(params), 0)

    def update(grads: Tree, state: GuardState, params: Tree | None = None) -> tuple[Tree, Any]:
        grads = check_inputs(grads, params)
        if all(np.all(np.isfinite(g)) for g in flatten(grads)[0]):
            updates, new_inner = inner.update(grads, state.inner, params)
            return updates, GuardState(new_inner, state.skipped)
        if mode == "raise":
            raise FloatingPointError(
                "a gradient contains NaN or Inf; nothing was updated (nonfinite='raise')"
            )
        return tree_map(np.zeros_like, grads), GuardState(state.inner, state.skipped + 1)

    return Transform(init, update)
