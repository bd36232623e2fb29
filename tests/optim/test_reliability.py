"""Bad input, non-finite gradients, centered variance, checkpoints, low precision."""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rmsprop
from rmsprop import reference as ref
from rmsprop.optim import checkpoint


def _param():
    return [torch.zeros(3, requires_grad=True)]


BAD = [
    ({"lr": -1.0}, ValueError, r"Invalid learning rate: -1.0 \(lr must be in \[0, inf\)\)"),
    ({"lr": float("nan")}, ValueError, r"Invalid learning rate: nan"),
    ({"lr": torch.tensor([0.1, 0.2])}, ValueError, r"Tensor lr must be 1-element"),
    ({"alpha": 1.0}, ValueError, r"Invalid alpha value: 1.0 \(alpha must be in \[0, 1\)\)"),
    ({"alpha": -0.1}, ValueError, r"Invalid alpha value: -0.1"),
    ({"eps": -1e-8}, ValueError, r"Invalid epsilon value: -1e-08"),
    (
        {"momentum": 1.0},
        ValueError,
        r"Invalid momentum value: 1.0 \(momentum must be in \[0, 1\)\)",
    ),
    ({"weight_decay": -0.1}, ValueError, r"Invalid weight_decay value: -0.1"),
    ({"nesterov": True}, ValueError, r"nesterov=True needs momentum > 0"),
    ({"clipnorm": 0}, ValueError, r"clipnorm=0 is invalid: it must be in \(0, inf\)"),
    ({"clipnorm": 1.0, "global_clipnorm": 1.0}, ValueError, r"at most one of clipvalue"),
    ({"impl": "cuda"}, ValueError, r"impl='cuda' is invalid: it must be one of 'auto', 'single'"),
    ({"state_dtype": torch.int8}, ValueError, r"state_dtype=torch.int8 is not supported"),
    ({"nonfinite": "ignore"}, ValueError, r"nonfinite='ignore' is invalid: it must be one of"),
    ({"sparse_mode": "rows"}, ValueError, r"sparse_mode='rows' is invalid"),
    ({"centered": "yes"}, TypeError, r"centered must be True or False"),
    ({"foreach": 1}, TypeError, r"foreach must be None, True or False"),
    ({"ema_form": "keras"}, ValueError, r"ema_form='keras' is invalid"),
    ({"rho": 0.9}, TypeError, r"'rho' is another framework's name: here it is alpha="),
]


