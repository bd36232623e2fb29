"""Step (2), gradient clipping, and the non-finite guard: the two places where a step needs
more than one tensor at a time, and so, under FSDP2 (DTensor gradients), every rank's.

RMSprop is elementwise, so a sharded step is the unsharded step on each shard; only
``global_clipnorm``, ``clipnorm`` and ``nonfinite`` need every rank's gradients. They
reduce with one all-reduce over all ranks, on meshes of one or two dimensions (FSDP2,
tensor parallel, HSDP, FSDP x TP): each shard counts once, a copy (a ``Replicate`` mesh
dimension) on one rank only (``_reduction``; ``check_mesh`` refuses what one all-reduce
cannot sum before anything is done).
Norms are summed in float64. ``p.grad`` itself is never modified: clipping makes copies.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .._dtensor import is_dtensor, local
from ..backends import nonfinite_check
from .settings import Settings


def needs_reduction(settings: Settings, nonfinite: str) -> bool:
    """Does this group's step read every rank's gradients?"""
    return nonfinite != "update" or settings.reads_every_rank


def check_mesh(grads: list[Tensor]) -> None:
    """Refuse, before anything is done, DTensor gradients whose norms one all-reduce cannot
    sum: a ``Partial`` placement (a gradient not yet reduced), or meshes that neither span
    every rank nor are one and the same one-dimensional mesh."""
    _reduction(grads)


def _reduction(tensors: list[Tensor]) -> tuple[Any, list[bool]]:
    """The process group that one all-reduce over these tensors' shards runs on (None when
    none is a DTensor), and for each tensor whether this rank's part counts in a sum over
    that group: every shard counts exactly once, so a copy (a ``Replicate`` mesh dimension,
    a mesh that is one slice of a larger one, a plain tensor: every rank has it) counts
    only on the rank at coordinate 0 of the dimensions along which it is copied.

    One-dimensional meshes (FSDP2, tensor parallel) and two-dimensional ones (HSDP's
    (replicate, shard), FSDP x TP's (dp, tp), and the 1-D slices of it that
    ``fully_shard(mesh=mesh["dp"])`` gives the parameters tensor parallel leaves alone)
    alike: the sum runs over all ranks, and a tensor counts only on the ranks that hold
    distinct parts of it, which is the sum over exactly the mesh dimensions that shard it."""
    meshes = {id(t.device_mesh): t.device_mesh for t in tensors if is_dtensor(t)}
    if not meshes:
        return None, [True] * len(tensors)
    world = torch.distributed.get_world_size()
    roots = {id(m): m._get_root_mesh() for m in meshes.values()}
    if all(r.size() == world for r in roots.values()):
        group, rank = torch.distributed.group.WORLD, torch.distributed.get_rank()
    elif len(meshes) == 1 and next(iter(meshes.values())).ndim == 1:
        mesh = next(iter(meshes.values()))
        group, rank = mesh.get_group(), mesh.get_local_rank()
    else:
        raise RuntimeError(
            "clipping and nonfinite checks need the gradients' DTensors on device meshes that "
            f"span all {world} ranks (or on one and the same one-dimensional mesh); got meshes "
            f"of {sorted({m.size() for m in meshes.values()})} ranks"
        )
    counts = []
    for t in tensors:
        if not is_dtensor(t):
            counts.append(rank == 0)
            continue
        mesh = t.device_mesh
        coordinate = mesh.get_coordinate()
        if coordinate is None:  # this rank holds no part of it
            counts.append(False)
            continue
        if any(pl.is_partial() for pl in t.placements):
            raise RuntimeError(
                f"a gradient is a DTensor with placements {t.placements}: a Partial placement "
                "is a sum not yet reduced; clipping and nonfinite checks need reduced gradients"
            )
        copied = any(c != 0 for pl, c in zip(t.placements, coordinate) if pl.is_replicate())
        root = roots[id(mesh)]
        in_first_slice = bool((mesh.mesh == root.mesh.flatten()[0]).any())
        counts.append(not copied and in_first_slice)
    return group, counts


def _local_sumsq(g: Tensor, counts: bool) -> Tensor:
    """This rank's share of ``sum(g²)``, in float64: its part when it counts (``_reduction``)
    and 0 otherwise, so that the all-reduce counts every element once, with no division."""
    values = g.coalesce().values() if g.is_sparse else local(g)
    if not counts:
        return torch.zeros((), dtype=torch.float64, device=values.device)
    return torch.sum(
        torch.view_as_real(values).double() ** 2 if values.is_complex() else values.double() ** 2
    )


def squared_norms(grads: list[Tensor]) -> list[float]:
    """``sum(g²)`` of each gradient over all ranks (one all-reduce when they are DTensors)."""
    if not grads:
        return []
    group, counts = _reduction(grads)
    sums = torch.stack([_local_sumsq(g, c) for g, c in zip(grads, counts)])
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
    group, _ = _reduction(grads)
    if group is not None:
        torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX, group=group)
    return bool(bad)


def clip_scale(norm_sq: float, max_norm: float) -> float:
    """``max_norm / max(norm, max_norm)``; NaN for a non-finite norm (as Keras)."""
    norm = math.sqrt(norm_sq)
    return max_norm / max(norm, max_norm) if math.isfinite(norm) else float("nan")


def clip_gradients(grads: list[Tensor], settings: Settings) -> list[Tensor]:
    """(2) Keras's clipping of one group's gradients, on copies."""
    if settings.clipvalue is not None:
        c = settings.clipvalue
        return [_map_values(g, lambda v, c=c: _clamp(v, c)) for g in grads]
    if settings.clipnorm is not None:
        c = settings.clipnorm
        scales = [clip_scale(sq, c) for sq in squared_norms(grads)]
        return [_map_values(g, lambda v, s=s: v * s) for g, s in zip(grads, scales)]
    if settings.global_clipnorm is not None and grads:
        scale = clip_scale(sum(squared_norms(grads)), settings.global_clipnorm)
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
