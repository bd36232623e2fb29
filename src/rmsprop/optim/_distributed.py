"""DTensor (FSDP2) support: each rank updates its local shard; the few global quantities
(gradient norms for clipping, the non-finite flag) take one all-reduce.

RMSprop is elementwise, so a sharded step is the unsharded step on each shard: the
optimizer hands the local shards (``DTensor.to_local()``, which shares storage) to
whichever implementation runs, fused kernels included. Only ``global_clipnorm``,
``clipnorm`` and ``nonfinite`` need every rank's gradients; they reduce over the mesh of
the gradients' DTensors (one-dimensional meshes: FSDP2, tensor parallel).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._dtensor import is_dtensor, local


def _mesh_group(tensors: list[Tensor]):
    for t in tensors:
        if is_dtensor(t):
            mesh = t.device_mesh
            if mesh.ndim != 1:
                raise RuntimeError(
                    "clipping and nonfinite checks support DTensors on a one-dimensional mesh "
                    f"(got a {mesh.ndim}-D mesh)"
                )
            return mesh.get_group(), mesh.size()
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
    for g in grads:
        values = local(g)._values() if g.is_sparse else local(g)
        if _numba_checkable(values):
            fast.append(values)
        else:
            flags.append(~torch.isfinite(values).all())
    if fast:
        from ..kernels.numba_cpu import any_nonfinite as numba_any_nonfinite

        flags.append(torch.tensor(numba_any_nonfinite(fast)))
    bad = torch.stack(flags).any().to(torch.int32)
    group, _ = _mesh_group(grads)
    if group is not None:
        torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX, group=group)
    return bool(bad)


def clip_scale(norm_sq: float, max_norm: float) -> float:
    """``max_norm / max(norm, max_norm)``; NaN for a non-finite norm (as Keras)."""
    norm = math.sqrt(norm_sq)
    return max_norm / max(norm, max_norm) if math.isfinite(norm) else float("nan")


def _numba_checkable(t: Tensor) -> bool:
    """A tensor the numba finiteness check reads directly (CPU, contiguous, fp32/fp64)."""
    from ..kernels import unavailable_reason

    return (
        t.device.type == "cpu"
        and t.dtype in (torch.float32, torch.float64)
        and t.is_contiguous()
        and unavailable_reason("numba") is None
    )
