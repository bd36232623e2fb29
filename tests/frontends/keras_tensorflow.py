"""What only TensorFlow has: the ``tf1`` preset of every front end against the real
``tf.compat.v1.train.RMSPropOptimizer`` (dense and ``IndexedSlices``), and Keras's
TensorFlow features (``tf.function``, XLA, mixed precision, ``MirroredStrategy``).

Run by ``test_keras.py`` in a pytest process with ``KERAS_BACKEND=tensorflow``. Two logical
CPU devices are configured at import, before TensorFlow starts its runtime.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
import pytest

if os.environ.get("KERAS_BACKEND") != "tensorflow":  # pragma: no cover
    pytest.skip("runs under KERAS_BACKEND=tensorflow (test_keras.py starts it)",
                allow_module_level=True)  # fmt: skip

with contextlib.suppress(ImportError):  # before TensorFlow (both carry LLVM: test_keras.py)
    import triton  # noqa: F401

tf = pytest.importorskip("tensorflow")
with contextlib.suppress(RuntimeError):  # already initialised: the strategy test skips
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0],
        [tf.config.LogicalDeviceConfiguration()] * 2,
    )

import keras  # noqa: E402

import rmsprop  # noqa: E402
import rmsprop.keras  # noqa: E402
import rmsprop.reference  # noqa: E402

from frontends import keras_parity  # noqa: E402
from parity_data import random_problem  # noqa: E402

STEPS = 30
SHAPES = ((6, 3), (4,))
#: The TF1 hyperparameters of every case (lr changes every step: it sits in the buffer).
TF1 = {"alpha": 0.9, "eps": 1e-10}
CASES = {"plain": {}, "momentum": {"momentum": 0.9}, "centered": {"centered": True},
         "centered_momentum": {"centered": True, "momentum": 0.5}}  # fmt: skip


def float32_rounded(hp: dict) -> dict:
    """What TF1 computes with in float64: ``_prepare`` turns the Python floats into
    float32 tensors and casts them to the variable's dtype afterwards."""
    return {k: float(np.float32(v)) if isinstance(v, float) else v for k, v in hp.items()}


def sparse_rows(step: int, rows: int) -> np.ndarray:
    """The rows present at ``step``: a changing subset, one of them twice (TF1 sums
    duplicates before its sparse apply)."""
    rng = np.random.default_rng(100 + step)
    chosen = rng.choice(rows, size=3, replace=False)
    return np.concatenate([chosen, chosen[:1]])


def problem(sparse: bool):
    params0, grads, lrs = random_problem(seed=7, steps=STEPS, shapes=SHAPES)
    if not sparse:
        return params0, [[(None, g) for g in step] for step in grads], lrs
    out = []
    for k, step in enumerate(grads):
        rows = sparse_rows(k, SHAPES[0][0])
        out.append([(rows, step[0][rows]), (None, step[1])])
    return params0, out, lrs


def dense(rows, values, shape) -> np.ndarray:
    if rows is None:
        return values
    full = np.zeros(shape)
    np.add.at(full, rows, values)
    return full


def tf1_trajectory(hp: dict, sparse: bool, dtype: str):
    """The real ``tf.compat.v1.train.RMSPropOptimizer`` (eager), and its slots at the end."""
    params0, grads, lrs = problem(sparse)
    rate = [0.0]
    opt = tf.compat.v1.train.RMSPropOptimizer(
        lambda: rate[0], decay=hp["alpha"], momentum=hp.get("momentum", 0.0),
        epsilon=hp["eps"], centered=hp.get("centered", False),
    )  # fmt: skip
    variables = [tf.Variable(p.astype(dtype)) for p in params0]
    out = []
    for step, lr in zip(grads, lrs):
        rate[0] = float(lr)
        opt.apply_gradients(gradient_pairs(step, variables, dtype))
        out.append([v.numpy().copy() for v in variables])
    slots = {name: opt.get_slot(variables[0], name).numpy() for name in opt.get_slot_names()}
    return out, slots


