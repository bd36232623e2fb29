"""Pages and figures the documentation build generates from the code and the results, so the
site cannot drift from them (run by the mkdocs-gen-files plugin on every build):

- ``algorithm.md``: the algorithm box, ``rmsprop.ALGORITHM``;
- ``presets.md``: every preset's switches, source and equations, from ``rmsprop.PRESETS``;
- ``porting/from-*.md``: per framework, the translation tables and measured native limits,
  from ``rmsprop.port``;
- ``cli.md``: every command's ``--help``, from the argument parser;
- ``img/*.png``: the performance plots, from ``benchmarks/results/*.json``;
- ``benchmarks.md``: BENCHMARKS.md itself.
"""

from __future__ import annotations

import io
import json
import shlex
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import mkdocs_gen_files

from rmsprop import ALGORITHM, PRESETS
from rmsprop.algorithm import explain
from rmsprop.cli.main import build_parser
from rmsprop.port import native_ports, translate
from rmsprop.port.measure import MEASURE_LEGEND
from rmsprop.port.targets import exact_targets, matters, switch_rows

ROOT = Path(__file__).resolve().parent.parent
#: the smallest text in a figure, in points at 110 dpi: figures are drawn at most about 10.5
#: inches wide, so at a 1280-px window (an article about 760 px wide) it shows at 9 px or more
#: (``tests/docs/test_site.py`` measures it in Chromium)
SMALLEST_FONT_PT = 10
FIGURE_DPI = 110
RESULTS = ROOT / "benchmarks" / "results"


#: the Keras line runs on every Keras backend (tested on each: tests/frontends)
KERAS_TITLE = "Keras 3 (TensorFlow, JAX or PyTorch backend)"


def write(path: str, text: str) -> None:
    with mkdocs_gen_files.open(path, "w") as fh:
        fh.write(text)


def table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _cell(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).replace("|", "\\|")


# ------------------------------------------------------------------------------ presets
def presets_page() -> str:
    rows = [[f"`{p.name}`", p.title, p.lr, p.alpha, p.eps, "inside" if p.eps_in_sqrt else "outside",
             p.initial_accumulator_value, p.centered, p.momentum, p.lr_in_momentum,
             p.ema_form, p.division_form] for p in PRESETS.values()]  # fmt: skip
    text = ["# Presets\n",
            "Generated from `rmsprop.PRESETS` when the site is built. Each preset is a frozen "
            "record of every switch of the [algorithm](concepts.md), with the source it was read "
            "from and a note per switch. `rmsprop.RMSprop.from_preset`, `rmsprop.reference."
            "from_preset`, `rmsprop.optax.from_preset` and `rmsprop.keras.RMSprop(preset=...)` "
            "all read these records; arguments you pass win.\n",
            table(["preset", "reproduces", "lr", "α", "ε", "ε", "v₀", "centered", "μ",
                   "lr in momentum", "ema_form", "division_form"], rows)]  # fmt: skip
    for p in PRESETS.values():
        hp = p.hyperparameters(lr=p.lr if p.lr is not None else 1.0)
        text.append(f"\n## `{p.name}`: {p.title}\n\nSource: {p.source}\n")
        if p.notes:
            text.append(table(["switch", "why"], [[f"`{k}`", v] for k, v in p.notes.items()]))
        text.append("\nThe update it runs (`rmsprop explain " + p.name + "`):\n\n```text\n"
                    + "\n".join(explain(hp)) + "\n```\n")  # fmt: skip
    return "\n".join(text)


# ------------------------------------------------------------------------------ porting
#: framework page -> (title, rmsprop port source or None, a typical description, preset)
GUIDES = {
    "tf1": ("TensorFlow 1 `tf.compat.v1.train.RMSPropOptimizer`", "tf1",
            {"learning_rate": 0.016, "decay": 0.9, "momentum": 0.9, "epsilon": 1e-3}, "tf1"),
    "keras": ("Keras 3 `keras.optimizers.RMSprop`", "keras",
              {"learning_rate": 1e-3, "rho": 0.9, "momentum": 0.9, "weight_decay": 1e-4}, "keras"),
    "optax": ("optax `optax.rmsprop`", "optax",
              {"learning_rate": 1e-3, "decay": 0.9, "momentum": 0.9, "nesterov": True}, "optax"),
    "timm": ("timm `create_optimizer_v2(opt='rmsproptf')`", "timm",
             {"opt": "rmsproptf", "lr": 0.016, "weight_decay": 1e-5}, "timm_tf"),
    "sb3": ("Stable-Baselines3 A2C with `RMSpropTFLike`", "sb3",
            {"policy_kwargs": "dict(optimizer_class=RMSpropTFLike, optimizer_kwargs=dict(eps=1e-5))"},
            "sb3_tf_like"),
    "torch": ("PyTorch `torch.optim.RMSprop`", "torch",
              {"lr": 7e-4, "alpha": 0.99, "eps": 1e-5, "momentum": 0.9}, "torch"),
}  # fmt: skip
FRAMEWORKS = {"torch": "torch.optim.RMSprop", "optax": "optax.rmsprop",
              "keras": "keras.optimizers.RMSprop"}  # fmt: skip


