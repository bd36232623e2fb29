"""Demo section 5: the same training with fp32, bf16 and int8 optimizer state.

Two models: the digits MLP of section 3, and a small character-level LSTM (RMSprop's
classic use, Graves 2013) on text generated here from a tiny grammar (no download).
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import numpy as np

from .corpus import generated_text
from .report import Section

MEMORY_PNG = "memory.png"

STATES = {"fp32": None, "bf16": "bfloat16", "int8": "int8"}
HARD = ("quadratic-1e-2", "centered+momentum")  # the quality suite's hardest case


def lstm_size(quick: bool) -> tuple[int, int]:
    """The character LSTM's (steps, sequences per batch): the quick run's takes about
    0.7 s per state form on one core of the machine in BENCHMARKS.md, the full run's 20
    times that."""
    return (40, 16) if quick else (400, 32)


def _state_dtype(name: str):
    import torch

    value = STATES[name]
    return getattr(torch, value) if value == "bfloat16" else value


def train_char_lstm(state: str, seed: int, steps: int, batch: int = 32):
    """A 1-layer LSTM (hidden 128) predicting the next character; returns per-step loss,
    final next-character accuracy on held-out text, seconds and state bytes per param."""
    import torch

    import rmsprop

    from ..lowbit.state import state_bytes

    text = generated_text(seed)
    chars = sorted(set(text))
    data = torch.tensor([chars.index(c) for c in text])
    split = int(0.9 * len(data))
    train, test = data[:split], data[split:]
    torch.manual_seed(seed)
    embed = torch.nn.Embedding(len(chars), 16)
    lstm = torch.nn.LSTM(16, 128, batch_first=True)
    head = torch.nn.Linear(128, len(chars))
    params = [*embed.parameters(), *lstm.parameters(), *head.parameters()]
    opt = rmsprop.RMSprop.from_preset(params, "torch", lr=3e-3, state_dtype=_state_dtype(state))

    def forward(x):
        out, _ = lstm(embed(x))
        return head(out)

    g = torch.Generator().manual_seed(seed)
    window = torch.arange(65)  # each sequence: 64 characters in, the next 64 to predict
    losses = []
    start = time.perf_counter()
    for _ in range(steps):
        starts = torch.randint(0, len(train) - 65, (batch,), generator=g)
        sample = train[starts[:, None] + window]  # one gather (a Python loop would hold the GIL)
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(forward(sample[:, :-1]).reshape(-1, len(chars)),
                                                 sample[:, 1:].reshape(-1))  # fmt: skip
        loss.backward()
        opt.step()
        losses.append(loss.item())
    seconds = time.perf_counter() - start
    with torch.no_grad():
        x = test[:-1].unsqueeze(0)
        accuracy = float((forward(x).argmax(-1) == test[1:].unsqueeze(0)).float().mean())
    per_param = sum(state_bytes(opt.state[p]) for p in params) / sum(p.numel() for p in params)
    return losses, accuracy, seconds, per_param


def section_memory(out: Path, seed: int, quick: bool, data, result, progress) -> Section:
    """Section 5; ``data`` holds the arrays of ``demo_digits.digits_data(seed)``."""
    import rmsprop

    from . import quality
    from .demo_digits import train

    epochs = 6 if quick else 30
    steps, batch = lstm_size(quick)
    digits, lstm = {}, {}
    for name in STATES:
        progress(f"memory: digits MLP, {name} state")
        make = functools.partial(rmsprop.RMSprop.from_preset, name="torch", lr=1e-3,
                                 state_dtype=_state_dtype(name))  # fmt: skip
        losses, accuracies, seconds, _ = train(make, data, seed, epochs)
        digits[name] = {
            "loss": losses[-1],
            "accuracy": accuracies[-1],
            "seconds": sum(seconds),
            "curve": losses,
        }
        progress(f"memory: character LSTM, {name} state")
        curve, accuracy, seconds, per_param = train_char_lstm(name, seed, steps, batch)
        lstm[name] = {"loss": float(np.mean(curve[-20:])), "accuracy": accuracy,
                      "seconds": seconds, "curve": curve, "bytes": per_param}  # fmt: skip
    progress("memory: the noisy quadratic, centered with momentum")
    hard = {name: quality.run(HARD[0], name, HARD[1], seed) for name in STATES}
    result.memory = {"digits": digits, "lstm": lstm,
                     "hard": {name: {"loss": quality.final_loss(curve), "curve": curve}
                              for name, curve in hard.items()}}  # fmt: skip
    result.memory["legend"] = draw_memory(out, digits, lstm, hard)
    png = MEMORY_PNG
    result.pngs.append(out / png)

    s = Section("5. Smaller optimizer state: fp32, bf16 and int8")
    s.paragraphs.append(
        "Each model trained three times, with the same seed and batches each time, with "
        "RMSprop's state stored in fp32, in bf16 with stochastic rounding, and in blockwise "
        "8-bit codes (tensors of at least 4,096 elements; smaller ones stay fp32). The update "
        f"math is fp32 in every case. The digits MLP is section 3's with the torch preset at lr "
        f"1e-3, here for {epochs} epochs; the LSTM learns next characters of generated "
        f"sentences ({steps} steps, batches of {batch} sequences of 64 characters)."
    )
    rows = []
    for name in STATES:
        d, m = digits[name], lstm[name]
        rows.append([name, f"{m['bytes']:.2f}", f"{d['loss']:.4f}", f"{d['accuracy']:.1%}",
                     f"{m['loss']:.4f}", f"{m['accuracy']:.1%}"])  # fmt: skip
    s.tables.append(("Final results", ["state", "LSTM state bytes / param", "digits train loss",
                     "digits test accuracy", "LSTM train loss (last 20)", "LSTM held-out accuracy"],
                     rows))  # fmt: skip
    h = result.memory["hard"]
    s.paragraphs.append(
        "The hardest case for compact state is centered RMSprop on a noisy quadratic whose "
        "gradient variance is 1% of its squared mean (4,096 parameters): stored separately, "
        "v and the mean gradient would leave v − ḡ² all rounding error and the step would "
        "explode. Compact centered state stores the variance itself, so its error is "
        "relative to the variance: final loss fp32 "
        f"{h['fp32']['loss']:.4g}, bf16 {h['bf16']['loss']:.4g}, int8 {h['int8']['loss']:.4g}."
    )
    worst = max((abs(h[n]["loss"] / h["fp32"]["loss"] - 1), n) for n in ("bf16", "int8"))
    s.conclusion = (
        "Compact state trains as fp32 state does here: the LSTM's final loss with bf16 / int8 "
        f"state is {lstm['bf16']['loss'] / lstm['fp32']['loss'] - 1:+.2%} / "
        f"{lstm['int8']['loss'] / lstm['fp32']['loss'] - 1:+.2%} of fp32's, and on the hard "
        f"quadratic the largest difference is {worst[0]:.2%} ({worst[1]}), at "
        f"{lstm['int8']['bytes']:.2f} bytes of state per parameter for int8 against "
        f"{lstm['fp32']['bytes']:.2f} for fp32 (these runs keep one buffer, v; momentum and "
        "centered add one each). BENCHMARKS.md has the full quality suite."
    )
    s.figures.append((png, "Top: training loss with each state dtype (the curves overlap). "
                      "Bottom: the same runs as the difference from fp32 state, in percent "
                      "(moving mean), so that bf16 and int8 can be told apart."))  # fmt: skip
    return s


def legend_labels(fig) -> list[str]:
    """Every legend entry of ``fig`` (the tests check that each curve is named)."""
    return [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]


def draw_memory(out: Path, digits, lstm, hard) -> list[str]:
    """``out/memory.png``; returns its legend entries (the tests check each curve is named)."""
    from .figures import pyplot, save

    fig = _figure(pyplot(), digits, lstm, hard)
    labels = legend_labels(fig)
    save(fig, out, MEMORY_PNG)
    return labels


def _figure(plt, digits, lstm, hard):
    """Loss curves (top) and each compact form's difference from fp32 state (bottom)."""
    fig, axes = plt.subplots(2, 3, figsize=(15, 7.5), sharex="col")
    curves = {
        "digits MLP: loss per epoch": {n: digits[n]["curve"] for n in STATES},
        "character LSTM: loss (20-step mean)": {n: _smooth(lstm[n]["curve"], 20) for n in STATES},
        "noisy quadratic, centered + momentum": {n: _smooth(hard[n], 10) for n in STATES},
    }
    for column, (title, runs) in enumerate(curves.items()):
        top, bottom = axes[0, column], axes[1, column]
        for name, curve in runs.items():
            top.semilogy(curve, label=f"{name} state")
            if name != "fp32":
                difference = 100 * (np.asarray(curve) / np.asarray(runs["fp32"]) - 1)
                bottom.plot(difference, label=f"{name} − fp32")
        top.set_title(title), top.legend()
        bottom.axhline(0, color="grey", lw=0.8), bottom.set_ylabel("% of fp32 loss")
        bottom.set_xlabel("epoch" if column == 0 else "step"), bottom.legend()
    return fig


def _smooth(curve, width):
    return np.convolve(curve, np.ones(width) / width, mode="valid")
