"""Properties over random shapes, hyperparameters and finite gradients (hypothesis)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rmsprop import reference as ref

shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=5)
finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


@st.composite
def configs(draw):
    momentum = draw(st.sampled_from([0.0, 0.5, 0.9]))
    return {
        "lr": draw(st.floats(1e-5, 1.0)),
        "alpha": draw(st.floats(0.0, 0.999)),
        "eps": draw(st.floats(1e-8, 1.0)),
        "eps_in_sqrt": draw(st.booleans()),
        "initial_accumulator_value": draw(st.sampled_from([0.0, 1.0])),
        "momentum": momentum,
        "nesterov": draw(st.booleans()) and momentum > 0,
        "lr_in_momentum": draw(st.booleans()),
        "weight_decay": draw(st.sampled_from([0.0, 1e-2])),
        "decoupled_weight_decay": draw(st.booleans()),
        "bias_correction": draw(st.booleans()),
        "maximize": draw(st.booleans()),
        "ema_form": draw(st.sampled_from(["torch", "multiply", "delta"])),
    }


@settings(max_examples=150, deadline=None)
@given(cfg=configs(), shape=shapes, data=st.data())
def test_no_nan_or_inf_for_finite_gradients(cfg, shape, data):
    """Non-centered with eps > 0: the denominator is positive, so every update is finite."""
    params = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(-10, 10)))
    tx = ref.rmsprop(**cfg)
    state = tx.init(params)
    for _ in range(3):
        grads = data.draw(hnp.arrays(np.float64, shape, elements=finite))
        updates, state = tx.update(grads, state, params)
        params = ref.apply_updates(params, updates)
        assert np.all(np.isfinite(updates)) and np.all(np.isfinite(params))


@settings(max_examples=60, deadline=None)
@given(cfg=configs(), shape=shapes, centered=st.booleans(), data=st.data())
def test_float32_in_float32_out(cfg, shape, centered, data):
    params = data.draw(hnp.arrays(np.float32, shape, elements=st.floats(-10, 10, width=32)))
    grads = data.draw(hnp.arrays(np.float32, shape, elements=st.floats(-100, 100, width=32)))
    tx = ref.rmsprop(**cfg, centered=centered)
    state = tx.init(params)
    with np.errstate(invalid="ignore"):  # centered float32 may round v - ḡ² below 0
        updates, state = tx.update(grads, state, params)
    assert updates.dtype == np.float32
    assert ref.apply_updates(params, updates).dtype == np.float32
    for leaf in state:
        for value in leaf:
            if isinstance(value, np.ndarray):
                assert value.dtype == np.float32


def test_float64_in_float64_out_for_every_alias():
    params = {"w": np.ones((2, 3)), "b": [np.zeros(3)]}
    grads = {"w": np.full((2, 3), 0.5), "b": [np.ones(3)]}
    for tx in (
        ref.rmsprop(),
        ref.sgd(),
        ref.momentum(),
        ref.nag(),
        ref.adagrad(),
        ref.from_preset("tf1", lr=0.1),
    ):
        updates, _ = tx.update(grads, tx.init(params), params)
        assert updates["w"].dtype == np.float64 and updates["b"][0].dtype == np.float64
