"""Argument parsing and dispatch. ``main(argv) -> exit code``; nothing here exits the process."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .._validation import did_you_mean
from .checks import UsageError, device, positive_int, writable_file, writable_folder


class OneLineParser(argparse.ArgumentParser):
    """argparse with its errors on one line (no usage block): ``rmsprop X: error: ...``."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def _check_value(self, action: argparse.Action, value: object) -> None:
        """argparse's check of ``choices``, saying which choice a typo was meant to be
        (a sub-command too)."""
        try:
            super()._check_value(action, value)
        except argparse.ArgumentError as err:
            raise argparse.ArgumentError(
                action, f"{err.message}{did_you_mean(value, action.choices or ())}"
            ) from None


PORT_SOURCES = ("torch", "keras", "tf1", "optax", "timm", "sb3")


class PortParser(OneLineParser):
    """``rmsprop port``'s parser. For the timm source every word after it that is not port's
    own option (``--config``, ``--steps``, ``-h``) is kept, in order, as ``pairs``: timm's
    train.py flags (``--opt rmsproptf --opt-eps .001``) pass through as typed, and the timm
    reader parses them as train.py does."""

    OWN = ("--config", "--steps")

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        args = list(sys.argv[1:] if args is None else args)
        own, words, source, i = [], [], None, 0
        while i < len(args):
            word, name = args[i], args[i].split("=", 1)[0]
            if name in self.OWN:
                takes_next = "=" not in word and i + 1 < len(args)
                own.extend(args[i : i + 2] if takes_next else [word])
                i += 2 if takes_next else 1
                continue
            if name in ("-h", "--help"):
                own.append(word)
            elif source is None and not word.startswith("-"):
                source = word
            elif source is not None:
                words.append(word)
            else:  # an option before the source: argparse says what is wrong with it
                return super().parse_known_args(args, namespace)
            i += 1
        if source != "timm":
            return super().parse_known_args(args, namespace)
        namespace, extras = super().parse_known_args([source, *own], namespace)
        namespace.pairs = words
        return namespace, extras


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="rmsprop",
        description="RMSprop, every framework's variant, exactly: see what it does, compare, measure.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="run the demo and write an HTML report with plots")
    demo.add_argument("--out", type=Path, default=Path("rmsprop-report"), help="output folder")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--quick", action="store_true",
                      help="a shorter run (17-25 s on 2 cores, BENCHMARKS.md)")  # fmt: skip

    bench = sub.add_parser("bench", help="time every implementation against torch.optim.RMSprop")
    bench.add_argument(
        "--suite",
        default="large,many-small,embedding",
        help="comma-separated suites: large, many-small, embedding, state (fp32 / bf16 / int8 "
        "optimizer state), state-many-small, tiny",
    )
    bench.add_argument("--repeats", type=positive_int, default=20,
                       help="timed steps per measurement (at least 1; default 20)")  # fmt: skip
    bench.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    bench.add_argument(
        "--only", default="", help="comma-separated substrings of implementation names"
    )
    bench.add_argument("--json", type=Path, help="also write the results as JSON")

    sub.add_parser("presets", help="the table of presets and their switches")
    sub.add_parser("info", help="versions, back ends, threads, the kernel cache, what auto runs")
    warmup = sub.add_parser("warmup", help="compile the fused CPU kernels ahead of time")
    warmup.add_argument("--preset", action="append", default=None,
                        help="a preset whose kernels to compile (repeatable; default torch)")  # fmt: skip
    warmup.add_argument("--state-dtype", action="append", default=None,
                        choices=("fp32", "bf16", "int8"),
                        help="state form (repeatable; default fp32)")  # fmt: skip
    add_switches(warmup, "without them: plain, momentum, centered, both")
    warmup.add_argument("--kernels", type=Path, default=None, metavar="FILE",
                        help="compile the kernels a run recorded in FILE (run it with "
                             "RMSPROP_RECORD_KERNELS=FILE) instead")  # fmt: skip
    warmup.add_argument("--jobs", type=int, default=1,
                        help="with --kernels: processes that compile at once (default 1)")  # fmt: skip

    explain = sub.add_parser("explain", help="the exact update equations a preset runs")
    explain.add_argument("preset")
    add_switches(explain)

    diff = sub.add_parser(
        "diff", help="which switches differ between two presets, and what each does"
    )
    diff.add_argument("a")
    diff.add_argument("b")
    add_switches(diff, "applied to both presets")

    port = sub.add_parser(
        "port",
        help="a framework's optimizer description -> the exact equivalent in PyTorch, JAX "
        "and Keras, and what each native optimizer cannot express",
        description="Examples: rmsprop port tf1 learning_rate=0.016 decay=0.9 momentum=0.9 "
        "epsilon=1e-3 | rmsprop port torch lr=7e-4 alpha=0.99 eps=1e-5 | rmsprop port keras "
        "--config config.json (or the JSON text) | rmsprop port timm opt=rmsproptf lr=0.016 "
        "weight_decay=1e-5 | rmsprop port timm --opt rmsproptf --opt-eps .001 --lr .048 "
        "(train.py's flags as typed) | rmsprop port sb3 "
        "policy_kwargs='dict(optimizer_class=RMSpropTFLike, optimizer_kwargs=dict(eps=1e-5))'",
    )
    port.__class__ = PortParser  # timm's train.py flags pass through as words
    port.add_argument("source", choices=PORT_SOURCES, help="the description's format")
    port.add_argument("pairs", nargs="*", metavar="KEY=VALUE",
                      help="the framework's own argument names and values (timm: also "
                      "train.py's flags)")  # fmt: skip
    port.add_argument("--config", help="a JSON file, or JSON text (starting with '{'): a Keras "
                      "get_config(), any of the KEY=VALUE descriptions")  # fmt: skip
    port.add_argument("--steps", type=positive_int, default=200,
                      help="steps of the measured comparison (default 200)")  # fmt: skip
    return parser


