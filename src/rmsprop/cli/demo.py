"""``rmsprop demo``: see RMSprop work, as an HTML report with plots and a printed summary.

Sections: (1) the tutorials' linear regression with the NumPy RMSprop and a step-decay
schedule; (2) a race of optimizers on an elongated bowl and on Rosenbrock, trajectories
over the contours; (3) a small MLP on scikit-learn's digits with torch optimizers and
rmsprop presets; (4) the comparison table, built from the presets and measured results.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import reference as ref
from ..presets import PRESETS
from ..problems import (
    Surface,
    elongated_bowl,
    fit_linear_regression,
    linear_regression_data,
    rosenbrock,
    run_on_surface,
)
from .figures import pyplot, save
from .report import Report, Section

LR_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)

#: The optimizers raced in section 2: name -> (factory lr -> transform, core idea).
RACERS: dict[str, tuple[Callable[[float], ref.Transform], str]] = {
    "gradient descent": (lambda lr: ref.sgd(lr), "step along -g"),
    "momentum": (lambda lr: ref.momentum(lr, 0.9), "accumulate velocity: b = 0.9b + g"),
    "Nesterov": (lambda lr: ref.nag(lr, 0.9), "momentum with a look-ahead gradient"),
    "Adagrad": (lambda lr: ref.adagrad(lr), "divide by √(sum of all g²): steps shrink forever"),
    "RMSprop": (
        lambda lr: ref.from_preset("hinton", lr=lr),
        "divide by √(moving average of g²): per-coordinate step ≈ lr",
    ),
}


@dataclass
class DemoResult:
    """What the demo measured (tests read it; the summary table prints it)."""

    slope: float = float("nan")
    intercept: float = float("nan")
    race: dict[str, dict[str, Any]] = field(default_factory=dict)
    digits: dict[str, dict[str, float]] = field(default_factory=dict)
    memory: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    report: Path | None = None
    pngs: list[Path] = field(default_factory=list)


# ----------------------------------------------------------------------------------------
# (1) linear regression
# ----------------------------------------------------------------------------------------


def section_regression(out: Path, seed: int, quick: bool, result: DemoResult) -> Section:
    plt = pyplot()
    x, y = linear_regression_data(100, seed)
    schedule = ref.schedules.step_decay(0.05, 0.95, 100)
    steps = 1000 if quick else 2000
    params, losses = fit_linear_regression(ref.rmsprop(lr=schedule, alpha=0.9), x, y, steps)
    result.slope, result.intercept = float(params["w"]), float(params["b"])
    exact = np.polyfit(x, y, 1)

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.scatter(x, y, s=12, alpha=0.6, label="data: y = 2x + 1 + noise")
    grid = np.linspace(-1, 1, 50)
    ax1.plot(grid, result.slope * grid + result.intercept, "r", lw=2,
             label=f"RMSprop fit: y = {result.slope:.3f}x + {result.intercept:.3f}")  # fmt: skip
    ax1.plot(grid, 2 * grid + 1, "k--", lw=1, label="truth: y = 2x + 1")
    ax1.set_xlabel("x"), ax1.set_ylabel("y"), ax1.legend(), ax1.set_title("Data and fitted line")
    ax1.xaxis.set_major_locator(plt.MaxNLocator(5))
    ax2.semilogy(losses)
    ax2.set_xlabel("step"), ax2.set_ylabel("mean squared error")
    ax2.xaxis.set_major_locator(plt.MaxNLocator(6))
    ax2.set_title("Loss (lr × 0.95 every 100 steps)")
    png = save(fig, out, "regression.png", result.pngs)

    s = Section("1. Linear regression: the tutorials' first example")
    s.paragraphs.append(
        "100 points of y = 2x + 1 + noise, fitted by mean squared error with the NumPy reference "
        f"RMSprop (alpha 0.9, lr 0.05 multiplied by 0.95 every 100 steps, {steps} steps)."
    )
    s.tables.append(("Recovered parameters", ["", "slope", "intercept"], [
        ["truth", "2", "1"],
        ["RMSprop", f"{result.slope:.4f}", f"{result.intercept:.4f}"],
        ["least squares (exact)", f"{exact[0]:.4f}", f"{exact[1]:.4f}"],
    ]))  # fmt: skip
    s.figures.append((png, "Left: the data and the fitted line. Right: the loss curve."))
    bump = int(np.argmax(np.diff(losses[50:]))) + 51  # the largest rise after the descent
    off = max(abs(result.slope - exact[0]), abs(result.intercept - exact[1]))
    last_lr = float(schedule(steps - 1))
    s.conclusion = (
        f"RMSprop recovers the line (slope {result.slope:.3f}, intercept {result.intercept:.3f}; "
        f"least squares gives {exact[0]:.3f}, {exact[1]:.3f}). It stops {off:.3f} short of the "
        f"exact fit, a distance of the order of its last lr ({last_lr:.3f}): its step is about "
        "lr whatever the gradient's size, so it circles the minimum at that distance; only a "
        "smaller lr brings it closer. The bumps in the loss (the first "
        f"near step {bump}) are RMSprop's own: near the minimum the gradient shrinks and so does "
        "its running average, so the step g/√v stays about lr instead of shrinking, and it "
        "overshoots until the average catches up. Without momentum that is why RMSprop is "
        "used with a decaying lr, as here."
    )
    s.code.append(
        "tx = rmsprop.reference.rmsprop(lr=schedules.step_decay(0.05, 0.95, 100), alpha=0.9)\n"
        "state = tx.init(params)\n"
        "updates, state = tx.update(grads, state, params)\n"
        "params = rmsprop.reference.apply_updates(params, updates)"
    )
    return s


# ----------------------------------------------------------------------------------------
# (2) the race on ill-conditioned surfaces
# ----------------------------------------------------------------------------------------


def _best_run(factory: Callable[[float], ref.Transform], surface: Surface, steps: int, tol: float):
    """Each optimizer gets its best lr from the same grid: a fair race. The best run
    reaches the tolerance in the fewest steps, then has the lowest final loss, then the
    smaller lr. The largest lrs run first (those that diverge stop at once); once one run
    has reached the tolerance, the others run only as many steps as could still beat it:
    the same winner as running every lr to the end, in a fraction of the steps."""
    best = None
    for index in reversed(range(len(LR_GRID))):
        budget = steps if best is None else min(steps, best[0])
        with np.errstate(all="ignore"):
            run = run_on_surface(factory(LR_GRID[index]), surface, budget, tol)
        key = run.steps_to_tol if run.steps_to_tol is not None else steps + 1
        final = run.losses[-1] if np.isfinite(run.losses[-1]) else np.inf
        if best is None or (key, final, index) < best[:3]:
            best = (key, final, index, run)
    return LR_GRID[best[2]], best[3]


def section_race(out: Path, quick: bool, result: DemoResult) -> Section:
    plt = pyplot()
    surfaces = [(elongated_bowl(50.0), 1e-3, 1000 if quick else 3000),
                (rosenbrock(), 1e-3, 1000 if quick else 20000)]  # fmt: skip
    s = Section("2. The race on ill-conditioned problems")
    s.paragraphs.append(
        "Each optimizer gets its best learning rate from the same grid "
        f"({', '.join(f'{lr:g}' for lr in LR_GRID)}) and runs until the loss is below the "
        "tolerance. On the bowl the gradient is 50 times larger along y than along x: plain "
        "gradient descent must keep its lr below 2/50 to avoid diverging along y, so it crawls "
        "along x. RMSprop divides each coordinate by the root of its own average g², so the "
        "steep direction is damped and the flat one speeds up: both move at about lr per step."
    )
    rows = []
    for surface, tol, steps in surfaces:
        runs = {}
        for name, (factory, _) in RACERS.items():
            lr, run = _best_run(factory, surface, steps, tol)
            runs[name] = (lr, run)
        key = "bowl" if "bowl" in surface.name else "rosenbrock"
        result.race[key] = {n: {"lr": lr, "steps": r.steps_to_tol, "budget": steps}
                            for n, (lr, r) in runs.items()}  # fmt: skip
        for name, (lr, run) in runs.items():
            hit = run.steps_to_tol
            rows.append([surface.name, name, f"{lr:g}", hit if hit is not None else f"> {steps}",
                         f"{run.losses[-1]:.2e}"])  # fmt: skip
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.6))
        shown = min(400, max(len(run.path) for _, run in runs.values()))
        x0, x1, y0, y1 = _view(surface.extent, [run.path[:shown] for _, run in runs.values()])
        gx, gy = np.meshgrid(np.linspace(x0, x1, 200), np.linspace(y0, y1, 200))
        zz = surface.values(gx, gy)
        ax1.contour(gx, gy, np.log10(zz + 1e-3), levels=25, cmap="Greys", linewidths=0.6)
        for (name, (lr, run)), style in zip(runs.items(), STYLES):
            path = run.path[:shown]
            ax1.plot(path[:, 0], path[:, 1], style, ms=3, lw=1.2, alpha=0.8, markevery=10)
            ax2.semilogy(np.maximum(run.losses, 1e-12), style, markevery=max(1, len(run.losses) // 12),
                         ms=3, label=f"{name} (lr {lr:g})")  # fmt: skip
        ax1.plot(*surface.minimum, "k*", ms=12)
        ax1.set_xlim(x0, x1), ax1.set_ylim(y0, y1)
        ax1.set_title(f"{surface.name}: the first {shown} steps (styles as on the right)")
        ax2.xaxis.set_major_locator(plt.MaxNLocator(6))
        ax2.axhline(tol, color="k", ls=":", lw=1)
        ax2.set_xlabel("step"), ax2.set_ylabel("loss"), ax2.legend(fontsize=8)
        ax2.set_title("loss until the tolerance (dotted)")
        png = save(fig, out, f"race_{key}.png", result.pngs)
        s.figures.append((png, f"{surface.name}: trajectories over the contours, and the loss."))
    header = ["problem", "optimizer", "best lr", "steps to tolerance", "final loss"]
    s.tables.insert(0, ("Steps to reach loss < 1e-3 (best lr of the grid for each)", header, rows))
    s.conclusion = _race_conclusion(result.race)
    return s


STYLES = ("o-", "s--", "^-.", "v:", "D-")  # one per racer: paths that cross stay tellable apart


def _view(extent: tuple[float, float, float, float],
          paths: list[np.ndarray]) -> tuple[float, float, float, float]:  # fmt: skip
    """The surface's extent grown to hold every shown path (a path that leaves it, as a
    large lr's first steps can, stays in the picture), at most three times as wide."""
    x0, x1, y0, y1 = extent
    points = np.concatenate([p[np.isfinite(p).all(axis=1)] for p in paths] or [np.empty((0, 2))])
    if len(points):
        width, height = x1 - x0, y1 - y0
        lo = np.maximum(points.min(axis=0), (x0 - width, y0 - height))
        hi = np.minimum(points.max(axis=0), (x1 + width, y1 + height))
        margin = 0.05 * np.array([width, height])
        x0, y0 = np.minimum((x0, y0), lo - margin)
        x1, y1 = np.maximum((x1, y1), hi + margin)
    return float(x0), float(x1), float(y0), float(y1)


