"""rmsprop.optax: every preset against the torch optimizer (float64 within 1e-15, float32
within the README's stated ulps), the optax preset against optax.rmsprop bit for bit, and
the things JAX users do with a transform (jit, vmap, pytrees, bf16, chains, MultiSteps)."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")
jax.config.update("jax_enable_x64", True)  # float64 parity; float32 cases say float32
import jax.numpy as jnp  # noqa: E402
import torch  # noqa: E402

import rmsprop  # noqa: E402
from rmsprop.optax import from_preset  # noqa: E402
from rmsprop.optax import rmsprop as jax_rmsprop  # noqa: E402

from parity_data import (  # noqa: E402
    SWITCH_MATRIX,
    assert_close_f64,
    effective_hyperparameters,
    golden_files,
    load_golden,
    optimizer_trajectory,
    random_problem,
)

#: The README's table: the largest difference from ``rmsprop.RMSprop(impl="single")``
#: (torch.optim's bits) over 100 float32 steps with a changing lr, in units in the last
#: place of each tensor's largest element. Measured on three problems (seeds 3-5).
FLOAT32_ULPS = {"torch": 4, "keras": 1, "tf1": 2, "optax": 1, "timm_tf": 2, "hinton": 1,
                "graves": 2.5, "dqn": 1, "dopamine": 1, "impala": 1, "sb3_tf_like": 2}  # fmt: skip


def jax_trajectory(make_tx, params0, grads, lrs, dtype):
    """Run ``make_tx(schedule)`` under jit; the params after every step, as NumPy."""
    table = jnp.asarray(lrs, dtype=dtype)
    tx = make_tx(lambda count: table[count])
    params = [jnp.asarray(p, dtype) for p in params0]
    state = tx.init(params)
    step = jax.jit(tx.update)
    out = []
    for g in grads:
        updates, state = step([jnp.asarray(x, dtype) for x in g], state, params)
        params = optax.apply_updates(params, updates)
        out.append([np.asarray(p) for p in params])
    return out


def torch_trajectory(preset, overrides, params0, grads, lrs, dtype):
    out, _ = optimizer_trajectory(
        lambda ps: rmsprop.RMSprop.from_preset(ps, preset, impl="single", **{"lr": 1.0, **overrides}),
        params0, grads, lrs, dtype)  # fmt: skip
    return [[t.numpy() for t in step] for step in out]


def relative_error(ours, theirs) -> float:
    return max(float(np.max(np.abs(a - b)) / np.max(np.abs(b)))
               for x, y in zip(ours, theirs) for a, b in zip(x, y))  # fmt: skip


def ulps(ours, theirs) -> float:
    """The largest difference, in ulps of each tensor's largest element."""
    worst = 0.0
    for x, y in zip(ours, theirs):
        for a, b in zip(x, y):
            spacing = np.spacing(np.max(np.abs(b)).astype(b.dtype)).astype(np.float64)
            diff = np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))
            worst = max(worst, float(diff / spacing))
    return worst


CASES = {name: (name, {}) for name in rmsprop.PRESETS}
CASES.update({f"switches_{k}": ("torch", {**v, "alpha": 0.9}) for k, v in SWITCH_MATRIX.items()})


@pytest.mark.parity
@pytest.mark.parametrize("case", CASES)
def test_float64_trajectory_equals_the_torch_optimizer(case):
    preset, overrides = CASES[case]
    params0, grads, lrs = random_problem(seed=3)
    theirs = torch_trajectory(preset, overrides, params0, grads, lrs, torch.float64)
    ours = jax_trajectory(lambda lr: from_preset(preset, lr, **overrides), params0, grads, lrs,
                          jnp.float64)  # fmt: skip
    # Presets: within 1e-15 of the scale (the target). The switch matrix: within
    # 100 steps x one ulp (1e-14), since its Nesterov and decoupled-decay cases sum the
    # update in another order than torch's in-place ops (measured up to 2.2e-15).
    bound = 1e-15 if case in rmsprop.PRESETS else 1e-14
    assert relative_error(ours, theirs) <= bound


