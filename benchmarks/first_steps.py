"""A fresh install's first steps: ``impl="auto"`` on an empty kernel cache (the stand-in
path while the fused kernel compiles in the background, then fused) against
``torch.optim.RMSprop``'s default, step for step, optionally with busy processes beside.

    python benchmarks/first_steps.py --model mlp --load 2 --json out.json

Both optimizers train their own copy of the same parameters on the same gradients, their
steps alternating (the machine's drift hits both alike). Reported: each one's first step,
the median step while the stand-in runs and once fused, and when the first fused step
came. ``--load N`` starts N processes that spin on the CPU for the whole run (the 2-core
machine then has more runnable processes than cores). Every run uses a new empty cache.
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

RUN = textwrap.dedent("""
    import json, sys, time, torch, rmsprop
    model, limit = sys.argv[1], float(sys.argv[2])
    shapes = {"mlp": [(256, 64), (256,), (256, 256), (256,), (10, 256), (10,)],
              "16M": [(400, 1000)] * 40}[model]
    gen = torch.Generator().manual_seed(0)
    ours = [torch.randn(s, generator=gen).requires_grad_() for s in shapes]
    theirs = [p.detach().clone().requires_grad_() for p in ours]
    kw = {"lr": 1e-3, "momentum": 0.9, "centered": True}
    opt, ref = rmsprop.RMSprop(ours, **kw), torch.optim.RMSprop(theirs, **kw)
    rows, start, fused = [], time.perf_counter(), 0
    while time.perf_counter() - start < limit and fused < 30:
        grads = [torch.randn(s, generator=gen) for s in shapes]
        for a, b, g in zip(ours, theirs, grads):
            a.grad, b.grad = g, g.clone()
        t0 = time.perf_counter(); ref.step(); t1 = time.perf_counter(); opt.step()
        t2 = time.perf_counter()
        fused += opt.last_impl[0] == "numba"
        rows.append([t1 - t0, t2 - t1, opt.last_impl[0], t2 - start])
    print(json.dumps(rows))
""")


def measure(model: str, load: int, limit: float) -> dict:
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(load)]
    try:
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "NUMBA_CACHE_DIR": cache}
            env.pop("RMSPROP_BACKGROUND_COMPILE", None)  # as shipped: on
            run = subprocess.run([sys.executable, "-c", RUN, model, str(limit)], env=env,
                                 capture_output=True, text=True, check=True)  # fmt: skip
    finally:
        for spinner in spinners:
            spinner.kill()
    rows = json.loads(run.stdout)
    stand_in = [r for r in rows[1:] if r[2] != "numba"]
    fused = [r for r in rows if r[2] == "numba"]

    def median_ms(values: list[float]) -> float | None:
        return round(1e3 * statistics.median(values), 3) if values else None

    return {
        "model": model,
        "busy_processes_beside": load,
        "first_step_ms": {
            "torch": round(1e3 * rows[0][0], 1),
            "rmsprop": round(1e3 * rows[0][1], 1),
        },
        "stand_in_steps": len(stand_in),
        "stand_in_median_ms": {
            "torch": median_ms([r[0] for r in stand_in]),
            "rmsprop": median_ms([r[1] for r in stand_in]),
        },
        "stand_in_ratio_median": round(statistics.median(r[1] / r[0] for r in stand_in), 3)
        if stand_in
        else None,
        "first_fused_after_s": round(fused[0][3], 1) if fused else None,
        "fused_median_ms": {
            "torch": median_ms([r[0] for r in fused]),
            "rmsprop": median_ms([r[1] for r in fused]),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("mlp", "16M"), default="mlp")
    parser.add_argument("--load", type=int, default=0, help="busy processes beside the run")
    parser.add_argument("--limit", type=float, default=300, help="seconds the run may take")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = measure(args.model, args.load, args.limit)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