def gradient_pairs(step, variables, dtype: str) -> list:
    """One step's ``(gradient, variable)`` pairs: dense tensors, or ``IndexedSlices`` where the
    problem gives rows (TF1's ``SparseApplyRMSProp`` path)."""
    pairs = []
    for (rows, values), var in zip(step, variables):
        g = tf.constant(values.astype(dtype))
        if rows is not None:
            g = tf.IndexedSlices(g, tf.constant(rows), tf.constant(var.shape))
        pairs.append((g, var))
    return pairs


def keras_tf1(hp: dict, sparse: bool, dtype: str):
    params0, grads, lrs = problem(sparse)
    names = {"alpha": "rho", "eps": "epsilon"}
    keras.config.set_floatx(dtype)
    try:
        opt = rmsprop.keras.RMSprop(learning_rate=1.0, preset="tf1",
                                    **{names.get(k, k): v for k, v in hp.items()})  # fmt: skip
        variables = [keras.Variable(p.astype(dtype), dtype=dtype) for p in params0]
        out = []
        for step, lr in zip(grads, lrs):
            opt.learning_rate = float(lr)
            opt.apply_gradients(gradient_pairs(step, variables, dtype))
            out.append([keras.ops.convert_to_numpy(v.value).copy() for v in variables])
        return out
    finally:
        keras.config.set_floatx("float32")


def torch_tf1(hp: dict, sparse: bool, dtype: str):
    """``rmsprop.RMSprop`` (a sparse COO gradient for the sparse rows: its lazy mode)."""
    import torch

    params0, grads, lrs = problem(sparse)
    params = [torch.tensor(p, dtype=getattr(torch, dtype), requires_grad=True) for p in params0]
    opt = rmsprop.RMSprop.from_preset(params, "tf1", lr=1.0, impl="single", **hp)
    out = []
    for step, lr in zip(grads, lrs):
        opt.param_groups[0]["lr"] = float(lr)
        for p, (rows, values) in zip(params, step):
            g = torch.tensor(values, dtype=p.dtype)
            if rows is not None:
                g = torch.sparse_coo_tensor(torch.tensor(rows)[None], g, p.shape)
            p.grad = g
        opt.step()
        out.append([p.detach().numpy().copy() for p in params])
    return out


def reference_tf1(hp: dict, sparse: bool, dtype: str):
    params0, grads, lrs = problem(sparse)
    tx = rmsprop.reference.from_preset("tf1", lr=lambda count: float(lrs[count]), **hp)
    params = [p.astype(dtype) for p in params0]
    state = tx.init(params)
    out = []
    for step in grads:
        g = [dense(rows, values, p.shape).astype(dtype) for (rows, values), p in zip(step, params)]
        updates, state = tx.update(g, state, params)
        params = rmsprop.reference.apply_updates(params, updates)
        out.append([np.array(p) for p in params])
    return out


def optax_tf1(hp: dict, sparse: bool, dtype: str):
    jax = pytest.importorskip("jax")
    pytest.importorskip("optax")
    import rmsprop.optax

    jax.config.update("jax_enable_x64", True)
    params0, grads, lrs = problem(sparse)
    table = jax.numpy.asarray(lrs, dtype=dtype)
    tx = rmsprop.optax.from_preset("tf1", learning_rate=lambda count: table[count], **hp)
    params = [jax.numpy.asarray(p, dtype=dtype) for p in params0]
    state = tx.init(params)
    out = []
    for step in grads:
        g = [
            jax.numpy.asarray(dense(r, v, p.shape), dtype=dtype) for (r, v), p in zip(step, params)
        ]
        updates, state = tx.update(g, state, params)
        params = [p + u for p, u in zip(params, updates)]
        out.append([np.asarray(p) for p in params])
    return out