@pytest.mark.parity
@pytest.mark.parametrize("preset", rmsprop.PRESETS)
def test_float32_trajectory_within_the_stated_ulps(preset):
    for seed in (3, 4, 5):
        params0, grads, lrs = random_problem(seed=seed)
        theirs = torch_trajectory(preset, {}, params0, grads, lrs, torch.float32)
        ours = jax_trajectory(lambda lr: from_preset(preset, lr), params0, grads, lrs, jnp.float32)
        assert ulps(ours, theirs) <= FLOAT32_ULPS[preset], f"seed {seed}"


OPTAX_SWITCHES = {
    "defaults": {},
    "momentum": {"momentum": 0.9},
    "nesterov": {"momentum": 0.9, "nesterov": True},
    "centered": {"centered": True, "eps": 1e-6},
    "bias_correction": {"bias_correction": True},
    "centered_bias_momentum": {"centered": True, "bias_correction": True, "momentum": 0.5},
    "eps_outside": {"eps_in_sqrt": False},
    "initial_scale": {"initial_scale": 1.0, "decay": 0.95, "eps": 1e-3},
    "centered_eps_outside": {"centered": True, "eps_in_sqrt": False, "eps": 1e-4},
}
OURS = {"decay": "alpha", "initial_scale": "initial_accumulator_value"}


@pytest.mark.parity
@pytest.mark.parametrize("schedule", [False, True], ids=["constant_lr", "schedule"])
@pytest.mark.parametrize("case", OPTAX_SWITCHES)
def test_optax_preset_is_optax_rmsprop_bit_for_bit_in_float32(case, schedule):
    switches = OPTAX_SWITCHES[case]
    params0, grads, lrs = random_problem(seed=7)
    lr = (lambda count: jnp.asarray(lrs, jnp.float32)[count]) if schedule else 0.01
    theirs_tx = optax.rmsprop(lr, **switches)
    ours_tx = from_preset("optax", lr, **{OURS.get(k, k): v for k, v in switches.items()})
    trajectories = []
    for tx in (theirs_tx, ours_tx):
        params = {
            "w": jnp.asarray(params0[0], jnp.float32),
            "b": jnp.asarray(params0[1], jnp.float32),
        }
        state, step, out = tx.init(params), jax.jit(tx.update), []
        for g in grads:
            updates, state = step({"w": jnp.asarray(g[0], jnp.float32),
                                   "b": jnp.asarray(g[1], jnp.float32)}, state, params)  # fmt: skip
            params = optax.apply_updates(params, updates)
            out.append(params)
        trajectories.append(out)
    for step, (theirs, ours) in enumerate(zip(*trajectories)):
        for key in ("w", "b"):
            # NaN where both take the root of a rounding-negative variance (step 1 with
            # bias correction): equal_nan, and every other element bit for bit.
            assert np.array_equal(np.asarray(ours[key]), np.asarray(theirs[key]),
                                  equal_nan=True), (step, key)  # fmt: skip


def test_hand_computed_keras_example_and_state_names():
    tx = jax_rmsprop(
        0.1, alpha=0.9, eps=1e-7, eps_in_sqrt=True, momentum=0.5, centered=True, lr_in_momentum=True
    )  # Keras's math, centered, with momentum
    params = jnp.array([10.0], jnp.float32)
    state = tx.init(params)
    updates, state = tx.update(params, state, params)  # loss = θ²/2, so g = θ
    # v = 0.1·100 = 10, ḡ = 0.1·10 = 1, d = sqrt(10 − 1 + 1e-7), Δ = b = 0.1·10/d
    expected = 10.0 - 0.1 * (10.0 / np.sqrt(9.0 + 1e-7))
    assert float(optax.apply_updates(params, updates)[0]) == pytest.approx(expected, rel=1e-6)
    rms, momentum = state[0], state[2]
    assert float(rms.square_avg[0]) == pytest.approx(10.0) and float(rms.grad_avg[0]) == 1.0
    # lr inside the buffer: it holds the update (optax's sign, −Keras's momentum variable)
    assert float(momentum.momentum_buffer[0]) == pytest.approx(-1.0 / np.sqrt(9.0 + 1e-7))


