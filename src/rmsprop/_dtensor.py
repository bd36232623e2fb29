"""The two DTensor questions every layer asks (is it one, what is its local shard), in a
module with no imports from the package, so ``lowbit`` and ``optim`` can both use it."""

from __future__ import annotations

from torch import Tensor

try:
    from torch.distributed.tensor import DTensor
except ImportError:  # pragma: no cover - torch built without distributed
    DTensor = None  # type: ignore[assignment,misc]


def is_dtensor(t: object) -> bool:
    return DTensor is not None and isinstance(t, DTensor)


def local(t: Tensor | None) -> Tensor | None:
    """The local shard of a DTensor (same storage); any other tensor as it is."""
    return t.to_local() if is_dtensor(t) else t


def any_dtensor(tensors: list[Tensor]) -> bool:
    """Is any of ``tensors`` a DTensor? (One type test per distinct type: cheap for the
    thousands of parameters of a large model.)"""
    return DTensor is not None and any(
        issubclass(kind, DTensor) for kind in set(map(type, tensors))
    )