FRONT_ENDS = {"keras": keras_tf1, "torch": torch_tf1, "reference": reference_tf1,
              "optax": optax_tf1}  # fmt: skip
#: Measured: the largest difference from TF1 over the 30 steps in ulps of each tensor's
#: largest element (float32; TF1's hyperparameters as given), and relative to the scale
#: (float64, with TF1's float32-rounded hyperparameters).
FLOAT32_ULPS = 2
FLOAT64_REL = 1e-15


@pytest.mark.parity
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "indexed_slices"])
def test_tf1_preset_against_tf1_rmsprop_optimizer(case, sparse):
    """Every front end's ``tf1`` preset against TF1 (``ApplyRMSProp``,
    ``ApplyCenteredRMSProp``; ``SparseApplyRMSProp`` and its centered form for
    ``IndexedSlices``: the NumPy reference and optax have no sparse gradients and are
    compared on the dense cases)."""
    hp = {**TF1, **CASES[case]}
    front_ends = ("keras", "torch") if sparse else tuple(FRONT_ENDS)
    theirs32, _ = tf1_trajectory(hp, sparse, "float32")
    theirs64, _ = tf1_trajectory(hp, sparse, "float64")
    for name in front_ends:
        mine32 = FRONT_ENDS[name](hp, sparse, "float32")
        assert keras_parity.ulps(mine32, theirs32) <= FLOAT32_ULPS, (name, "float32")
        mine64 = FRONT_ENDS[name](float32_rounded(hp), sparse, "float64")
        error = keras_parity.relative_error(mine64, theirs64)
        assert error <= FLOAT64_REL, (name, "float64", error)


@pytest.mark.parity
def test_tf1_in_float64_computes_with_float32_hyperparameters():
    """TF1 in float64 is float64 arithmetic with ``float32(decay)``, ``float32(momentum)``,
    ``float32(epsilon)`` (and a float32-rounded Python-float learning rate): passing the
    exact Python values to rmsprop is off by about 1e-8; passing the rounded ones matches."""
    hp = {**TF1, "momentum": 0.9, "centered": True}
    theirs, _ = tf1_trajectory(hp, False, "float64")
    exact = keras_parity.relative_error(reference_tf1(hp, False, "float64"), theirs)
    rounded = keras_parity.relative_error(
        reference_tf1(float32_rounded(hp), False, "float64"), theirs
    )
    assert rounded <= FLOAT64_REL < 1e-10 < exact, (rounded, exact)


@pytest.mark.parity
def test_tf1_sparse_apply_keeps_absent_rows_and_their_state():
    """``SparseApplyRMSProp``: rows absent from every step keep their parameter, their
    ``rms`` (1: TF1 starts it at one) and ``momentum`` (0); rows absent from one step keep
    theirs too (their momentum does not move them) -- and rmsprop's lazy mode agrees."""
    hp = {**TF1, "momentum": 0.9, "centered": True}
    traj, slots = tf1_trajectory(hp, True, "float64")
    present = np.unique(np.concatenate([sparse_rows(k, SHAPES[0][0]) for k in range(STEPS)]))
    never = np.setdiff1d(np.arange(SHAPES[0][0]), present)
    params0, _, _ = problem(True)
    if never.size:
        assert np.array_equal(traj[-1][0][never], params0[0][never])
        assert np.all(slots["rms"][never] == 1) and np.all(slots["momentum"][never] == 0)
    for k in range(1, STEPS):  # absent at step k: unchanged by step k
        absent = np.setdiff1d(np.arange(SHAPES[0][0]), sparse_rows(k, SHAPES[0][0]))
        assert np.array_equal(traj[k][0][absent], traj[k - 1][0][absent])
    dense_traj, _ = tf1_trajectory(hp, False, "float64")
    assert not np.allclose(traj[-1][0], dense_traj[-1][0])  # the sparse rule is not dense


