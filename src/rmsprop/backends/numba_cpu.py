"""The fused CPU back end (numba): which tensors its kernels take, the host side of its
step, and compiling its kernels without making a step wait.

The kernels themselves are ``numba_kernels`` (imported when one runs: importing numba
takes about a second). A kernel is compiled once per switch combination, storage and
dtype (8-30 s each on two cores) and cached on disk. With ``impl="auto"``, a step whose
kernel is not compiled yet does not wait: the planner asks ``ready`` and, if not,
``prepare`` starts a separate process that compiles it into the disk cache while this
step runs the single-tensor path with an IEEE square root, which gives the kernel's bits;
once the kernel is compiled and loaded, steps run fused.
A kernel already in the disk cache is loaded by a thread the same way (numba's import
and the load take a second or two). ``RMSPROP_BACKGROUND_COMPILE=0`` compiles and loads
in the step instead (as an explicit ``impl="numba"`` always does); ``rmsprop warmup``
compiles ahead of time.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..lowbit.forms import Storage
from . import host
from .base import Batch, Facts, Hyper, to_scalar_lr

NAME = "numba"
MATH_DTYPES = (torch.float32, torch.float64)
log = logging.getLogger("rmsprop")


def available() -> str | None:
    """None if numba can be imported here (checked without importing it), else why not."""
    if importlib.util.find_spec("numba") is None or importlib.util.find_spec("llvmlite") is None:
        return "impl='numba' needs numba: pip install 'rmsprop[torch]' (or pip install numba)"
    return None


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
    if facts.rounded:
        return facts.storage is not Storage.FLOAT or facts.state_dtype == torch.float32
    if facts.storage is Storage.INT8:
        return facts.dtype == torch.float32
    if facts.storage is Storage.BF16:
        return facts.dtype in MATH_DTYPES
    return facts.dtype in MATH_DTYPES and facts.state_dtype == facts.dtype


def nonfinite_checkable(t: Tensor) -> bool:
    """A tensor ``numba_kernels.any_nonfinite`` reads directly (CPU, contiguous, fp32/64),
    once a kernel is loaded in this process (the check is not worth loading numba for,
    and a thread may be loading it)."""
    return bool(_COMPILED) and t.dtype in MATH_DTYPES and t.is_cpu and t.is_contiguous()


@torch.compiler.disable  # numba code is opaque to dynamo: torch.compile(opt.step) calls it as is
def step(batch: Batch, lr, hp: Hyper) -> None:
    """One fused pass over the batch (one param dtype, one storage: see ``native``):
    every tensor's param, gradient and state are read once and written once; compact
    state is decoded, updated and encoded in registers (the same bits as the per-tensor
    path of ``lowbit.state`` and as ``triton_cuda.step``)."""
    from . import numba_kernels as kernels

    lr = float(to_scalar_lr(lr))
    math = host.NUMPY_DTYPES[batch.params[0].dtype]
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
    _mark(kernel_key(hp, batch.storage, batch.round_param), str(math))


# ------------------------------------------------------------------ compiling, not waiting
_COMPILED: set[str] = set()  # kernels this process has run (loaded or compiled)
_JOBS: dict[str, subprocess.Popen] = {}  # background compiles started by this process


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


def background() -> bool:
    """Compile in a separate process (the default) unless RMSPROP_BACKGROUND_COMPILE=0."""
    return os.environ.get("RMSPROP_BACKGROUND_COMPILE", "1") != "0"


def ready(key: tuple[Any, ...], math: str) -> bool:
    """Is the kernel loaded in this process? If not, ``prepare`` gets it there without
    making a step wait."""
    return _marker_name(key, math) in _COMPILED


def prepare(key: tuple[Any, ...], math: str) -> None:
    """Get the kernel ready without blocking: compiled into the disk cache by a separate
    process (unless a marker says the cache has it), then loaded by a thread of this
    process (numba's import and the cache load take a second or two). Idempotent."""
    name = _marker_name(key, math)
    if name in _COMPILED or name in _LOADERS:
        return
    job = _JOBS.get(name)
    if job is None and not (_cache_folder() / name).exists():
        flags, storage, bf16 = key
        command = [sys.executable, "-m", "rmsprop.backends.numba_cpu",
                   json.dumps([list(flags), storage, bf16, math])]  # fmt: skip
        _JOBS[name] = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)  # fmt: skip
        log.info("compiling a fused CPU kernel in the background; until it is ready, steps "
                 "run the single-tensor path (the same bits)")  # fmt: skip
        return
    if job is not None and job.poll() is None:
        return
    if job is not None and job.returncode != 0:
        log.warning("the background compile of a numba kernel failed; loading it in a thread")
    _LOADERS[name] = threading.Thread(target=_load, args=(key, math), daemon=True)
    _LOADERS[name].start()


_LOADERS: dict[str, threading.Thread] = {}  # kernels being loaded (or compiled) by a thread


def _load(key: tuple[Any, ...], math: str) -> None:
    """Load the kernel from the disk cache (compiling it if the cache lacks it) by running
    it once on dummy data; then steps take it."""
    try:
        _compile_here(key, math)
    except Exception:  # pragma: no cover - a foreground step will say what is wrong
        log.exception("loading a numba kernel failed; steps stay on the single-tensor path")


def _compile_here(key: tuple[Any, ...], math: str) -> None:
    from . import numba_kernels

    flags, storage, bf16 = key
    numba_kernels.compile_kernel((tuple(flags), Storage(storage), bool(bf16)), math)
    _mark(key, math)


@functools.lru_cache(maxsize=256)
def _marker_name(key: tuple[Any, ...], math: str) -> str:
    """A name for the compiled kernel of ``key``: it changes with the kernels' source and
    numba's version, as numba's own cache does."""
    flags, storage, bf16 = key
    text = repr((tuple(flags), int(storage), bool(bf16), math, _source_stamp()))
    return "rmsprop-kernel-" + hashlib.sha1(text.encode()).hexdigest()[:20] + ".ready"


@functools.lru_cache(maxsize=1)
def _source_stamp() -> tuple[Any, ...]:
    import importlib.metadata

    source = Path(__file__).with_name("numba_kernels.py").stat()
    return source.st_mtime_ns, source.st_size, importlib.metadata.version("numba")


def _cache_folder() -> Path:
    """Where numba caches the kernels (NUMBA_CACHE_DIR, else ``__pycache__`` beside them)."""
    folder = os.environ.get("NUMBA_CACHE_DIR")
    return Path(folder) if folder else Path(__file__).parent / "__pycache__"


def _mark(key: tuple[Any, ...], math: str) -> None:
    """Record that the kernel is loaded here and compiled in the disk cache."""
    name = _marker_name(key, math)
    if name in _COMPILED:
        return
    folder = _cache_folder()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).touch()
    except OSError:  # a read-only install: the process-local record still helps
        pass
    _COMPILED.add(name)


if __name__ == "__main__":  # the background process: compile one kernel into the cache
    with contextlib.suppress(OSError):
        os.nice(19)  # the training process comes first
    _flags, _storage, _bf16, _math = json.loads(sys.argv[1])
    _compile_here((tuple(_flags), _storage, _bf16), _math)
