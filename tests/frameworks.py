"""Run the real frameworks (Keras 3 on torch, optax under JAX x64, torch.optim) on a
sequence of gradients and lrs; each returns the params after every step (NumPy, float64)."""

from __future__ import annotations

import numpy as np
import pytest


def keras_trajectory(hp, params0, grads, lrs):
    keras = pytest.importorskip("keras")
    import torch

    if keras.backend.backend() != "torch":
        pytest.skip("Keras parity runs on the torch backend (KERAS_BACKEND=torch)")
    # With the default floatx (float32) Keras keeps its lr variable, the decoupled decay
    # factor 1 - wd*lr and the clipping scales in float32 even for float64 variables;
    # floatx=float64 makes the whole Keras step float64, so the comparison is exact.
    floatx = keras.config.floatx()
    keras.config.set_floatx("float64")
    try:
        return _keras_run(keras, torch, hp, params0, grads, lrs)
    finally:
        keras.config.set_floatx(floatx)


def _keras_run(keras, torch, hp, params0, grads, lrs):
    opt = keras.optimizers.RMSprop(
        learning_rate=float(lrs[0]),
        rho=hp["alpha"],
        momentum=hp["momentum"],
        epsilon=hp["eps"],
        centered=hp["centered"],
        weight_decay=hp["weight_decay"] or None,
        clipnorm=hp.get("clipnorm"),
        clipvalue=hp.get("clipvalue"),
        global_clipnorm=hp.get("global_clipnorm"),
    )
    variables = [keras.Variable(p, dtype="float64") for p in params0]
    out = []
    for g, rate in zip(grads, lrs):
        opt.learning_rate = float(rate)
        opt.apply_gradients([(torch.tensor(gi), v) for gi, v in zip(g, variables)])
        out.append([keras.ops.convert_to_numpy(v.value).copy() for v in variables])
    return out


def optax_trajectory(hp, params0, grads, lrs):
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    lr_table = jnp.asarray(lrs)
    tx = optax.rmsprop(
        learning_rate=lambda count: lr_table[count],
        decay=hp["alpha"],
        eps=hp["eps"],
        initial_scale=hp["initial_accumulator_value"],
        eps_in_sqrt=hp["eps_in_sqrt"],
        centered=hp["centered"],
        momentum=hp["momentum"] or None,
        nesterov=hp["nesterov"],
        bias_correction=hp["bias_correction"],
    )
    params = [jnp.asarray(p, dtype=jnp.float64) for p in params0]
    state = tx.init(params)
    out = []
    for g in grads:
        updates, state = tx.update([jnp.asarray(gi) for gi in g], state, params)
        params = optax.apply_updates(params, updates)
        out.append([np.asarray(p) for p in params])
    return out


def torch_trajectory(make_opt, params0, grads, lrs):
    torch = pytest.importorskip("torch")
    params = [torch.tensor(p, requires_grad=True) for p in params0]
    opt = make_opt(params)
    out = []
    for g, rate in zip(grads, lrs):
        opt.param_groups[0]["lr"] = float(rate)
        for p, gi in zip(params, g):
            p.grad = torch.tensor(gi)
        opt.step()
        out.append([p.detach().numpy().copy() for p in params])
    return out
