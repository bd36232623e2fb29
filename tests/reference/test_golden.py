"""TF1 and timm RMSpropTF presets against trajectories the real libraries produced
(tests/golden/make_golden.py made them; those libraries are not in the default run)."""

from __future__ import annotations

import pytest

from rmsprop import PRESETS

from parity_data import (
    assert_close_f64,
    effective_hyperparameters,
    golden_files,
    load_golden,
    reference_trajectory,
)

FILES = golden_files()


def test_golden_files_are_present():
    names = {p.stem for p in FILES}
    expected = {"tf1_plain", "tf1_centered_momentum", "timm_tf_plain", "timm_tf_decoupled_momentum",
                "sb3_tf_like_plain"}  # fmt: skip
    assert expected <= names


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_reference_matches_golden_trajectory(path):
    golden = load_golden(path)
    traj = reference_trajectory(
        effective_hyperparameters(golden), golden.params0, golden.grads, golden.lrs
    )
    for step, (ours, theirs) in enumerate(zip(traj, golden.traj)):
        for i, (a, b) in enumerate(zip(ours, theirs)):
            assert_close_f64(a, b, what=f"{golden.name} step {step + 1} tensor {i}")


@pytest.mark.parametrize(
    ("preset", "golden"),
    [
        ("tf1", "tf1_plain"),
        ("dopamine", "tf1_dopamine"),
        ("impala", "tf1_impala"),
        ("timm_tf", "timm_tf_plain"),
        ("sb3_tf_like", "sb3_tf_like_plain"),
    ],
)
def test_preset_switches_are_the_golden_ones(preset, golden):
    """The preset itself (not just a hand-written config) reproduces the framework."""
    g = load_golden(next(p for p in FILES if p.stem == golden))
    hp = PRESETS[preset].hyperparameters(lr=1.0)
    for name, value in g.hp.items():
        assert hp[name] == value, f"preset {preset}: {name}={hp[name]!r}, golden has {value!r}"
