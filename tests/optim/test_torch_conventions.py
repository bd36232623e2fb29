"""What a torch user expects: groups, schedulers, state_dict both ways, hooks, closures,
compile, AMP, state created on demand."""

from __future__ import annotations

import copy
import functools
import subprocess
import sys
import textwrap

import pytest
import torch

import rmsprop


def model_and_data(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    x, y = torch.randn(32, 6), torch.randn(32, 2)
    return model, x, y


def train(model, opt, x, y, steps, scheduler=None):
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()


def params_of(model):
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("config", [{}, {"momentum": 0.9, "centered": True, "weight_decay": 0.01}])
@pytest.mark.parametrize("direction", ["ours_to_torch", "torch_to_ours"])
def test_checkpoints_move_between_torch_and_us(direction, config):
    """Save mid-training in one optimizer, load into the other, continue: identical."""
    model, x, y = model_and_data()
    reference = copy.deepcopy(model)
    ours = functools.partial(rmsprop.RMSprop, foreach=False)  # torch's CPU path, bit for bit
    first, second = (ours, torch.optim.RMSprop)
    if direction == "torch_to_ours":
        first, second = second, first
    opt = first(model.parameters(), lr=0.01, **config)
    train(model, opt, x, y, 5)
    saved = copy.deepcopy(opt.state_dict())
    assert set(saved["state"][0]) == {"step", "square_avg"} | (
        {"momentum_buffer", "grad_avg"} if config else set()
    )
    resumed = second(model.parameters(), lr=0.01, **config)
    resumed.load_state_dict(saved)
    train(model, resumed, x, y, 5)
    # the uninterrupted run, all in torch.optim.RMSprop
    opt_ref = torch.optim.RMSprop(reference.parameters(), lr=0.01, **config)
    train(reference, opt_ref, x, y, 10)
    assert all(torch.equal(a, b) for a, b in zip(params_of(model), params_of(reference)))


def test_round_trip_through_our_own_state_dict_keeps_every_switch():
    model, x, y = model_and_data()
    opt = rmsprop.RMSprop.from_preset(model.parameters(), "tf1", lr=0.01, momentum=0.9)
    train(model, opt, x, y, 3)
    saved = copy.deepcopy(opt.state_dict())
    twin = copy.deepcopy(model)
    opt2 = rmsprop.RMSprop(twin.parameters())  # torch defaults; the checkpoint brings the switches
    opt2.load_state_dict(saved)
    assert opt2.param_groups[0]["initial_accumulator_value"] == 1.0
    assert opt2.param_groups[0]["lr_in_momentum"] is True
    train(model, opt, x, y, 3)
    train(twin, opt2, x, y, 3)
    assert all(torch.equal(a, b) for a, b in zip(params_of(model), params_of(twin)))


def test_param_groups_with_their_own_presets_and_hyperparameters():
    model, x, y = model_and_data()
    first, second = list(model[0].parameters()), list(model[2].parameters())
    keras = rmsprop.PRESETS["keras"].hyperparameters(lr=0.005)
    opt = rmsprop.RMSprop([{"params": first}, {"params": second, **keras}], lr=0.01)
    assert (
        opt.param_groups[0]["eps_in_sqrt"] is False and opt.param_groups[1]["eps_in_sqrt"] is True
    )
    train(model, opt, x, y, 3)
    # the same as two optimizers, one per group
    model2, _, _ = model_and_data()
    opt_a = rmsprop.RMSprop(model2[0].parameters(), lr=0.01)
    opt_b = rmsprop.RMSprop.from_preset(model2[2].parameters(), "keras", lr=0.005)
    for _ in range(3):
        opt_a.zero_grad(), opt_b.zero_grad()
        torch.nn.functional.mse_loss(model2(x), y).backward()
        opt_a.step(), opt_b.step()
    assert all(torch.equal(a, b) for a, b in zip(params_of(model), params_of(model2)))


def test_lr_scheduler_drives_the_lr_like_torch():
    runs = []
    for cls in (torch.optim.RMSprop, rmsprop.RMSprop):
        model, x, y = model_and_data()
        opt = cls(model.parameters(), lr=0.05, momentum=0.9, foreach=False)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
        train(model, opt, x, y, 6, sched)
        runs.append(params_of(model))
        assert opt.param_groups[0]["lr"] == pytest.approx(0.05 * 0.5**3)
    assert all(torch.equal(a, b) for a, b in zip(*runs))


def test_add_param_group_hooks_and_closure():
    model, x, y = model_and_data()
    opt = rmsprop.RMSprop(model[0].parameters(), lr=0.01)
    opt.add_param_group({"params": model[2].parameters(), "lr": 0.001, "centered": True})
    calls = []
    opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: calls.append("post"))

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    before = params_of(model)
    loss = opt.step(closure)
    assert calls == ["pre", "post"]
    assert torch.is_tensor(loss)
    assert all(not torch.equal(a, b) for a, b in zip(before, params_of(model)))
    assert "grad_avg" in opt.state[next(model[2].parameters())]
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_switching_momentum_and_centered_on_later_works():
    model, x, y = model_and_data()
    opt = rmsprop.RMSprop(model.parameters(), lr=0.01)
    train(model, opt, x, y, 2)
    opt.param_groups[0]["momentum"] = 0.9
    opt.param_groups[0]["centered"] = True
    train(model, opt, x, y, 2)  # torch.optim.RMSprop raises KeyError here
    state = opt.state[next(model.parameters())]
    assert {"momentum_buffer", "grad_avg"} <= set(state)
    assert float(state["step"]) == 4


