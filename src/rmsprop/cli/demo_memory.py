"""Demo section 5: the same training with fp32, bf16 and int8 optimizer state.

Two models: the digits MLP of section 3, and a small character-level LSTM (RMSprop's
classic use, Graves 2013) on text generated here from a tiny grammar (no download).
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import numpy as np

from .report import Report

STATES = {"fp32": None, "bf16": "bfloat16", "int8": "int8"}
SUBJECTS = ["the cat", "a dog", "my friend", "the old man", "a small bird", "the teacher"]
VERBS = ["sees", "likes", "follows", "finds", "draws", "greets"]
OBJECTS = ["the red ball", "a green tree", "the river", "a quiet house", "the moon", "her book"]


def generated_text(seed: int, sentences: int = 3000) -> str:
    """Sentences from a tiny grammar: enough structure for an LSTM to learn."""
    rng = np.random.default_rng(seed)
    parts = [
        f"{SUBJECTS[rng.integers(6)]} {VERBS[rng.integers(6)]} {OBJECTS[rng.integers(6)]}."
        for _ in range(sentences)
    ]
    return " ".join(parts)


def _state_dtype(name: str):
    import torch

    value = STATES[name]
    return getattr(torch, value) if value == "bfloat16" else value


def train_char_lstm(state: str, seed: int, steps: int):
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
    losses = []
    start = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(0, len(train) - 65, (32,), generator=g)
        batch = torch.stack([train[i : i + 65] for i in idx])
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(forward(batch[:, :-1]).reshape(-1, len(chars)),
                                                 batch[:, 1:].reshape(-1))  # fmt: skip
        loss.backward()
        opt.step()
        losses.append(loss.item())
    seconds = time.perf_counter() - start
    with torch.no_grad():
        x = test[:-1].unsqueeze(0)
        accuracy = float((forward(x).argmax(-1) == test[1:].unsqueeze(0)).float().mean())
    per_param = sum(state_bytes(opt.state[p]) for p in params) / sum(p.numel() for p in params)
    return losses, accuracy, seconds, per_param


def section_memory(report: Report, out: Path, seed: int, quick: bool, result, progress) -> None:
    import torch

    import rmsprop

    from .demo_digits import digits_data, train
    from .figures import pyplot, save

    plt = pyplot()
    data = digits_data(seed)
    epochs = 6 if quick else 30
    lstm_steps = 100 if quick else 400
    digits, lstm = {}, {}
    for name in STATES:
        progress(f"memory: digits MLP, {name} state")
        make = functools.partial(rmsprop.RMSprop.from_preset, name="torch", lr=1e-3,
                                 state_dtype=_state_dtype(name))  # fmt: skip
        losses, accuracies, seconds = train(make, data, seed, epochs)
        digits[name] = {
            "loss": losses[-1],
            "accuracy": accuracies[-1],
            "seconds": seconds,
            "curve": losses,
        }
        progress(f"memory: character LSTM, {name} state")
        curve, accuracy, seconds, per_param = train_char_lstm(name, seed, lstm_steps)
        tail = float(np.mean(curve[-20:]))
        lstm[name] = {"loss": tail, "accuracy": accuracy, "seconds": seconds, "curve": curve,
                      "bytes": per_param}  # fmt: skip
    result.memory = {"digits": digits, "lstm": lstm}

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
    for name in STATES:
        ax1.semilogy(range(1, epochs + 1), digits[name]["curve"], label=f"{name} state")
        smooth = np.convolve(lstm[name]["curve"], np.ones(10) / 10, mode="valid")
        ax2.plot(smooth, label=f"{name} state")
    ax1.set_title("digits MLP: training loss per epoch"), ax1.set_xlabel("epoch"), ax1.legend()
    (
        ax2.set_title("character LSTM: training loss (10-step mean)"),
        ax2.set_xlabel("step"),
        ax2.legend(),
    )
    png = save(fig, out, "memory.png", result.pngs)

    s = report.section("5. Smaller optimizer state: fp32, bf16 and int8")
    s.paragraphs.append(
        "The same runs (same seed, same batches) with RMSprop's state stored in fp32, in bf16 "
        "with stochastic rounding, and in blockwise 8-bit codes (tensors of at least 4,096 "
        "elements; smaller ones stay fp32). The update math is fp32 in every case. The LSTM "
        f"learns next characters of generated sentences ({lstm_steps} steps, batch 32 x 64)."
    )
    rows = []
    for name in STATES:
        d, m = digits[name], lstm[name]
        rows.append([name, f"{m['bytes']:.2f}", f"{d['loss']:.4f}", f"{d['accuracy']:.1%}",
                     f"{m['loss']:.4f}", f"{m['accuracy']:.1%}"])  # fmt: skip
    s.tables.append(("Final results", ["state", "LSTM state bytes / param", "digits train loss",
                     "digits test accuracy", "LSTM train loss (last 20)", "LSTM held-out accuracy"],
                     rows))  # fmt: skip
    s.figures.append((png, "Training curves with each state dtype, overlaid."))
    del torch
