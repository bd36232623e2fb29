"""The quality suite of compact state: every problem and switch combination with fp32,
bf16 and 8-bit state; the final losses (mean of the last tenth of the steps) and each
compact form's difference from fp32 state, as JSON and as the Markdown table of
BENCHMARKS.md.

    python benchmarks/quality.py --json benchmarks/results/quality.json
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from rmsprop.cli import quality


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = []
    print("| problem | switches | fp32 | bf16 | vs fp32 | int8 | vs fp32 |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for problem in quality.PROBLEMS:
        for config in quality.CONFIGS:
            loss = {s: quality.final_loss(quality.run(problem, s, config, args.seed))
                    for s in quality.STATES}  # fmt: skip
            rows.append({"problem": problem, "config": config, **loss})
            f = loss["fp32"]
            print(f"| {problem} | {config} | {f:.5g} | {loss['bf16']:.5g} | "
                  f"{(loss['bf16'] - f) / f:+.2%} | {loss['int8']:.5g} | "
                  f"{(loss['int8'] - f) / f:+.2%} |", flush=True)  # fmt: skip
    if args.json:
        meta = {"torch": torch.__version__, "machine": platform.processor() or platform.machine(),
                "seed": args.seed}  # fmt: skip
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
