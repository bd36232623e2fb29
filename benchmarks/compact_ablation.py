"""Where the compact-state kernels' time goes at full size: the fused numba kernel with
fp32, bf16 or int8 state against variants of its bf16 loop, rounds alternating.

    python benchmarks/compact_ablation.py --rounds 3 --steps 20 [--threads 1]

16M fp32 parameters in 40 tensors, momentum 0.9 (issue 32's configuration). Each
(variant, state) runs in its own process, one after another within a round, so the
machine's drift hits them alike; reported: the median step and the median kernel call of
each run, and each run's ratio to the fp32-state run of the same round.

The variants are the shipped kernel source (``numba_kernels.py``) with one loop edited,
loaded in place of the real module (the package's own kernels and cache are untouched):

- ``shipped``: as it is;
- ``no-hash``: bf16 state rounded with a constant instead of the per-element hash (what
  the random stream costs; not a valid codec);
- ``one-hash``: one hash per element feeding both the square_avg and the momentum noise
  (16 bits each) instead of one hash per buffer;
- ``one-hash-32``: the same, with a 32-bit element index in the loop;
- ``base`` (with ``--base COMMIT``): an earlier commit's kernel source as it was, for a
  before/after of a change to the kernels (``--variants shipped,base``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

KERNELS = Path(__file__).resolve().parents[1] / "src" / "rmsprop" / "backends" / "numba_kernels.py"

SHIPPED_LOOP = """        for i in range(start, stop):
            mi = _bf16_decode(m[i]) if centered else s[EPS]
            bi = _bf16_decode(b[i]) if momentum_mode else s[EPS]
            pi, vi, mi, bi = _update(flags, _load(g, i, bf16), _load(p, i, bf16),
                                     _bf16_decode(v[i]), mi, bi, s, lerp_low, correction)  # fmt: skip
            _store(p, i, pi, bf16, i, p_offset)
            v[i] = _bf16_encode(vi, i, v_offset)
            if centered:
                m[i] = _bf16_encode(mi, i, m_offset)
            if momentum_mode:
                b[i] = _bf16_encode(bi, i, b_offset)
"""
SHIPPED_NOISE = "    noise = u32(_hash32(index, offset) & u32(0xFFFF))\n"
WITH_NOISE = """
@njit(inline="always")
def _bf16_encode_noise(value, noise):
    u32 = np.uint32
    bits = _bits_from_f32(value)
    rounded = u32(u32(bits + noise) >> u32(16))
    finite = u32(bits & u32(0x7FFFFFFF)) < u32(0x7F800000)
    nan = u32(bits & u32(0x7FFFFFFF)) > u32(0x7F800000)
    return np.uint16(rounded if finite else (u32(0x7FC0) if nan else u32(bits >> u32(16))))


@njit(inline="always")
def _load(x, i, bf16):"""
ONE_HASH_BODY = """            h = _hash32({index})
            mi = _bf16_decode(m[i]) if centered else s[EPS]
            bi = _bf16_decode(b[i]) if momentum_mode else s[EPS]
            pi, vi, mi, bi = _update(flags, _load(g, i, bf16), _load(p, i, bf16),
                                     _bf16_decode(v[i]), mi, bi, s, lerp_low, correction)
            _store(p, i, pi, bf16, i, p_offset)
            v[i] = _bf16_encode_noise(vi, np.uint32(h & np.uint32(0xFFFF)))
            if centered:
                m[i] = _bf16_encode(mi, i, m_offset)
            if momentum_mode:
                b[i] = _bf16_encode_noise(bi, np.uint32(h >> np.uint32(16)))
"""


def variant_source(name: str) -> str:
    """The kernel module's source with variant ``name``'s edit."""
    source = KERNELS.read_text()
    if SHIPPED_LOOP not in source or SHIPPED_NOISE not in source:
        raise SystemExit(f"{KERNELS} no longer has the loop this script edits: update it")
    if name == "shipped":
        return source
    if name == "no-hash":
        return source.replace(SHIPPED_NOISE, "    noise = u32(0x8000)\n")
    source = source.replace('\n@njit(inline="always")\ndef _load(x, i, bf16):', WITH_NOISE, 1)
    if name == "one-hash":
        loop = "        for i in range(start, stop):\n"
        return source.replace(SHIPPED_LOOP, loop + ONE_HASH_BODY.format(index="i, v_offset"))
    loop = ("        vo = np.uint32(v_offset + start)\n"
            "        for j in range(np.uint32(stop - start)):\n"
            "            i = start + j\n")  # fmt: skip
    return source.replace(SHIPPED_LOOP, loop + ONE_HASH_BODY.format(index="j, vo"))


def base_source(commit: str) -> str:
    """The kernel module's source at ``commit``."""
    path = "src/rmsprop/backends/numba_kernels.py"
    return subprocess.run(["git", "-C", str(KERNELS.parent), "show", f"{commit}:{path}"],
                          capture_output=True, text=True, check=True).stdout  # fmt: skip