def _race_conclusion(race: dict[str, dict[str, Any]]) -> str:
    """What the race's numbers say, written from them."""

    def steps(surface: str, name: str) -> int | None:
        return race[surface][name]["steps"]

    def fastest(surface: str) -> str:
        done = {n: r["steps"] for n, r in race[surface].items() if r["steps"] is not None}
        return min(done, key=done.get) if done else "none"

    bowl_rms, bowl_gd = steps("bowl", "RMSprop"), steps("bowl", "gradient descent")
    rosen_rms, rosen_mom = steps("rosenbrock", "RMSprop"), steps("rosenbrock", "momentum")
    text = (f"On the bowl the fastest is {fastest('bowl')}; RMSprop needs {bowl_rms} steps "
            f"against gradient descent's {bowl_gd}: dividing each coordinate by its own √v "
            "undoes the 50:1 conditioning. ")  # fmt: skip
    if rosen_mom is not None and (rosen_rms is None or rosen_rms > rosen_mom):
        rms = f"{rosen_rms} steps" if rosen_rms is not None else "it does not reach the tolerance"
        text += (f"On Rosenbrock RMSprop loses ({rms}, momentum {rosen_mom} steps). Its step "
                 "is about lr in every coordinate, however far the minimum is, so along the "
                 "long curved valley it walks at lr per step, while momentum builds up speed "
                 "there. A gradient's scale is information RMSprop throws away; momentum (or "
                 "Adam's) puts it back.")  # fmt: skip
    else:
        text += f"On Rosenbrock the fastest is {fastest('rosenbrock')}."
    edges = [f"{n} on {k}" for k, runs in race.items() for n, r in runs.items()
             if r["lr"] in (LR_GRID[0], LR_GRID[-1])]  # fmt: skip
    if edges:
        text += f" Best lr at the edge of the grid (a wider grid could help): {', '.join(edges)}."
    return text


