"""The back ends by name, loaded on first use: a missing numba or triton never breaks
``import rmsprop``; asking for it says what to install."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor

#: ``impl`` values and the module of each back end.
MODULES = {"single": "single", "foreach": "foreach", "numba": "numba_cpu",
           "triton": "triton_cuda", "compiled": "compiled"}  # fmt: skip
NAMES = tuple(MODULES)
IMPLS = ("auto", *NAMES)

_REASONS: dict[str, str | None] = {}
os.register_at_fork(after_in_child=_REASONS.clear)  # a forked child may lose a back end


_LOADED: dict[str, ModuleType] = {}


def load(name: str) -> ModuleType:
    """The module of back end ``name`` (imported on first use)."""
    module = _LOADED.get(name)
    if module is None:
        module = _LOADED[name] = importlib.import_module(f"{__package__}.{MODULES[name]}")
    return module


def unavailable_reason(name: str) -> str | None:
    """Why back end ``name`` cannot load here, or None if it can (checked once per
    process)."""
    if name not in _REASONS:
        try:
            module = load(name)
            _REASONS[name] = module.available() if hasattr(module, "available") else None
        except ImportError as err:
            _REASONS[name] = str(err)
    return _REASONS[name]


def available() -> list[str]:
    """The back ends that load here."""
    return [name for name in NAMES if unavailable_reason(name) is None]


def nonfinite_check() -> tuple[Callable[[Tensor], bool], Callable[[list[Tensor]], bool]] | None:
    """The fast finiteness check of gradients (``clipping.any_nonfinite``): the numba back
    end's one parallel read, as (which tensors it reads, the check), where numba runs."""
    if unavailable_reason("numba") is not None:
        return None
    numba = load("numba")
    return numba.nonfinite_checkable, numba.any_nonfinite


def triton_device() -> str:
    """Where Triton kernels run: CUDA, or the CPU under Triton's interpreter
    (``TRITON_INTERPRET=1``, for tests; ``auto`` never picks the interpreter)."""
    return "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"