def regression(seed: int = 0, n: int = 64):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)).astype("float32")
    y = (x @ rng.normal(size=(5, 2)) + 0.1 * rng.normal(size=(n, 2))).astype("float32")
    return x, y


def make_model(weights=None):
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="tanh"),
                              keras.layers.Dense(2)])  # fmt: skip
    if weights is not None:
        model.set_weights(weights)
    return model


def fit(optimizer, weights, epochs: int = 3, **compile_args):
    x, y = regression()
    model = make_model(weights)
    model.compile(optimizer=optimizer, loss="mse", **compile_args)
    history = model.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0)
    return model, history.history["loss"]


FIT_PRESETS = {"keras": {"momentum": 0.9, "centered": True}, "torch": {"centered": True,
               "momentum": 0.9}, "tf1": {"momentum": 0.9}}  # fmt: skip


@pytest.mark.parametrize("preset", FIT_PRESETS)
def test_fit_in_tf_function_and_xla_equals_eager(preset):
    """``model.fit`` compiles the train step with ``tf.function`` (and XLA with
    ``jit_compile=True``): the same weights as the eager step (``run_eagerly=True``),
    within the measured ulps (the forward and backward passes too are compiled: graph
    kernels and XLA's fusions round differently). Before the fix, the ``tf1`` preset's
    velocity started at 0 in the ``tf.function`` (4e7 ulps off)."""
    keras.utils.set_random_seed(1)
    weights = make_model().get_weights()
    kwargs = {"learning_rate": 0.01, "preset": preset, **FIT_PRESETS[preset]}
    eager, losses = fit(rmsprop.keras.RMSprop(**kwargs), weights, run_eagerly=True)
    graph, _ = fit(rmsprop.keras.RMSprop(**kwargs), weights, jit_compile=False)
    xla, _ = fit(rmsprop.keras.RMSprop(**kwargs), weights, jit_compile=True)
    assert losses[-1] < losses[0]
    for a, b, c in zip(eager.get_weights(), graph.get_weights(), xla.get_weights()):
        assert keras_parity.ulps([[b]], [[a]]) <= GRAPH_ULPS, keras_parity.ulps([[b]], [[a]])
        assert keras_parity.ulps([[c]], [[a]]) <= XLA_ULPS, keras_parity.ulps([[c]], [[a]])


#: Measured, the worst of the three presets after 12 steps (3 epochs of 4 batches), in
#: ulps of each weight tensor's largest element: tf.function 6 (keras), XLA 12 (torch).
GRAPH_ULPS, XLA_ULPS = 6, 12


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_trains_with_float32_weights_and_state(policy):
    """Under a mixed policy the weights and the optimizer's state stay float32; with
    float16, Keras wraps the optimizer in a ``LossScaleOptimizer``."""
    keras.utils.set_random_seed(2)
    weights = make_model().get_weights()
    keras.config.set_dtype_policy(policy)
    try:
        model, losses = fit(rmsprop.keras.RMSprop(0.01, preset="torch", centered=True,
                                                  momentum=0.9), weights, epochs=4)  # fmt: skip
    finally:
        keras.config.set_dtype_policy("float32")
    optimizer = model.optimizer
    if policy == "mixed_float16":
        assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        optimizer = optimizer.inner_optimizer
    assert isinstance(optimizer, rmsprop.keras.RMSprop)
    assert all(w.dtype == "float32" for w in model.weights)
    assert all(v.dtype in ("float32", "int64") for v in optimizer.variables)
    assert np.all(np.isfinite(losses)) and losses[-1] < 0.7 * losses[0], losses