@pytest.mark.parametrize("impl", ["auto", "numba"])
def test_torch_compile_of_step(impl, compile_in_place):
    """torch.compile of ``opt.step`` (then ``opt.zero_grad``) runs the fused kernel as an
    opaque call (numba's kernel is not traced) and gives the eager step's numbers."""
    model, x, y = model_and_data()
    twin = copy.deepcopy(model)
    opt = rmsprop.RMSprop(model.parameters(), lr=0.01, momentum=0.9, eps_in_sqrt=True, impl=impl)
    opt_twin = rmsprop.RMSprop(twin.parameters(), lr=0.01, momentum=0.9, eps_in_sqrt=True)

    @torch.compile
    def compiled_step():
        opt.step()
        opt.zero_grad()

    for _ in range(3):
        for m, step in ((model, compiled_step), (twin, opt_twin.step)):
            m.zero_grad()
            torch.nn.functional.mse_loss(m(x), y).backward()
            step()
    assert all(p.grad is None for p in model.parameters())  # the compiled zero_grad ran
    if impl == "numba":
        assert opt.last_impl[0] == "numba"
    for a, b in zip(params_of(model), params_of(twin)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_a_program_that_steps_imports_neither_dynamo_nor_dtensor():
    """A training script's first steps (each impl, ``zero_grad`` included) import neither
    ``torch._dynamo`` nor ``torch.distributed.tensor``: about 2.4 s at a program's start
    (they were imported by torch.optim's step wrapper, by its ``add_param_group`` and
    ``zero_grad``, which torch wraps to import dynamo at their first call, and by the
    DTensor check). torch.compile still sees the step as torch's (the test above)."""
    code = textwrap.dedent("""
        import sys, torch, rmsprop
        for impl in ("auto", "single", "foreach"):
            p = torch.zeros(100_000, requires_grad=True)
            opt = rmsprop.RMSprop([p, torch.zeros((), requires_grad=True)], lr=0.01,
                                  momentum=0.9, impl=impl)
            for _ in range(2):
                opt.zero_grad()
                p.grad = torch.ones(100_000)
                opt.step()
        print(sorted(m for m in ("torch._dynamo", "torch.distributed.tensor") if m in sys.modules))
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "[]", run.stdout


def test_grad_scaler_skips_inf_steps():
    model, x, y = model_and_data()
    opt = rmsprop.RMSprop(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    before = params_of(model)
    opt.zero_grad()
    loss = torch.nn.functional.mse_loss(model(x), y)
    scaler.scale(loss).backward()
    next(model.parameters()).grad[0, 0] = float("inf")
    scaler.step(opt)
    scaler.update()
    assert all(torch.equal(a, b) for a, b in zip(before, params_of(model)))
    assert opt.state == {} or all(float(s["step"]) == 0 for s in opt.state.values())
    assert scaler.get_scale() < 2.0**16
    opt.zero_grad()
    scaler.scale(torch.nn.functional.mse_loss(model(x), y)).backward()
    scaler.step(opt)
    assert not all(torch.equal(a, b) for a, b in zip(before, params_of(model)))


def test_differentiable_and_capturable_flags():
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    p = w.clone()  # a non-leaf parameter, as in meta-learning
    p.retain_grad()
    opt = rmsprop.RMSprop([p], lr=0.1, differentiable=True)
    p.grad = torch.tensor([0.5, -0.5])
    opt.step()
    p.sum().backward()
    assert w.grad is not None
    q = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match="differentiable=True needs impl='single'"):
        rmsprop.RMSprop([q], differentiable=True, impl="foreach")
