"""``rmsprop port``: a framework's optimizer description -> the exact equivalent in each
target, the switch table, and what each native optimizer cannot express (measured)."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

from ..port.measure import MEASURE_LEGEND
from ..port.sources import shown
from ..port.targets import matters, number
from .checks import UsageError

FRAMEWORK_TITLES = {"torch": "torch.optim.RMSprop", "optax": "optax.rmsprop",
                    "keras": "keras.optimizers.RMSprop"}  # fmt: skip
SHORT = {"torch": "torch.optim", "optax": "optax", "keras": "keras"}
#: the Keras line runs on every Keras backend (tensorflow, jax, torch: tests/frontends)
TARGET_TITLES = {"torch": "PyTorch", "jax": "JAX / optax",
                 "keras": "Keras 3 (TensorFlow, JAX or PyTorch backend)"}  # fmt: skip


def parse_pairs(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` words -> a dict; values are Python literals (numbers, True/False/None,
    quoted strings, lists, dicts), ``true``/``false``/``none`` too, anything else a string."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"expected KEY=VALUE, got {shown(pair)}")
        if key in out:
            raise UsageError(f"{_plain(key)} is given twice")
        lowered = {"true": "True", "false": "False", "none": "None", "null": "None"}
        try:
            out[key] = ast.literal_eval(lowered.get(text.lower(), text))
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            out[key] = text
    return out


def _plain(text: str) -> str:
    """A word as typed, or cut (``shown``) when it is too long to echo."""
    return text if len(text) <= 60 and text.isprintable() else shown(text)


def read_description(source: str, pairs: list[str], config: str | None) -> Any:
    """The description from ``KEY=VALUE`` words (timm: or train.py's flags, passed on as
    words), or from ``--config``: JSON text when it starts with ``{`` (any length: a Keras
    ``get_config()`` is longer than a file name may be), else a JSON file's path."""
    if config is None:
        if source == "timm" and any(p.startswith("-") for p in pairs):
            return list(pairs)  # train.py's flags: the timm reader parses them as train.py does
        return parse_pairs(pairs)
    if pairs:
        raise UsageError("give either KEY=VALUE pairs or --config, not both")
    if config.lstrip().startswith(("{", "[")):
        text = config
    else:
        try:
            text = Path(config).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UsageError(f"--config {_plain(config)}: no such file (JSON text starts with "
                             "'{')") from None  # fmt: skip
        except (OSError, UnicodeDecodeError) as err:
            why = getattr(err, "strerror", None) or type(err).__name__
            raise UsageError(f"--config {_plain(config)}: cannot read it ({why})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise UsageError(f"--config is neither a JSON file nor JSON text ({err.msg} at line "
                         f"{err.lineno} column {err.colno})") from None  # fmt: skip


def show_port(source: str, pairs: list[str], config: str | None, steps: int) -> int:
    from rich.console import Console
    from rich.table import Table

    from ..port import translate

    result = translate(source, read_description(source, pairs, config), steps=steps)
    console = Console()
    console.print(f"Porting {result.source.title} (preset {result.preset} with overrides)",
                  soft_wrap=True, markup=False, style="bold")  # fmt: skip
    for note in result.source.notes:
        console.print(f"  note: {note}", soft_wrap=True, markup=False, highlight=False)

    table = Table(title="Switches: the recipe, and what each native RMSprop runs",
                  caption="≠: the native optimizer cannot express it (ema_form decides only "
                  "the last bits; lr_in_momentum and nesterov matter only with momentum).")  # fmt: skip
    table.add_column("switch", no_wrap=True)
    table.add_column("recipe")
    for name in SHORT.values():
        table.add_column(name)
    for switch, wanted, runs in result.rows:
        cells = [_cell(runs[f], wanted, not matters(switch, result.source.hyperparameters))
                 for f in SHORT]  # fmt: skip
        table.add_row(switch, _show(wanted), *cells)
    console.print(table)

    lacking = {label: how for lacks in result.caveats.values() for label, how in lacks}
    console.print("\n[bold]Exact equivalents[/bold] (the same update, every switch"
                  + (", except what a line names)" if lacking else ")"))  # fmt: skip
    for target, code in result.exact.items():
        indented = "\n".join("    " + line for line in code.splitlines())
        lacks = [label for label, _ in result.caveats.get(target, ())]
        title = TARGET_TITLES[target] + (f" (exact except {', '.join(lacks)})" if lacks else "")
        console.print(f"  {title}:\n{indented}", soft_wrap=True, highlight=False, markup=False)
    if lacking:
        console.print("  What a line lacks, and how to keep it:")
    for label, how in lacking.items():
        console.print(f"    {label}: {how}", soft_wrap=True, highlight=False, markup=False)

    console.print(f"\n[bold]Native optimizers[/bold] (measured: noisy least squares, 20 "
                  f"parameters, {steps} steps, float64)")  # fmt: skip
    console.print(f"  {MEASURE_LEGEND}", soft_wrap=True, highlight=False, markup=False)
    for name, native in result.native.items():
        console.print(f"  {FRAMEWORK_TITLES[name]}: {native.code}", soft_wrap=True, highlight=False,
                      markup=False)  # fmt: skip
        if not native.differences:
            console.print("    expresses this recipe exactly")
            continue
        for switch, wanted, runs, remedy in native.differences:
            hint = f" ({remedy})" if remedy else ""
            console.print(f"    cannot express {switch}={_show(wanted)}: runs {_show(runs)}{hint}",
                          soft_wrap=True, highlight=False, markup=False)  # fmt: skip
        if native.note:
            console.print(f"    {native.note}", soft_wrap=True, highlight=False, markup=False)
        for d in native.measured:
            console.print(f"    {d.describe()}", soft_wrap=True, highlight=False, markup=False)
    return 0


def _show(value: Any) -> str:
    """A table cell: floats as the shortest decimal (float32 values as the framework holds
    them: 0.001, not 0.0010000000474974513)."""
    if value is None:
        return "-"
    return f"{float(number(value)):g}" if isinstance(value, float) else str(value)


def _cell(value: Any, wanted: Any, last_bit: bool) -> str:
    return _show(value) if value == wanted or last_bit else f"[red]{_show(value)} ≠[/red]"
