"""Trees of arrays: an ndarray, or a list / tuple / dict of trees.

Just enough structure handling for the reference transforms: flatten a tree to its
leaves, rebuild it, and map a function over several trees of the same structure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

Tree = Any  # np.ndarray | list[Tree] | tuple[Tree, ...] | dict[Any, Tree]


class TreeDef(NamedTuple):
    """The shape of a tree without its leaves."""

    kind: str  # "leaf" | "list" | "tuple" | "dict"
    keys: tuple[Any, ...]
    children: tuple[TreeDef, ...]


_LEAF = TreeDef("leaf", (), ())


def flatten(tree: Tree) -> tuple[list[Any], TreeDef]:
    """The leaves of ``tree`` in a fixed order, and its structure."""
    if isinstance(tree, dict):
        keys = tuple(tree)
        parts = [flatten(tree[k]) for k in keys]
        return [leaf for p in parts for leaf in p[0]], TreeDef(
            "dict", keys, tuple(p[1] for p in parts)
        )
    if isinstance(tree, (list, tuple)) and not hasattr(tree, "_fields"):
        parts = [flatten(t) for t in tree]
        kind = "list" if isinstance(tree, list) else "tuple"
        return [leaf for p in parts for leaf in p[0]], TreeDef(kind, (), tuple(p[1] for p in parts))
    return [tree], _LEAF


def unflatten(treedef: TreeDef, leaves: list[Any]) -> Tree:
    """Rebuild a tree of structure ``treedef`` from ``leaves`` (the inverse of :func:`flatten`)."""
    it = iter(leaves)
    out = _build(treedef, it)
    if next(it, _END) is not _END:
        raise ValueError("more leaves than the tree structure has places for")
    return out


_END = object()


def _build(treedef: TreeDef, it: Any) -> Tree:
    if treedef.kind == "leaf":
        return next(it)
    children = [_build(c, it) for c in treedef.children]
    if treedef.kind == "dict":
        return dict(zip(treedef.keys, children, strict=True))
    return children if treedef.kind == "list" else tuple(children)


def leaves_like(tree: Tree, reference: TreeDef, what: str) -> list[Any]:
    """The leaves of ``tree``, after checking it has the structure ``reference``."""
    leaves, treedef = flatten(tree)
    if treedef != reference:
        raise ValueError(
            f"{what} do not have the structure of the params they update "
            f"({len(leaves)} leaves vs the expected structure {_describe(reference)})"
        )
    return leaves


def _describe(treedef: TreeDef) -> str:
    if treedef.kind == "leaf":
        return "array"
    inner = ", ".join(_describe(c) for c in treedef.children)
    if treedef.kind == "dict":
        inner = ", ".join(f"{k!r}: {_describe(c)}" for k, c in zip(treedef.keys, treedef.children))
        return "{" + inner + "}"
    return f"[{inner}]" if treedef.kind == "list" else f"({inner})"


def same_shapes(leaves: list[Any], other: list[Any], what: str) -> None:
    """Each leaf of ``other`` has the shape of the matching leaf of ``leaves`` (NumPy would
    broadcast a (2, 3) gradient onto a (3,) parameter and its state without a word)."""
    for index, (leaf, twin) in enumerate(zip(leaves, other)):
        if np.shape(leaf) != np.shape(twin):
            raise ValueError(
                f"{what}: leaf {index} has shape {np.shape(leaf)} where its parameter's is "
                f"{np.shape(twin)}; a gradient, an update and every state array have their "
                "parameter's shape"
            )


def _all_arrays(tree: Tree, others: tuple[Tree, ...]) -> bool:
    """Is every tree one ndarray (one leaf: the usual small problem), so that mapping over
    them is one call, with no flattening and rebuilding?"""
    return type(tree) is np.ndarray and all(type(o) is np.ndarray for o in others)


def tree_map(fn: Callable[..., Any], tree: Tree, *others: Tree) -> Tree:
    """``fn`` applied leaf by leaf over ``tree`` and ``others`` (same structure and shapes)."""
    if _all_arrays(tree, others):
        for other in others:
            same_shapes([tree], [other], "trees")
        return fn(tree, *others)
    leaves, treedef = flatten(tree)
    rest = [leaves_like(o, treedef, "trees") for o in others]
    for other in rest:
        same_shapes(leaves, other, "trees")
    return unflatten(treedef, [fn(*args) for args in zip(leaves, *rest)])


def tree_map_n(
    fn: Callable[..., tuple[Any, ...]], n: int, tree: Tree, *others: Tree
) -> tuple[Tree, ...]:
    """Like :func:`tree_map` for an ``fn`` returning ``n`` values: returns ``n`` trees."""
    if _all_arrays(tree, others):
        for other in others:
            same_shapes([tree], [other], "grads and state")
        return tuple(fn(tree, *others))
    leaves, treedef = flatten(tree)
    rest = [leaves_like(o, treedef, "trees") for o in others]
    for other in rest:
        same_shapes(leaves, other, "grads and state")
    results = [fn(*args) for args in zip(leaves, *rest)]
    return tuple(unflatten(treedef, [r[i] for r in results]) for i in range(n))


def as_float_arrays(tree: Tree, what: str) -> Tree:
    """Every leaf as a floating-point ndarray; other dtypes raise ``TypeError``."""

    def convert(leaf: Any) -> np.ndarray:
        array = np.asarray(leaf)
        if not np.issubdtype(array.dtype, np.floating):
            raise TypeError(
                f"{what} must be real floating-point arrays (float16/32/64), got dtype {array.dtype}"
            )
        return array

    return tree_map(convert, tree)
