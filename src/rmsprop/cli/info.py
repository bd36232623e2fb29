"""``rmsprop info``: what this machine has for the optimizer: versions, which back ends
load here and why not, threads, numba's disk cache (where, how much), and which
implementation ``impl="auto"`` takes for common cases (decided by the planner itself)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import time
from typing import Any

PACKAGES = ("rmsprop", "numpy", "torch", "numba", "triton", "jax", "optax", "keras")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def backends() -> dict[str, str]:
    """Each back end: "loads" or why it does not."""
    from ..backends import NAMES, unavailable_reason

    return {name: unavailable_reason(name) or "loads" for name in NAMES}


def numba_cache() -> dict[str, Any]:
    """Where numba keeps the compiled kernels (the folder the step itself uses), how many
    files / bytes are there, and the folder's compile process and queue."""
    from ..backends import unavailable_reason

    empty = {"location": "-", "files": 0, "bytes": 0, "compiler": None, "queue": [],
             "why not": unavailable_reason("numba")}  # fmt: skip
    if empty["why not"] is not None:
        return empty
    from ..backends import numba_compile

    folder = numba_compile.cache_folder()
    files = [f for f in folder.glob("numba_kernels*") if f.is_file()]
    return {
        "location": str(folder),
        "files": len(files),
        "bytes": sum(f.stat().st_size for f in files),
        "compiler": numba_compile.compiler_status(folder),
        "queue": [name for _, name, _ in numba_compile.waiting(folder)],
        "why not": None,
    }


def compiler_line(cache: dict[str, Any]) -> str:
    """The compile process of the cache folder, in words."""
    status, queue = cache["compiler"], cache["queue"]
    if status is None:
        return "none running" + (f" ({len(queue)} kernel(s) waiting)" if queue else "")
    since = time.time() - status["since"]
    return (f"process {status['pid']}, compiling {status['kernel']} for {since:.0f} s; "
            f"{len(queue)} kernel(s) waiting")  # fmt: skip


CASES = {
    "float32 parameters on the CPU": {"dtype": "float32"},
    "float16 parameters on the CPU": {"dtype": "float16"},
    "float32 parameters, 8-bit state": {"dtype": "float32", "state_dtype": "int8"},
    "bf16 parameters, stochastic rounding": {"dtype": "bfloat16", "stochastic_rounding": True},
    "float32 parameters on CUDA": {"dtype": "float32", "device": "cuda"},
}


def auto_choices() -> dict[str, str]:
    """What ``impl="auto"`` runs for each case of ``CASES`` (on meta-like small tensors of
    the case's device; a device this machine lacks is reported as such)."""
    from ..backends.numba_compile import in_place

    with in_place():  # asking starts no compile (the planner only plans)
        return {case: _choice(spec) for case, spec in CASES.items()}


def _choice(spec: dict[str, Any]) -> str:
    import torch

    import rmsprop
    from rmsprop.optim.planner import plan_group

    device = spec.get("device", "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        return "no CUDA device here"
    p = torch.zeros(8192, dtype=getattr(torch, spec["dtype"]), device=device, requires_grad=True)
    p.grad = torch.zeros_like(p)
    opt = rmsprop.RMSprop([p], **{k: v for k, v in spec.items() if k not in ("dtype", "device")})
    plan = plan_group(0, opt.param_groups[0], opt.state)
    return str(plan.summary()).replace("\n", ";").replace("  ", " ")


def show_info(console=None) -> int:
    """Print the report; every value is printed as text (``rich.markup.escape``: a reason
    like "pip install 'rmsprop[gpu]'" keeps its brackets)."""
    from rich.console import Console
    from rich.markup import escape

    console = console or Console(soft_wrap=True)
    console.print("[bold]versions[/bold]")
    for name, version in versions().items():
        console.print(f"  {name:8s} {escape(str(version))}")
    console.print("[bold]back ends[/bold]")
    for name, status in backends().items():
        console.print(f"  {name:8s} {escape(str(status))}")
    import torch

    console.print(f"[bold]threads[/bold]  torch {torch.get_num_threads()}, "
                  f"cpus {os.cpu_count()}")  # fmt: skip
    cache = numba_cache()
    if cache["why not"] is not None:
        console.print(f"[bold]numba cache[/bold]  none: {escape(cache['why not'])}")
    else:
        console.print(f"[bold]numba cache[/bold]  {escape(str(cache['location']))}: "
                      f"{cache['files']} files, {cache['bytes'] / 2**20:.1f} MiB")  # fmt: skip
        console.print(f"[bold]kernel compile process[/bold]  {escape(compiler_line(cache))}")
    console.print("[bold]impl='auto' takes[/bold]")
    for case, choice in auto_choices().items():
        console.print(f"  {escape(case)}: {escape(choice)}")
    return 0
