"""Every preset through rmsprop.RMSprop matches its framework in float64 (1e-12 relative,
100 steps, changing lr): Keras 3 and optax run live, TF1 and timm via golden files."""

from __future__ import annotations

import pytest
import torch

import rmsprop

from frameworks import keras_trajectory, optax_trajectory
from parity_data import (
    assert_close_f64,
    effective_hyperparameters,
    golden_files,
    load_golden,
    optimizer_trajectory,
    random_problem,
)

CASES = {
    "keras": ("keras", {"momentum": 0.9, "weight_decay": 0.01}, keras_trajectory),
    "keras_centered": ("keras", {"centered": True}, keras_trajectory),
    "hinton": ("hinton", {}, keras_trajectory),
    "graves": ("graves", {}, optax_trajectory),
    "dqn": ("dqn", {}, keras_trajectory),
    "optax": ("optax", {}, optax_trajectory),
    "optax_nesterov_bias": ("optax", {"momentum": 0.9, "nesterov": True, "bias_correction": True},
                            optax_trajectory),
}  # fmt: skip


def _compare(name, ours, theirs):
    for step, (a, b) in enumerate(zip(ours, theirs)):
        for x, y in zip(a, b):
            assert_close_f64(x.numpy(), y, what=f"{name} step {step + 1}")


@pytest.mark.parity
@pytest.mark.parametrize("impl", ["single", "foreach"])
@pytest.mark.parametrize("case", CASES)
def test_preset_matches_live_framework(case, impl):
    preset, overrides, framework = CASES[case]
    params0, grads, lrs = random_problem(seed=len(case) + 11)
    hp = rmsprop.PRESETS[preset].hyperparameters(**{"lr": 1.0, **overrides})
    theirs = framework(hp, params0, grads, lrs)
    ours, _ = optimizer_trajectory(
        lambda ps: rmsprop.RMSprop.from_preset(ps, preset, impl=impl, **{"lr": 1.0, **overrides}),
        params0, grads, lrs, torch.float64)  # fmt: skip
    _compare(case, ours, theirs)


FILES = golden_files()


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_golden_trajectories_through_the_torch_optimizer(path):
    golden = load_golden(path)
    hp = effective_hyperparameters(golden)
    ours, _ = optimizer_trajectory(lambda ps: rmsprop.RMSprop(ps, lr=1.0, **hp),
                                   golden.params0, golden.grads, golden.lrs, torch.float64)  # fmt: skip
    _compare(golden.name, ours, golden.traj)


def test_from_preset_rejects_unknown_names_and_arguments():
    p = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(ValueError, match="unknown preset 'tf2'; known presets"):
        rmsprop.RMSprop.from_preset(p, "tf2")
    with pytest.raises(TypeError, match="'rho' is another framework's name: here it is alpha="):
        rmsprop.RMSprop.from_preset(p, "keras", rho=0.9)
    with pytest.raises(ValueError, match="preset 'tf1' has no default lr"):
        rmsprop.RMSprop.from_preset(p, "tf1")
