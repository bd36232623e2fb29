"""Keras front-end parity, runnable on any Keras backend: ``python keras_parity.py``
under ``KERAS_BACKEND=jax`` prints the measurements as JSON (the tests run it in a
subprocess for the backends other than the test process's own)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from parity_data import SWITCH_MATRIX, dyadic_clip_problem, random_problem

SEEDS = (3, 4, 5)


def keras_trajectory(make_opt, params0, grads, lrs, dtype: str):
    """Params after every step; the lr is set before each step (as a user's callback)."""
    import keras

    floatx = keras.config.floatx()
    keras.config.set_floatx(dtype)  # Keras keeps its lr variable in floatx
    try:
        opt = make_opt()
        variables = [keras.Variable(p.astype(dtype), dtype=dtype) for p in params0]
        out = []
        for g, rate in zip(grads, lrs):
            opt.learning_rate = float(rate)
            opt.apply_gradients([(keras.ops.convert_to_tensor(x.astype(dtype)), v)
                                 for x, v in zip(g, variables)])  # fmt: skip
            out.append([np.array(keras.ops.convert_to_numpy(v.value)) for v in variables])
        return out
    finally:
        keras.config.set_floatx(floatx)


def torch_trajectory(preset, overrides, params0, grads, lrs, dtype: str):
    import torch

    import rmsprop

    params = [torch.tensor(p, dtype=getattr(torch, dtype), requires_grad=True) for p in params0]
    opt = rmsprop.RMSprop.from_preset(params, preset, impl="single", **{"lr": 1.0, **overrides})
    out = []
    for g, rate in zip(grads, lrs):
        opt.param_groups[0]["lr"] = float(rate)
        for p, x in zip(params, g):
            p.grad = torch.tensor(x, dtype=p.dtype)
        opt.step()
        out.append([p.detach().numpy().copy() for p in params])
    return out


def relative_error(ours, theirs) -> float:
    return max(float(np.max(np.abs(a - b)) / np.max(np.abs(b)))
               for x, y in zip(ours, theirs) for a, b in zip(x, y))  # fmt: skip


def ulps(ours, theirs) -> float:
    worst = 0.0
    for x, y in zip(ours, theirs):
        for a, b in zip(x, y):
            spacing = float(np.spacing(np.max(np.abs(b)).astype(b.dtype)))
            worst = max(worst, float(np.max(np.abs(a.astype(np.float64) - b))) / spacing)
    return worst


def ours(preset, overrides):
    import rmsprop.keras

    keras_names = {"alpha": "rho", "eps": "epsilon"}
    return lambda: rmsprop.keras.RMSprop(
        learning_rate=1.0, preset=preset, **{keras_names.get(k, k): v for k, v in overrides.items()}
    )


def problem(overrides: dict, seed: int):
    """A random problem; for clipping, gradients whose norms are powers of two (Keras
    computes the clipping scale in float32 even for float64 variables: see
    ``parity_data.dyadic_clip_problem``)."""
    for kind in ("clipnorm", "global_clipnorm"):
        if kind in overrides:
            return dyadic_clip_problem(seed, kind)
    return random_problem(seed=seed)


def measure_presets(dtype: str) -> dict[str, float]:
    """Against the torch optimizer: relative error (float64: every preset and the switch
    matrix, one problem) or ulps (float32: every preset, worst of three problems)."""
    import rmsprop

    cases = {name: (name, {}) for name in rmsprop.PRESETS}
    if dtype == "float64":
        cases.update(
            {f"switches_{k}": ("torch", {**v, "alpha": 0.9}) for k, v in SWITCH_MATRIX.items()}
        )
    result = {}
    for case, (preset, overrides) in cases.items():
        worst = 0.0
        for seed in SEEDS if dtype == "float32" else SEEDS[:1]:
            params0, grads, lrs = problem(overrides, seed)
            theirs = torch_trajectory(preset, overrides, params0, grads, lrs, dtype)
            mine = keras_trajectory(ours(preset, overrides), params0, grads, lrs, dtype)
            worst = max(worst, (relative_error if dtype == "float64" else ulps)(mine, theirs))
        result[case] = worst
    return result


KERAS_SWITCHES = {
    "defaults": {},
    "momentum": {"momentum": 0.9},
    "centered": {"centered": True},
    "centered_momentum": {"centered": True, "momentum": 0.5, "epsilon": 1e-4},
    "weight_decay_momentum": {"weight_decay": 0.0625, "momentum": 0.9},
    "clipnorm": {"clipnorm": 1.0},
    "clipvalue": {"clipvalue": 0.5},
    "global_clipnorm": {"global_clipnorm": 1.0, "momentum": 0.3},
    "rho_epsilon": {"rho": 0.95, "epsilon": 1e-3},
}


def keras_preset_equals_keras(dtype: str = "float32") -> dict[str, bool]:
    """rmsprop.keras.RMSprop(preset="keras") against keras.optimizers.RMSprop, bit for bit."""
    import keras

    import rmsprop.keras

    result = {}
    for case, switches in KERAS_SWITCHES.items():
        params0, grads, lrs = random_problem(seed=9)
        theirs = keras_trajectory(lambda s=switches: keras.optimizers.RMSprop(0.01, **s),
                                  params0, grads, lrs, dtype)  # fmt: skip
        mine = keras_trajectory(lambda s=switches: rmsprop.keras.RMSprop(0.01, preset="keras", **s),
                                params0, grads, lrs, dtype)  # fmt: skip
        result[f"{dtype} {case}"] = all(
            np.array_equal(a, b) for x, y in zip(mine, theirs) for a, b in zip(x, y)
        )
    return result


def main() -> None:
    print(json.dumps({"float64": measure_presets("float64"), "float32": measure_presets("float32"),
                      "keras_bits": keras_preset_equals_keras()}))  # fmt: skip


if __name__ == "__main__":
    main()
