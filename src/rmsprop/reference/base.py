"""The transform protocol (optax-style ``init`` / ``update`` pairs), ``chain`` and
``apply_updates``.

A :class:`Transform` is a pair of pure functions. ``init(params)`` returns a state;
``update(grads, state, params)`` returns ``(updates, new_state)`` and never changes its
inputs. States are NamedTuples (immutable records); the arrays inside them are fresh
arrays on every step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from .tree import Tree, as_float_arrays, flatten, leaves_like, same_shapes, unflatten

InitFn = Callable[[Tree], Any]
UpdateFn = Callable[[Tree, Any, "Tree | None"], tuple[Tree, Any]]


class Transform(NamedTuple):
    """A pair of pure functions: ``init(params) -> state`` and
    ``update(grads, state, params) -> (updates, state)``."""

    init: InitFn
    update: UpdateFn


class EmptyState(NamedTuple):
    """The state of a stateless transform."""


def chain(*transforms: Transform) -> Transform:
    """Apply ``transforms`` in order; the state is the tuple of their states.

    The order is the semantics: ``chain(scale_by_rms(), trace(), scale_by_learning_rate())``
    keeps the lr outside the momentum buffer (torch), ``chain(scale_by_rms(),
    scale_by_learning_rate(), trace())`` puts it inside (TF1, Keras, optax).
    """

    def init(params: Tree) -> tuple[Any, ...]:
        return tuple(t.init(params) for t in transforms)

    def update(grads: Tree, state: tuple[Any, ...], params: Tree | None = None) -> tuple[Tree, Any]:
        new_state = []
        for transform, inner in zip(transforms, state, strict=True):
            grads, inner = transform.update(grads, inner, params)
            new_state.append(inner)
        return grads, tuple(new_state)

    return Transform(init, update)


def apply_updates(params: Tree, updates: Tree) -> Tree:
    """``params + updates``, leaf by leaf, keeping each param's dtype."""
    leaves, treedef = flatten(params)
    deltas = leaves_like(updates, treedef, "updates")
    same_shapes(deltas, leaves, "updates")
    return unflatten(
        treedef,
        [np.asarray(p + u, dtype=np.asarray(p).dtype) for p, u in zip(leaves, deltas)],
    )


def check_inputs(grads: Tree, params: Tree | None) -> Tree:
    """Grads as float arrays (params checked for matching structure when given)."""
    grads = as_float_arrays(grads, "grads")
    if params is not None:
        leaves, treedef = flatten(grads)
        same_shapes(leaves, leaves_like(params, treedef, "params"), "grads")
    return grads