# ----------------------------------------------------------------------------------------
# (4) comparison table
# ----------------------------------------------------------------------------------------

WHERE = {
    "gradient descent": (
        "the baseline; well-conditioned convex problems",
        "one lr for every direction: slow when curvatures differ",
    ),
    "momentum": (
        "long valleys; large-batch CNN training (SGD+momentum)",
        "overshoots; the lr must still suit the steepest direction",
    ),
    "Nesterov": ("as momentum, with less overshoot", "same tuning burden as momentum"),
    "Adagrad": (
        "sparse features (embeddings, NLP with rare words)",
        "the sum of g² only grows: steps vanish on long runs",
    ),
    "RMSprop": (
        "non-stationary objectives: RNNs, RL (DQN, A3C, IMPALA), MobileNet/EfficientNet",
        "eps placement, v₀ and lr-vs-momentum differ between frameworks (see presets)",
    ),
}


def section_comparison(result: DemoResult) -> Section:
    s = Section("4. The optimizers compared")
    s.paragraphs.append(
        "Core ideas come from the optimizers' definitions; the measured columns come from the "
        "runs above, so the table changes if the runs do."
    )
    rows = []
    for name, (_, idea) in RACERS.items():
        bowl = result.race.get("bowl", {}).get(name, {}).get("steps")
        rosen = result.race.get("rosenbrock", {}).get(name, {}).get("steps")
        strengths, caveat = WHERE[name]
        rows.append([name, idea, strengths, caveat, bowl if bowl is not None else "-",
                     rosen if rosen is not None else "-"])  # fmt: skip
    s.tables.append(("Optimizers", ["optimizer", "core idea", "where to use", "watch out for",
                                    "steps (bowl)", "steps (Rosenbrock)"], rows))  # fmt: skip
    preset_rows = [
        [p.name, p.title, "√(v+ε)" if p.eps_in_sqrt else "√v+ε", f"{p.initial_accumulator_value:g}",
         "inside" if p.lr_in_momentum else "outside", "yes" if p.centered else "-"]
        for p in PRESETS.values()
    ]  # fmt: skip
    s.tables.append(("RMSprop presets (from rmsprop.PRESETS)",
                     ["preset", "reproduces", "denominator", "v₀", "lr vs momentum", "centered"],
                     preset_rows))  # fmt: skip
    return s


