"""Building blocks of the RMSprop family in JAX, as optax ``GradientTransformation``s.

Each block is the JAX twin of the NumPy reference's block of the same name
(:mod:`rmsprop.reference.transforms`), and each per-element formula is a small pure
function numbered with the step of the algorithm box (:data:`rmsprop.algorithm.ALGORITHM`).
Blocks before the learning rate pass a *descent direction* down the chain (positive means
"decrease θ"); the learning-rate block multiplies by ``−η_t`` as optax's does, so the
blocks after it (momentum, decoupled decay) see the update ``optax.apply_updates`` adds.
With the lr inside the momentum buffer, the buffer therefore holds updates (optax's
sign, the negative of Keras's ``momentum`` variable). The blocks chain with optax's own
(schedules, ``optax.chain``, ``optax.MultiSteps``, ``optax.masked``,
``optax.apply_if_finite``).

Dtypes: the state is stored in each parameter's dtype; bfloat16 and float16 leaves are
computed in float32 (the state is rounded back to the leaf's dtype, the update stays
float32 until ``optax.apply_updates`` rounds the parameter once).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from .. import formula

Schedule = Callable[[jax.Array], jax.Array]

# ----------------------------------------------------------------------------------------
# Per-element math: steps (4)-(7) are ``rmsprop.formula``'s, with JAX's functions and
# optax's text (``JAX_OPS``); the dtype handling is this front end's.
# ----------------------------------------------------------------------------------------


def compute_dtype(x: jax.Array) -> Any:
    """float32 for half-precision leaves, the leaf's own dtype otherwise."""
    return jnp.float32 if x.dtype in (jnp.bfloat16, jnp.float16) else x.dtype


def widen(x: jax.Array) -> jax.Array:
    """``x`` in the dtype the math runs in (see :func:`compute_dtype`)."""
    return x.astype(compute_dtype(x))


def abs_sq(x: jax.Array) -> jax.Array:
    """``|x|² = (conj(x)·x).real``, optax's ``abs_sq`` (``x²`` for real ``x``)."""
    return (x.conj() * x).real


#: ``rmsprop.formula``'s functions in JAX, in optax's text (``(1 − ρ)·g² + ρ·v``, ``g ** 2``,
#: ``abs_sq``: XLA fuses what optax writes, so the same text gives optax's bits); a complex
#: ``g`` squares as optax does, ``|g|²``
JAX_OPS = formula.ArrayOps(
    sqrt=jnp.sqrt,
    rsqrt=jax.lax.rsqrt,
    square=lambda g: abs_sq(g) if jnp.iscomplexobj(g) else g**2,
    abs_sq=abs_sq,
    clamp_at_zero=lambda s: jnp.maximum(s, 0),
    value_first=True,
)


def ema_of_square(average: jax.Array, grad: jax.Array, decay: float, form: str) -> jax.Array:
    """(4) ``v ← α v + (1 − α) g²`` (``formula.ema_of_square``); a complex ``g`` squares as
    optax does, ``|g|²``, so torch's ``((1 − α) g) g`` grouping becomes optax's text."""
    if form == "torch" and jnp.iscomplexobj(grad):
        form = "multiply"
    return formula.ema_of_square(average, grad, decay, form, JAX_OPS)


def ema_of_mean(average: jax.Array, grad: jax.Array, decay: float, form: str) -> jax.Array:
    """(5) the centered mean ``ḡ ← α ḡ + (1 − α) g`` (``formula.ema_of_mean``)."""
    return formula.ema_of_mean(average, grad, decay, form, JAX_OPS, average.dtype)


def bias_corrected(moment: jax.Array, decay: float, count: jax.Array) -> jax.Array:
    """(6) ``moment / (1 − αᵗ)``, by optax's own function (``1 − αᵗ`` in the default
    float dtype, the division in the moment's), so that XLA compiles it as in optax."""
    return optax.tree.bias_correction(moment, decay, count)


def scaled_direction(
    grad: jax.Array, mean_square: jax.Array, eps: float, eps_in_sqrt: bool, division_form: str
) -> jax.Array:
    """(7)-(8) ``u = g / d`` (``formula.denominator``); ``division_form="rsqrt"`` writes it
    as optax does, ``rsqrt(s + eps) * g``."""
    if division_form == "rsqrt":
        return formula.denominator(mean_square, eps, eps_in_sqrt, JAX_OPS, reciprocal=True) * grad
    return grad / formula.denominator(mean_square, eps, eps_in_sqrt, JAX_OPS)


def variance(square_avg: jax.Array, grad_avg: jax.Array, clamp: bool) -> jax.Array:
    """(6) ``s = v − |ḡ|²`` (``formula.variance``, in optax's ``abs_sq``)."""
    return formula.variance(square_avg, grad_avg, clamp, JAX_OPS)


def narrow(tree: Any, like: Any) -> Any:
    """Each leaf of ``tree`` in the dtype of the matching leaf of ``like`` (the state's)."""
    return jax.tree.map(lambda x, ref: x.astype(ref.dtype), tree, like)


