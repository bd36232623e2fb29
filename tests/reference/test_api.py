"""Trees, immutability of state, structure errors, schedules and input validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rmsprop import reference as ref
from rmsprop.reference import schedules as sch


def test_trees_of_lists_tuples_and_dicts_keep_their_structure():
    params = {"layer": [np.ones(2), (np.zeros(3), np.ones(1))], "bias": np.zeros(1)}
    tx = ref.rmsprop(lr=0.1, momentum=0.9, centered=True)
    state = tx.init(params)
    updates, state = tx.update(params, state, params)
    new = ref.apply_updates(params, updates)
    assert isinstance(new["layer"], list) and isinstance(new["layer"][1], tuple)
    assert new["layer"][1][0].shape == (3,)


def test_update_does_not_modify_its_inputs():
    params = np.array([1.0, -2.0])
    grads = np.array([0.5, 0.25])
    tx = ref.rmsprop(lr=0.1, momentum=0.9, centered=True)
    state0 = tx.init(params)
    snapshot = [np.copy(a) for s in state0 for a in s if isinstance(a, np.ndarray)]
    tx.update(grads, state0, params)
    after = [a for s in state0 for a in s if isinstance(a, np.ndarray)]
    assert all(np.array_equal(a, b) for a, b in zip(snapshot, after))
    np.testing.assert_array_equal(params, [1.0, -2.0])
    np.testing.assert_array_equal(grads, [0.5, 0.25])


def test_state_names_follow_torch():
    tx = ref.rmsprop(momentum=0.9, centered=True)
    state = tx.init(np.zeros(2))
    rms = state[0]
    assert rms._fields == ("step", "square_avg", "grad_avg")
    assert state[1]._fields == ("momentum_buffer",)


def test_structure_mismatch_is_a_clear_error():
    tx = ref.rmsprop()
    state = tx.init([np.zeros(2), np.zeros(3)])
    with pytest.raises(ValueError, match="structure"):
        tx.update([np.zeros(2)], state, [np.zeros(2), np.zeros(3)])


def test_integer_arrays_are_refused():
    with pytest.raises(TypeError, match="floating-point"):
        ref.rmsprop().init(np.arange(3))


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"lr": -0.1}, ValueError, r"Invalid learning rate: -0.1 \(lr must be in \[0, inf\)\)"),
        ({"lr": float("nan")}, ValueError, r"Invalid learning rate: nan"),
        ({"alpha": 1.0}, ValueError, r"Invalid alpha value: 1.0 \(alpha must be in \[0, 1\)\)"),
        ({"eps": -1e-8}, ValueError, r"Invalid epsilon value: -1e-08"),
        (
            {"momentum": 1.5},
            ValueError,
            r"Invalid momentum value: 1.5 \(momentum must be in \[0, 1\)\)",
        ),
        ({"nesterov": True}, ValueError, r"nesterov=True needs momentum > 0"),
        ({"clipnorm": 0.0}, ValueError, r"clipnorm=0.0 is invalid: it must be in \(0, inf\)"),
        ({"clipnorm": 1.0, "clipvalue": 1.0}, ValueError, r"at most one of"),
        ({"centered": 1}, TypeError, r"centered must be True or False"),
        ({"alpha": "0.9"}, TypeError, r"alpha must be a real number"),
        ({"ema_form": "tf"}, ValueError, r"ema_form='tf' is invalid: it must be one of"),
        ({"betas": (0.9, 0.99)}, TypeError, r"unexpected keyword argument 'betas'"),
    ],
)
def test_bad_hyperparameters_raise_naming_the_argument(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        ref.rmsprop(**kwargs)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown preset 'tf2'; known presets: torch, keras, tf1"):
        ref.from_preset("tf2")


def test_preset_without_default_lr_asks_for_one():
    with pytest.raises(ValueError, match=r"preset 'optax' has no default lr"):
        ref.from_preset("optax")


def test_schedules_values():
    assert sch.constant(0.1)(1000) == 0.1
    assert sch.exponential_decay(1.0, 0.5, 10)(5) == pytest.approx(0.5**0.5)
    assert sch.exponential_decay(1.0, 0.5, 10, staircase=True)(19) == 0.5
    assert sch.step_decay(0.1, 0.95, 500)(999) == pytest.approx(0.095)
    assert sch.step_decay(0.1, 0.95, 500)(1000) == pytest.approx(0.1 * 0.95**2)
    assert sch.inverse_time_decay(1.0, 1.0, 10)(10) == 0.5
    assert sch.polynomial_decay(1.0, 0.0, 10)(5) == 0.5
    assert sch.polynomial_decay(1.0, 0.1, 10)(50) == 0.1
    assert sch.cosine_decay(1.0, 100)(50) == pytest.approx(0.5)
    assert sch.cosine_decay(1.0, 100, final_fraction=0.1)(100) == pytest.approx(0.1)
    assert sch.linear_warmup(0.0, 1.0, 4)(1) == 0.25
    assert sch.linear_warmup(0.0, 1.0, 4)(10) == 1.0
    pc = sch.piecewise_constant([10, 20], [1.0, 0.5, 0.1])
    assert [pc(10), pc(11), pc(20), pc(21)] == [1.0, 0.5, 0.5, 0.1]
    warm = sch.warmup(sch.cosine_decay(1.0, 10), 5)
    assert [warm(0), warm(5)] == [0.0, 1.0]
    assert warm(10) == pytest.approx(0.5)
    assert sch.join([sch.constant(1.0), sch.constant(2.0)], [3])(3) == 2.0


@pytest.mark.parametrize(
    ("factory", "pattern"),
    [
        (
            lambda: sch.exponential_decay(0.1, 0.9, 0),
            r"decay_steps=0 is invalid: it must be a positive integer",
        ),
        (lambda: sch.step_decay(-0.1, 0.9, 10), r"init_value=-0.1 is invalid"),
        (lambda: sch.piecewise_constant([5, 3], [1, 2, 3]), r"strictly increasing"),
        (lambda: sch.piecewise_constant([5], [1]), r"one more entry"),
        (lambda: sch.cosine_decay(1.0, 10, final_fraction=2.0), r"final_fraction=2.0 is invalid"),
    ],
)
def test_bad_schedule_arguments(factory, pattern):
    with pytest.raises(ValueError, match=pattern):
        factory()


def test_schedule_drives_the_lr_from_step_zero():
    seen = []
    tx = ref.rmsprop(lr=lambda step: seen.append(step) or 0.1)
    params = np.zeros(1)
    state = tx.init(params)
    for _ in range(3):
        _, state = tx.update(np.ones(1), state, params)
    assert seen == [0, 1, 2]
    assert not math.isnan(seen[0])


@pytest.mark.parametrize("params_given", [True, False])
def test_a_gradient_of_another_shape_is_refused(params_given):
    """NumPy would broadcast a (2, 3) gradient onto a (3,) parameter (the parameter and its
    state would become (2, 3)); the reference refuses it, naming both shapes."""
    tx = ref.rmsprop(lr=0.1, momentum=0.9, centered=True)
    params = np.zeros(3)
    state = tx.init(params)
    with pytest.raises(ValueError, match=r"shape \(2, 3\) where its parameter's is \(3,\)"):
        tx.update(np.ones((2, 3)), state, params if params_given else None)
    with pytest.raises(ValueError, match=r"updates: leaf 0 has shape \(2, 3\)"):
        ref.apply_updates(params, np.ones((2, 3)))
