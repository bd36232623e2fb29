"""rmsprop.keras: every preset against the torch optimizer (float64 within 1e-15, float32
within the README's stated ulps) and the keras preset against keras.optimizers.RMSprop
bit for bit, on the torch backend here and on the jax backend in a subprocess; then
serialization, weight decay, schedules and Keras's own optimizer features."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")
if keras.backend.backend() != "torch":  # pragma: no cover
    pytest.skip(
        "this module runs on the torch backend (KERAS_BACKEND=torch)", allow_module_level=True
    )

import rmsprop  # noqa: E402
import rmsprop.keras  # noqa: E402

from frontends import keras_parity  # noqa: E402
from parity_data import (  # noqa: E402
    assert_close_f64,
    effective_hyperparameters,
    golden_files,
    load_golden,
    random_problem,
)

#: The README's table: the largest difference from ``rmsprop.RMSprop(impl="single")``
#: over 100 float32 steps with a changing lr, in ulps of each tensor's largest element,
#: worst of three problems (seeds 3-5), per Keras backend.
FLOAT32_ULPS = {
    "torch": {"torch": 2, "keras": 1, "tf1": 1, "optax": 1, "timm_tf": 1, "hinton": 1,
              "graves": 3, "dqn": 1, "dopamine": 0.5, "impala": 0.25, "sb3_tf_like": 0.25},
    "jax": {"torch": 2, "keras": 1, "tf1": 1, "optax": 1, "timm_tf": 1, "hinton": 1,
            "graves": 3, "dqn": 2, "dopamine": 1, "impala": 0.5, "sb3_tf_like": 2},
}  # fmt: skip


def check(results: dict, backend: str) -> None:
    """The stated bounds: presets within 1e-15 of the scale in float64 (the switch matrix
    within 100 steps x one ulp, 1e-14: its Nesterov and decay cases sum the update in
    another order than torch's in-place ops); float32 within the table; the keras preset
    is Keras bit for bit."""
    for case, error in results["float64"].items():
        assert error <= (1e-15 if case in rmsprop.PRESETS else 1e-14), (backend, case, error)
    for preset, bound in FLOAT32_ULPS[backend].items():
        assert results["float32"][preset] <= bound, (backend, preset, results["float32"][preset])
    assert all(results["keras_bits"].values()), results["keras_bits"]


@pytest.mark.parity
def test_torch_backend_parity():
    check({"float64": keras_parity.measure_presets("float64"),
           "float32": keras_parity.measure_presets("float32"),
           "keras_bits": keras_parity.keras_preset_equals_keras()}, "torch")  # fmt: skip


@pytest.mark.parity
def test_jax_backend_parity():
    pytest.importorskip("jax")
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_ENABLE_X64": "1", "JAX_PLATFORMS": "cpu"}
    script = Path(keras_parity.__file__)
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                          timeout=600, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    check(json.loads(done.stdout.strip().splitlines()[-1]), "jax")


def _problem():
    params0, grads, _ = random_problem(seed=5, steps=5)
    return params0, grads


def _run(opt, params0, grads):
    variables = [keras.Variable(p.astype("float32")) for p in params0]
    for g in grads:
        opt.apply_gradients([(keras.ops.convert_to_tensor(x.astype("float32")), v)
                             for x, v in zip(g, variables)])  # fmt: skip
    return [keras.ops.convert_to_numpy(v.value) for v in variables], variables


def test_preset_switches_and_overrides():
    opt = rmsprop.keras.RMSprop(preset="tf1", learning_rate=0.01, momentum=0.9)
    assert (opt.rho, opt.epsilon, opt.initial_accumulator_value, opt.ema_form) == (
        0.9,
        1e-10,
        1.0,
        "delta",
    )
    assert opt.momentum == 0.9 and not opt.keras_own
    assert rmsprop.keras.RMSprop().keras_own  # Keras's defaults: Keras's own step
    torch_like = rmsprop.keras.RMSprop(preset="torch")
    assert (torch_like.rho, torch_like.epsilon, torch_like.eps_in_sqrt) == (0.99, 1e-8, False)
    assert float(keras.ops.convert_to_numpy(torch_like.learning_rate)) == pytest.approx(1e-2)
    # v starts at 1 for TF1: one step from v0 = 1 (hand-computed, float32)
    opt = rmsprop.keras.RMSprop(preset="tf1", learning_rate=0.1)
    var = keras.Variable([2.0])
    opt.apply_gradients([(keras.ops.convert_to_tensor([2.0]), var)])
    v = np.float32(1.0) + np.float32(0.1) * (np.float32(4.0) - np.float32(1.0))  # delta form
    expected = np.float32(2.0) - np.float32(0.1) * np.float32(2.0) / np.sqrt(v + np.float32(1e-10))
    assert float(keras.ops.convert_to_numpy(var)[0]) == pytest.approx(float(expected), rel=1e-6)


def test_get_config_from_config_and_model_save_round_trip(tmp_path):
    schedule = keras.optimizers.schedules.ExponentialDecay(0.01, decay_steps=10, decay_rate=0.5)
    opt = rmsprop.keras.RMSprop(learning_rate=schedule, preset="timm_tf", momentum=0.9,
                                weight_decay=1e-4, clipnorm=1.0)  # fmt: skip
    config = opt.get_config()
    assert config["preset"] == "timm_tf" and config["initial_accumulator_value"] == 1.0
    assert config["decoupled_weight_decay"] is False and config["weight_decay"] == 1e-4
    again = rmsprop.keras.RMSprop.from_config(copy.deepcopy(config))  # it deserializes in place
    assert again.get_config() == config
    # a model compiled with it saves and loads as this class, with its state
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile(optimizer=rmsprop.keras.RMSprop(preset="torch", momentum=0.9), loss="mse")
    x, y = np.ones((8, 4), "float32"), np.zeros((8, 3), "float32")
    model.fit(x, y, epochs=2, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.optimizer) is rmsprop.keras.RMSprop
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables):
        assert np.array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    # and the next step is the same in both
    model.fit(x, y, epochs=1, verbose=0)
    loaded.fit(x, y, epochs=1, verbose=0)
    for a, b in zip(model.weights, loaded.weights):
        assert np.array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


def test_every_switch_survives_the_config_round_trip():
    switches = {"eps_in_sqrt": False, "initial_accumulator_value": 0.5, "nesterov": True,
                "lr_in_momentum": False, "decoupled_weight_decay": False, "bias_correction": True,
                "maximize": True, "ema_form": "delta", "centered_clamp": True,
                "division_form": "rsqrt"}  # fmt: skip
    opt = rmsprop.keras.RMSprop(learning_rate=0.01, rho=0.95, momentum=0.5, epsilon=1e-4,
                                centered=True, weight_decay=0.01, **switches)  # fmt: skip
    again = rmsprop.keras.RMSprop.from_config(copy.deepcopy(opt.get_config()))
    for name, value in switches.items():
        assert getattr(again, name) == value, name
    assert (again.rho, again.momentum, again.epsilon, again.centered) == (0.95, 0.5, 1e-4, True)
    assert again.coupled_weight_decay == 0.01 and again.get_config() == opt.get_config()


def test_bias_correction_in_bfloat16_moves_the_parameter():
    """1 − ρᵗ is computed in float32: in bf16, ρ = 0.999 rounds to 1 and the step was 0/0."""
    for centered in (False, True):
        runs = {}
        for dtype in ("bfloat16", "float32"):
            # epsilon 1e-2: bias correction makes step 1's centered variance pure rounding
            opt = rmsprop.keras.RMSprop(learning_rate=0.01, rho=0.999, bias_correction=True,
                                        centered=centered, epsilon=1e-2)  # fmt: skip
            var = keras.Variable(np.full(4, 1.0, "float32"), dtype=dtype)
            for k in range(20):  # a gradient with a variance (centered divides by its root)
                g = np.full(4, 0.5 + 0.3 * (-1) ** k, "float32")
                opt.apply_gradients([(keras.ops.convert_to_tensor(g.astype(dtype)), var)])
            runs[dtype] = keras.ops.convert_to_numpy(keras.ops.cast(var.value, "float32"))
        # bf16 variables compute in bf16 (Keras's rule): each step of 0.01 rounds to a bf16
        # spacing near 1 (2^-7), so the distance travelled agrees only roughly; before the
        # fix the parameter did not move at all (or became NaN when centered)
        moved, expected = 1 - runs["bfloat16"], 1 - runs["float32"]
        assert np.all(np.isfinite(runs["bfloat16"]))
        assert np.all(np.abs(moved - expected) <= 0.25 * expected), (moved, expected)


def test_lr_outside_momentum_with_keras_defaults_uses_torch_op_order():
    opt = rmsprop.keras.RMSprop(momentum=0.9, lr_in_momentum=False)  # no error
    assert opt.division_form == "divide" and not opt.keras_own


def test_coupled_weight_decay_respects_exclusions():
    params0, grads = _problem()
    decayed = rmsprop.keras.RMSprop(preset="torch", weight_decay=0.1)
    excluded = rmsprop.keras.RMSprop(preset="torch", weight_decay=0.1)
    plain = rmsprop.keras.RMSprop(preset="torch")
    variables = [keras.Variable(p.astype("float32")) for p in params0]
    excluded.exclude_from_weight_decay(var_list=[variables[1]])
    for g in grads:
        excluded.apply_gradients([(keras.ops.convert_to_tensor(x.astype("float32")), v)
                                  for x, v in zip(g, variables)])  # fmt: skip
    with_decay, _ = _run(decayed, params0, grads)
    without, _ = _run(plain, params0, grads)
    got = [keras.ops.convert_to_numpy(v.value) for v in variables]
    assert np.array_equal(got[0], with_decay[0]) and not np.array_equal(got[0], without[0])
    assert np.array_equal(got[1], without[1])
    # coupled decay is torch's: the same as rmsprop.RMSprop(weight_decay=0.1) within an ulp
    import torch

    params = [torch.tensor(p.astype("float32"), requires_grad=True) for p in params0]
    ref = rmsprop.RMSprop(params, weight_decay=0.1, impl="single")
    for g in grads:
        for p, x in zip(params, g):
            p.grad = torch.tensor(x.astype("float32"))
        ref.step()
    for a, b in zip(with_decay, params):
        np.testing.assert_allclose(
            a, b.detach().numpy(), rtol=0, atol=4 * np.spacing(np.float32(4))
        )


def test_gradient_accumulation_ema_and_loss_scale_run_through_keras():
    params0, grads = _problem()
    # two accumulated steps apply their mean once (Keras's gradient_accumulation_steps)
    # (bias correction reads the step count, which counts applied steps, not micro-steps)
    acc = rmsprop.keras.RMSprop(preset="torch", momentum=0.9, bias_correction=True,
                                gradient_accumulation_steps=2)  # fmt: skip
    one = rmsprop.keras.RMSprop(preset="torch", momentum=0.9, bias_correction=True)
    got, _ = _run(acc, params0, grads[:2])
    mean = [[(a + b) / 2 for a, b in zip(grads[0], grads[1])]]
    want, _ = _run(one, params0, mean)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    # use_ema keeps a moving average of the weights; loss_scale_factor unscales gradients
    ema = rmsprop.keras.RMSprop(preset="graves", use_ema=True, ema_momentum=0.5)
    final, _ = _run(ema, params0, grads)
    averages = [keras.ops.convert_to_numpy(v) for v in ema._model_variables_moving_average]
    for average, start, now in zip(averages, params0, final):  # moved, and lags the weights
        assert not np.allclose(average, start) and not np.allclose(average, now)
    scaled = rmsprop.keras.RMSprop(preset="torch", loss_scale_factor=1024.0)
    plain = rmsprop.keras.RMSprop(preset="torch")
    a, _ = _run(scaled, params0, [[x * 1024.0 for x in g] for g in grads])
    b, _ = _run(plain, params0, grads)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-6)


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="rho"):
        rmsprop.keras.RMSprop(rho=1.5)
    with pytest.raises(ValueError, match="epsilon"):
        rmsprop.keras.RMSprop(epsilon=-1.0)
    with pytest.raises(ValueError, match="learning_rate"):
        rmsprop.keras.RMSprop(learning_rate=-0.1)
    with pytest.raises(ValueError, match="unknown preset 'tf2'"):
        rmsprop.keras.RMSprop(preset="tf2")
    with pytest.raises(ValueError, match="no default learning rate"):
        rmsprop.keras.RMSprop(preset="optax")
    with pytest.raises(ValueError, match="needs lr_in_momentum=True"):
        rmsprop.keras.RMSprop(momentum=0.9, lr_in_momentum=False, division_form="lr_first")
    with pytest.raises(ValueError, match="ema_form"):
        rmsprop.keras.RMSprop(ema_form="fast")
    with pytest.raises(ValueError, match="nesterov"):
        rmsprop.keras.RMSprop(preset="torch", nesterov=True)


FILES = golden_files()


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_golden_trajectories_of_tf1_timm_and_sb3(path):
    """The stored trajectories of the real TF1 / timm / SB3 optimizers, float64, 1e-12."""
    golden = load_golden(path)
    hp = effective_hyperparameters(golden)
    ours = keras_parity.keras_trajectory(keras_parity.ours("torch", hp), golden.params0,
                                         golden.grads, golden.lrs, "float64")  # fmt: skip
    for step, (mine, theirs) in enumerate(zip(ours, golden.traj)):
        for a, b in zip(mine, theirs):
            assert_close_f64(a, b, what=f"{golden.name} step {step + 1}")
