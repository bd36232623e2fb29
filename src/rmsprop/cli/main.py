"""Argument parsing and dispatch. ``main(argv) -> exit code``; nothing here exits the process."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rmsprop",
        description="RMSprop, every framework's variant, exactly: see what it does, compare, measure.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="run the demo and write an HTML report with plots")
    demo.add_argument("--out", type=Path, default=Path("rmsprop-report"), help="output folder")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--quick", action="store_true", help="a shorter run (under 20 s)")

    bench = sub.add_parser("bench", help="time every implementation against torch.optim.RMSprop")
    bench.add_argument(
        "--suite",
        default="large,many-small,embedding",
        help="comma-separated suites: large, many-small, embedding, state (fp32 / bf16 / int8 "
        "optimizer state), state-many-small, tiny",
    )
    bench.add_argument("--repeats", type=int, default=20, help="timed steps per measurement")
    bench.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    bench.add_argument(
        "--only", default="", help="comma-separated substrings of implementation names"
    )
    bench.add_argument("--json", type=Path, help="also write the results as JSON")

    sub.add_parser("presets", help="the table of presets and their switches")

    explain = sub.add_parser("explain", help="the exact update equations a preset runs")
    explain.add_argument("preset")

    diff = sub.add_parser(
        "diff", help="which switches differ between two presets, and what each does"
    )
    diff.add_argument("a")
    diff.add_argument("b")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "demo":
            from .demo import run_demo

            return run_demo(out=args.out, seed=args.seed, quick=args.quick)
        if args.command == "bench":
            from .bench import run_bench

            only = {o for o in args.only.split(",") if o} or None
            return run_bench(args.suite.split(","), args.repeats, args.device, args.json, only)
        from . import tables

        if args.command == "presets":
            return tables.show_presets()
        if args.command == "explain":
            return tables.show_explain(args.preset)
        if args.command == "diff":
            return tables.show_diff(args.a, args.b)
    except (ValueError, ImportError) as err:
        print(f"rmsprop {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 1  # pragma: no cover - argparse rejects unknown commands
