"""The reference against the real frameworks, float64, 100 steps with a changing lr.

Keras 3 runs on the torch backend; optax under JAX with x64; torch.optim.RMSprop and
torch.optim.SGD/Adagrad directly. Each configuration is a preset plus overrides.
"""

from __future__ import annotations

import pytest

from rmsprop import PRESETS

from frameworks import keras_trajectory, optax_trajectory, torch_trajectory
from parity_data import (
    assert_close_f64,
    dyadic_clip_problem,
    random_problem,
    reference_trajectory,
)

pytestmark = pytest.mark.parity


def _check(name, ours, theirs):
    for step, (a_list, b_list) in enumerate(zip(ours, theirs)):
        for i, (a, b) in enumerate(zip(a_list, b_list)):
            assert_close_f64(a, b, what=f"{name} step {step + 1} tensor {i}")


# --------------------------------------------------------------------------------------
# Keras 3
# --------------------------------------------------------------------------------------
KERAS_CASES = {
    "keras": ("keras", {}),
    "keras_momentum": ("keras", {"momentum": 0.9}),
    "keras_centered": ("keras", {"centered": True}),
    "keras_centered_momentum": ("keras", {"centered": True, "momentum": 0.5, "eps": 1e-4}),
    "keras_weight_decay_momentum": ("keras", {"weight_decay": 0.0625, "momentum": 0.9}),
    "keras_clipnorm": ("keras", {"clipnorm": 1.0}),
    "keras_clipvalue": ("keras", {"clipvalue": 0.5}),
    "keras_global_clipnorm": ("keras", {"global_clipnorm": 1.0, "momentum": 0.3}),
    "hinton": ("hinton", {}),
    "graves": ("graves", {}),
    "dqn": ("dqn", {}),
}


@pytest.mark.parametrize("case", KERAS_CASES)
def test_reference_matches_keras(case):
    preset, overrides = KERAS_CASES[case]
    hp = PRESETS[preset].hyperparameters(**{"lr": 1.0, **overrides})  # lr: a schedule below
    assert hp["eps_in_sqrt"] and hp["initial_accumulator_value"] == 0
    assert hp["lr_in_momentum"] or not hp["momentum"]
    params0, grads, lrs = random_problem(seed=sum(map(ord, case)))
    for kind in ("clipnorm", "global_clipnorm"):
        if hp.get(kind) is not None:
            params0, grads, lrs = dyadic_clip_problem(seed=len(case), kind=kind)
    theirs = keras_trajectory(hp, params0, grads, lrs)
    _check(case, reference_trajectory(hp, params0, grads, lrs), theirs)


# --------------------------------------------------------------------------------------
# optax
# --------------------------------------------------------------------------------------
OPTAX_CASES = {
    "optax": ("optax", {}),
    "optax_momentum": ("optax", {"momentum": 0.9}),
    "optax_nesterov": ("optax", {"momentum": 0.9, "nesterov": True}),
    "optax_centered": ("optax", {"centered": True, "eps": 1e-6}),
    "optax_bias_correction": ("optax", {"bias_correction": True}),
    "optax_centered_bias_momentum": (
        "optax",
        {"centered": True, "bias_correction": True, "momentum": 0.5, "eps": 1e-5},
    ),
    "optax_eps_outside": ("optax", {"eps_in_sqrt": False}),
    "optax_initial_scale_one_is_tf1": ("tf1", {"ema_form": "multiply", "momentum": 0.9}),
    "graves": ("graves", {}),
    "dqn": ("dqn", {}),
}


@pytest.mark.parametrize("case", OPTAX_CASES)
def test_reference_matches_optax(case):
    preset, overrides = OPTAX_CASES[case]
    hp = PRESETS[preset].hyperparameters(**{"lr": 1.0, **overrides})  # lr: a schedule below
    assert hp["lr_in_momentum"] or not hp["momentum"]
    params0, grads, lrs = random_problem(seed=500 + len(case))
    theirs = optax_trajectory(hp, params0, grads, lrs)
    _check(case, reference_trajectory(hp, params0, grads, lrs), theirs)


# --------------------------------------------------------------------------------------
# torch.optim
# --------------------------------------------------------------------------------------
TORCH_CASES = {
    "torch": {},
    "torch_momentum": {"momentum": 0.9},
    "torch_centered": {"centered": True},
    "torch_centered_momentum_wd": {"centered": True, "momentum": 0.5, "weight_decay": 0.01},
    "torch_maximize_wd": {"maximize": True, "weight_decay": 0.1},
    "torch_alpha_below_half": {"alpha": 0.3, "centered": True},  # lerp's other branch
}


@pytest.mark.parametrize("case", TORCH_CASES)
def test_reference_matches_torch_rmsprop(case):
    torch = pytest.importorskip("torch")
    hp = PRESETS["torch"].hyperparameters(**TORCH_CASES[case])
    params0, grads, lrs = random_problem(seed=900 + len(case))
    keys = ("alpha", "eps", "weight_decay", "momentum", "centered", "maximize")
    theirs = torch_trajectory(
        lambda ps: torch.optim.RMSprop(
            ps, lr=0.1, foreach=False, **{k: hp[k] for k in keys if k in hp}
        ),
        params0,
        grads,
        lrs,
    )
    _check(case, reference_trajectory(hp, params0, grads, lrs), theirs)


def test_sgd_nag_adagrad_match_torch():
    torch = pytest.importorskip("torch")
    from rmsprop import reference as ref

    params0, grads, lrs = random_problem(seed=7, steps=30)
    cases = {
        "sgd_momentum": (
            lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
            lambda lr: ref.sgd(lr, 0.9),
        ),
        "nag": (
            lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
            lambda lr: ref.nag(lr, 0.9),
        ),
    }
    for name, (make_torch, make_ref) in cases.items():
        theirs = torch_trajectory(make_torch, params0, grads, lrs)
        tx = make_ref(lambda step: float(lrs[step]))
        params, state, ours = [p.copy() for p in params0], None, []
        state = tx.init(params)
        for g in grads:
            u, state = tx.update(g, state, params)
            params = ref.apply_updates(params, u)
            ours.append(params)
        _check(name, ours, theirs)
    # Adagrad with its own lr_decay (constant base lr, as torch applies lr_decay to it)
    params = [torch.tensor(p, requires_grad=True) for p in params0]
    opt = torch.optim.Adagrad(params, lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1)
    tx = ref.adagrad(0.1, lr_decay=0.01, initial_accumulator_value=0.1)
    ps = [p.copy() for p in params0]
    state = tx.init(ps)
    for g in grads:
        for p, gi in zip(params, g):
            p.grad = torch.tensor(gi)
        opt.step()
        u, state = tx.update(g, state, ps)
        ps = ref.apply_updates(ps, u)
    _check("adagrad", [ps], [[p.detach().numpy() for p in params]])