@pytest.mark.parametrize(("kwargs", "error", "pattern"), BAD, ids=[str(b[0]) for b in BAD])
def test_bad_input_names_the_argument(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        rmsprop.RMSprop(_param(), **kwargs)


def test_add_param_group_validates_and_leaves_groups_unchanged():
    opt = rmsprop.RMSprop(_param())
    with pytest.raises(ValueError, match=r"Invalid momentum value: 2"):
        opt.add_param_group({"params": [torch.zeros(2, requires_grad=True)], "momentum": 2})
    assert len(opt.param_groups) == 1


# ------------------------------------------------------------------ non-finite gradients
@pytest.mark.parametrize("impl", ["single", "foreach", "numba"])
def test_skip_changes_nothing_and_counts(impl):
    params = [torch.randn(4, 3, requires_grad=True), torch.randn(5, requires_grad=True)]
    opt = rmsprop.RMSprop(params, lr=0.1, momentum=0.9, centered=True, impl=impl, nonfinite="skip")
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()
    before = (copy.deepcopy(opt.state_dict()), [p.detach().clone() for p in params])
    params[1].grad[2] = float("nan")
    opt.step()
    params[0].grad[0, 0] = float("inf")
    opt.step()
    assert opt.skipped_steps == 2
    assert all(torch.equal(a, b) for a, b in zip(before[1], params))
    for key, value in before[0]["state"].items():
        for name, tensor in value.items():
            assert torch.equal(tensor, opt.state_dict()["state"][key][name]), name


def test_skip_on_the_first_step_creates_no_state_and_raise_raises_first():
    p = torch.zeros(3, requires_grad=True)
    opt = rmsprop.RMSprop([p], nonfinite="skip")
    p.grad = torch.tensor([1.0, float("nan"), 0.0])
    opt.step()
    assert opt.state_dict()["state"] == {}
    opt = rmsprop.RMSprop([p], nonfinite="raise")
    with pytest.raises(FloatingPointError, match="nothing was updated"):
        opt.step()
    assert torch.equal(p, torch.zeros(3))


def test_reference_guard_skips_and_raises():
    tx = ref.rmsprop(lr=0.1, momentum=0.9, nonfinite="skip")
    params = np.ones(3)
    state = tx.init(params)
    updates, state = tx.update(np.array([1.0, 2.0, 3.0]), state, params)
    params = ref.apply_updates(params, updates)
    updates, state2 = tx.update(np.array([1.0, np.inf, 3.0]), state, params)
    assert np.all(updates == 0)
    assert state2.skipped == 1
    assert state2.inner is state.inner
    with pytest.raises(FloatingPointError):
        ref.rmsprop(nonfinite="raise").update(
            np.array([np.nan]), ref.rmsprop().init(np.ones(1)), None
        )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    special=st.sampled_from([0.0, 1e30, 1e-30, -1e30, float("nan"), float("inf"), -float("inf")]),
    config=st.sampled_from(
        [
            {},
            {"momentum": 0.9},
            {"centered": True, "eps_in_sqrt": True},
            {"weight_decay": 0.1, "decoupled_weight_decay": True},
        ]
    ),
    impl=st.sampled_from(["single", "foreach", "numba"]),
    shape=st.sampled_from([(0,), (3,), (4, 5)]),
    strided=st.booleans(),
)
def test_fuzz_no_crash_and_skip_never_changes_anything(special, config, impl, shape, strided):
    base = torch.randn(*shape, 2) if strided else torch.randn(*shape)
    p = (base[..., 0] if strided else base).clone().requires_grad_()
    if strided and impl != "numba":
        p = base[..., 0].requires_grad_()  # a non-contiguous parameter
    grad = torch.randn(shape)
    if grad.numel():
        grad.view(-1)[0] = special
    opt = rmsprop.RMSprop([p], impl=impl, nonfinite="skip", **config)
    before = p.detach().clone()
    p.grad = grad
    opt.step()
    if not bool(torch.isfinite(grad).all()):
        assert torch.equal(p.detach(), before)
        assert opt.skipped_steps == 1
        assert opt.state_dict()["state"] == {}


# ------------------------------------------------------------------ centered variance
def test_centered_variance_rounding_gives_nan_in_torch_and_the_clamp_prevents_it():
    """A constant gradient: v and ḡ² converge to the same number, and v - ḡ² becomes
    rounding noise; eps outside the sqrt does not protect it."""
    g = torch.linspace(0.1, 3.0, 200)
    runs = {}
    for name, make in {
        "torch": lambda ps: torch.optim.RMSprop(ps, lr=1e-3, alpha=0.9, centered=True),
        "ours_no_clamp": lambda ps: rmsprop.RMSprop(ps, lr=1e-3, alpha=0.9, centered=True, foreach=False),
        "ours_clamp": lambda ps: rmsprop.RMSprop(ps, lr=1e-3, alpha=0.9, centered=True, centered_clamp=True),
    }.items():  # fmt: skip
        p = torch.zeros(200, requires_grad=True)
        opt = make([p])
        for _ in range(400):
            p.grad = g.clone()
            opt.step()
        runs[name] = p.detach()
    assert bool(torch.isnan(runs["torch"]).any())
    assert torch.equal(runs["torch"].isnan(), runs["ours_no_clamp"].isnan())
    assert bool(torch.isfinite(runs["ours_clamp"]).all())


# ------------------------------------------------------------------ checkpoints
def test_mismatched_checkpoint_raises_and_changes_nothing():
    params = [torch.randn(4, 3, requires_grad=True)]
    opt = rmsprop.RMSprop(params, momentum=0.9)
    params[0].grad = torch.ones(4, 3)
    opt.step()
    good = copy.deepcopy(opt.state_dict())
    bad = copy.deepcopy(good)
    bad["state"][0]["square_avg"] = torch.zeros(3, 4)
    with pytest.raises(
        ValueError, match=r"'square_avg' has shape \(3, 4\), the parameter \(4, 3\)"
    ):
        opt.load_state_dict(bad)
    bad = copy.deepcopy(good)
    bad["state"][0]["velocity"] = torch.zeros(4, 3)
    with pytest.raises(ValueError, match=r"unknown state key"):
        opt.load_state_dict(bad)
    bad = copy.deepcopy(good)
    bad["param_groups"][0]["alpha"] = 1.5
    with pytest.raises(ValueError, match=r"group 0 of the checkpoint: Invalid alpha value: 1.5"):
        opt.load_state_dict(bad)
    after = opt.state_dict()
    assert after["param_groups"][0]["alpha"] == good["param_groups"][0]["alpha"]
    assert torch.equal(after["state"][0]["square_avg"], good["state"][0]["square_avg"])