def _split(like: Any, pairs: Any, n: int) -> tuple[Any, ...]:
    """Turn a tree of n-tuples (shaped like ``like``) into n trees."""
    treedef = jax.tree.structure(like)
    leaves = treedef.flatten_up_to(pairs)
    return tuple(treedef.unflatten([leaf[i] for leaf in leaves]) for i in range(n))


# ----------------------------------------------------------------------------------------
# States: torch's state names.
# ----------------------------------------------------------------------------------------


class ScaleByRmsState(NamedTuple):
    """State of :func:`scale_by_rms`: the step count ``t`` and ``v`` (``square_avg``)."""

    count: jax.Array
    square_avg: optax.Updates


class ScaleByStddevState(NamedTuple):
    """State of :func:`scale_by_stddev`: ``t``, ``v`` and the centered mean ``ḡ``."""

    count: jax.Array
    square_avg: optax.Updates
    grad_avg: optax.Updates


class TraceState(NamedTuple):
    """State of :func:`trace`: the momentum buffer ``b``."""

    momentum_buffer: optax.Updates


class GuardState(NamedTuple):
    """State of :func:`guard_nonfinite`: the inner state and the steps skipped so far."""

    inner: Any
    skipped: jax.Array


class CountState(NamedTuple):
    """Steps taken so far (the next update uses ``learning_rate(count)``)."""

    count: jax.Array


# ----------------------------------------------------------------------------------------
# Blocks.
# ----------------------------------------------------------------------------------------


def _full_like(params: Any, value: float) -> Any:
    return jax.tree.map(lambda p: jnp.full_like(p, value), params)


def scale_by_rms(
    alpha: float = 0.99,
    eps: float = 1e-8,
    *,
    eps_in_sqrt: bool = False,
    initial_accumulator_value: float = 0.0,
    bias_correction: bool = False,
    ema_form: str = "torch",
    division_form: str = "divide",
) -> optax.GradientTransformation:
    """(4), (6)-(8): ``g / d``, ``d = sqrt(v̂) + eps`` or ``sqrt(v̂ + eps)``.

    ``v`` starts at ``initial_accumulator_value`` (0 in torch, Keras, optax; 1 in TF1).
    ``v̂ = v / (1 − αᵗ)`` with ``bias_correction``, else ``v``.
    """

    def init_fn(params: optax.Params) -> ScaleByRmsState:
        return ScaleByRmsState(
            jnp.zeros([], jnp.int32), _full_like(params, initial_accumulator_value)
        )

    def update_fn(updates, state, params=None):
        del params
        count = optax.safe_increment(state.count)  # (1)
        grads = jax.tree.map(widen, updates)
        square_avg = jax.tree.map(lambda g, v: ema_of_square(widen(v), g, alpha, ema_form),
                                  grads, state.square_avg)  # (4)  # fmt: skip
        v_hat = bias_corrected(square_avg, alpha, count) if bias_correction else square_avg  # (6)
        out = jax.tree.map(lambda g, s: scaled_direction(g, s, eps, eps_in_sqrt, division_form),
                           grads, v_hat)  # (7), (8)  # fmt: skip
        return out, ScaleByRmsState(count, narrow(square_avg, state.square_avg))

    return optax.GradientTransformation(init_fn, update_fn)


def scale_by_stddev(
    alpha: float = 0.99,
    eps: float = 1e-8,
    *,
    eps_in_sqrt: bool = False,
    initial_accumulator_value: float = 0.0,
    bias_correction: bool = False,
    ema_form: str = "torch",
    division_form: str = "divide",
    centered_clamp: bool = False,
) -> optax.GradientTransformation:
    """(4)-(8), centered (Graves 2013): ``g / d`` with ``d`` from ``s = v̂ − ḡ̂²``.

    ``s`` can round below zero; ``centered_clamp=True`` uses ``max(s, 0)``.
    """

    def init_fn(params: optax.Params) -> ScaleByStddevState:
        square_avg = _full_like(params, initial_accumulator_value)
        return ScaleByStddevState(jnp.zeros([], jnp.int32), square_avg, _full_like(params, 0.0))

    def update_fn(updates, state, params=None):
        del params
        count = optax.safe_increment(state.count)  # (1)
        grads = jax.tree.map(widen, updates)
        grad_avg = jax.tree.map(lambda g, m: ema_of_mean(widen(m), g, alpha, ema_form),
                                grads, state.grad_avg)  # (5)  # fmt: skip
        square_avg = jax.tree.map(lambda g, v: ema_of_square(widen(v), g, alpha, ema_form),
                                  grads, state.square_avg)  # (4)  # fmt: skip
        m_hat, v_hat = grad_avg, square_avg
        if bias_correction:  # (6)
            m_hat, v_hat = bias_corrected(m_hat, alpha, count), bias_corrected(v_hat, alpha, count)
        out = jax.tree.map(
            lambda g, v, m: scaled_direction(g, variance(v, m, centered_clamp), eps, eps_in_sqrt,
                                             division_form),
            grads, v_hat, m_hat)  # (7), (8)  # fmt: skip
        new_state = ScaleByStddevState(count, narrow(square_avg, state.square_avg),
                                       narrow(grad_avg, state.grad_avg))  # fmt: skip
        return out, new_state

    return optax.GradientTransformation(init_fn, update_fn)


