"""State at its edges: step counters the math cannot use, buffers that are None, duplicated,
stale or laid out otherwise, checkpoints from a machine with another back end, lazy rows
of strided parameters. Each test fails on the code before its fix."""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap

import pytest
import torch

import rmsprop
from rmsprop.lowbit.codecs import quantize_blockwise


def _two_groups(impl: str, **kwargs):
    a, b = torch.nn.Parameter(torch.ones(8)), torch.nn.Parameter(torch.ones(8))
    opt = rmsprop.RMSprop([{"params": [a]}, {"params": [b]}], lr=0.1, impl=impl, **kwargs)
    a.grad, b.grad = torch.ones(8), torch.ones(8)
    opt.step()
    return a, b, opt


def test_an_empty_step_counter_is_refused_not_written_through():
    """The fused kernel adds 1 to each counter through its address: an empty counter's
    address is 0 (a crash). In a fresh process, as a crash would take the test run."""
    code = textwrap.dedent("""
        import torch, rmsprop
        p = torch.nn.Parameter(torch.ones(8)); opt = rmsprop.RMSprop([p], impl="numba")
        p.grad = torch.ones(8); opt.step()
        opt.state[p]["step"] = torch.zeros(0)
        p.grad = torch.ones(8)
        try:
            opt.step()
        except RuntimeError as err:
            print("REFUSED", err)
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-1500:]
    assert "REFUSED group 0, parameter 0: state 'step' is (0,)" in run.stdout


@pytest.mark.parametrize(("impl", "value", "kwargs"), [
    ("numba", -1.0, {"bias_correction": True}),
    ("single", float("nan"), {"state_dtype": torch.bfloat16}),
    ("numba", 2.5, {"state_dtype": torch.bfloat16, "momentum": 0.9}),
])  # fmt: skip
def test_a_step_counter_the_math_cannot_use_is_refused_before_any_write(impl, value, kwargs):
    a, b, opt = _two_groups(impl, **kwargs)
    opt.state[b]["step"] = torch.tensor(value)
    a0, state_a = a.detach().clone(), copy.deepcopy(opt.state[a])
    a.grad, b.grad = torch.ones(8), torch.ones(8)
    with pytest.raises(RuntimeError, match="group 1, parameter 0: state 'step' is"):
        opt.step()
    assert torch.equal(a0, a.detach()) and float(opt.state[a]["step"]) == float(state_a["step"])
    stored = float(opt.state[b]["step"])
    assert stored == value or (stored != stored and value != value)


def test_a_state_dict_with_a_none_buffer_is_refused_and_changes_nothing():
    p = torch.nn.Parameter(torch.ones(8))
    opt = rmsprop.RMSprop([p], lr=0.1)
    p.grad = torch.ones(8)
    opt.step()
    saved = copy.deepcopy(opt.state_dict())
    saved["state"][0]["square_avg"] = None
    saved["param_groups"][0].update(lr=0.5, momentum=0.9)
    with pytest.raises(ValueError, match="'square_avg' must be a tensor, got None"):
        opt.load_state_dict(saved)
    assert opt.param_groups[0]["lr"] == 0.1 and opt.param_groups[0]["momentum"] == 0


def test_a_checkpoint_saved_with_a_back_end_missing_here_loads(monkeypatch):
    """``impl``, ``foreach`` and ``state_dtype`` are this optimizer's, not the checkpoint's:
    a checkpoint made with impl='triton' loads where triton is not installed."""
    from rmsprop.optim import validation

    p = torch.nn.Parameter(torch.ones(8))
    saved = rmsprop.RMSprop([p], impl="single").state_dict()
    saved["param_groups"][0]["impl"] = "triton"
    monkeypatch.setattr(validation, "unavailable_reason",
                        lambda name: "not here" if name == "triton" else None)  # fmt: skip
    opt = rmsprop.RMSprop([p], impl="single")
    opt.load_state_dict(saved)
    assert opt.param_groups[0]["impl"] == "single"


def test_a_buffer_converted_from_another_form_is_laid_out_like_the_parameter():
    """A strided ``grad_var`` (from a centered compact run) becomes ``square_avg`` when the
    group is not centered: laid out like the parameter, so numba's result is single's."""

    def run(impl):
        p = torch.nn.Parameter(torch.arange(12.0).view(3, 4) / 10)
        opt = rmsprop.RMSprop([p], lr=0.1, impl=impl)
        opt.state[p] = {"step": torch.tensor(1.0), "grad_var": torch.arange(1.0, 13).view(4, 3).t()}
        p.grad = torch.ones(3, 4)
        opt.step()
        return p.detach().clone(), opt.state[p]["square_avg"]

    (a, va), (b, vb) = run("numba"), run("single")
    assert va.is_contiguous() and torch.allclose(va, vb) and torch.allclose(a, b, rtol=1e-6)


def test_lazy_rows_of_a_strided_parameter_with_two_sparse_dims_are_refused():
    """Before, the rows were written into a reshaped copy: the parameter never moved while
    its counter and state did."""
    p = torch.nn.Parameter(torch.ones(3, 2, 4).transpose(0, 1).contiguous().transpose(0, 1))
    opt = rmsprop.RMSprop([p], lr=0.1)
    p.grad = torch.sparse_coo_tensor(torch.tensor([[0, 2], [1, 0]]), torch.ones(2, 4), (3, 2, 4))
    with pytest.raises(RuntimeError, match="use sparse_mode='dense'"):
        opt.step()
    assert not opt.state


def test_torch_format_after_switching_momentum_and_centered_on():
    p = torch.nn.Parameter(torch.linspace(-1, 1, 100))
    opt = rmsprop.RMSprop([p], lr=0.01)
    p.grad = torch.ones(100)
    opt.step()
    opt.param_groups[0].update(momentum=0.9, centered=True)
    exported = opt.state_dict(format="torch")
    q = torch.nn.Parameter(p.detach().clone())
    theirs = torch.optim.RMSprop([q], lr=0.01, momentum=0.9, centered=True)
    theirs.load_state_dict(exported)
    q.grad = torch.ones(100)
    theirs.step()  # a KeyError ('grad_avg') before
    assert torch.isfinite(q).all()


def test_a_stale_unused_buffer_does_not_change_what_a_step_does():
    """A leftover ``grad_avg`` of the wrong shape (centered is off, so it is never read)
    was refused or not depending on an unrelated parameter in the group."""
    outcomes = []
    for extra in (False, True):
        p = torch.nn.Parameter(torch.ones(8))
        params = [p] + ([torch.nn.Parameter(torch.ones(4, 2).t())] if extra else [])
        opt = rmsprop.RMSprop(params, lr=0.1, impl="single")
        for x in params:
            x.grad = torch.ones_like(x)
        opt.step()
        opt.state[p]["grad_avg"] = torch.zeros(3)
        opt.step()
        outcomes.append(opt.last_impl[0])
    assert outcomes == ["single", "single"]


def test_a_state_entry_holding_a_buffer_twice_is_refused():
    p = torch.nn.Parameter(torch.ones(8))
    codes, scale = quantize_blockwise(torch.full((8,), 9.0), False)
    group = {**rmsprop.RMSprop([p]).param_groups[0], "params": [0]}
    twice = {"state": {0: {"step": torch.tensor(3.0), "square_avg": torch.full((8,), 4.0),
                           "square_avg_codes": codes, "square_avg_scale": scale}},
             "param_groups": [group]}  # fmt: skip
    with pytest.raises(ValueError, match="'square_avg' is there twice"):
        rmsprop.RMSprop([p]).load_state_dict(twice)
    both = {"state": {0: {"step": torch.tensor(3.0), "square_avg": torch.full((8,), 4.0),
                          "grad_var": torch.ones(8), "grad_avg": torch.zeros(8)}},
            "param_groups": [{**group, "centered": True}]}  # fmt: skip
    with pytest.raises(ValueError, match="both 'square_avg' and 'grad_var'"):
        rmsprop.RMSprop([p], centered=True).load_state_dict(both)