def test_checkpoint_file_loads_with_weights_only(tmp_path, monkeypatch):
    p = torch.zeros(3, requires_grad=True)
    opt = rmsprop.RMSprop([p], state_dtype=torch.float32, momentum=0.5)
    p.grad = torch.ones(3)
    opt.step()
    checkpoint.save(opt, tmp_path / "opt.pt")
    seen = {}
    real_load = torch.load

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    fresh = rmsprop.RMSprop([p], momentum=0.5)
    checkpoint.load(fresh, tmp_path / "opt.pt")
    assert seen["weights_only"] is True
    assert torch.equal(fresh.state[p]["square_avg"], opt.state[p]["square_avg"])


RESUME = textwrap.dedent(
    """
    import sys, torch, rmsprop
    from rmsprop.optim import checkpoint
    impl, mode, path = sys.argv[1], sys.argv[2], sys.argv[3]
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    x, y = torch.randn(64, 8), torch.randn(64, 1)
    opt = rmsprop.RMSprop.from_preset(model.parameters(), "tf1", lr=0.01, momentum=0.9, impl=impl)
    def run(steps):
        for _ in range(steps):
            opt.zero_grad(); torch.nn.functional.mse_loss(model(x), y).backward(); opt.step()
    if mode == "first":
        run(5); checkpoint.save(opt, path + ".opt"); torch.save(model.state_dict(), path + ".model")
    elif mode == "resume":
        model.load_state_dict(torch.load(path + ".model", weights_only=True)); checkpoint.load(opt, path + ".opt")
        run(5); torch.save(model.state_dict(), path + ".final")
    else:
        run(10); torch.save(model.state_dict(), path + ".final")
    """
)


@pytest.mark.parametrize("impl", ["single", "foreach", "numba"])
def test_resume_in_a_new_process_is_exact(tmp_path, impl):
    script = tmp_path / "resume.py"
    script.write_text(RESUME)
    for mode, name in (("first", "a"), ("resume", "a"), ("straight", "b")):
        subprocess.run([sys.executable, str(script), impl, mode, str(tmp_path / name)], check=True)
    resumed = torch.load(tmp_path / "a.final", weights_only=True)
    straight = torch.load(tmp_path / "b.final", weights_only=True)
    assert all(torch.equal(resumed[k], straight[k]) for k in straight)


# ------------------------------------------------------------------ low precision
@pytest.mark.parametrize("impl", ["single", "foreach"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_math_runs_in_fp32(impl, dtype):
    p = torch.zeros(4, dtype=dtype, requires_grad=True)
    opt = rmsprop.RMSprop([p], lr=0.01, impl=impl)
    p.grad = torch.full((4,), 300.0, dtype=dtype)  # 300² = 90000 is beyond fp16's 65504
    opt.step()
    expected = -0.01 * 300 / ((0.01 * 300**2) ** 0.5 + 1e-8)  # -0.1, computed in fp32
    assert float(p[0]) == torch.tensor(expected, dtype=dtype).item()


def test_fp16_state_overflow_torch_stalls_fp32_state_does_not():
    """g = 3000 in fp16: (1-α)g² = 90000 overflows an fp16 square_avg. torch's update is then
    g/inf = 0 (the step silently does nothing); with state_dtype=torch.float32 it is right."""
    grad = torch.full((4,), 3000.0, dtype=torch.float16)
    q = torch.zeros(4, dtype=torch.float16, requires_grad=True)
    torch_opt = torch.optim.RMSprop([q], lr=0.01)
    p = torch.zeros(4, dtype=torch.float16, requires_grad=True)
    ours = rmsprop.RMSprop([p], lr=0.01, state_dtype=torch.float32)
    for _ in range(3):
        q.grad, p.grad = grad.clone(), grad.clone()
        torch_opt.step()
        ours.step()
    assert float(q[0]) == 0.0
    assert torch_opt.state[q]["square_avg"].isinf().all()
    assert ours.state[p]["square_avg"].dtype == torch.float32
    assert float(p[0]) < -0.1  # three real steps of about -0.1, -0.07, -0.06
