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
        pairs = []
        for (rows, values), var in zip(step, variables):
            g = tf.constant(values.astype(dtype))
            if rows is not None:
                g = tf.IndexedSlices(g, tf.constant(rows), tf.constant(var.shape))
            pairs.append((g, var))
        opt.apply_gradients(pairs)
        out.append([v.numpy().copy() for v in variables])
    slots = {name: opt.get_slot(variables[0], name).numpy() for name in opt.get_slot_names()}
    return out, slots


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
            pairs = []
            for (rows, values), var in zip(step, variables):
                g = tf.constant(values.astype(dtype))
                if rows is not None:
                    g = tf.IndexedSlices(g, tf.constant(rows), tf.constant(var.shape))
                pairs.append((g, var))
            opt.apply_gradients(pairs)
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
