"""RMSprop for JAX: optax ``GradientTransformation``s with every switch and preset.

``rmsprop.optax.rmsprop(learning_rate, alpha, eps, *, switches)`` and
``rmsprop.optax.from_preset(name, learning_rate=None, **overrides)`` run the algorithm
box (:data:`rmsprop.algorithm.ALGORITHM`) under ``jax.jit`` and ``jax.vmap``, on pytrees
of any structure and float32 / float64 / bfloat16 leaves, and chain with optax's own
transforms. The blocks they are built from are in :mod:`rmsprop.optax.transforms`.

Needs JAX and optax: ``pip install jax optax`` (in rmsprop's clone: ``pip install -e ".[jax]"``).
"""

from __future__ import annotations

try:
    import jax  # noqa: F401
    import optax  # noqa: F401
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "rmsprop.optax needs JAX and optax: pip install jax optax (in rmsprop's clone: pip install -e '.[jax]')"
    ) from err

from .aliases import from_preset, rmsprop
from .transforms import (
    add_decayed_weights,
    add_decoupled_weight_decay,
    clip_by_global_norm,
    clip_by_norm,
    guard_nonfinite,
    scale_by_rms,
    scale_by_stddev,
    trace,
)

__all__ = [
    "add_decayed_weights",
    "add_decoupled_weight_decay",
    "clip_by_global_norm",
    "clip_by_norm",
    "from_preset",
    "guard_nonfinite",
    "rmsprop",
    "scale_by_rms",
    "scale_by_stddev",
    "trace",
]
