"""rmsprop.keras on every Keras backend: every preset against the torch optimizer
(float64 within 1e-15, float32 within the stated ulps per backend) and the keras preset
against keras.optimizers.RMSprop bit for bit; then serialization, weight decay, schedules
and Keras's own optimizer features.

Keras picks its backend once per process (``KERAS_BACKEND``, read at ``import keras``), so
this module runs on the process's backend (torch under ``tests/conftest.py``) and
:func:`test_every_keras_test_on_the_other_backends` runs it again, with the backend's own
suite (``keras_tensorflow.py``, ``keras_jax.py``), in one pytest process per other backend;
those processes start with this module's first test and run beside it.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

if os.environ.get("KERAS_BACKEND") == "tensorflow":
    # TensorFlow and Triton each carry LLVM: Triton loaded after TensorFlow aborts the
    # process ("LLVM ERROR: inconsistency in registered CommandLine options"; torch loads
    # it in torch._dynamo, which torch.optim imports); loaded first, both work
    with contextlib.suppress(ImportError):
        import triton  # noqa: F401

keras = pytest.importorskip("keras")

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

BACKEND = keras.backend.backend()
HERE = Path(__file__).resolve().parent
#: Set in the child pytest processes (they do not start children of their own).
CHILD = "RMSPROP_KERAS_BACKEND_CHILD"
#: Per backend: its own test files (beside this module) and its environment. The jax
#: process has float64 (x64) and two virtual CPU devices (keras.distribution tests).
BACKENDS = {
    "torch": ((), {}),
    "tensorflow": (("keras_tensorflow.py",), {"TF_CPP_MIN_LOG_LEVEL": "2"}),
    "jax": (("keras_jax.py",), {"JAX_ENABLE_X64": "1", "JAX_PLATFORMS": "cpu",
                               "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}),
}  # fmt: skip

#: The largest difference from ``rmsprop.RMSprop(impl="single")`` over 100 float32 steps
#: with a changing lr, in ulps of each tensor's largest element, worst of three problems
#: (seeds 3-5), per Keras backend (docs/correctness.md's table).
FLOAT32_ULPS = {
    "torch": {"torch": 2, "keras": 1, "tf1": 1, "optax": 1, "timm_tf": 1, "hinton": 1,
              "graves": 3, "dqn": 1, "dopamine": 0.5, "impala": 0.25, "sb3_tf_like": 0.25},
    "jax": {"torch": 2, "keras": 1, "tf1": 1, "optax": 1, "timm_tf": 1, "hinton": 1,
            "graves": 3, "dqn": 2, "dopamine": 1, "impala": 0.5, "sb3_tf_like": 2},
    "tensorflow": {"torch": 2, "keras": 1, "tf1": 1, "optax": 1, "timm_tf": 1, "hinton": 1,
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
def test_every_preset_against_its_oracle_on_this_backend():
    check({"float64": keras_parity.measure_presets("float64"),
           "float32": keras_parity.measure_presets("float32"),
           "keras_bits": {**keras_parity.keras_preset_equals_keras("float32"),
                          **keras_parity.keras_preset_equals_keras("float64")}}, BACKEND)  # fmt: skip


def test_the_documented_float32_table_has_every_backend_the_tests_hold():
    """docs/correctness.md's float32 row per Keras backend is ``FLOAT32_ULPS``."""
    text = (HERE.parent.parent / "docs" / "correctness.md").read_text(encoding="utf-8")
    header = next(line for line in text.splitlines() if line.startswith("| preset | torch"))
    presets = [c.strip() for c in header.strip("|").split("|")][1:]
    for backend, bounds in FLOAT32_ULPS.items():
        line = next(x for x in text.splitlines() if x.startswith(f"| Keras, {backend} backend"))
        cells = [c.strip() for c in line.strip("|").split("|")][1:]
        assert dict(zip(presets, map(float, cells))) == bounds, backend


#: Presets whose step is not Keras's own code once centered (Keras's own centered step is
#: in the parity test above).
NOT_KERAS = ("torch", "tf1", "optax", "timm_tf", "hinton", "dqn")


