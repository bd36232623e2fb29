"""Several programs started together on one empty kernel cache, as a sweep, ``torchrun``
ranks or test workers do: how many kernel-compile processes run at once, their memory,
whether one is left when the work is done, and when each program's steps go fused.

    python benchmarks/shared_compile.py --programs 6 --json out.json

Each program trains ``--kernels`` parameter groups (default two: plain, and momentum +
centered; up to 16 switch combinations, one kernel each) with ``impl="auto"`` and the
background compile on, until every group runs fused. Processes are
counted by their environment (a tag only these programs and their children carry), not
by name. Every 0.1 s the compile processes' resident memory is read from /proc.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

PROGRAM = textwrap.dedent("""
    import itertools, json, sys, time, torch, rmsprop
    kernels = int(sys.argv[2])
    combos = list(itertools.product((0.0, 0.9), (False, True), (False, True), (0.0, 0.01)))
    switches = [{"momentum": m, "centered": c, "eps_in_sqrt": e, "weight_decay": w}
                for m, c, e, w in combos]
    first = [0, 12]  # plain; momentum + centered
    switches = [switches[i] for i in first + [i for i in range(16) if i not in first]]
    gen = torch.Generator().manual_seed(0)
    ps = [torch.zeros(50_000, requires_grad=True) for _ in range(kernels)]
    opt = rmsprop.RMSprop([{"params": [p], **s} for p, s in zip(ps, switches)], lr=1e-3)
    ran, start, fused_at = [], time.perf_counter(), None
    while time.perf_counter() - start < float(sys.argv[1]):
        for p in ps:
            p.grad = torch.randn(50_000, generator=gen)
        opt.step()
        ran.append([opt.last_impl[i] for i in range(kernels)])
        if ran[-1] == ["numba"] * kernels:
            fused_at = time.perf_counter() - start
            break
        time.sleep(0.1)  # the model's own work
    print(json.dumps({"steps": len(ran), "fused_after_s": fused_at, "last": ran[-1]}))
""")


def tagged(tag: str) -> list[int]:
    """The processes whose environment carries ``tag``."""
    found, marker = [], f"RMSPROP_BENCH_TAG={tag}".encode()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if marker in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                    found.append(int(entry))
            except OSError:
                continue
    return found


def memory_mb(pid: int) -> float:
    """Resident memory of ``pid`` in MB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run(programs: int, cache: Path, timeout: float, kernels: int = 2) -> dict:
    tag = uuid.uuid4().hex
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "RMSPROP_BENCH_TAG": tag}
    env.pop("RMSPROP_BACKGROUND_COMPILE", None)  # as shipped: on
    start = time.perf_counter()
    running = [subprocess.Popen([sys.executable, "-c", PROGRAM, str(timeout), str(kernels)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(programs)]  # fmt: skip
    mine = {p.pid for p in running}
    most, seen, peak_mb = 0, set(), 0.0
    done_at = None
    while True:
        compilers = [pid for pid in tagged(tag) if pid not in mine]
        most = max(most, len(compilers))
        seen.update(compilers)
        peak_mb = max([peak_mb, *(memory_mb(pid) for pid in compilers)])
        if done_at is None and all(p.poll() is not None for p in running):
            done_at = time.perf_counter()
        if done_at is not None and not compilers:
            break
        if done_at is not None and time.perf_counter() - done_at > 180:
            break  # a process outlived its programs by three minutes: reported below
        time.sleep(0.1)
    results = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in running]
    folder = next(cache.glob("*/rmsprop-compile.log"), None)
    history = folder.read_text().splitlines() if folder else []
    return {
        "programs": programs,
        "kernels_per_program": kernels,
        "most_compile_processes_at_once": most,
        "compile_processes_in_all": len(seen),
        "peak_compile_process_rss_mb": round(peak_mb, 1),
        "compile_processes_left_after_the_programs": len(
            [pid for pid in tagged(tag) if pid not in mine]
        ),
        "seconds_after_the_programs_until_none_left": round(time.perf_counter() - done_at, 1),
        "kernels_compiled": [line.split()[1:3] for line in history],
        "programs_fused_after_s": [r["fused_after_s"] for r in results],
        "programs_last_step": [r["last"] for r in results],
        "wall_s": round(time.perf_counter() - start, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--programs", type=int, default=6)
    parser.add_argument(
        "--kernels",
        type=int,
        default=2,
        choices=range(1, 17),
        metavar="1..16",
        help="kernels each program needs (switch combinations)",
    )
    parser.add_argument("--timeout", type=float, default=600, help="seconds a program may run")
    parser.add_argument("--cache", type=Path, help="the kernel cache (default: a new empty one)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args.programs, args.cache or Path(tmp), args.timeout, args.kernels)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