NUMBERS = ("lr", "alpha", "eps", "momentum", "weight_decay", "initial_accumulator_value")
FLAGS = ("eps_in_sqrt", "centered", "nesterov", "lr_in_momentum", "decoupled_weight_decay",
         "bias_correction", "centered_clamp", "maximize")  # fmt: skip


def add_switches(parser: argparse.ArgumentParser, where: str = "") -> None:
    """--lr, --alpha, ..., --centered/--no-centered, --ema-form: overrides of a preset."""
    group = parser.add_argument_group(
        f"switches (override the preset's{'; ' + where if where else ''})"
    )
    for name in NUMBERS:
        group.add_argument(f"--{name.replace('_', '-')}", dest=name, type=float, metavar="X")
    for name in FLAGS:
        group.add_argument(f"--{name.replace('_', '-')}", dest=name,
                           action=argparse.BooleanOptionalAction)  # fmt: skip
    group.add_argument("--ema-form", dest="ema_form", choices=("torch", "multiply", "delta"))


def overrides(args: argparse.Namespace) -> dict[str, object]:
    return {k: getattr(args, k) for k in (*NUMBERS, *FLAGS, "ema_form")
            if getattr(args, k, None) is not None}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; every error is one line on stderr and a non-zero exit status."""
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except KeyboardInterrupt:
        print(f"rmsprop {args.command}: interrupted", file=sys.stderr)
        return 130
    except (UsageError, ValueError, ImportError) as err:
        print(f"rmsprop {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except Exception as err:  # a defect of ours: still one line, and where to report it
        print(f"rmsprop {args.command}: internal error: {type(err).__name__}: {_one_line(err)} "
              "(please report it with the command)", file=sys.stderr)  # fmt: skip
        return 1


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _run(args: argparse.Namespace) -> int:
    if args.command == "demo":
        from .demo import run_demo

        return run_demo(out=writable_folder("--out", args.out), seed=args.seed, quick=args.quick)
    if args.command == "bench":
        from .bench import run_bench

        only = {o for o in args.only.split(",") if o} or None
        json_path = writable_file("--json", args.json) if args.json else None
        return run_bench(args.suite.split(","), args.repeats, device(args.device), json_path,
                         only)  # fmt: skip
    if args.command == "warmup":
        from rich.console import Console

        from ..presets import get_preset
        from .warmup import warm_up

        if args.jobs < 1:
            raise UsageError(f"--jobs {args.jobs}: must be at least 1")
        if args.kernels is not None:
            if args.preset or args.state_dtype or overrides(args):
                raise UsageError("--kernels takes no --preset, --state-dtype or switches "
                                 "(the file names each kernel)")  # fmt: skip
            from .warmup import warm_up_recorded

            return warm_up_recorded(args.kernels, args.jobs, Console())
        if args.jobs != 1:
            raise UsageError("--jobs goes with --kernels (the presets' kernels compile here)")
        presets = args.preset or ["torch"]
        for name in presets:
            get_preset(name)  # an unknown preset is an error before any compile
        return warm_up(presets, args.state_dtype or ["fp32"], overrides(args), Console())
    if args.command == "info":
        from .info import show_info

        return show_info()
    if args.command == "port":
        from .port import show_port

        return show_port(args.source, args.pairs, args.config, args.steps)
    from . import tables

    if args.command == "presets":
        return tables.show_presets()
    if args.command == "explain":
        return tables.show_explain(args.preset, overrides(args))
    if args.command == "diff":
        return tables.show_diff(args.a, args.b, overrides(args))
    raise UsageError(f"unknown command {args.command!r}")  # argparse refuses it first