@pytest.mark.parametrize("preset", NOT_KERAS)
def test_centered_presets_match_the_torch_optimizer_in_float64(preset):
    """``preset="torch", centered=True`` crashed on tensorflow (``lerp`` read a
    ``tf.DType`` as a NumPy dtype: "Cannot interpret 'tf.float32' as a data type")."""
    params0, grads, lrs = random_problem(seed=3, steps=20)
    overrides = {"centered": True}
    theirs = keras_parity.torch_trajectory(preset, overrides, params0, grads, lrs, "float64")
    mine = keras_parity.keras_trajectory(keras_parity.ours(preset, overrides), params0, grads,
                                         lrs, "float64")  # fmt: skip
    assert keras_parity.relative_error(mine, theirs) <= 1e-15


def test_centered_torch_preset_trains_in_fit():
    """The same crash in ``model.fit`` (compiled by the backend: ``tf.function`` on
    tensorflow, ``jax.jit`` on jax): the loss falls."""
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    y = x @ np.array([[1.0], [-2.0], [0.5], [3.0]], "float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer=rmsprop.keras.RMSprop(preset="torch", centered=True, momentum=0.5),
                  loss="mse")  # fmt: skip
    losses = model.fit(x, y, epochs=5, batch_size=16, verbose=0).history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < 0.5 * losses[0], losses


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


def test_initial_accumulator_value_holds_in_fit():
    """``model.fit`` builds the optimizer where the backend traces its train step: the
    velocity must start at ``initial_accumulator_value`` there too (it started at 0
    inside tensorflow's ``tf.function``). After one step ``v = 1 + (1 − ρ)(g² − 1) ≥ ρ``."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    optimizer = rmsprop.keras.RMSprop(learning_rate=0.01, preset="tf1")
    model.compile(optimizer=optimizer, loss="mse")
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    model.fit(x, np.zeros((8, 3), "float32"), batch_size=8, epochs=1, verbose=0)
    for velocity in optimizer._velocities:
        assert np.all(keras.ops.convert_to_numpy(velocity) >= np.float32(0.9)), velocity


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


DRIVER = "test_every_keras_test_on_the_other_backends"


def other_backends(session: pytest.Session) -> list[str]:
    """The backends whose driver test is selected, other than this process's, installed."""
    if os.environ.get(CHILD):
        return []
    chosen = [item.callspec.params["backend"] for item in session.items
              if getattr(item, "originalname", None) == DRIVER]  # fmt: skip
    return [b for b in chosen if b != BACKEND and importlib.util.find_spec(b) is not None]


def start_child(backend: str, markers: str, log) -> subprocess.Popen:
    files, env = BACKENDS[backend]
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
               *(str(HERE / f) for f in files)]  # fmt: skip
    command += ["-m", markers] if markers else []
    env = {**os.environ, **env, "KERAS_BACKEND": backend, CHILD: "1"}
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                            cwd=HERE.parent.parent)  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def children(request):
    """One pytest process per other backend, started with this module's first test (the
    marker expression, ``-m``, is passed on); each is waited for by its driver test."""
    markers = request.config.getoption("markexpr")
    running = {}
    with tempfile.TemporaryDirectory() as folder:
        for backend in other_backends(request.session):
            log = open(Path(folder) / f"{backend}.log", "w+")  # noqa: SIM115 (closed below)
            running[backend] = (start_child(backend, markers, log), log)
        try:
            yield running
        finally:
            for process, log in running.values():
                if process.poll() is None:
                    process.kill()
                process.wait()
                log.close()


@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_every_keras_test_on_the_other_backends(backend, children):
    """This module and the backend's own suite passed on ``backend``."""
    if os.environ.get(CHILD):
        pytest.skip("a child process: its parent runs the other backends")
    if backend == BACKEND:
        pytest.skip(f"this process runs on {backend}")
    if backend not in children:
        pytest.skip(f"{backend} is not installed")
    process, log = children[backend]
    code = process.wait(timeout=1500)
    log.seek(0)
    assert code == 0, f"KERAS_BACKEND={backend}:\n{log.read()[-8000:]}"