def test_jit_vmap_nested_pytrees_and_bfloat16():
    tx = from_preset("tf1", 0.01, momentum=0.9, centered=True)
    params = {"layer": {"w": jnp.ones((4, 3), jnp.float32), "b": jnp.zeros(3, jnp.bfloat16)},
              "scale": (jnp.float32(2.0),)}  # fmt: skip
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
    state = tx.init(params)
    updates, new_state = jax.jit(tx.update)(grads, state, params)
    new_params = optax.apply_updates(params, updates)
    assert jax.tree.structure(new_params) == jax.tree.structure(params)
    assert new_params["layer"]["b"].dtype == jnp.bfloat16
    assert new_state[0].square_avg["layer"]["b"].dtype == jnp.bfloat16  # state: the leaf's dtype
    assert updates["layer"]["b"].dtype == jnp.float32  # the math: float32
    # The bf16 leaf is the float32 computation rounded once.
    as_f32 = jax.tree.map(lambda p: p.astype(jnp.float32), params)
    f32_updates, _ = tx.update(jax.tree.map(lambda g: g.astype(jnp.float32), grads),
                               tx.init(as_f32), as_f32)  # fmt: skip
    expected = (as_f32["layer"]["b"] + f32_updates["layer"]["b"]).astype(jnp.bfloat16)
    assert np.array_equal(np.asarray(new_params["layer"]["b"]), np.asarray(expected))
    # vmap over a batch of independent problems equals running each one.
    batch = jnp.stack([jnp.arange(3.0, dtype=jnp.float32) + k for k in range(4)])
    plain = from_preset("torch", 0.1)
    vmapped = jax.vmap(lambda p: plain.update(p, plain.init(p), p)[0])(batch)
    for k in range(4):
        alone = plain.update(batch[k], plain.init(batch[k]), batch[k])[0]
        assert np.array_equal(np.asarray(vmapped[k]), np.asarray(alone))


def test_chains_with_optax_schedules_multisteps_and_masks():
    # optax's global-norm clip and schedule in a chain: the same steps as our own switch
    schedule = optax.linear_schedule(0.1, 0.0, 10)
    chained = optax.chain(optax.clip_by_global_norm(1.0), from_preset("keras", schedule))
    switch = from_preset("keras", schedule, global_clipnorm=1.0)
    runs = []
    for tx in (chained, switch):
        params = jnp.arange(4.0, dtype=jnp.float32)
        state = tx.init(params)
        for _ in range(3):
            updates, state = tx.update(params, state, params)
            params = optax.apply_updates(params, updates)
        runs.append(np.asarray(params))
    np.testing.assert_allclose(runs[0], runs[1], rtol=1e-6)
    assert not np.allclose(runs[0], np.arange(4.0))
    # MultiSteps: two accumulated half-gradients equal one step on their mean.
    inner = from_preset("torch", 0.1)
    multi = optax.MultiSteps(inner, every_k_schedule=2)
    p0 = jnp.array([1.0, -2.0], jnp.float32)
    state = multi.init(p0)
    u1, state = multi.update(jnp.array([0.2, 0.4], jnp.float32), state, p0)
    u2, state = multi.update(jnp.array([0.4, 0.8], jnp.float32), state, p0)
    direct, _ = inner.update(jnp.array([0.3, 0.6], jnp.float32), inner.init(p0), p0)
    assert np.allclose(np.asarray(u1), 0) and np.allclose(np.asarray(u2), np.asarray(direct))
    masked = optax.masked(from_preset("torch", 0.1), {"a": True, "b": False})
    params = {"a": jnp.ones(2), "b": jnp.ones(2)}
    updates, _ = masked.update(params, masked.init(params), params)
    assert np.all(np.asarray(updates["b"]) == 1.0) and np.all(np.asarray(updates["a"]) < 0)


def test_nonfinite_skip_changes_nothing_and_counts():
    tx = from_preset("torch", 0.1, momentum=0.9, nonfinite="skip")
    params = jnp.array([1.0, 2.0], jnp.float32)
    state = tx.init(params)
    updates, state = tx.update(jnp.array([0.5, 0.5], jnp.float32), state, params)
    before = state
    updates, state = jax.jit(tx.update)(jnp.array([jnp.inf, 0.5], jnp.float32), state, params)
    assert np.all(np.asarray(updates) == 0) and int(state.skipped) == 1  # as the docstring says
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), state.inner,
                                     before.inner))  # fmt: skip


