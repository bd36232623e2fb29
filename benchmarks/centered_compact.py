"""The fused kernel's step with fp32, int8 and bf16 state for one switch combination:
16M fp32 parameters in 40 tensors, ``impl="numba"`` (compiled in place), the median of 20
steps after the first.

    python benchmarks/centered_compact.py --switches momentum+centered

Switches: ``plain``, ``momentum``, ``centered``, ``momentum+centered`` (momentum 0.9).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

SWITCHES = {"plain": {}, "momentum": {"momentum": 0.9}, "centered": {"centered": True},
            "momentum+centered": {"momentum": 0.9, "centered": True}}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--switches", choices=SWITCHES, default="momentum+centered")
    args = parser.parse_args()
    os.environ["RMSPROP_BACKGROUND_COMPILE"] = "0"
    import torch

    import rmsprop

    torch.manual_seed(0)
    for name, state in (("fp32", None), ("int8", "int8"), ("bf16", torch.bfloat16)):
        params = [torch.randn(400_000, requires_grad=True) for _ in range(40)]
        opt = rmsprop.RMSprop(params, lr=0.01, impl="numba", state_dtype=state,
                              **SWITCHES[args.switches])  # fmt: skip
        for p in params:
            p.grad = torch.randn(p.shape)
        opt.step()
        times = []
        for _ in range(20):
            start = time.perf_counter()
            opt.step()
            times.append(time.perf_counter() - start)
        print(f"{args.switches}, {name} state: {statistics.median(times) * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