def trace(momentum: float, *, nesterov: bool = False) -> optax.GradientTransformation:
    """(9) heavy-ball momentum ``b ← μ b + x``; outputs ``b`` (``x + μ b`` with
    ``nesterov``). After the lr block it puts the lr inside the buffer (TF1, Keras,
    optax); before it, outside (torch). Unlike ``optax.trace`` the buffer keeps the
    parameter's dtype while the math runs in float32 for half-precision leaves."""

    def init_fn(params: optax.Params) -> TraceState:
        return TraceState(_full_like(params, 0.0))

    def update_fn(updates, state, params=None):
        del params

        def one(x, b):
            x, b_new = widen(x), x + momentum * widen(b)
            return (x + momentum * b_new if nesterov else b_new), b_new.astype(b.dtype)

        out, buffers = _split(updates, jax.tree.map(one, updates, state.momentum_buffer), 2)
        return out, TraceState(buffers)

    return optax.GradientTransformation(init_fn, update_fn)


def add_decayed_weights(weight_decay: float) -> optax.GradientTransformation:
    """(3) coupled L2: ``g + λ θ`` (torch ``weight_decay``)."""

    def init_fn(params: optax.Params) -> optax.EmptyState:
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("weight decay needs params: call update(grads, state, params)")
        return jax.tree.map(lambda g, p: widen(g) + weight_decay * widen(p), updates, params), state

    return optax.GradientTransformation(init_fn, update_fn)


def add_decoupled_weight_decay(
    weight_decay: float, learning_rate: float | Schedule
) -> optax.GradientTransformation:
    """(3) decoupled: adds ``−η_t λ θ`` to the update (it comes after the lr block), so
    ``θ ← θ − η_t λ θ`` outside any momentum (Keras 3 ``weight_decay``)."""

    def init_fn(params: optax.Params) -> CountState:
        del params
        return CountState(jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("weight decay needs params: call update(grads, state, params)")
        rate = learning_rate(state.count) if callable(learning_rate) else learning_rate
        factor = rate * weight_decay
        out = jax.tree.map(lambda x, p: widen(x) - factor * widen(p), updates, params)
        return out, CountState(optax.safe_increment(state.count))

    return optax.GradientTransformation(init_fn, update_fn)


def _norm(leaves: list[jax.Array]) -> jax.Array:
    """``‖G‖`` over ``leaves`` (``|g|²`` for complex leaves)."""
    return jnp.sqrt(sum(jnp.sum(abs_sq(widen(g))) for g in leaves))


def clip_scale(norm: jax.Array, max_norm: float) -> jax.Array:
    """(2) ``max_norm / max(‖g‖, max_norm)``; NaN for a non-finite norm (as Keras)."""
    return jnp.where(jnp.isfinite(norm), max_norm / jnp.maximum(norm, max_norm), jnp.nan)


def clip_by_norm(max_norm: float) -> optax.GradientTransformation:
    """(2) ``g · c / max(‖g‖, c)`` for each leaf (Keras ``clipnorm``)."""

    def update_fn(updates, state, params=None):
        del params
        return jax.tree.map(lambda g: widen(g) * clip_scale(_norm([g]), max_norm), updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
    """(2) ``g · c / max(‖G‖, c)``, ``G`` every leaf together (Keras ``global_clipnorm``)."""

    def update_fn(updates, state, params=None):
        del params
        scale = clip_scale(_norm(jax.tree.leaves(updates)), max_norm)
        return jax.tree.map(lambda g: widen(g) * scale, updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def guard_nonfinite(inner: optax.GradientTransformation) -> optax.GradientTransformation:
    """Wrap ``inner`` so that a step whose gradients hold a NaN or Inf returns zero updates,
    keeps the inner state as it was and counts the step in ``skipped`` (``nonfinite="skip"``).
    Unlike ``optax.apply_if_finite`` it never gives up after many bad steps."""

    def init_fn(params: optax.Params) -> GuardState:
        return GuardState(inner.init(params), jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None):
        flags = [jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(updates)]
        finite = jnp.all(jnp.stack(flags)) if flags else jnp.asarray(True)
        new_updates, new_inner = inner.update(updates, state.inner, params)
        out = jax.tree.map(lambda u: jnp.where(finite, u, jnp.zeros_like(u)), new_updates)
        kept = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new_inner, state.inner)
        return out, GuardState(kept, state.skipped + jnp.where(finite, 0, 1).astype(jnp.int32))

    return optax.GradientTransformation(init_fn, update_fn)