# ----------------------------------------------------------------------------------------
# driver
# ----------------------------------------------------------------------------------------


def run_demo(out: Path, seed: int = 0, quick: bool = False) -> int:
    """Run every section, write ``out/index.html`` and the PNGs, print a summary."""
    result = demo(out, seed=seed, quick=quick)
    _print_summary(result)
    return 0


def demo(out: Path, seed: int = 0, quick: bool = False) -> DemoResult:
    """Run the sections in order in this process and write the report (``quick``: fewer
    epochs and steps). Progress shows as a bar on a terminal and as one line per stage
    otherwise (a log, a pipe)."""
    from .demo_digits import digits_data, section_digits
    from .demo_memory import section_memory

    out.mkdir(parents=True, exist_ok=True)
    result = DemoResult()
    report = Report(
        "rmsprop demo",
        "What RMSprop does, shown on a regression, two ill-conditioned surfaces and a small "
        f"neural network (seed {seed}{', quick run' if quick else ''}).",
    )
    start = time.perf_counter()
    with stages_shown() as progress, one_thread():
        progress("linear regression")
        regression = section_regression(out, seed, quick, result)
        progress("the race on ill-conditioned problems")
        race = section_race(out, quick, result)
        progress("loading PyTorch and the digits data")
        data = digits_data(seed)
        digits = section_digits(out, seed, quick, data, result, progress)
        memory = section_memory(out, seed, quick, data, result, progress)
        comparison = section_comparison(result)
        progress("writing the report")
        report.sections = [regression, race, digits, comparison, memory]
        report.intro += f" Ran in {time.perf_counter() - start:.1f} s."
        report.environment = environment()
        result.report = report.write(out)
    return result