RUN = textwrap.dedent("""
    import importlib.util, json, os, sys, time
    import numpy as np, torch, rmsprop
    from rmsprop.backends import numba_compile
    path, state, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    spec = importlib.util.spec_from_file_location("rmsprop.backends.numba_kernels", path)
    kernels = importlib.util.module_from_spec(spec)
    sys.modules["rmsprop.backends.numba_kernels"] = kernels
    spec.loader.exec_module(kernels)
    numba_compile.ready = lambda *a, **k: True  # this variant compiles here, in this process
    numba_compile.mark = lambda *a, **k: None
    calls, make = [], kernels.kernel_for
    def timed_kernel_for(*a, **k):
        kernel = make(*a, **k)
        def timed(*args):
            t = time.perf_counter(); kernel(*args); calls.append(time.perf_counter() - t)
        return timed
    kernels.kernel_for = timed_kernel_for
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(419_430, generator=gen).requires_grad_() for _ in range(40)]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen)
    state_dtype = {"fp32": None, "bf16": torch.bfloat16, "int8": "int8"}[state]
    opt = rmsprop.RMSprop(params, lr=1e-4, momentum=0.9, impl="numba", state_dtype=state_dtype)
    opt.step(); opt.step()
    times = []
    for _ in range(steps):
        t = time.perf_counter(); opt.step(); times.append(time.perf_counter() - t)
    print(json.dumps({"step_ms": 1e3 * float(np.median(times)),
                      "kernel_ms": 1e3 * float(np.median(calls[-steps:]))}))
""")

RUNS = [("shipped", "fp32"), ("shipped", "bf16"), ("no-hash", "bf16"), ("one-hash", "bf16"),
        ("one-hash-32", "bf16"), ("shipped", "int8")]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="NUMBA_NUM_THREADS")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--base", help="an earlier commit: its kernels run as variant 'base'")
    parser.add_argument("--variants", help="only these variants (comma-separated)")
    args = parser.parse_args()
    runs = RUNS + ([("base", state) for state in ("fp32", "bf16", "int8")] if args.base else [])
    if args.variants:
        runs = [run for run in runs if run[0] in args.variants.split(",")]
    folder = Path(tempfile.mkdtemp(prefix="rmsprop-ablation-"))
    env = {**os.environ, "NUMBA_CACHE_DIR": str(folder / "cache")}
    if args.threads:
        env["NUMBA_NUM_THREADS"] = str(args.threads)
    paths = {}
    for name in dict(runs):
        paths[name] = folder / name / "numba_kernels.py"
        paths[name].parent.mkdir()
        paths[name].write_text(base_source(args.base) if name == "base" else variant_source(name))
    rows: dict[tuple[str, str], list[dict]] = {run: [] for run in runs}
    for r in range(args.rounds + 1):  # round 0 compiles each variant and is not counted
        for name, state in runs:
            out = subprocess.run([sys.executable, "-c", RUN, str(paths[name]), state,
                                  str(args.steps)], capture_output=True, text=True, env=env)  # fmt: skip
            if out.returncode != 0:
                raise SystemExit(out.stderr[-2000:])
            if r:
                rows[(name, state)].append(json.loads(out.stdout.strip().splitlines()[-1]))
    base = rows[("shipped", "fp32")]
    print(f"{'variant':<12} {'state':<5} {'step ms':>8} {'kernel ms':>9} {'vs fp32':>8}")
    table = []
    for (name, state), runs in rows.items():
        step = statistics.median(x["step_ms"] for x in runs)
        kernel = statistics.median(x["kernel_ms"] for x in runs)
        ratio = statistics.median(x["step_ms"] / b["step_ms"] for x, b in zip(runs, base))
        table.append({"variant": name, "state": state, "step_ms": step, "kernel_ms": kernel,
                      "vs_fp32": ratio, "runs": runs})  # fmt: skip
        print(f"{name:<12} {state:<5} {step:8.2f} {kernel:9.2f} {ratio:7.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"threads": args.threads, "rows": table}, indent=1))


if __name__ == "__main__":
    main()
