"""The quality suite of compact optimizer state: the same training run with fp32, bf16 and
8-bit state, on problems chosen to be hard for it, with each switch combination that
changes what the state holds.

Each problem builds its model and data from a seed and trains with a given optimizer
factory; the same seed gives the same batches and noise for every state form, so the
runs differ only by the state's rounding. The figure of merit is the mean training loss
over the last tenth of the steps. Used by ``benchmarks/quality.py`` (the full table in
BENCHMARKS.md), a slow test, and ``rmsprop demo`` (section 5, the hardest problem).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

STATES = {"fp32": None, "bf16": "bfloat16", "int8": "int8"}
CONFIGS = {
    "plain": {},
    "momentum": {"momentum": 0.9},
    "centered": {"centered": True},
    "centered+momentum": {"centered": True, "momentum": 0.9},
    "nesterov": {"momentum": 0.9, "nesterov": True},
}


def state_dtype(name: str) -> Any:
    import torch

    value = STATES[name]
    return torch.bfloat16 if value == "bfloat16" else value


@dataclass(frozen=True)
class Problem:
    """A training problem: ``run(make_optimizer, seed) -> losses`` (one per step)."""

    name: str
    description: str
    run: Callable[[Callable[..., Any], int], list[float]]
    lr: float


def _noisy_quadratic(ratio: float, steps: int = 400):
    def run(make, seed):
        import torch

        gen = torch.Generator().manual_seed(seed)
        n = 4096
        target = torch.randn(n, generator=gen)
        curvature = 0.5 + 1.5 * torch.rand(n, generator=gen)
        p = torch.zeros(n, requires_grad=True)
        opt = make([p])
        losses = []
        for _ in range(steps):
            p.grad = curvature * (p.detach() - target) + ratio * torch.randn(n, generator=gen)
            opt.step()
            losses.append(float((0.5 * curvature * (p.detach() - target) ** 2).mean()))
        return losses

    return run


def _rosenbrock(steps: int = 1500, noise: float = 0.1):
    """The extended Rosenbrock function in 4,096 dimensions (2,048 independent valleys),
    from (-1.2, 1), with Gaussian gradient noise."""

    def run(make, seed):
        import torch

        gen = torch.Generator().manual_seed(seed)
        x = torch.tensor([-1.2, 1.0]).repeat(2048).requires_grad_()
        opt = make([x])
        losses = []
        for _ in range(steps):
            a, b = x[0::2], x[1::2]
            loss = (100 * (b - a * a) ** 2 + (1 - a) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            x.grad += noise * torch.randn(x.shape, generator=gen)
            opt.step()
            losses.append(loss.item())
        return losses

    return run


def _digits(cnn: bool, steps: int = 300):
    """scikit-learn's digits (no download): an MLP 64-128-10, or a small CNN (16 3x3
    filters, a 576-64 layer, 64-10), minibatches of 64."""

    def run(make, seed):
        import torch
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
        x = torch.tensor(x / 16.0, dtype=torch.float32)
        y = torch.tensor(y)
        torch.manual_seed(seed)
        if cnn:
            x = x.view(-1, 1, 8, 8)
            model = torch.nn.Sequential(
                torch.nn.Conv2d(1, 16, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                torch.nn.Linear(576, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10),
            )  # fmt: skip
        else:
            model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.Tanh(),
                                        torch.nn.Linear(128, 10))  # fmt: skip
        opt = make(list(model.parameters()))
        gen = torch.Generator().manual_seed(seed)
        losses = []
        for _ in range(steps):
            idx = torch.randint(0, len(y), (64,), generator=gen)
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses

    return run


def _char_lstm(steps: int = 500):
    """The demo's character LSTM (hidden 128, generated sentences), trained past the
    plateau where it has learned the words."""

    def run(make, seed):
        import torch

        from .corpus import generated_text

        text = generated_text(seed)
        chars = sorted(set(text))
        data = torch.tensor([chars.index(c) for c in text])
        torch.manual_seed(seed)
        embed, lstm = torch.nn.Embedding(len(chars), 16), torch.nn.LSTM(16, 128, batch_first=True)
        head = torch.nn.Linear(128, len(chars))
        opt = make([*embed.parameters(), *lstm.parameters(), *head.parameters()])
        gen = torch.Generator().manual_seed(seed)
        losses = []
        for _ in range(steps):
            idx = torch.randint(0, len(data) - 33, (32,), generator=gen)
            batch = torch.stack([data[i : i + 33] for i in idx])
            out, _ = lstm(embed(batch[:, :-1]))
            loss = torch.nn.functional.cross_entropy(head(out).reshape(-1, len(chars)),
                                                     batch[:, 1:].reshape(-1))  # fmt: skip
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses

    return run


def _embedding(steps: int = 400):
    """A 2,000 x 16 embedding (``sparse=True``: sparse gradients) learning a random table
    through the mean of 8 looked-up rows; dense updates (``sparse_mode="dense"``), the
    form compact state takes sparse gradients in."""

    def run(make, seed):
        import torch

        gen = torch.Generator().manual_seed(seed)
        truth = torch.randn(2000, 16, generator=gen)
        table = torch.nn.Embedding(2000, 16, sparse=True)
        torch.nn.init.zeros_(table.weight)
        opt = make([table.weight])
        losses = []
        for _ in range(steps):
            ids = torch.randint(0, 2000, (64, 8), generator=gen)
            loss = ((table(ids).mean(1) - truth[ids].mean(1)) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses

    return run


PROBLEMS = {
    p.name: p
    for p in [
        Problem("quadratic-1e-4", "noisy quadratic, gradient variance 1e-4 of its squared mean",
                _noisy_quadratic(0.01), 1e-3),
        Problem("quadratic-1e-2", "noisy quadratic, variance 1e-2 of the squared mean",
                _noisy_quadratic(0.1), 1e-3),
        Problem("quadratic-1", "noisy quadratic, variance equal to the squared mean",
                _noisy_quadratic(1.0), 1e-3),
        Problem("rosenbrock", "Rosenbrock in 4,096 dimensions with gradient noise",
                _rosenbrock(), 1e-3),
        Problem("digits-mlp", "digits MLP 64-128-10", _digits(cnn=False), 1e-3),
        Problem("digits-cnn", "digits CNN (conv 16x3x3, 576-64, 64-10)", _digits(cnn=True), 1e-3),
        Problem("char-lstm", "character LSTM (hidden 128) past its plateau", _char_lstm(), 3e-3),
        Problem("embedding", "2,000 x 16 embedding with sparse gradients (dense updates)",
                _embedding(), 1e-2),
    ]
}  # fmt: skip


def final_loss(losses: list[float]) -> float:
    """The mean of the last tenth of the losses (NaN if any step was not finite)."""
    if not all(math.isfinite(x) for x in losses):
        return float("nan")
    tail = losses[-max(1, len(losses) // 10) :]
    return sum(tail) / len(tail)


def run(problem: str, state: str, config: str, seed: int = 0) -> list[float]:
    """The losses of ``problem`` trained with ``state`` (fp32, bf16, int8) and ``config``."""
    import rmsprop

    spec = PROBLEMS[problem]

    def make(params):  # with momentum the lr is scaled by 1 - momentum: the same step size
        switches = CONFIGS[config]
        lr = spec.lr * (1 - switches.get("momentum", 0.0))
        return rmsprop.RMSprop(params, lr=lr, state_dtype=state_dtype(state),
                               sparse_mode="dense", **switches)  # fmt: skip

    return spec.run(make, seed)
