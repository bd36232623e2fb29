"""``rmsprop.optim.functional.rmsprop``: the layer under the class, on its own — torch's
functional API's results on torch's paths, the class's results for every switch, and a
call that raises changes nothing."""

from __future__ import annotations

import re

import pytest
import torch
import torch.optim.rmsprop as torch_rmsprop

import rmsprop
from rmsprop.optim.functional import rmsprop as functional_rmsprop

CORE = {"alpha": 0.9, "eps": 1e-6, "weight_decay": 0.0, "momentum": 0.0, "centered": False}
TORCH_CONFIGS = [
    {},
    {"momentum": 0.9, "centered": True, "weight_decay": 0.01},
    {"momentum": 0.5, "maximize": True},
]


def tensors(seed: int, shapes=((5, 3), (3,), (), (4, 2))):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen) for s in shapes]


def buffers(params, centered: bool, momentum: float):
    zeros = [torch.zeros_like(p) for p in params]
    return (
        zeros,
        [torch.zeros_like(p) for p in params] if centered else [None] * len(params),
        [torch.zeros_like(p) for p in params] if momentum else [None] * len(params),
        [torch.tensor(0.0) for _ in params],
    )


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("config", TORCH_CONFIGS)
def test_equals_torchs_functional_api_on_its_paths(config, foreach):
    """Five steps through torch's ``torch.optim.rmsprop.rmsprop`` and ours, with the same
    lists: every parameter and buffer equal bit for bit (torch's for-loop / foreach path)."""
    hp = {**CORE, **config}
    switches = {k: hp.pop(k) for k in ("maximize",) if k in hp}
    runs = []
    for step in (torch_rmsprop.rmsprop, functional_rmsprop):
        params = tensors(0)
        state = buffers(params, hp["centered"], hp["momentum"])
        for k in range(5):
            grads = tensors(k + 1)
            if step is functional_rmsprop:
                ran = step(params, grads, *state, lr=0.01, foreach=foreach, **hp, **switches)
                assert ran == ("foreach" if foreach else "single")
            else:
                used = [[t for t in ts if t is not None] for ts in state]  # torch's lists
                step(params, grads, *used, foreach=foreach, lr=0.01, **hp, **switches)
        runs.append([*params, *(t for ts in state for t in ts if t is not None)])
    assert all(torch.equal(a, b) for a, b in zip(*runs))


SWITCH_SETS = [
    {"eps_in_sqrt": True, "lr_in_momentum": True, "momentum": 0.9, "clipnorm": 0.5},
    {"decoupled_weight_decay": True, "weight_decay": 0.1, "global_clipnorm": 0.3},
    {
        "centered": True,
        "bias_correction": True,
        "nesterov": True,
        "momentum": 0.9,
        "initial_accumulator_value": 0.1,
        "clipvalue": 0.2,
        "ema_form": "delta",
    },
]


@pytest.mark.parametrize("impl", ["auto", "single"])
@pytest.mark.parametrize("switches", SWITCH_SETS)
def test_equals_the_class_for_every_switch(switches, impl):
    """The class's step for one group is this function on the group's lists: the same bits,
    clipping (step 2) included."""
    hp = {**CORE, **switches}
    params = tensors(0)
    ours = [p.clone().requires_grad_() for p in params]
    opt = rmsprop.RMSprop(ours, lr=0.02, impl=impl, **hp)
    start = hp.get("initial_accumulator_value", 0.0)
    state = buffers(params, hp["centered"], hp["momentum"])
    for v in state[0]:
        v.fill_(start)
    for k in range(4):
        grads = tensors(k + 1)
        for p, g in zip(ours, grads):
            p.grad = g.clone()
        opt.step()
        ran = functional_rmsprop(params, grads, *state, lr=0.02, impl=impl, **hp)
        # auto: the kernel may finish compiling between the two calls; the stand-in that
        # runs until then gives the kernel's bits
        assert ran == opt.last_impl[0] or impl == "auto"
    for p, q in zip(ours, params):
        assert torch.equal(p.detach(), q)
    for q, (v, m, b, s) in zip(ours, zip(*state)):
        st = opt.state[q]
        assert torch.equal(st["square_avg"], v) and torch.equal(st["step"], s)
        assert m is None or torch.equal(st["grad_avg"], m)
        assert b is None or torch.equal(st["momentum_buffer"], b)


def snapshot(*lists):
    return [t.clone() for ts in lists for t in ts if t is not None]


@pytest.mark.parametrize(
    ("change", "error", "words"),
    [
        (lambda a: a["kw"].update(rho=0.9), TypeError, "here it is alpha="),
        (lambda a: a["kw"].update(state_dtype=torch.bfloat16), TypeError, "state_dtype"),
        (lambda a: a["kw"].update(alpha=1.5), ValueError, "alpha"),
        (lambda a: a["kw"].update(centered=True), ValueError, "grad_avgs[0]"),
        (lambda a: a["lists"][4].pop(), ValueError, "state_steps has 3 entries for 4"),
        (
            lambda a: a["lists"][0].__setitem__(2, torch.zeros(7)),
            RuntimeError,
            "parameter 2: the gradient",
        ),
    ],
    ids=[
        "other-framework-name",
        "state-dtype",
        "alpha-range",
        "missing-buffer",
        "short-list",
        "wrong-shape",
    ],
)
def test_a_call_that_raises_changes_nothing(change, error, words):
    params, grads = tensors(0), tensors(1)
    square_avgs, grad_avgs, momentum_buffers, steps = buffers(params, False, 0.5)
    args = {"lists": [grads, square_avgs, grad_avgs, momentum_buffers, steps],
            "kw": {**CORE, "momentum": 0.5, "lr": 0.01}}  # fmt: skip
    before = snapshot(params, square_avgs, momentum_buffers, steps)
    change(args)
    with pytest.raises(error, match=re.escape(words)):
        functional_rmsprop(params, *args["lists"], **args["kw"])
    assert all(torch.equal(a, b) for a, b in zip(before, snapshot(params, square_avgs,
                                                                   momentum_buffers, steps)))  # fmt: skip


def test_no_parameters_is_no_step():
    assert functional_rmsprop([], [], [], [], [], [], lr=0.1, **CORE) == "none"
