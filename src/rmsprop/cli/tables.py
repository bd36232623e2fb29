"""``rmsprop presets``, ``explain`` and ``diff``: generated from the preset records."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from .._validation import validate_hyperparameters
from ..algorithm import explain
from ..presets import PRESETS, SWITCHES, Preset, get_preset

#: What changing each switch does, in one sentence (used by ``diff``).
EFFECTS = {
    "lr": "the default learning rate",
    "alpha": "how fast the average of g² forgets (higher: longer memory)",
    "eps": "the floor of the denominator; matters most where gradients are small",
    "eps_in_sqrt": "√(v+ε) vs √v+ε: a different floor, no exact conversion between them",
    "initial_accumulator_value": "v₀ = 1 makes the first steps tiny; v₀ = 0 makes them ≈ lr/√(1-α)",
    "centered": "divide by the standard deviation of g instead of its RMS (Graves)",
    "momentum": "heavy-ball momentum",
    "nesterov": "look-ahead momentum",
    "lr_in_momentum": "lr inside vs outside the buffer: trajectories differ whenever lr changes",
    "weight_decay": "the decay coefficient λ",
    "decoupled_weight_decay": "θ -= lr·λ·θ outside the preconditioner vs g += λθ inside it",
    "bias_correction": "divide the averages by 1 - αᵗ (early steps ≈ lr·sign(g))",
    "ema_form": "how the average is written: same math, different last bits",
    "centered_clamp": "clamp v - ḡ² at 0 so rounding cannot produce NaN",
}


def wide_console(**kwargs: Any) -> Console:
    """A terminal's own width; 140 columns when writing to a pipe or file (tables fit)."""
    console = Console(**kwargs)
    return console if console.is_terminal else Console(width=140, **kwargs)


def _fmt(value: Any) -> str:
    if value is None:
        return "(required)"
    if isinstance(value, bool):
        return "yes" if value else "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


PRESET_COLUMNS = {"lr": "lr", "alpha": "alpha", "eps": "eps", "eps_in_sqrt": "eps in √",
                  "initial_accumulator_value": "v₀", "centered": "centered", "momentum": "momentum",
                  "lr_in_momentum": "lr in buf", "decoupled_weight_decay": "decoupled wd",
                  "ema_form": "ema form"}  # fmt: skip
WIDE = 110  # narrower consoles get one paragraph per preset (a table would split numbers)


def show_presets(console: Console | None = None) -> int:
    console = console or wide_console()
    if console.width >= WIDE:
        table = Table(title="rmsprop presets", show_lines=False)
        for column in ("preset", *PRESET_COLUMNS.values()):
            table.add_column(column, no_wrap=True)
        for p in PRESETS.values():
            table.add_row(p.name, *(_fmt(getattr(p, key)) for key in PRESET_COLUMNS))
        console.print(table)
    else:
        for p in PRESETS.values():
            values = "  ".join(f"{label}={_fmt(getattr(p, key))}".replace(" ", "\u00a0")
                               for key, label in PRESET_COLUMNS.items())  # fmt: skip
            console.print(f"[bold]{p.name}[/bold]  {values}")
    console.print("rmsprop explain PRESET shows the equations; rmsprop diff A B compares two.")
    return 0


def switches(preset: Preset, changes: dict[str, Any]) -> dict[str, Any]:
    """The preset's lr and switches with ``changes`` (validated), lr 1 if it has none."""
    values = preset.hyperparameters(**{"lr": preset.lr if preset.lr is not None else 1.0,
                                       **changes})  # fmt: skip
    validate_hyperparameters(values)
    return values


def show_explain(name: str, changes: dict[str, Any] | None = None,
                 console: Console | None = None) -> int:  # fmt: skip
    console = console or wide_console(soft_wrap=True)  # equations are not re-flowed
    preset = get_preset(name)
    hp = switches(preset, changes or {})
    changed = ", ".join(f"{k}={v!r}" for k, v in (changes or {}).items())
    console.print(f"[bold]{preset.name}[/bold]{' with ' + changed if changed else ''}: {preset.title}",
                  markup=True)  # fmt: skip
    console.print(f"source: {preset.source}\n")
    for line in explain(hp):
        console.print("  " + line)
    if preset.lr is None and "lr" not in (changes or {}):
        console.print("\n  (η_t: this framework has no default lr; pass one)")
    console.print("\nwhy each switch has its value:")
    for switch, note in preset.notes.items():
        console.print(f"  {switch}: {note}")
    return 0


def show_diff(a: str, b: str, changes: dict[str, Any] | None = None,
              console: Console | None = None) -> int:  # fmt: skip
    console = console or wide_console()
    first, second = (switches(get_preset(name), changes or {}) for name in (a, b))
    first["lr"] = get_preset(a).lr if "lr" not in (changes or {}) else first["lr"]
    second["lr"] = get_preset(b).lr if "lr" not in (changes or {}) else second["lr"]
    diff = {k: (first[k], second[k]) for k in ("lr", *SWITCHES) if first[k] != second[k]}
    if not diff:
        console.print(f"{a} and {b} run the same algorithm with the same defaults.")
        return 0
    table = Table(title=f"{a} vs {b}")
    for column in ("switch", a, b):
        table.add_column(column, no_wrap=True)
    table.add_column("what the difference does", ratio=1)  # wraps between words
    for switch in ("lr", *SWITCHES):
        if switch in diff:
            table.add_row(switch, _fmt(diff[switch][0]), _fmt(diff[switch][1]), EFFECTS[switch])
    console.print(table)
    return 0
