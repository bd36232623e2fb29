"""``rmsprop warmup``: compile the fused CPU kernels ahead of time, into numba's disk
cache, so that no training run waits for them (or runs its first steps on the
single-tensor path while they compile in the background)."""

from __future__ import annotations

import os
import time
from typing import Any

COMBINATIONS = {"plain": {}, "momentum": {"momentum": 0.9}, "centered": {"centered": True},
                "momentum + centered": {"momentum": 0.9, "centered": True}}  # fmt: skip
STATES = {"fp32": None, "bf16": "bfloat16", "int8": "int8"}


def warm_up(presets: list[str], states: list[str], changes: dict[str, Any], console) -> int:
    """Compile the kernel of each preset x state form x switch combination (with
    ``changes`` applied; without changes: plain, momentum, centered, both)."""
    import torch

    import rmsprop
    from rmsprop.presets import get_preset

    from ..backends import numba_compile, unavailable_reason
    from .checks import UsageError

    reason = unavailable_reason("numba")
    if reason is not None:
        raise UsageError(f"the fused CPU kernels cannot be compiled here: {reason}")
    console.print(f"numba's kernel cache: {numba_compile.cache_folder()}", soft_wrap=True)
    combinations = {"as given": changes} if changes else COMBINATIONS
    for preset in presets:
        for state in states:
            for name, switches in combinations.items():
                start = time.perf_counter()
                settings = get_preset(preset).hyperparameters(**{"lr": 1e-3, **switches})
                p = torch.zeros(8192, requires_grad=True)
                state_dtype = torch.bfloat16 if STATES[state] == "bfloat16" else STATES[state]
                opt = rmsprop.RMSprop([p], **{**settings, "impl": "numba",
                                              "state_dtype": state_dtype})  # fmt: skip
                p.grad = torch.ones_like(p)
                opt.step()  # an explicit impl compiles (or loads) here, into the disk cache
                console.print(f"{preset}, {state} state, {name}: "
                              f"{time.perf_counter() - start:.1f} s")  # fmt: skip
    return 0


#: rough compile seconds by state storage (float, bf16, 8-bit), to share kernels among jobs
_COST = (4.0, 4.5, 13.0)
#: set in a ``--jobs`` process: its parent compiles the small helper kernels
_SHARE = "RMSPROP_WARMUP_SHARE"


def warm_up_recorded(path, jobs: int, console) -> int:
    """Compile each kernel listed in ``path`` (recorded by a run with
    ``RMSPROP_RECORD_KERNELS=path``), in this process or shared among ``jobs`` processes
    that end when their share is compiled."""
    from ..backends import numba_compile, unavailable_reason
    from .checks import UsageError

    try:
        kernels = numba_compile.read_recorded(path)
    except OSError as err:
        raise UsageError(f"--kernels {path}: cannot be read ({err.strerror})") from None
    except ValueError as err:
        raise UsageError(f"--kernels {err}") from None
    reason = unavailable_reason("numba")
    if reason is not None:
        raise UsageError(f"the fused CPU kernels cannot be compiled here: {reason}")
    console.print(f"numba's kernel cache: {numba_compile.cache_folder()}; "
                  f"{len(kernels)} kernel(s) from {path}", soft_wrap=True)  # fmt: skip
    start = time.perf_counter()
    if jobs <= 1 or len(kernels) <= 1:
        _compile_each(kernels, console, helpers=os.environ.get(_SHARE) != "1")
    else:
        _compile_in_processes(kernels, jobs, console)
    console.print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


def _compile_each(kernels, console, helpers: bool = True) -> None:
    from ..backends import numba_compile

    if helpers:
        _compile_helpers()
    for key, math in kernels:
        start = time.perf_counter()
        numba_compile.compile_here(key, math)
        console.print(f"kernel {_describe(key, math)}: {time.perf_counter() - start:.1f} s")


def _describe(key, math: str) -> str:
    flags, storage, bf16 = key
    state = ("fp32", "bf16", "int8")[storage]
    return f"{''.join(map(str, flags))}, {state} state, {'bf16' if bf16 else math} params"


def _compile_in_processes(kernels, jobs: int, console) -> None:
    """Each share (the costliest kernels first, each to the least loaded process) compiled
    by a ``rmsprop warmup --kernels`` process of its own; the step counters' and the
    finiteness check's small kernels meanwhile here. Ctrl-C stops them all."""
    import signal
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from ..backends import numba_compile

    shares: list[list] = [[] for _ in range(jobs)]
    loads = [0.0] * jobs
    for key, math in sorted(kernels, key=lambda k: -_COST[k[0][1]]):
        least = loads.index(min(loads))
        shares[least].append((key, math))
        loads[least] += _COST[key[1]]
    with tempfile.TemporaryDirectory() as folder:
        processes = []
        try:
            for i, share in enumerate(s for s in shares if s):
                listing = Path(folder) / f"share-{i}.txt"
                listing.write_text("".join(numba_compile.recorded_line(k, m) for k, m in share))
                command = [sys.executable, "-m", "rmsprop", "warmup", "--kernels", str(listing)]
                processes.append(subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                                  env={**os.environ, _SHARE: "1"}))  # fmt: skip
            _compile_helpers()
            previous = signal.signal(signal.SIGTERM, _stop)  # a SIGTERM stops them too
            try:
                failed = [p.args for p in processes if p.wait() != 0]
            finally:
                signal.signal(signal.SIGTERM, previous)
        finally:
            for p in processes:
                if p.poll() is None:
                    p.kill()
                    p.wait()
    if failed:
        from .checks import UsageError

        raise UsageError(f"{len(failed)} of the warmup processes failed (their output is above)")


def _stop(signum, frame) -> None:
    raise SystemExit(128 + signum)


def _compile_helpers() -> None:
    """The small kernels every fused step uses: the step counters' increment (float32 and
    float64) and the finiteness check (``nonfinite="skip"``/``"raise"``)."""
    import torch

    from ..backends import numba_kernels

    for dtype in (torch.float32, torch.float64):
        numba_kernels.increment_steps([torch.zeros(1, dtype=dtype)], False)
        numba_kernels.any_nonfinite([torch.zeros(4, dtype=dtype)])
