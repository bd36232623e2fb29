"""Demo section 3: a small MLP on scikit-learn's bundled digits (no download).

Every optimizer starts from the same weights and sees the same mini-batches; the only
difference is the update rule.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .report import Section

DIGITS_PNG = "digits.png"


def digits_data(seed: int):
    """Standardised digits (8x8 images, 10 classes): a stratified 75% / 25% split drawn
    with ``seed``. The data file is scikit-learn's, read directly (importing scikit-learn
    takes two seconds; the demo needs only its bundled data)."""
    spec = importlib.util.find_spec("sklearn")
    path = (
        Path(spec.submodule_search_locations[0]) / "datasets/data/digits.csv.gz" if spec else None
    )
    if path is None or not path.is_file():
        raise ImportError(
            "the digits demo needs scikit-learn's data: pip install scikit-learn "
            "(in rmsprop's clone: pip install -e '.[demo]')"
        )
    table = np.loadtxt(path, delimiter=",", dtype=np.float32)
    x, y = table[:, :-1] / 16.0, table[:, -1].astype(np.int64)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), bool)
    for label in np.unique(y):  # a quarter of each class held out
        members = rng.permutation(np.flatnonzero(y == label))
        test[members[: round(0.25 * len(members))]] = True
    x_train, x_test, y_train, y_test = x[~test], x[test], y[~test], y[test]
    mean, std = x_train.mean(0), x_train.std(0) + 1e-3
    return (x_train - mean) / std, (x_test - mean) / std, y_train, y_test


def optimizers() -> dict[str, tuple[float, Callable[[Any], Any]]]:
    """name -> (lr, factory(params)); each lr is its optimizer's usual scale."""
    import torch

    import rmsprop

    return {
        "SGD": (0.1, lambda ps: torch.optim.SGD(ps, lr=0.1)),
        "momentum": (0.05, lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9)),
        "Nesterov": (0.05, lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True)),
        "Adagrad": (0.05, lambda ps: torch.optim.Adagrad(ps, lr=0.05)),
        "RMSprop (torch)": (1e-3, lambda ps: rmsprop.RMSprop.from_preset(ps, "torch", lr=1e-3)),
        "RMSprop (keras)": (1e-3, lambda ps: rmsprop.RMSprop.from_preset(ps, "keras", lr=1e-3)),
        "RMSprop (tf1)": (1e-3, lambda ps: rmsprop.RMSprop.from_preset(ps, "tf1", lr=1e-3)),
    }


def train(make_opt, data, seed: int, epochs: int, batch: int = 64, state_dtype=None):
    """Train a 64-64-10 MLP; returns per-epoch train loss and test accuracy, the seconds
    of each epoch (the first includes one-time costs) and the implementations the steps
    ran on, in order (on an empty kernel cache the first steps run the bit-identical
    stand-in, torch's foreach operations for this model's small tensors, while the fused
    kernel compiles in the background)."""
    import torch

    x_train, x_test, y_train, y_test = (torch.as_tensor(a) for a in data)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Tanh(), torch.nn.Linear(64, 10))
    opt = make_opt(model.parameters())
    order = np.random.default_rng(seed)
    losses, accuracies, seconds, ran = [], [], [], []
    for _ in range(epochs):
        start = time.perf_counter()
        perm = torch.as_tensor(order.permutation(len(x_train)))
        total = 0.0
        for i in range(0, len(perm), batch):
            idx = perm[i : i + batch]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
            loss.backward()
            opt.step()
            impl = getattr(opt, "last_impl", {}).get(0)
            if impl is not None and impl not in ran:
                ran.append(impl)
            total += loss.item() * len(idx)
        losses.append(total / len(perm))
        seconds.append(time.perf_counter() - start)
        with torch.no_grad():
            accuracies.append(float((model(x_test).argmax(1) == y_test).float().mean()))
    return losses, accuracies, seconds, ran


