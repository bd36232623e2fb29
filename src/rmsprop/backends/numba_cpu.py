"""The fused CPU back end (numba): which tensors its kernels take and the host side of
its step.

The kernels themselves are ``numba_kernels`` (imported when one runs: importing numba
takes about a second); ``numba_compile`` gets them compiled and loaded without making a
step wait (``needed`` here says which kernel a step needs).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._torch_compile import opaque_to_dynamo
from ..lowbit.forms import Storage
from . import host, numba_compile
from .base import Batch, Facts, Hyper, StandIn, to_scalar_lr

NAME = "numba"
IEEE_SQRT = True  # its kernels' square root is correctly rounded (widen uses it too)
MATH_DTYPES = (torch.float32, torch.float64)
#: tensors up to this size run the stand-in (``stand_in``) with torch's foreach operations
STAND_IN_SMALL = 1 << 17


def available() -> str | None:
    """None if numba's kernels can run in this process (checked without importing numba),
    else why not: numba missing, no writable kernel cache, or a fork of a numba process."""
    if importlib.util.find_spec("numba") is None or importlib.util.find_spec("llvmlite") is None:
        return "impl='numba' needs numba: pip install numba (in rmsprop's clone: pip install -e '.[torch]')"
    return numba_compile.unavailable_reason()


def refusal(facts: Facts, hp: Hyper) -> str | None:
    """Why the numba kernels cannot update a tensor with these facts (None: they can,
    natively or, see ``native``, on fp32/fp64 copies)."""
    if facts.device.type != "cpu":
        return f"impl='numba' runs on CPU tensors only (got a {facts.device.type} tensor)"
    if facts.dtype.is_complex:
        return "impl='numba' does not support complex parameters; use 'foreach' or 'single'"
    if not facts.contiguous:
        return "impl='numba' needs contiguous parameters (use impl='single' or 'foreach')"
    return None


def native(facts: Facts) -> bool:
    """The fused kernel takes the tensor as it is stored: fp32/fp64 params with state of
    their dtype or bf16 state, fp32 params with 8-bit state, bf16 params rounded
    stochastically with fp32, bf16 or 8-bit state."""
    if not (facts.in_form and facts.state_contiguous):
        return False
    if not facts.stream_range:  # a block of columns: not one range of its random streams
        return False
    if facts.rounded:
        return facts.storage is not Storage.FLOAT or facts.state_dtype == torch.float32
    if facts.storage is Storage.INT8:
        return facts.dtype == torch.float32
    if facts.storage is Storage.BF16:
        return facts.dtype in MATH_DTYPES
    return facts.dtype in MATH_DTYPES and facts.state_dtype == facts.dtype


def any_nonfinite(tensors: list[Tensor]) -> bool:
    """True if a tensor of the list (each ``nonfinite_checkable``) holds NaN or Inf: one
    parallel read of all of them (``numba_kernels.any_nonfinite``)."""
    from .numba_kernels import any_nonfinite as check

    return check(tensors)


def nonfinite_checkable(t: Tensor) -> bool:
    """A tensor ``numba_kernels.any_nonfinite`` reads directly (CPU, contiguous, fp32/64),
    once a kernel is loaded in this process (the check is not worth loading numba for,
    and a thread may be loading it)."""
    return numba_compile.any_loaded() and t.dtype in MATH_DTYPES and t.is_cpu and t.is_contiguous()


@opaque_to_dynamo  # numba code is opaque to dynamo: torch.compile(opt.step) calls it as is
def step(batch: Batch, lr, hp: Hyper) -> None:
    """One fused pass over the batch (one param dtype, one storage: see ``native``):
    every tensor's param, gradient and state are read once and written once; compact
    state is decoded, updated and encoded in registers (the same bits as the per-tensor
    path of ``lowbit.state`` and as ``triton_cuda.step``)."""
    lr = float(to_scalar_lr(lr))
    math = host.NUMPY_DTYPES[batch.params[0].dtype]
    key = kernel_key(hp, batch.storage, batch.round_param)
    if not numba_compile.ready(key, str(math)):
        numba_compile.await_the_compiler(key, str(math))  # never two compiles of one kernel
    from . import numba_kernels as kernels

    grads = [g if g.is_contiguous() else g.contiguous() for g in batch.grads]
    pointers, scales = host.address_table(batch, grads, hp.buffers(batch.storage))
    steps = host.next_steps(batch.steps) if host.needs_steps(hp, batch) else None
    sizes = tuple(p.numel() for p in batch.params)
    kernel = kernels.kernel_for(hp, batch.storage, batch.round_param)
    arguments = (
        pointers,
        np.array(sizes, np.int64),
        host.corrections(hp, steps, len(sizes), math),
        *host.work_items(sizes, kernels.CHUNK),
        host.scalars(hp, lr, math),
        scales,
        host.offsets(batch, steps),
    )  # everything that could raise, before a write
    kernels.increment_steps(batch.steps, False)  # (1)
    kernel(*arguments)
    numba_compile.mark(key, str(math))


@functools.lru_cache(maxsize=256)
def kernel_key(hp: Hyper, storage: Storage, bf16_params: bool) -> tuple[Any, ...]:
    """What a kernel is specialised on: (switch flags, storage, bf16 params) (the same as
    ``numba_kernels.kernel_key``, computed without importing numba)."""
    flags = (*hp.kernel_switches().values(), int(hp.variance_form(storage)))
    return flags, int(storage), bool(bf16_params)


def needed(hp: Hyper, facts: Facts, native_: bool) -> tuple[tuple[Any, ...], str]:
    """(kernel key, math dtype) that tensors with ``facts`` run on: their own kernel, or
    (on working copies) the float kernel of the math dtype."""
    math = "float64" if facts.dtype == torch.float64 else "float32"
    if native_:
        return kernel_key(hp, facts.storage, facts.rounded), math
    return kernel_key(hp, Storage.FLOAT, False), math


def stand_in(hp: Hyper, kinds: list[tuple[Facts, str]], params: list[Tensor]) -> StandIn | None:
    """``auto`` chose numba for tensors of these ``(facts, mode)`` kinds (``"native"``,
    ``"widened"`` or ``"sparse"``: see ``rmsprop.optim.planner``), but a kernel they
    need is not loaded yet: it is requested from the background compile process
    (``numba_compile``: a process compiles it, a thread loads it, nothing waits here) and
    this step runs torch's operations with the kernel's correctly rounded square root (the
    same bits); a later step, once the kernel is loaded, runs fused. None: every kernel is
    loaded, or the background compile is off (the step compiles in place)."""
    if not numba_compile.background():
        return None
    jobs = {needed(hp, facts, mode == "native") for facts, mode in kinds
            if mode == "native" or (mode == "widened" and not hp.variance_form(facts.storage))}  # fmt: skip
    waiting = [job for job in jobs if not numba_compile.ready(*job)]
    if not waiting:
        return None
    for job in waiting:
        numba_compile.prepare(*job)
    impl = stand_in_for(params)
    why = ("its kernel for these switches is being compiled or loaded in the background; "
           f"until then the {impl} path runs with the kernel's correctly rounded square root "
           "(the same bits)")  # fmt: skip
    return StandIn(impl, _with_ieee_sqrt(hp), why)


def stand_in_for(params: list[Tensor]) -> str:
    """The faster of torch's paths for these tensors, both with the same bits: foreach for
    small tensors (one call per operation for all of them), per tensor once any is large
    (the CPU foreach operations do not split a large tensor among threads)."""
    return "foreach" if all(p.numel() <= STAND_IN_SMALL for p in params) else "single"


@functools.lru_cache(maxsize=64)
def _with_ieee_sqrt(hp: Hyper) -> Hyper:
    return dataclasses.replace(hp, ieee_sqrt=True)