def test_inject_hyperparams_changes_the_learning_rate():
    """optax.inject_hyperparams with the learning rate injected: changing it in the state
    changes the step exactly as a new learning rate would."""
    static = ("alpha", "eps", "initial_accumulator_value", "momentum", "weight_decay")
    tx = optax.inject_hyperparams(jax_rmsprop, static_args=static)(learning_rate=0.1, momentum=0.9)
    params = jnp.ones(3, jnp.float32)
    state = tx.init(params)
    step = jax.jit(tx.update)
    _, state = step(params, state, params)
    state.hyperparams["learning_rate"] = jnp.asarray(0.01, jnp.float32)
    updates, _ = step(params, state, params)
    plain = jax_rmsprop(lambda count: jnp.where(count == 0, 0.1, 0.01), momentum=0.9)
    plain_state = plain.init(params)
    _, plain_state = plain.update(params, plain_state, params)
    expected, _ = plain.update(params, plain_state, params)
    np.testing.assert_allclose(np.asarray(updates), np.asarray(expected), rtol=1e-6)
    with pytest.raises(TypeError, match="static_args"):
        optax.inject_hyperparams(jax_rmsprop)(learning_rate=0.1).init(params)


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="alpha"):
        jax_rmsprop(0.1, alpha=1.5)
    with pytest.raises(ValueError, match="learning_rate"):
        jax_rmsprop(-1.0)
    with pytest.raises(ValueError, match="learning_rate"):
        jax_rmsprop(jnp.asarray(-1.0))
    with pytest.raises(ValueError, match=r"nonfinite='raise' cannot raise inside jax\.jit"):
        jax_rmsprop(0.1, nonfinite="raise")
    with pytest.raises(ValueError, match="division_form='lr_first' is Keras's op order"):
        jax_rmsprop(0.1, division_form="lr_first")
    with pytest.raises(
        ValueError, match=r"preset 'tf1' has no default learning rate .*; pass learning_rate="
    ):
        from_preset("tf1")
    with pytest.raises(ValueError, match=r"pass learning_rate=\.\.\.") as error:
        from_preset("optax")
    assert "lr=" not in str(error.value).replace("learning_rate=", "")
    with pytest.raises(TypeError, match=r"learning_rate=\.\.\."):
        from_preset("torch", lr=0.1)
    with pytest.raises(TypeError, match="'rho'"):
        from_preset("keras", 0.1, rho=0.9)


def test_every_non_scalar_hyperparameter_is_refused_by_name():
    """An array of shape (2,) for any number: an error that names the argument (the
    learning rate got JAX's own "Only scalar arrays can be converted" before)."""
    for array in (jnp.array([0.1, 0.2]), np.array([0.1, 0.2])):
        with pytest.raises((TypeError, ValueError), match="learning_rate") as error:
            jax_rmsprop(array)
        assert "shape (2,)" in str(error.value) or "real number" in str(error.value)
        for name in ("alpha", "eps", "initial_accumulator_value", "momentum", "weight_decay",
                     "clipvalue", "clipnorm", "global_clipnorm"):  # fmt: skip
            with pytest.raises((TypeError, ValueError), match=name):
                jax_rmsprop(0.1, **{name: array})


def test_inject_hyperparams_advice_works_when_followed():
    """The error's advice, followed literally, with clipping: its ``static_args`` name
    every hyperparameter that decides the chain (clipnorm was missing)."""
    params = jnp.ones(3, jnp.float32)
    with pytest.raises(TypeError, match="static_args") as error:
        optax.inject_hyperparams(jax_rmsprop)(learning_rate=0.1, clipnorm=1.0).init(params)
    advice = str(error.value).split("static_args=", 1)[1]
    static = eval(advice.split(")", 1)[0] + ")")  # the tuple the message gives
    tx = optax.inject_hyperparams(jax_rmsprop, static_args=static)(
        learning_rate=0.1, momentum=0.9, clipnorm=1.0, weight_decay=0.01
    )
    state = tx.init(params)
    updates, _ = jax.jit(tx.update)(params * 3, state, params)
    plain = jax_rmsprop(0.1, momentum=0.9, clipnorm=1.0, weight_decay=0.01)
    expected, _ = plain.update(params * 3, plain.init(params), params)
    np.testing.assert_allclose(np.asarray(updates), np.asarray(expected), rtol=1e-6)


