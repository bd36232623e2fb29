"""Steps (4)-(7) of the algorithm box, written once for every array front end.

The NumPy reference (``rmsprop.reference``), the JAX front end (``rmsprop.optax``) and the
Keras front end (``rmsprop.keras``) compute the same per-element formulas on their own
arrays. Each passes an :class:`ArrayOps`: its namespace's functions (``np.sqrt``,
``jax.lax.rsqrt``, ``keras.ops.square`` ...) and the way its framework writes the
formulas. The writing is data because it decides the last bits: ``(1 − ρ)·g² + ρ·v`` and
``ρ·v + (1 − ρ)·g²`` are the same sum, but a compiler that fuses a multiply and an add
(XLA, nvcc) rounds them differently, so each front end keeps the text of the framework it
reproduces. The torch paths (``backends/single.py``, ``foreach.py``) write torch's
in-place operations, and the fused kernels (numba, Triton) their own loops; tests hold
every one of them to these formulas (``tests/reference``, ``tests/frontends``,
``tests/optim/test_torch_parity.py``).

Step numbers are :data:`rmsprop.algorithm.ALGORITHM`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

Array = Any  # an array of the front end's namespace


@dataclass(frozen=True)
class ArrayOps:
    """One front end's functions and op order for the formulas below.

    ``square``: ``g²`` (``g * g``; ``g ** 2`` in optax's text); ``abs_sq``: ``|ḡ|²`` for the
    variance (``(conj(ḡ)·ḡ).real`` where leaves may be complex); ``clamp_at_zero``:
    ``max(s, 0)``; ``value_first``: the ``"multiply"`` average written ``(1 − ρ)·x + ρ·v``
    (optax's text) rather than ``ρ·v + (1 − ρ)·x`` (Keras's, NumPy's);
    ``lerp_in_dtype``: torch's ``lerp_`` weight and its complement are numbers of the
    tensor's dtype (torch's kernel) rather than Python floats (the reference).
    """

    sqrt: Callable[[Array], Array]
    rsqrt: Callable[[Array], Array]
    square: Callable[[Array], Array]
    abs_sq: Callable[[Array], Array]
    clamp_at_zero: Callable[[Array], Array]
    value_first: bool = False
    lerp_in_dtype: bool = True


def lerp(start: Array, end: Array, weight: float, dtype: Any | None) -> Array:
    """``torch.lerp(start, end, weight)`` as torch's kernel writes it: ``start + w·(end −
    start)`` for ``w < 0.5``, else ``end − (end − start)·(1 − w)``. ``dtype`` (the tensor's):
    ``w`` and ``1 − w`` are numbers of that dtype, the complement computed in it; ``None``:
    Python floats."""
    if dtype is None:
        w, rest = weight, 1 - weight
    else:  # a complex tensor's weight is a real number of its parts' dtype
        real = np.empty(0, dtype=np.dtype(dtype)).real.dtype
        rounded = np.asarray(weight, dtype=real)
        w, rest = rounded.item(), (np.asarray(1, dtype=real) - rounded).item()
    if w < 0.5:
        return start + w * (end - start)
    return end - (end - start) * rest


def ema(average: Array, value: Array, decay: float, form: str, ops: ArrayOps) -> Array:
    """The moving average ``ρ·average + (1 − ρ)·value`` as ``form`` writes it: ``"delta"``
    ``average + (1 − ρ)·(value − average)`` (TF1, timm), otherwise a weighted sum in the
    front end's order (``ops.value_first``)."""
    if form == "delta":
        return average + (1 - decay) * (value - average)
    if ops.value_first:
        return (1 - decay) * value + decay * average
    return decay * average + (1 - decay) * value


def ema_of_square(average: Array, grad: Array, decay: float, form: str, ops: ArrayOps) -> Array:
    """(4) ``v ← ρ v + (1 − ρ) g²``. torch's ``mul_`` then ``addcmul_`` group the product
    as ``((1 − ρ)·g)·g``; the others square first."""
    if form == "torch":
        return decay * average + ((1 - decay) * grad) * grad
    return ema(average, ops.square(grad), decay, form, ops)


def ema_of_mean(average: Array, grad: Array, decay: float, form: str, ops: ArrayOps,
                dtype: Any = None) -> Array:  # fmt: skip
    """(5) the centered mean ``ḡ ← ρ ḡ + (1 − ρ) g``; torch writes it ``ḡ.lerp_(g, 1 − ρ)``
    (``dtype``: the tensor's, used when ``ops.lerp_in_dtype``)."""
    if form == "torch":
        return lerp(average, grad, 1 - decay, dtype if ops.lerp_in_dtype else None)
    return ema(average, grad, decay, form, ops)


def variance(square_avg: Array, grad_avg: Array, clamp: bool, ops: ArrayOps) -> Array:
    """(6) ``s = v − |ḡ|²`` (``max(s, 0)`` with ``clamp``: rounding can take it below 0)."""
    s = square_avg - ops.abs_sq(grad_avg)
    return ops.clamp_at_zero(s) if clamp else s


def denominator(s: Array, eps: float, eps_in_sqrt: bool, ops: ArrayOps,
                reciprocal: bool = False) -> Array:  # fmt: skip
    """(7) ``d = √(s + ε)`` (``eps_in_sqrt``: Keras, TF1, optax, timm) or ``√s + ε``
    (torch); with ``reciprocal`` ``1/d``, as ``rsqrt(s + ε)`` where ε is inside (optax's
    ``division_form="rsqrt"``)."""
    if eps_in_sqrt:
        return ops.rsqrt(s + eps) if reciprocal else ops.sqrt(s + eps)
    d = ops.sqrt(s) + eps
    return 1 / d if reciprocal else d