def test_loss_scale_optimizer_unscales_and_skips_nonfinite_steps():
    """``LossScaleOptimizer(rmsprop.keras.RMSprop)``: a step on gradients scaled by the
    loss scale (a power of two) is the inner step on the unscaled gradients, bit for bit;
    a step with an inf gradient leaves the weights and state as they were and halves the
    scale."""
    params0, grads, _ = random_problem(seed=4, steps=3)
    inner = rmsprop.keras.RMSprop(0.01, preset="torch", centered=True, momentum=0.9)
    scaled = keras.optimizers.LossScaleOptimizer(inner, initial_scale=2.0**15)
    plain = rmsprop.keras.RMSprop(0.01, preset="torch", centered=True, momentum=0.9)
    ours = [keras.Variable(p.astype("float32")) for p in params0]
    ref = [keras.Variable(p.astype("float32")) for p in params0]
    for g in grads:
        scaled.apply_gradients([(tf.constant((x * 2.0**15).astype("float32")), v)
                                for x, v in zip(g, ours)])  # fmt: skip
        plain.apply_gradients([(tf.constant(x.astype("float32")), v) for x, v in zip(g, ref)])
    for a, b in zip(ours, ref):
        assert np.array_equal(a.numpy(), b.numpy())
    before = [v.numpy().copy() for v in ours] + [v.numpy().copy() for v in inner.variables]
    bad = [np.full(p.shape, np.inf, "float32") for p in params0]
    scaled.apply_gradients([(tf.constant(x), v) for x, v in zip(bad, ours)])
    after = [v.numpy() for v in ours] + [v.numpy() for v in inner.variables]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    assert float(scaled.dynamic_scale.numpy()) == 2.0**14


def test_ema_is_the_moving_average_of_the_weights():
    """``use_ema``: after each step the average is ``m·avg + (1 − m)·θ`` (Keras's rule:
    the first step sets it to θ₁), computed here from the recorded weights."""
    params0, grads, _ = random_problem(seed=6, steps=6)
    opt = rmsprop.keras.RMSprop(0.01, preset="tf1", momentum=0.5, use_ema=True,
                                ema_momentum=0.75)  # fmt: skip
    variables = [keras.Variable(p.astype("float32")) for p in params0]
    average = None
    for g in grads:
        opt.apply_gradients([(tf.constant(x.astype("float32")), v) for x, v in zip(g, variables)])
        now = [v.numpy() for v in variables]
        average = now if average is None else [np.float32(0.75) * a + np.float32(0.25) * v
                                               for a, v in zip(average, now)]  # fmt: skip
    for got, want in zip(opt._model_variables_moving_average, average):
        np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=4 * np.spacing(np.float32(8)))


def test_mirrored_strategy_on_two_devices_equals_one_device():
    """``tf.distribute.MirroredStrategy`` over two logical CPUs, each replica half of the
    global batch of 16 (gradients all-reduced): the weights of one device after 3 epochs,
    within the measured ulps (the all-reduce sums the two halves in another order)."""
    devices = tf.config.list_logical_devices("CPU")
    assert len(devices) == 2, "the two logical CPUs are configured at import"
    keras.utils.set_random_seed(3)
    weights = make_model().get_weights()
    kwargs = {"learning_rate": 0.01, "preset": "torch", "centered": True, "momentum": 0.9}
    one, _ = fit(rmsprop.keras.RMSprop(**kwargs), weights)
    strategy = tf.distribute.MirroredStrategy([d.name for d in devices])
    with strategy.scope():
        two, _ = fit(rmsprop.keras.RMSprop(**kwargs), weights)
        assert two.optimizer._distribution_strategy.num_replicas_in_sync == 2
    worst = keras_parity.ulps([two.get_weights()], [one.get_weights()])
    moved = max(float(np.max(np.abs(a - w))) for a, w in zip(one.get_weights(), weights))
    assert worst <= MIRRORED_ULPS and moved > 0.01, (worst, moved)


#: Measured: two replicas against one device after 12 steps, in ulps of each weight
#: tensor's largest element (presets keras 5, torch 4, tf1 4; centered momentum for the
#: first two, momentum for tf1).
MIRRORED_ULPS = 5
