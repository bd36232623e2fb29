"""How much a port that keeps the native optimizer differs, measured on a small problem.

The NumPy reference runs the exact switches and the native optimizer's (see
``targets.Native.expressible``) on the same noisy least-squares problem in float64: 20
parameters whose features span two orders of magnitude, mini-batches of 32 of 200
samples, the same batches for both. Reported: how far apart the parameters end, relative
to how far the exact run moved them, and the final loss of each; once with the described
lr held constant and once decayed linearly to 0 (where the lr's place in the momentum
buffer starts to matter).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import reference as ref


@dataclass(frozen=True)
class Difference:
    """One comparison: ``distance`` = ‖θ_exact − θ_native‖ / ‖θ_exact − θ₀‖ after ``steps``."""

    schedule: str
    steps: int
    distance: float
    loss_exact: float
    loss_native: float

    def remark(self) -> str:
        """Why these numbers do not say what they seem to (or ``""``): a difference too small
        to show on this problem, a native run that ends farther away than the exact run
        moved, a lower toy loss."""
        if self.distance < 1e-4:
            return "too small to show on this small problem, not absent; it can grow on yours"
        parts = []
        if self.distance >= 1:
            parts.append("the native run ends farther from the exact one than the exact run moved")
        if self.loss_native < self.loss_exact:
            parts.append("a lower loss says only that its steps suit this toy problem; the "
                         "recipe's lr and schedule were tuned with the exact update")  # fmt: skip
        return "; ".join(parts)

    def describe(self) -> str:
        """One line for people: the distance, both final losses, and :meth:`remark`."""
        values = (self.distance, self.loss_exact, self.loss_native)
        if not all(np.isfinite(v) for v in values):
            return f"{self.schedule}: a run diverged (non-finite) within {self.steps} steps"
        apart = f"{self.distance:.2%}" if self.distance >= 1e-4 else (
            "<0.01%" if self.distance else "0%")  # fmt: skip
        line = (f"{self.schedule}: the runs end {apart} apart after {self.steps} steps; final "
                f"loss {self.loss_native:.4g} native, {self.loss_exact:.4g} exact")  # fmt: skip
        remark = self.remark()
        return f"{line} ({remark})" if remark else line


#: how to read the comparisons, printed once above them
MEASURE_LEGEND = (
    "'apart' is ‖θ_native − θ_exact‖ / ‖θ_exact − θ₀‖: how far the native optimizer's "
    "parameters end from the exact port's, relative to how far the exact run moved them, on "
    "the same batches; 0% is the same run. The loss is this toy problem's, not your model's."
)


def not_measured(exact: dict[str, Any], native: dict[str, Any]) -> str | None:
    """Why a comparison would mean nothing, or None."""
    if exact.get("maximize") != native.get("maximize"):
        return "not measured: the native optimizer descends where the recipe ascends"
    if not float(exact["lr"]):
        return "not measured: the lr is 0"
    return None


def problem(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features with scales from 0.1 to 10 (an ill-conditioned least squares), targets."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(200, 20)) * np.logspace(-1, 1, 20)
    targets = features @ rng.normal(size=20) + 0.1 * rng.normal(size=200)
    return features, targets


def run(hp: dict[str, Any], lr_at, steps: int, seed: int = 0) -> tuple[np.ndarray, float]:
    """The parameters after ``steps`` mini-batch steps of ``hp`` (lr from ``lr_at(step)``)
    and the final full-batch loss."""
    features, targets = problem(seed)
    tx = ref.rmsprop(**{**hp, "lr": lr_at})
    params, batches = np.zeros(features.shape[1]), np.random.default_rng(seed + 1)
    state = tx.init(params)
    for _ in range(steps):
        rows = batches.choice(len(targets), 32, replace=False)
        err = features[rows] @ params - targets[rows]
        updates, state = tx.update(features[rows].T @ err / len(rows), state, params)
        params = ref.apply_updates(params, updates)
    err = features @ params - targets
    return params, float(np.mean(err * err) / 2)


def compare(exact: dict[str, Any], native: dict[str, Any], steps: int = 200) -> list[Difference]:
    """The exact run against the native one, constant and decaying lr."""
    lr = float(exact["lr"])
    out = []
    for schedule, lr_at in (("constant lr", lambda step: lr),
                            ("lr decayed to 0", lambda step: lr * (1 - step / steps))):  # fmt: skip
        with np.errstate(all="ignore"):
            a, loss_a = run(exact, lr_at, steps)
            b, loss_b = run(native, lr_at, steps)
        moved = float(np.linalg.norm(a))
        distance = float(np.linalg.norm(a - b)) / moved if moved > 0 else float("nan")
        out.append(Difference(schedule, steps, distance, loss_a, loss_b))
    return out
