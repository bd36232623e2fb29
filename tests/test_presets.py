"""Presets are data: complete, immutable, sourced, and distinct on the documented axes."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from rmsprop import PRESETS, Preset
from rmsprop.presets import SWITCHES

REQUIRED = {"torch", "keras", "tf1", "optax", "timm_tf", "hinton", "graves", "dqn"}


def test_required_presets_exist_and_cite_a_source():
    assert set(PRESETS) >= REQUIRED
    for preset in PRESETS.values():
        assert isinstance(preset, Preset)
        assert preset.source, preset.name
        assert preset.notes, preset.name


def test_presets_are_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        PRESETS["torch"].eps = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        PRESETS["new"] = PRESETS["torch"]  # type: ignore[index]


def test_the_four_axes_as_documented():
    p = PRESETS
    assert (p["torch"].eps_in_sqrt, p["keras"].eps_in_sqrt, p["tf1"].eps_in_sqrt) == (
        False,
        True,
        True,
    )
    assert (p["tf1"].initial_accumulator_value, p["timm_tf"].initial_accumulator_value) == (
        1.0,
        1.0,
    )
    assert p["torch"].initial_accumulator_value == p["keras"].initial_accumulator_value == 0.0
    assert not p["torch"].lr_in_momentum and p["keras"].lr_in_momentum and p["optax"].lr_in_momentum
    assert p["keras"].decoupled_weight_decay and not p["torch"].decoupled_weight_decay
    hinton = p["hinton"]
    assert (hinton.alpha, hinton.eps, hinton.eps_in_sqrt, hinton.lr, hinton.momentum) == (
        0.9,
        1e-8,
        True,
        1e-3,
        0.0,
    )
    assert p["graves"].centered and p["graves"].momentum == 0.9 and p["dqn"].centered


def test_overrides_win_and_every_switch_is_returned():
    hp = PRESETS["keras"].hyperparameters(lr=0.5, momentum=0.9)
    assert hp["lr"] == 0.5 and hp["momentum"] == 0.9
    assert set(SWITCHES) <= set(hp)


def test_differences_names_the_switches_that_differ():
    diff = PRESETS["tf1"].differences(PRESETS["keras"])
    assert set(diff) == {
        "lr",
        "eps",
        "initial_accumulator_value",
        "decoupled_weight_decay",
        "ema_form",
    }


def test_presets_module_needs_only_the_standard_library():
    import rmsprop.presets as presets_module

    text = Path(presets_module.__file__).read_text()
    assert "import numpy" not in text and "import torch" not in text


def test_import_rmsprop_does_not_import_torch():
    code = "import rmsprop, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