@contextmanager
def one_thread() -> Iterator[None]:
    """torch's and numba's intra-op threads at one while the demo trains: its models are
    too small to gain from more, and two threads per operation stall whenever another
    process takes a core (measured in BENCHMARKS.md: the quick demo with two busy
    processes beside it took 54-100 s with two threads each, 31 s with one)."""
    import torch

    from ..backends import unavailable_reason

    torch_threads = torch.get_num_threads()
    numba = None
    if unavailable_reason("numba") is None:  # imported now, not by a kernel's loading thread,
        import numba  # so its thread count can be set (its import fixes the most it may use)

        numba_threads = numba.get_num_threads()
        numba.set_num_threads(1)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(torch_threads)
        if numba is not None:
            numba.set_num_threads(numba_threads)


@contextmanager
def stages_shown() -> Iterator[Callable[[str], None]]:
    """A ``progress(stage)`` callable: a transient bar on a terminal; elsewhere a line per
    stage on stdout with the seconds since the start, flushed (a redirected run shows
    where it is)."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = Console()
    if console.is_terminal:
        columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
        with Progress(*columns, transient=True, console=console) as bar:
            task = bar.add_task("demo", total=None)
            yield lambda stage: bar.update(task, description=stage)
        return
    start = time.perf_counter()
    yield lambda stage: print(f"[{time.perf_counter() - start:5.1f} s] {stage}", flush=True)


def environment() -> dict[str, str]:
    """Where the report's numbers come from: versions, processor, threads, and what the
    optimizer's ``impl="auto"`` runs here."""
    import platform

    import torch

    from .bench import _cpu_model
    from .demo_digits import IMPL_WORDS
    from .info import auto_choices, versions

    found = versions()
    auto_impl = auto_choices()["float32 parameters on the CPU"].split(":")[0]
    return {
        "processor": f"{_cpu_model()} ({torch.get_num_threads()} torch threads)",
        "python / torch / numba": f"{found['python']} / {found['torch']} / {found['numba']}",
        "rmsprop / numpy": f"{found['rmsprop']} / {found['numpy']}",
        "impl='auto' for float32 parameters runs": IMPL_WORDS.get(auto_impl, auto_impl),
        "system": platform.platform(),
    }


def _print_summary(result: DemoResult) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="rmsprop demo: summary")
    for column in ("what", "result"):
        table.add_column(column)
    table.add_row(
        "linear regression", f"slope {result.slope:.4f} (2), intercept {result.intercept:.4f} (1)"
    )
    for key, runs in result.race.items():
        text = ", ".join(
            f"{n}: {r['steps'] if r['steps'] is not None else 'not within ' + str(r['budget'])}"
            for n, r in runs.items()
        )
        table.add_row(f"steps to loss < 1e-3 on {key}", text)
    for name, scores in result.digits.items():
        table.add_row(f"digits: {name}", f"test accuracy {scores['accuracy']:.1%}, "
                      f"loss {scores['loss']:.3f}, {scores['epoch_ms']:.0f} ms per epoch")  # fmt: skip
    for name, scores in result.memory.get("lstm", {}).items():
        table.add_row(f"char LSTM, {name} state", f"held-out accuracy {scores['accuracy']:.1%}, "
                      f"loss {scores['loss']:.3f}, {scores['bytes']:.2f} state bytes/param")  # fmt: skip
    console.print(table)
    console.print(f"report: {result.report}", soft_wrap=True)  # a path: never broken by rich