def _mark(value: object, wanted: object, relevant: bool) -> str:
    """A native optimizer's value, marked where it cannot express the recipe."""
    return _cell(value) if value == wanted or not relevant else f"**{_cell(value)}** ≠"


def porting_page(key: str) -> str:
    title, source, description, preset = GUIDES[key]
    if source is not None:
        result = translate(source, description)
        hp, notes, exact = result.source.hyperparameters, result.source.notes, result.exact
        natives, caveats = result.native, result.caveats
        call = f"rmsprop port {source} " + " ".join(
            shlex.quote(f"{k}={v}") for k, v in description.items()
        )
    else:  # no reader for it: the preset with the description's values
        hp = PRESETS[preset].hyperparameters(**description, maximize=False, clipvalue=None,
                                             clipnorm=None, global_clipnorm=None)  # fmt: skip
        notes, exact, natives, call = (), exact_targets(hp, preset), native_ports(hp), None
        caveats = {}
    lines = [f"# Porting from {title}\n",
             f"Generated from `rmsprop.port` and the `{preset}` preset when the site is built "
             "(the numbers below are measured by the build: a noisy least squares, 20 "
             "parameters, 200 steps, float64).\n"]  # fmt: skip
    if call:
        lines.append(f"A typical recipe, as the command line reads it:\n\n```bash\n{call}\n```\n")
    for note in notes:
        lines.append(f"!!! note\n    {note}\n")
    rows = [
        [f"`{switch}`", wanted, *(_mark(runs[f], wanted, matters(switch, hp)) for f in FRAMEWORKS)]
        for switch, wanted, runs in switch_rows(hp)
    ]
    lines.append(
        "## The switches, and what each native RMSprop runs\n\n≠ marks a switch the "
        "native optimizer cannot express (`ema_form` decides only the last bits).\n"
    )
    lines.append(table(["switch", "this recipe", *FRAMEWORKS.values()], rows))
    lines.append("\n## The exact equivalent in each framework\n")
    for target, code in exact.items():
        lines.append(f"**{ {'torch': 'PyTorch', 'jax': 'JAX', 'keras': KERAS_TITLE}[target] }**\n\n"
                     f"```python\n{code}\n```\n")  # fmt: skip
        lacks = caveats.get(target, ())
        if lacks:
            lines.append(f"Exact except {', '.join(f'`{label}`' for label, _ in lacks)}.\n")
    lacking = {label: how for lacks in caveats.values() for label, how in lacks}
    if lacking:
        lines.append("What a line lacks, and how to keep it:\n")
        lines.extend(f"- `{label}`: {how}" for label, how in lacking.items())
        lines.append("")
    lines.append("## The native optimizers\n")
    lines.append(f"{MEASURE_LEGEND}\n")
    for name, native in natives.items():
        lines.append(f"### {FRAMEWORKS[name]}\n\n```python\n{native.code}\n```\n")
        if not native.differences:
            lines.append("Expresses this recipe exactly.\n")
            continue
        lines.append(table(["cannot express", "wanted", "runs", "what to do"],
                           [[f"`{s}`", w, r, remedy or "—"]
                            for s, w, r, remedy in native.differences]))  # fmt: skip
        if native.note:
            lines.append(f"{native.note}.\n")
        if native.measured:
            lines.append(table(["lr", "apart after 200 steps", "final loss", "exact", "reading"],
                               [[d.schedule, f"{d.distance:.2%}", f"{d.loss_native:.4g}",
                                 f"{d.loss_exact:.4g}", d.remark() or "—"]
                                for d in native.measured]))  # fmt: skip
    return "\n".join(lines)


# ------------------------------------------------------------------------------ CLI
def cli_page() -> str:
    parser = build_parser()
    lines = ["# Command line\n",
             "Generated from the argument parser when the site is built. `python -m rmsprop` is "
             "the same command. Every error is one line on stderr and a non-zero exit status.\n",
             f"```text\n{parser.format_help()}```\n"]  # fmt: skip
    commands = parser._subparsers._group_actions[0].choices  # argparse keeps them here
    for name, sub in commands.items():
        lines.append(f"## `rmsprop {name}`\n\n```text\n{sub.format_help()}```\n")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ figures
def save(fig, path: str) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=FIGURE_DPI, bbox_inches="tight")
    plt.close(fig)
    with mkdocs_gen_files.open(path, "wb") as fh:
        fh.write(buffer.getvalue())


