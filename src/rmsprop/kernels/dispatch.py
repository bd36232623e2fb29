"""Which implementation runs a group of tensors.

``choose(impl, foreach, params, differentiable)``: an explicit ``impl`` that cannot run
the tensors raises ``RuntimeError`` with the reason; ``"auto"`` never degrades silently
to something the user did not ask for (it picks among correct implementations only).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable

import torch
from torch import Tensor

IMPLS = ("auto", "single", "foreach", "numba", "triton", "compiled")
FUSED_CUDA_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
KERNELS = {"numba": "numba_cpu", "triton": "triton_cuda", "compiled": "compiled"}


_REASONS: dict[str, str | None] = {}


def backend(name: str):
    """The module of fused back end ``name`` (imported on first use)."""
    return importlib.import_module(f"{__package__}.{KERNELS[name]}")


def unavailable_reason(name: str) -> str | None:
    """Why back end ``name`` cannot load here, or None if it can (checked once)."""
    if name not in KERNELS:
        return None
    if name not in _REASONS:
        try:
            backend(name)
            _REASONS[name] = None
        except ImportError as err:
            _REASONS[name] = str(err)
    return _REASONS[name]


def available_backends() -> dict[str, Callable[..., None]]:
    """name -> step function of every fused back end that loads here."""
    return {name: backend(name).step for name in KERNELS if unavailable_reason(name) is None}


def triton_device() -> str:
    """CUDA, or the CPU under Triton's interpreter (``TRITON_INTERPRET=1``, for tests)."""
    return "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"


def _check_devices(impl: str, params: list[Tensor]) -> None:
    devices = {p.device.type for p in params}
    if impl == "numba" and devices != {"cpu"}:
        raise RuntimeError(f"impl='numba' runs on CPU tensors only (got devices {sorted(devices)})")
    if impl == "triton" and devices != {triton_device()}:
        raise RuntimeError(
            "impl='triton' runs on CUDA tensors (CPU ones only under TRITON_INTERPRET=1); "
            f"got devices {sorted(devices)}"
        )


def _fused_can_run(impl: str, params: list[Tensor], rounded_bf16: bool) -> bool:
    if unavailable_reason(impl) is not None:
        return False
    device = "cpu" if impl == "numba" else "cuda"  # auto never picks the interpreter
    dtypes = FUSED_CUDA_DTYPES
    if impl == "numba":  # bf16 only when rounded stochastically (fp32 math, SR store)
        dtypes = (torch.float32, torch.float64) + ((torch.bfloat16,) if rounded_bf16 else ())
    return all(p.device.type == device and p.dtype in dtypes and p.is_contiguous()
               for p in params)  # fmt: skip


def choose(
    impl: str,
    foreach: bool | None,
    params: list[Tensor],
    differentiable: bool,
    rounded_bf16: bool = False,
) -> str:
    """``rounded_bf16``: bf16 params are updated in fp32 and stored with stochastic
    rounding (``stochastic_rounding=True``), which the numba kernel can also run."""
    if impl not in IMPLS:
        raise ValueError(
            f"impl={impl!r} is invalid: it must be one of {', '.join(map(repr, IMPLS))}"
        )
    if foreach is not None and impl not in ("auto", "foreach" if foreach else "single"):
        raise ValueError(f"foreach={foreach} contradicts impl={impl!r}; set one of them")
    if impl == "auto":
        if differentiable or foreach is False:
            return "single"
        if foreach:
            return "foreach"
        for fused in ("triton", "numba"):
            if _fused_can_run(fused, params, rounded_bf16):
                return fused
        return "foreach" if all(p.device.type == "cuda" for p in params) else "single"
    if differentiable and impl != "single":
        raise RuntimeError(f"differentiable=True needs impl='single' (got impl={impl!r})")
    if impl in KERNELS:
        reason = unavailable_reason(impl)
        if reason is not None:
            raise RuntimeError(f"impl={impl!r} is not available here: {reason}")
        _check_devices(impl, params)
        if impl != "compiled" and any(torch.is_complex(p) for p in params):
            raise RuntimeError(f"impl={impl!r} does not support complex parameters; use 'foreach'")
    return impl
