"""``rmsprop presets``, ``explain`` and ``diff``: generated from the preset records."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from ..algorithm import explain
from ..presets import PRESETS, SWITCHES, get_preset

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


def show_presets(console: Console | None = None) -> int:
    console = console or wide_console()
    table = Table(title="rmsprop presets", show_lines=False)
    columns = ["preset", "lr", "alpha", "eps", "eps in √", "v₀", "centered", "momentum", "lr in buf",
               "decoupled wd", "ema form"]  # fmt: skip
    for column in columns:
        table.add_column(column, overflow="fold")
    for p in PRESETS.values():
        table.add_row(
            p.name, _fmt(p.lr), _fmt(p.alpha), _fmt(p.eps), _fmt(p.eps_in_sqrt),
            _fmt(p.initial_accumulator_value), _fmt(p.centered), _fmt(p.momentum),
            _fmt(p.lr_in_momentum), _fmt(p.decoupled_weight_decay), p.ema_form,
        )  # fmt: skip
    console.print(table)
    console.print("rmsprop explain PRESET shows the equations; rmsprop diff A B compares two.")
    return 0


def show_explain(name: str, console: Console | None = None) -> int:
    console = console or wide_console(soft_wrap=True)  # equations are not re-flowed
    preset = get_preset(name)
    hp = preset.hyperparameters(lr=preset.lr if preset.lr is not None else 1.0)
    console.print(f"[bold]{preset.name}[/bold]: {preset.title}")
    console.print(f"source: {preset.source}\n")
    for line in explain(hp):
        console.print("  " + line)
    if preset.lr is None:
        console.print("\n  (η_t: this framework has no default lr; pass one)")
    console.print("\nwhy each switch has its value:")
    for switch, note in preset.notes.items():
        console.print(f"  {switch}: {note}")
    return 0


def show_diff(a: str, b: str, console: Console | None = None) -> int:
    console = console or wide_console()
    first, second = get_preset(a), get_preset(b)
    diff = first.differences(second)
    if not diff:
        console.print(f"{a} and {b} run the same algorithm with the same defaults.")
        return 0
    table = Table(title=f"{a} vs {b}")
    for column in ("switch", a, b, "what the difference does"):
        table.add_column(column, overflow="fold")
    for switch in ("lr", *SWITCHES):
        if switch in diff:
            table.add_row(switch, _fmt(diff[switch][0]), _fmt(diff[switch][1]), EFFECTS[switch])
    console.print(table)
    return 0
