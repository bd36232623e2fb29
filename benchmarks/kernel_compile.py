"""How long the fused CPU kernels take to compile, and to load once compiled: each kernel
variant compiled in a fresh process on an empty numba cache, then loaded in another.

    python benchmarks/kernel_compile.py [--base COMMIT] [--rounds 2] [--json FILE]

Variants: plain and momentum + centered, each with fp32, bf16 and 8-bit state (fp32
parameters, float32 math): what a user's first step waits for in the background, and what
CI's clean run compiles about a hundred times (every switch combination the tests use).
``--base`` measures an earlier commit's kernel source the same way, loaded in place of the
package's module (the package and its cache are untouched), rounds alternating.
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

VARIANTS = {
    "fp32 state, plain": ("FLOAT", {}),
    "fp32 state, momentum + centered": ("FLOAT", {"momentum": 0.9, "centered": True}),
    "bf16 state, plain": ("BF16", {}),
    "bf16 state, momentum + centered": ("BF16", {"momentum": 0.9, "centered": True}),
    "int8 state, plain": ("INT8", {}),
    "int8 state, momentum + centered": ("INT8", {"momentum": 0.9, "centered": True}),
}

COMPILE = textwrap.dedent("""
    import importlib.util, json, sys, time
    from rmsprop.backends.base import Hyper
    from rmsprop.lowbit.forms import Storage
    path, storage, switches = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    spec = importlib.util.spec_from_file_location("rmsprop.backends.numba_kernels", path)
    kernels = importlib.util.module_from_spec(spec)
    sys.modules["rmsprop.backends.numba_kernels"] = kernels
    spec.loader.exec_module(kernels)
    hp = Hyper(**{"alpha": 0.99, "eps": 1e-8, "weight_decay": 0.0, "momentum": 0.0,
                  "centered": False, "maximize": False, **switches})
    start = time.perf_counter()
    kernels.compile_kernel(kernels.kernel_key(hp, Storage[storage], False), "float32")
    print(json.dumps({"seconds": time.perf_counter() - start}))
""")


def seconds(path: Path, storage: str, switches: dict, cache: Path) -> float:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "RMSPROP_BACKGROUND_COMPILE": "0"}
    out = subprocess.run([sys.executable, "-c", COMPILE, str(path), storage, json.dumps(switches)],
                         capture_output=True, text=True, env=env)  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", help="an earlier commit, measured the same way")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="rmsprop-kernel-compile-"))
    sources = {"this tree": KERNELS}
    if args.base:
        sources = {args.base: folder / "base" / "numba_kernels.py", **sources}
        sources[args.base].parent.mkdir()
        source = subprocess.run(["git", "-C", str(KERNELS.parent), "show",
                                 f"{args.base}:src/rmsprop/backends/numba_kernels.py"],
                                capture_output=True, text=True, check=True).stdout  # fmt: skip
        sources[args.base].write_text(source)
    rows = {(side, name): {"compile_s": [], "load_s": []} for side in sources for name in VARIANTS}
    for r in range(args.rounds):
        for k, (name, (storage, switches)) in enumerate(VARIANTS.items()):
            for s, (side, path) in enumerate(sources.items()):
                cache = folder / f"cache-{r}-{k}-{s}"  # empty: compiled here, then loaded
                row = rows[(side, name)]
                row["compile_s"].append(seconds(path, storage, switches, cache))
                row["load_s"].append(seconds(path, storage, switches, cache))
    print(f"{'kernel':34s} {'source':12s} {'compile s':>10s} {'load s':>7s}")
    table = []
    for (side, name), row in rows.items():
        compile_s, load_s = statistics.median(row["compile_s"]), statistics.median(row["load_s"])
        print(f"{name:34s} {side:12s} {compile_s:10.1f} {load_s:7.2f}")
        table.append({"kernel": name, "source": side, "compile_s": compile_s, "load_s": load_s,
                      "rounds": row})  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"rows": table}, indent=1))


if __name__ == "__main__":
    main()
