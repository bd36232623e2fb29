"""Small problems that show what an optimizer does (NumPy only).

Used by ``rmsprop demo``, the README and the tests: the tutorials' linear regression, an
elongated quadratic bowl and the Rosenbrock valley, and a runner for 2-D trajectories.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .reference import Transform, apply_updates


def linear_regression_data(n: int = 100, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``y = 2x + 1 + noise``: ``n`` points, ``x`` uniform in [-1, 1], noise sd 0.1."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, n)
    return x, 2 * x + 1 + rng.normal(0, 0.1, n)


def fit_linear_regression(
    tx: Transform, x: np.ndarray, y: np.ndarray, steps: int = 2000
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Fit ``y ≈ w x + b`` by mean squared error with ``tx``; returns params and the loss curve."""
    params = {"w": np.zeros(()), "b": np.zeros(())}
    state = tx.init(params)
    losses = np.empty(steps)
    for step in range(steps):
        err = params["w"] * x + params["b"] - y
        losses[step] = np.mean(err * err)
        grads = {"w": 2 * np.mean(err * x), "b": 2 * np.mean(err)}
        updates, state = tx.update(grads, state, params)
        params = apply_updates(params, updates)
    return params, losses


@dataclass(frozen=True)
class Surface:
    """A 2-D loss surface with its gradient, a start point and the minimum."""

    name: str
    loss: Callable[[np.ndarray], float]
    grad: Callable[[np.ndarray], np.ndarray]
    values: Callable[[np.ndarray, np.ndarray], np.ndarray]  # the loss at arrays of x and y
    start: tuple[float, float]
    minimum: tuple[float, float]
    extent: tuple[float, float, float, float]  # xmin, xmax, ymin, ymax for plots


def elongated_bowl(condition: float = 50.0) -> Surface:
    """``f = (x² + condition·y²) / 2``: steep in y, flat in x (condition number ``condition``)."""
    scale = np.array([1.0, condition])
    return Surface(
        name=f"elongated bowl (condition {condition:g})",
        loss=lambda p: float(0.5 * np.sum(scale * p * p)),
        grad=lambda p: scale * p,
        values=lambda x, y: 0.5 * (x * x + condition * y * y),
        start=(-4.0, 1.0),
        minimum=(0.0, 0.0),
        extent=(-4.5, 1.0, -1.5, 1.5),
    )


def rosenbrock(a: float = 1.0, b: float = 100.0) -> Surface:
    """``f = (a - x)² + b (y - x²)²``: a curved, flat-bottomed valley; minimum at ``(a, a²)``."""

    def values(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return (a - x) ** 2 + b * (y - x**2) ** 2

    def loss(p: np.ndarray) -> float:
        return float(values(p[0], p[1]))

    def grad(p: np.ndarray) -> np.ndarray:
        dx = -2 * (a - p[0]) - 4 * b * p[0] * (p[1] - p[0] ** 2)
        return np.array([dx, 2 * b * (p[1] - p[0] ** 2)])

    return Surface(
        name="Rosenbrock", loss=loss, grad=grad, values=values, start=(-1.5, 2.0),
        minimum=(a, a * a),
        extent=(-2.0, 2.0, -1.0, 3.0),
    )  # fmt: skip


@dataclass(frozen=True)
class Run:
    """A trajectory on a surface: points, losses, and the first step below tolerance."""

    path: np.ndarray  # (steps + 1, 2)
    losses: np.ndarray  # (steps + 1,)
    steps_to_tol: int | None


def run_on_surface(tx: Transform, surface: Surface, steps: int, tol: float) -> Run:
    """Run ``tx`` from ``surface.start``; stop early when the loss is below ``tol``."""
    point = np.array(surface.start, dtype=np.float64)
    state = tx.init(point)
    path, losses = [point], [surface.loss(point)]
    hit = 0 if losses[0] < tol else None
    for step in range(1, steps + 1):
        updates, state = tx.update(surface.grad(point), state, point)
        point = apply_updates(point, updates)
        path.append(point)
        losses.append(surface.loss(point))
        if not np.isfinite(losses[-1]):
            break
        if losses[-1] < tol:
            hit = step
            break
    return Run(np.array(path), np.array(losses), hit)