def section_digits(out: Path, seed: int, quick: bool, data, result, progress) -> Section:
    """Section 3 on ``data``, the arrays of ``digits_data(seed)``."""
    epochs = 10 if quick else 30
    curves = {}
    for name, (lr, make) in optimizers().items():
        progress(f"digits: {name}")
        losses, accuracies, seconds, ran = train(make, data, seed, epochs)
        curves[name] = (losses, accuracies)
        result.digits[name] = {"lr": lr, "accuracy": accuracies[-1], "loss": losses[-1],
                               "ran on": " then ".join(ran) or "torch.optim",
                               "epoch_ms": 1e3 * float(np.median(seconds[1:] or seconds)),
                               "first_epoch_ms": 1e3 * seconds[0]}  # fmt: skip

    draw_digits(out, curves)
    png = DIGITS_PNG
    result.pngs.append(out / png)

    s = Section("3. Training a real model: an MLP on the digits dataset")
    s.paragraphs.append(
        f"scikit-learn's 8x8 digits (1,797 images, 10 classes; 75% train, 25% test), a 64-64-10 "
        f"tanh MLP, batch 64, {epochs} epochs. Every optimizer starts from the same weights "
        "and sees the same batches. The three RMSprop presets differ in eps placement, the "
        "starting accumulator and their defaults (rmsprop diff torch tf1)."
    )
    rows = [[n, f"{r['lr']:g}", f"{r['accuracy']:.1%}", f"{r['loss']:.4f}",
             f"{r['epoch_ms']:.0f}", f"{r['first_epoch_ms']:.0f}", ran_on_in_words(r["ran on"])]
            for n, r in result.digits.items()]  # fmt: skip
    s.tables.append(("Final results", ["optimizer", "lr", "test accuracy", "train loss",
                     "ms per epoch (median after the first)", "first epoch ms", "ran on"],
                     rows))  # fmt: skip
    s.figures.append((png, "Training loss and test accuracy per epoch."))
    best = max(result.digits, key=lambda n: result.digits[n]["accuracy"])
    rms = {n: r for n, r in result.digits.items() if n.startswith("RMSprop")}
    spread = max(r["accuracy"] for r in rms.values()) - min(r["accuracy"] for r in rms.values())
    s.conclusion = (
        f"The best test accuracy is {best}'s ({result.digits[best]['accuracy']:.1%}). "
        f"{_presets_compared(rms, spread, epochs)} Times exclude the first epoch, which "
        "carries one-time costs. 'ran on' says what computed the steps: on a fresh install "
        "the first steps run torch's own operations (with the fused kernel's correctly "
        "rounded square root: the same bits) while the fused kernel compiles in the "
        "background, then the fused kernel."
    )
    return s


def _presets_compared(rms: dict[str, dict[str, Any]], spread: float, epochs: int) -> str:
    """What the three RMSprop presets' accuracies say, written from them."""
    from ..presets import get_preset

    if spread < 0.01:
        within = ("at the same test accuracy" if spread < 0.0005
                  else f"within {spread:.1%} of each other in test accuracy")  # fmt: skip
        return (f"The three RMSprop presets end {within} at the same lr: their switches (eps "
                "placement, v₀, the EMA's form) change the last bits here, not whether it "
                "trains; they matter when a recipe is ported.")  # fmt: skip
    worst = min(rms, key=lambda n: rms[n]["accuracy"])
    preset = get_preset(worst.removeprefix("RMSprop (").removesuffix(")"))
    why = (
        "its v starts at 1 (v₀), so while the average of g² is still far below 1 its steps are "
        "about lr·g, much smaller than the others' lr·g/√v"
        if preset.initial_accumulator_value == 1
        else f"its switches differ (rmsprop diff torch {preset.name})"
    )
    return (f"The three RMSprop presets end {spread:.1%} apart in test accuracy at the same "
            f"lr: {worst} is behind after {epochs} epochs because {why}. The same lr does not "
            "mean the same training across frameworks: a ported recipe keeps its switches.")  # fmt: skip


#: what each implementation is, in the report's words (``impl`` names are for code)
IMPL_WORDS = {"single": "torch's operations, one tensor at a time",
              "foreach": "torch's operations, all tensors at once",
              "numba": "the fused CPU kernel", "triton": "the fused GPU kernel",
              "compiled": "torch.compile", "torch.optim": "torch.optim"}  # fmt: skip


def ran_on_in_words(ran_on: str) -> str:
    """``"foreach then numba"`` as ``"torch's operations, all tensors at once, then the
    fused CPU kernel"``."""
    return ", then ".join(IMPL_WORDS.get(name, name) for name in ran_on.split(" then "))


def draw_digits(out: Path, curves: dict[str, tuple[list[float], list[float]]]) -> None:
    """``out/digits.png``: training loss and test accuracy per epoch of each optimizer."""
    from .figures import pyplot, save

    fig, (ax1, ax2) = pyplot().subplots(1, 2, figsize=(12, 4.2))
    for name, (losses, accuracies) in curves.items():
        style = "-" if name.startswith("RMSprop") else "--"
        epochs = range(1, len(losses) + 1)
        ax1.semilogy(epochs, losses, style, label=name)
        ax2.plot(epochs, accuracies, style, label=name)
    lowest = min(min(a) for _, a in curves.values())
    ax1.set_title("training loss per epoch"), ax2.set_title("test accuracy per epoch")
    ax1.set_xlabel("epoch"), ax1.set_ylabel("training loss"), ax1.legend(fontsize=8)
    ax2.set_xlabel("epoch"), ax2.set_ylabel("test accuracy")
    ax2.set_ylim(max(0.0, lowest - 0.02), 1.0), ax2.legend(fontsize=8)
    save(fig, out, DIGITS_PNG)