def speed_figure(name: str, path: str) -> None:
    """Speed-up over torch.optim.RMSprop per implementation, one panel per suite/config."""
    data = json.loads((RESULTS / name).read_text())
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in data["rows"]:
        groups.setdefault((row["suite"], row["config"]), []).append(row)
    columns = min(2, len(groups))
    lines = -(-len(groups) // columns)
    fig, axes = plt.subplots(lines, columns, figsize=(5.2 * columns, 3.0 * lines), squeeze=False)
    for ax in axes.flat[len(groups) :]:
        ax.set_visible(False)
    for ax, ((suite, config), rows) in zip(axes.flat, groups.items()):
        rows = sorted(
            (r for r in rows if r["speedup_vs_torch"] is not None),
            key=lambda r: r["speedup_vs_torch"],
        )  # (rows that did not run: None)
        ax.barh([r["impl"] for r in rows], [r["speedup_vs_torch"] for r in rows], color="#3f51b5")
        ax.axvline(1.0, color="grey", lw=0.8)
        ax.set_title(f"{suite}, {config}", fontsize=SMALLEST_FONT_PT + 1)
        ax.set_xlabel("speed-up over torch.optim.RMSprop (for-loop)", fontsize=SMALLEST_FONT_PT)
        ax.tick_params(labelsize=SMALLEST_FONT_PT)
    env = data["environment"]
    triad = data["triad_gbps"]
    triad = max(triad.values()) if isinstance(triad, dict) else triad  # per thread pool
    fig.suptitle(f"{env['processor']}, {env['cpus']} cores, torch {env['torch']}; triad "
                 f"{triad:.1f} GB/s; median of {data['repeats']} steps",
                 fontsize=SMALLEST_FONT_PT + 1)  # fmt: skip
    fig.tight_layout()
    save(fig, path)


def quality_figure(path: str) -> None:
    data = json.loads((RESULTS / "cpu-2core-amd-epyc-quality.json").read_text())
    fig, ax = plt.subplots(figsize=(10, 4.2))
    labels = [f"{r['problem']} / {r['config']}" for r in data["rows"]]
    for offset, form in ((-0.2, "bf16"), (0.2, "int8")):
        ax.bar([i + offset for i in range(len(labels))],
               [100 * (r[form] / r["fp32"] - 1) for r in data["rows"]], width=0.4, label=form)  # fmt: skip
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=SMALLEST_FONT_PT)
    ax.tick_params(axis="y", labelsize=SMALLEST_FONT_PT)
    ax.set_ylabel("final loss vs fp32 state (%)", fontsize=SMALLEST_FONT_PT)
    ax.set_title("Compact state: final loss relative to fp32 state (40 runs)",
                 fontsize=SMALLEST_FONT_PT + 1)  # fmt: skip
    ax.legend(fontsize=SMALLEST_FONT_PT)
    fig.tight_layout()
    save(fig, path)


def optax_figure(path: str) -> None:
    data = json.loads((RESULTS / "cpu-2core-amd-epyc-optax-jit.json").read_text())
    fig, ax = plt.subplots(figsize=(7, 3.2))
    names = [r["config"] for r in data["rows"]]
    for offset, key in ((-0.2, "rmsprop.optax ms"), (0.2, "optax.rmsprop ms")):
        ax.bar([i + offset for i in range(len(names))], [r[key] for r in data["rows"]], width=0.4,
               label=key.removesuffix(" ms"))  # fmt: skip
    ax.set_xticks(range(len(names)), names, fontsize=SMALLEST_FONT_PT)
    ax.tick_params(axis="y", labelsize=SMALLEST_FONT_PT)
    ax.set_ylabel("ms per jitted step", fontsize=SMALLEST_FONT_PT)
    ax.set_title(
        f"JAX, {data['size'] / 2**20:.0f}M float32 parameters (jax {data['jax']})",
        fontsize=SMALLEST_FONT_PT + 1,
    )
    ax.legend(fontsize=SMALLEST_FONT_PT)
    fig.tight_layout()
    save(fig, path)


write(
    "algorithm.md",
    "# The algorithm box\n\nGenerated from `rmsprop.ALGORITHM`, the text every "
    "implementation numbers its steps by ([rendered with math](concepts.md#the-algorithm)).\n\n"
    f"```text\n{ALGORITHM}\n```\n",
)
write("presets.md", presets_page())
for key in GUIDES:
    write(f"porting/from-{key}.md", porting_page(key))
write("cli.md", cli_page())
speed_figure("cpu-2core-amd-epyc.json", "img/speed-large.png")
speed_figure("cpu-2core-amd-epyc-many-small.json", "img/speed-many-small.png")
quality_figure("img/quality.png")
optax_figure("img/optax-jit.png")
write("benchmarks.md", (ROOT / "BENCHMARKS.md").read_text(encoding="utf-8"))
