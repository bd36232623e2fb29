"""The two DTensor questions every layer asks (is it one, what is its local shard), in a
module with no imports from the package, so ``lowbit`` and ``optim`` can both use it.

``torch.distributed.tensor`` is not imported here: that takes about 1.2 s (a program's
first step paid it), and a DTensor cannot exist before a program has imported it, so its
class is looked up among the imported modules instead.
"""

from __future__ import annotations

import sys

from torch import Tensor

#: DTensor's class once a program has imported ``torch.distributed.tensor`` (``_dtensor``)
_DTENSOR: type | None = None


def _dtensor() -> type | None:
    """The DTensor class if ``torch.distributed.tensor`` is imported, else None (then no
    tensor is a DTensor)."""
    global _DTENSOR
    if _DTENSOR is None:
        _DTENSOR = getattr(sys.modules.get("torch.distributed.tensor"), "DTensor", None)
    return _DTENSOR


def is_dtensor(t: object) -> bool:
    dtensor = _dtensor()
    return dtensor is not None and isinstance(t, dtensor)


def local(t: Tensor | None) -> Tensor | None:
    """The local shard of a DTensor (same storage); any other tensor as it is."""
    return t.to_local() if is_dtensor(t) else t


def any_dtensor(tensors: list[Tensor]) -> bool:
    """Is any of ``tensors`` a DTensor? (One type test per distinct type: cheap for the
    thousands of parameters of a large model.)"""
    dtensor = _dtensor()
    return dtensor is not None and any(
        issubclass(kind, dtensor) for kind in set(map(type, tensors))
    )
