"""Before/after in one run: ``rmsprop bench`` on an earlier commit and on the working tree,
interleaved round by round (the machine's speed drifts; pairs taken close together do
not), then the median of each side per suite, configuration and implementation.

    python benchmarks/ab_compare.py --base cceb079 --suite many-small,large --rounds 3 \
        --only "torch.optim for-loop,rmsprop numba" --json benchmarks/results/ab.json

The earlier commit is checked out with ``git worktree`` into a temporary folder and run
from its sources (``PYTHONPATH``) with this environment's packages.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def bench(src: Path, suite: str, repeats: int, only: str, out: Path) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    command = [sys.executable, "-m", "rmsprop", "bench", "--suite", suite, "--repeats",
               str(repeats), "--json", str(out)] + (["--only", only] if only else [])  # fmt: skip
    subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    return json.loads(out.read_text())["rows"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the earlier commit")
    parser.add_argument("--suite", default="many-small,large")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--only", default="")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    medians: dict[tuple[str, str, str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base),
                        args.base], check=True, capture_output=True)  # fmt: skip
        try:
            for suite in args.suite.split(","):
                for r in range(args.rounds):
                    for side, src in (("before", base / "src"), ("after", ROOT / "src")):
                        out = Path(tmp) / f"{side}-{suite}-{r}.json"
                        for row in bench(src, suite, args.repeats, args.only, out):
                            key = (suite, row["config"], row["impl"], side)
                            medians.setdefault(key, []).append(row["median_ms"])
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)],
                           check=False)  # fmt: skip
    table = [{"suite": s, "config": c, "impl": i, "side": side, "median_ms": statistics.median(v),
              "rounds_ms": v} for (s, c, i, side), v in sorted(medians.items())]  # fmt: skip
    for row in table:
        rounds = " ".join(f"{m:.2f}" for m in row["rounds_ms"])
        print(f"{row['suite']:18s} {row['config']:18s} {row['impl']:26s} {row['side']:6s} "
              f"{row['median_ms']:8.2f} ms  ({rounds})")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"base": args.base, "rows": table}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