@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_complex_leaves_as_optax(centered, momentum):
    """Complex parameters: optax squares ``|g|² = g·conj(g)`` (real), not ``g²``; the
    optax preset is ``optax.rmsprop`` on complex leaves, float64."""
    rng = np.random.default_rng(0)
    params = jnp.asarray(rng.normal(size=5) + 1j * rng.normal(size=5))
    grads = [jnp.asarray(rng.normal(size=5) + 1j * rng.normal(size=5)) for _ in range(10)]
    theirs = optax.rmsprop(0.1, decay=0.9, eps=1e-8, centered=centered,
                           momentum=momentum or None)  # fmt: skip
    ours = from_preset("optax", learning_rate=0.1, centered=centered, momentum=momentum)
    results = []
    for tx in (theirs, ours):
        p, state = params, tx.init(params)
        for g in grads:
            updates, state = tx.update(g, state, p)
            p = optax.apply_updates(p, updates)
        results.append(np.asarray(p))
    assert results[1].dtype == np.complex128
    np.testing.assert_allclose(results[1], results[0], rtol=1e-15, atol=0)


FILES = golden_files()


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_golden_trajectories_of_tf1_timm_and_sb3(path):
    """The stored trajectories of the real TF1 / timm / SB3 optimizers, float64, 1e-12."""
    golden = load_golden(path)
    hp = effective_hyperparameters(golden)
    ours = jax_trajectory(lambda lr: jax_rmsprop(lr, **hp), golden.params0, golden.grads,
                          golden.lrs, jnp.float64)  # fmt: skip
    for step, (mine, theirs) in enumerate(zip(ours, golden.traj)):
        for a, b in zip(mine, theirs):
            assert_close_f64(a, b, what=f"{golden.name} step {step + 1}")


def test_sharded_arrays_update_elementwise_without_communication():
    """Params sharded over two (virtual CPU) devices: the jitted step keeps the sharding,
    equals the unsharded step, and its compiled program has no collective."""
    script = """
import os
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
import jax, jax.numpy as jnp, numpy as np, optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from rmsprop.optax import from_preset
mesh = Mesh(np.array(jax.devices()[:2]), ("data",))
sharding = NamedSharding(mesh, PartitionSpec("data"))
tx = from_preset("tf1", 0.01, momentum=0.9, centered=True)
params = jnp.arange(8.0, dtype=jnp.float32) / 8
grads = jnp.linspace(-1, 1, 8, dtype=jnp.float32)
step = jax.jit(tx.update)
plain, _ = step(grads, tx.init(params), params)
sp, sg = jax.device_put(params, sharding), jax.device_put(grads, sharding)
state = tx.init(sp)
sharded, _ = step(sg, state, sp)
hlo = step.lower(sg, state, sp).compile().as_text()
assert sharded.sharding.is_equivalent_to(sharding, 1), sharded.sharding
assert np.array_equal(np.asarray(sharded), np.asarray(plain))
assert not any(op in hlo for op in ("all-reduce", "all-gather", "collective-permute")), "collective"
print("ok")
"""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip
    assert done.stdout.strip().endswith("ok"), done.stderr[-2000:]


def test_missing_jax_or_keras_says_what_to_install():
    """``import rmsprop`` never imports JAX or Keras; their front ends name the extra."""
    import subprocess
    import sys

    script = """
import sys
import rmsprop
assert "jax" not in sys.modules and "keras" not in sys.modules and "torch" not in sys.modules
sys.modules["jax"] = None; sys.modules["keras"] = None
for name, extra in (("optax", "pip install jax optax"), ("keras", "pip install keras")):
    try:
        getattr(rmsprop, name)
    except ImportError as err:
        assert extra in str(err), err
    else:
        raise AssertionError(name)
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert done.stdout.strip() == "ok", done.stderr[-2000:]
