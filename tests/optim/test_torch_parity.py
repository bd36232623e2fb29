"""rmsprop.RMSprop against torch.optim.RMSprop, bit for bit, and against the reference."""

from __future__ import annotations

import pytest
import torch

import rmsprop

from parity_data import (
    SWITCH_MATRIX,
    assert_close_f64,
    optimizer_trajectory,
    random_problem,
    reference_trajectory,
)

TORCH_CONFIGS = {
    "default": {},
    "momentum": {"momentum": 0.9},
    "centered": {"centered": True},
    "centered_momentum": {"centered": True, "momentum": 0.5},
    "weight_decay": {"weight_decay": 0.01},
    "maximize": {"maximize": True},
    "everything": {"centered": True, "momentum": 0.9, "weight_decay": 0.1, "maximize": True,
                   "alpha": 0.9, "eps": 1e-6},
    "alpha_below_half": {"alpha": 0.3, "centered": True},
}  # fmt: skip


@pytest.mark.parametrize("foreach", [False, True], ids=["for-loop", "foreach"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("config", TORCH_CONFIGS)
def test_bitwise_equal_to_torch(config, dtype, foreach):
    kwargs = TORCH_CONFIGS[config]
    params0, grads, lrs = random_problem(seed=len(config), steps=40)
    theirs, _ = optimizer_trajectory(
        lambda ps: torch.optim.RMSprop(ps, foreach=foreach, **kwargs), params0, grads, lrs, dtype
    )
    ours, opt = optimizer_trajectory(
        lambda ps: rmsprop.RMSprop(ps, foreach=foreach, **kwargs), params0, grads, lrs, dtype
    )
    assert opt.last_impl[0] == ("foreach" if foreach else "single")
    for step, (a, b) in enumerate(zip(ours, theirs)):
        for x, y in zip(a, b):
            assert torch.equal(x, y), f"{config} step {step + 1}: not bitwise equal"


@pytest.mark.parametrize("foreach", [False, True], ids=["for-loop", "foreach"])
@pytest.mark.parametrize("config", ["default", "everything"])
def test_complex_parameters_bitwise(config, foreach):
    torch.manual_seed(0)
    p1 = [torch.randn(4, 3, dtype=torch.complex64, requires_grad=True)]
    p2 = [p1[0].detach().clone().requires_grad_()]
    o1 = torch.optim.RMSprop(p1, foreach=foreach, **TORCH_CONFIGS[config])
    o2 = rmsprop.RMSprop(p2, foreach=foreach, **TORCH_CONFIGS[config])
    for _ in range(10):
        g = torch.randn(4, 3, dtype=torch.complex64)
        p1[0].grad, p2[0].grad = g.clone(), g.clone()
        o1.step()
        o2.step()
    assert torch.equal(p1[0], p2[0])
    for key in o1.state[p1[0]]:
        assert torch.equal(o1.state[p1[0]][key], o2.state[p2[0]][key]), key


def test_tensor_lr_bitwise():
    params0, grads, _ = random_problem(seed=3, steps=10)
    out = []
    for cls in (torch.optim.RMSprop, rmsprop.RMSprop):
        ps = [torch.tensor(p, dtype=torch.float32, requires_grad=True) for p in params0]
        opt = cls(ps, lr=torch.tensor(0.01), momentum=0.9, foreach=False)
        for g in grads:
            for p, gi in zip(ps, g):
                p.grad = torch.tensor(gi, dtype=torch.float32)
            opt.step()
        out.append(ps)
    assert all(torch.equal(a, b) for a, b in zip(*out))


# ---------------------------------------------------------------------- reference parity


@pytest.mark.parametrize("impl", ["single", "foreach"])
@pytest.mark.parametrize("config", SWITCH_MATRIX)
def test_matches_reference_float64(config, impl):
    hp = {"lr": 0.01, "alpha": 0.9, "eps": 1e-8, **SWITCH_MATRIX[config]}
    params0, grads, lrs = random_problem(seed=40 + len(config))
    ours, _ = optimizer_trajectory(lambda ps: rmsprop.RMSprop(ps, impl=impl, **hp), params0, grads, lrs,
                                   torch.float64)  # fmt: skip
    expected = reference_trajectory(hp, params0, grads, lrs)
    for step, (a, b) in enumerate(zip(ours, expected)):
        for x, y in zip(a, b):
            assert_close_f64(x.numpy(), y, what=f"{config}/{impl} step {step + 1}")


@pytest.mark.parametrize("config", SWITCH_MATRIX)
def test_single_and_foreach_bitwise_in_float32(config):
    hp = {"lr": 0.01, "alpha": 0.9, **SWITCH_MATRIX[config]}
    params0, grads, lrs = random_problem(seed=80 + len(config), steps=30)
    runs = [optimizer_trajectory(lambda ps, i=i: rmsprop.RMSprop(ps, impl=i, **hp), params0, grads, lrs,
                                 torch.float32)[0] for i in ("single", "foreach")]  # fmt: skip
    for a, b in zip(*runs):
        assert all(torch.equal(x, y) for x, y in zip(a, b)), config
