"""The optimizer step on a GPU: the device's bandwidth, then ours against torch's.

    python benchmarks/gpu.py                       # on a CUDA device: 16M and 256M params
    python benchmarks/gpu.py --quick               # tiny sizes: a smoke run (the CPU too)

First two probes of the device's memory bandwidth (median of repeated runs): a copy
``b.copy_(a)`` (8 bytes a float32 element) and an in-place axpy ``a.add_(b, alpha=s)``
(12 bytes: read a, b, write a), the same access pattern as an optimizer step. Then one
step of RMSprop, plain and momentum + centered, on one tensor of each ``--sizes`` and on
``--small`` small tensors (1-4,096 elements each): ``rmsprop.RMSprop`` with
``impl="triton"`` and ``impl="auto"``, ``torch.optim.RMSprop`` with ``foreach=True`` and
``foreach=False``, and ``torch.compile`` of torch's step; then our compact state (bf16
with stochastic rounding, int8 blocks). Each row: the median step time, the bytes a
fused single pass must move (fp32 plain: read p, g, v and write p, v: 20 bytes a
parameter), that traffic over the time as a fraction of the in-place probe, and the ratio
to torch's foreach step and to the compiled one.

Results go to ``benchmarks/results/gpu-DEVICE.json`` (``--json`` to choose), rewritten
after every row, so a run stopped by a time limit keeps what it measured. Targets (issue
28): at least 85% of the in-place probe for 16M and 256M fp32 params, at least 2x torch's
foreach step, no slower than ``torch.compile``. On the CPU (Triton's interpreter, with
``--quick``) the numbers mean nothing: the run only checks that the script works.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {"plain": {}, "momentum+centered": {"momentum": 0.9, "centered": True}}
STATE_BYTES = {None: 4.0, "bf16": 2.0, "int8": 1.0 + 4.0 / 256}  # a buffer, per element
IMPLS = ("rmsprop triton", "rmsprop auto", "torch foreach", "torch for-loop", "torch.compile")


def parse_size(text: str) -> int:
    """``16M``, ``256M``, ``4096``, ``64K`` -> a count."""
    match = re.fullmatch(r"(\d+)([KMG]?)", text.strip().upper())
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 16M, 65536)")
    return int(match[1]) * {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}[match[2]]


def step_bytes(config: str, state: str | None) -> float:
    """Bytes per parameter of one fused pass: read p, g and each buffer, write p and each
    buffer (fp32 params and gradients)."""
    buffers = 1 + 2 * (config == "momentum+centered")
    return 4 * 3 + 2 * buffers * STATE_BYTES[state]


class Timer:
    """Median wall time of ``fn`` in ms (CUDA events on a GPU, perf_counter on the CPU)."""

    def __init__(self, torch, device: str, warmup: int, repeats: int):
        self.torch, self.device, self.warmup, self.repeats = torch, device, warmup, repeats

    def __call__(self, fn) -> list[float]:
        torch = self.torch
        for _ in range(self.warmup):
            fn()
        times = []
        for _ in range(self.repeats):
            if self.device == "cuda":
                start, end = (
                    torch.cuda.Event(enable_timing=True),
                    torch.cuda.Event(enable_timing=True),
                )
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        return times


def probes(torch, timer: Timer, n: int, device: str) -> dict:
    x, y = torch.randn(n, device=device), torch.randn(n, device=device)
    copy = statistics.median(timer(lambda: y.copy_(x)))
    axpy = statistics.median(timer(lambda: x.add_(y, alpha=1e-6)))
    return {"params": n, "copy_ms": copy, "copy_GBps": 8 * n / copy / 1e6,
            "inplace_axpy_ms": axpy, "inplace_axpy_GBps": 12 * n / axpy / 1e6}  # fmt: skip


def make_step(torch, impl: str, sizes: list[int], config: str, state: str | None, device: str):
    """(params, step) with gradients set and state created by one step; ``None`` with the
    reason when this case does not apply."""
    import rmsprop

    gen = torch.Generator(device=device).manual_seed(0)
    params = [torch.randn(n, device=device, generator=gen).requires_grad_() for n in sizes]
    for p in params:
        p.grad = torch.randn(p.shape, device=device, generator=gen) * 1e-2
    hp = {"lr": 1e-3, "alpha": 0.99, **CONFIGS[config]}
    if impl.startswith("rmsprop"):
        state_dtype = {"bf16": torch.bfloat16, "int8": "int8", None: None}[state]
        opt = rmsprop.RMSprop(params, impl=impl.split()[1], state_dtype=state_dtype, **hp)
        step = opt.step
    else:
        opt = torch.optim.RMSprop(params, foreach=impl != "torch for-loop", **hp)
        step = opt.step
        if impl == "torch.compile":
            step = torch.compile(opt.step, fullgraph=False)
    step()
    return params, opt, step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="16M,256M",
                        help="one tensor of each size (default 16M,256M)")  # fmt: skip
    parser.add_argument("--small", type=int, default=4000, help="small tensors (0: none)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes (4K, 64K), 20 small tensors, 3 repeats: a smoke run")  # fmt: skip
    parser.add_argument("--only", default="", help="comma-separated impl names to run")
    parser.add_argument("--no-compile", action="store_true", help="leave torch.compile out")
    parser.add_argument("--compile-small", action="store_true",
                        help="torch.compile on the small tensors too (its compile takes minutes)")  # fmt: skip
    parser.add_argument("--device", default=None, help="cuda (default when present) or cpu")
    parser.add_argument("--json", type=Path, help="default benchmarks/results/gpu-DEVICE.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.small, args.repeats, args.warmup = "4K,64K", 20, 3, 1

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before rmsprop loads the kernel
    name = torch.cuda.get_device_name() if device == "cuda" else f"cpu-{platform.machine()}"
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    out = args.json or ROOT / "benchmarks" / "results" / f"gpu-{slug}.json"
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    impls = [i for i in IMPLS if not only or i in only]
    skipped: dict[str, str] = {}
    if "torch.compile" in impls and (args.no_compile or device == "cpu"):
        impls.remove("torch.compile")
        skipped["torch.compile"] = ("--no-compile" if args.no_compile else
                                    "on the CPU its C++ compile takes minutes; a GPU number only")  # fmt: skip
    timer = Timer(torch, device, args.warmup, args.repeats)
    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    result = {
        "device": name, "torch": torch.__version__, "python": sys.version.split()[0],
        "triton": _version("triton"), "interpreter": os.environ.get("TRITON_INTERPRET") == "1",
        "command": " ".join(["python", "benchmarks/gpu.py", *(argv or sys.argv[1:])]),
        "repeats": args.repeats, "skipped": skipped,
        "probes": probes(torch, timer, max(sizes, default=2**20), device), "rows": [],
    }  # fmt: skip
    inplace = result["probes"]["inplace_axpy_GBps"]
    print(
        f"{name}: copy {result['probes']['copy_GBps']:.0f} GB/s, in-place axpy {inplace:.0f} GB/s"
    )
    gen = torch.Generator().manual_seed(1)
    small = torch.randint(1, 4097, (args.small,), generator=gen).tolist()
    suites = [(f"one tensor of {n:,}", [n]) for n in sizes]
    if small:
        suites.append((f"{len(small):,} small tensors", small))
    cases = [(suite, ns, config, impl, None) for suite, ns in suites for config in CONFIGS
             for impl in impls if impl != "torch.compile" or len(ns) == 1 or args.compile_small]  # fmt: skip
    if small and "torch.compile" in impls and not args.compile_small:
        skipped["torch.compile, small tensors"] = "its compile takes minutes (--compile-small)"
    if "rmsprop triton" in impls:  # compact state, on the largest single tensor
        cases += [(suites[len(sizes) - 1][0], [sizes[-1]], config, "rmsprop triton", state)
                  for config in CONFIGS for state in ("bf16", "int8") if sizes]  # fmt: skip
    for suite, ns, config, impl, state in cases:
        row = {"suite": suite, "params": sum(ns), "tensors": len(ns), "config": config,
               "impl": impl, "state": state or "fp32"}  # fmt: skip
        try:
            params, opt, step = make_step(torch, impl, ns, config, state, device)
            times = timer(step)
        except Exception as err:  # a failing case is recorded, the others still run
            row["error"] = f"{type(err).__name__}: {err}"[:500]
            print(f"{suite:26s} {config:18s} {impl:16s} {row['state']:5s} ERROR {row['error']}")
        else:
            ms = statistics.median(times)
            traffic = step_bytes(config, state) * sum(ns)
            row.update(median_ms=ms, times_ms=times, bytes_per_param=step_bytes(config, state),
                       GBps=traffic / ms / 1e6, of_inplace_probe=traffic / ms / 1e6 / inplace)  # fmt: skip
            if impl.startswith("rmsprop"):
                row["ran"] = opt.last_impl.get(0)
            print(f"{suite:26s} {config:18s} {impl:16s} {row['state']:5s} {ms:9.3f} ms "
                  f"{row['GBps']:8.1f} GB/s {row['of_inplace_probe']:6.1%} of in-place")  # fmt: skip
            del params, opt, step
            if device == "cuda":
                torch.cuda.empty_cache()
        result["rows"].append(row)
        _ratios(result["rows"])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


def _ratios(rows: list[dict]) -> None:
    """Each timed row's speed-up over torch's foreach and compiled steps of its case."""
    base = {(r["suite"], r["config"], r["impl"]): r.get("median_ms") for r in rows
            if r["state"] == "fp32"}  # fmt: skip
    for r in rows:
        for key, impl in (
            ("vs_torch_foreach", "torch foreach"),
            ("vs_torch_compile", "torch.compile"),
        ):
            ref = base.get((r["suite"], r["config"], impl))
            if ref and r.get("median_ms"):
                r[key] = ref / r["median_ms"]


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except ImportError:
        return None


if __name__ == "__main__":
    raise SystemExit(main())
