"""The NumPy reference: RMSprop and its relatives as pure ``init`` / ``update`` transforms.

This is the oracle every faster implementation is tested against, and a usable NumPy
optimizer in its own right. It imports only NumPy.

Examples:
  >>> import numpy as np
  >>> from rmsprop import reference as ref
  >>> tx = ref.rmsprop(lr=ref.schedules.step_decay(0.05, 0.95, 100))
  >>> params = {"w": np.zeros(3)}
  >>> state = tx.init(params)
  >>> grads = {"w": np.array([1.0, -2.0, 0.5])}
  >>> updates, state = tx.update(grads, state, params)
  >>> params = ref.apply_updates(params, updates)
"""

from . import schedules
from .aliases import adagrad, from_preset, momentum, nag, rmsprop, sgd
from .base import EmptyState, Transform, apply_updates, chain
from .transforms import (
    GuardState,
    RmsState,
    RssState,
    ScheduleState,
    StddevState,
    TraceState,
    add_decayed_weights,
    add_decoupled_weight_decay,
    clip,
    clip_by_global_norm,
    clip_by_norm,
    global_norm,
    guard_nonfinite,
    negate,
    scale_by_learning_rate,
    scale_by_rms,
    scale_by_rss,
    scale_by_stddev,
    trace,
)

__all__ = [
    "EmptyState",
    "GuardState",
    "RmsState",
    "RssState",
    "ScheduleState",
    "StddevState",
    "TraceState",
    "Transform",
    "adagrad",
    "add_decayed_weights",
    "add_decoupled_weight_decay",
    "apply_updates",
    "chain",
    "clip",
    "clip_by_global_norm",
    "clip_by_norm",
    "from_preset",
    "global_norm",
    "guard_nonfinite",
    "momentum",
    "nag",
    "negate",
    "rmsprop",
    "scale_by_learning_rate",
    "scale_by_rms",
    "scale_by_rss",
    "scale_by_stddev",
    "schedules",
    "sgd",
    "trace",
]
