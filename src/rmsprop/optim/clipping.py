"""Step (2), gradient clipping, and the non-finite guard: the two places where a step needs
more than one tensor at a time, and so, under FSDP2 (DTensor gradients), every rank's.

RMSprop is elementwise, so a sharded step is the unsharded step on each shard; only
``global_clipnorm``, ``clipnorm`` and ``nonfinite`` need every rank's gradients. They
reduce over the mesh of the gradients' DTensors with one all-reduce (one-dimensional
meshes: FSDP2, tensor parallel; ``check_mesh`` refuses others before anything is done).
Norms are summed in float64. ``p.grad`` itself is never modified: clipping makes copies.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .._dtensor import is_dtensor, local
from ..backends import nonfinite_check


def needs_reduction(group: dict[str, Any], nonfinite: str) -> bool:
    """Does this group's step read every rank's gradients?"""
    return (
        nonfinite != "update"
        or group["clipnorm"] is not None
        or group["global_clipnorm"] is not None
    )


def check_mesh(grads: list[Tensor]) -> None:
    """Refuse DTensor gradients on a mesh with more than one dimension (HSDP)."""
    for g in grads:
        if is_dtensor(g) and g.device_mesh.ndim != 1:
            raise RuntimeError(
                "clipping and nonfinite checks support DTensors on a one-dimensional mesh "
                f"(got a {g.device_mesh.ndim}-D mesh)"
            )


def _mesh_group(tensors: list[Tensor]):
    for t in tensors:
        if is_dtensor(t):
            return t.device_mesh.get_group(), t.device_mesh.size()
    return None, 1


def _local_sumsq(g: Tensor, world: int) -> Tensor:
    """This rank's share of ``sum(g²)``, in float64: a shard counts fully, a replicated
    tensor (the same on every rank) by 1/world so that the all-reduce counts it once."""
    values = g.coalesce().values() if g.is_sparse else local(g)
    total = torch.sum(
        torch.view_as_real(values).double() ** 2 if values.is_complex() else values.double() ** 2
    )
    if is_dtensor(g):
        from torch.distributed.tensor import Replicate

        if all(isinstance(pl, Replicate) for pl in g.placements):
            return total / world
    return total


def squared_norms(grads: list[Tensor]) -> list[float]:
    """``sum(g²)`` of each gradient over all ranks (one all-reduce when they are DTensors)."""
    if not grads:
        return []
    group, world = _mesh_group(grads)
    sums = torch.stack([_local_sumsq(g, world) for g in grads])
    if group is not None:
        torch.distributed.all_reduce(sums, group=group)
    return [float(s) for s in sums]


def any_nonfinite(grads: list[Tensor]) -> bool:
    """True if any rank's gradients contain NaN or Inf (one all-reduce with DTensors)."""
    if not grads:
        return False
    fast, flags = [], []
    checkable, check = nonfinite_check() or (lambda t: False, None)
    for g in grads:
        values = local(g)._values() if g.is_sparse else local(g)
        if checkable(values):
            fast.append(values)
        else:
            flags.append(~torch.isfinite(values).all())
    if fast:
        flags.append(torch.tensor(check(fast)))
    bad = torch.stack(flags).any().to(torch.int32)
    group, _ = _mesh_group(grads)
    if group is not None:
        torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX, group=group)
    return bool(bad)


def clip_scale(norm_sq: float, max_norm: float) -> float:
    """``max_norm / max(norm, max_norm)``; NaN for a non-finite norm (as Keras)."""
    norm = math.sqrt(norm_sq)
    return max_norm / max(norm, max_norm) if math.isfinite(norm) else float("nan")


def clip_gradients(grads: list[Tensor], group: dict[str, Any]) -> list[Tensor]:
    """(2) Keras's clipping of one group's gradients, on copies."""
    if group["clipvalue"] is not None:
        c = group["clipvalue"]
        return [_map_values(g, lambda v, c=c: _clamp(v, c)) for g in grads]
    if group["clipnorm"] is not None:
        c = group["clipnorm"]
        scales = [clip_scale(sq, c) for sq in squared_norms(grads)]
        return [_map_values(g, lambda v, s=s: v * s) for g, s in zip(grads, scales)]
    if group["global_clipnorm"] is not None and grads:
        scale = clip_scale(sum(squared_norms(grads)), group["global_clipnorm"])
        return [_map_values(g, lambda v: v * scale) for g in grads]
    return grads


def _map_values(g: Tensor, fn) -> Tensor:
    if not g.is_sparse:
        return fn(g)
    g = g.coalesce()
    return torch.sparse_coo_tensor(g.indices(), fn(g.values()), g.shape).coalesce()


def _clamp(v: Tensor, c: float) -> Tensor:
    if torch.is_complex(v):
        return torch.view_as_complex(torch.view_as_real(v).clamp(-c, c).contiguous())
    return v.clamp(-c, c)
