"""rmsprop.keras on Keras's JAX backend: what only JAX has. Run by ``test_keras.py`` in a
pytest process with ``KERAS_BACKEND=jax`` and two virtual CPU devices."""

from __future__ import annotations

import os

import pytest

if os.environ.get("KERAS_BACKEND") != "jax":  # pragma: no cover
    pytest.skip("runs under KERAS_BACKEND=jax (test_keras.py starts it)", allow_module_level=True)

import numpy as np

jax = pytest.importorskip("jax")
keras = pytest.importorskip("keras")

import rmsprop.keras  # noqa: E402

from frontends import keras_parity  # noqa: E402

#: Measured: two devices against one after 12 steps, in ulps of each weight tensor's
#: largest element (centered with momentum: keras 4, torch 7.5; the gradients of the two
#: halves are summed in another order than one device's batch).
DATA_PARALLEL_ULPS = 7.5


def fit(weights, preset: str):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 5)).astype("float32")
    y = (x @ rng.normal(size=(5, 2))).astype("float32")
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="tanh"),
                              keras.layers.Dense(2)])  # fmt: skip
    if weights is not None:
        model.set_weights(weights)
    model.compile(optimizer=rmsprop.keras.RMSprop(0.01, preset=preset, centered=True,
                                                  momentum=0.9), loss="mse")  # fmt: skip
    model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
    return model.get_weights()


@pytest.mark.parametrize("preset", ["keras", "torch"])
def test_data_parallel_on_two_devices_equals_one_device(preset):
    """``keras.distribution.DataParallel`` over two virtual CPU devices (each half of the
    global batch of 16; the optimizer's state replicated): the weights of one device."""
    devices = jax.devices("cpu")
    assert len(devices) == 2, "XLA_FLAGS=--xla_force_host_platform_device_count=2"
    keras.utils.set_random_seed(0)
    start = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8), keras.layers.Dense(2)])
    weights = start.get_weights()
    one = fit(weights, preset)
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    try:
        two = fit(weights, preset)
    finally:
        keras.distribution.set_distribution(None)
    worst = keras_parity.ulps([two], [one])
    moved = max(float(np.max(np.abs(a - w))) for a, w in zip(one, weights))
    assert worst <= DATA_PARALLEL_ULPS and moved > 0.01, (worst, moved)
