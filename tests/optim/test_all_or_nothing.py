"""All or nothing: every group planned and checked before anything is written.

Each test here reproduces a defect of the step before it had one spine (three pipelines,
checks among the writes) and fails on that code: a kernel reading past a buffer, a step
that raised after updating part of the model, ``auto`` choosing an implementation that
then raised, the non-finite guard reading clipped gradients, a data race on duplicate
parameters, late or unclear errors, settings lost by ``copy.deepcopy``.
"""

from __future__ import annotations

import copy
import os
import pickle
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rmsprop
from rmsprop import reference as ref

IMPLS = ["single", "foreach", "numba", "triton"]


def snapshot(opt: rmsprop.RMSprop) -> tuple:
    """Every parameter, state tensor and counter of ``opt``, copied."""
    params = [p.detach().clone() for g in opt.param_groups for p in g["params"]]
    state = {id(p): {k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()}
             for p, s in opt.state.items()}  # fmt: skip
    return params, state, opt.skipped_steps


def assert_unchanged(opt: rmsprop.RMSprop, before: tuple) -> None:
    params, state, skipped = snapshot(opt)
    assert opt.skipped_steps == skipped == before[2]
    assert all(torch.equal(a, b) for a, b in zip(params, before[0]))
    assert state.keys() == before[1].keys()
    for key, entry in state.items():
        assert entry.keys() == before[1][key].keys()
        for name, value in entry.items():
            assert torch.equal(value, before[1][key][name]), name


def trained(impl: str, n: int = 3, state_dtype=None, size: int = 5000, **kw) -> rmsprop.RMSprop:
    """An optimizer over ``n`` parameters after two steps (its state exists)."""
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(size, generator=gen).requires_grad_() for _ in range(n)]
    opt = rmsprop.RMSprop(params, lr=0.01, momentum=0.9, centered=True, impl=impl,
                          state_dtype=state_dtype, **kw)  # fmt: skip
    for _ in range(2):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen)
        opt.step()
    return opt


# ---------------------------------------------------------------------- memory safety
MEMORY_CASES = {
    # the gradient has fewer elements than its parameter (a kernel sized from the
    # parameter would read past its end)
    "short-gradient": "p.grad = torch.ones(100_000); p.grad.data = torch.ones(60_000)",
    # the parameter grew after its state was made (a kernel would write past the state)
    "grown-parameter": "p.data = torch.zeros(400_000); p.grad = torch.ones(400_000)",
}


@pytest.mark.parametrize("case", MEMORY_CASES)
@pytest.mark.parametrize("impl", [*IMPLS, "auto"])
def test_a_buffer_of_the_wrong_size_is_refused_in_every_impl(impl, case):
    """In a fresh process (a crash must not take the test run with it): a clear error that
    names the parameter, and nothing written; never a crash or a silent read."""
    code = textwrap.dedent(f"""
        import torch, rmsprop
        p = torch.zeros(100_000, requires_grad=True)
        opt = rmsprop.RMSprop([p], lr=0.01, momentum=0.9, impl={impl!r})
        p.grad = torch.ones(100_000)
        opt.step()
        before = p.detach().clone(), opt.state[p]["square_avg"].clone(), float(opt.state[p]["step"])
        {MEMORY_CASES[case]}
        try:
            opt.step()
        except RuntimeError as err:
            print("ERROR", err)
        unchanged = (torch.equal(opt.state[p]["square_avg"], before[1])
                     and float(opt.state[p]["step"]) == before[2])
        print("UNCHANGED", unchanged)
    """)
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "ERROR group 0, parameter 0:" in run.stdout, run.stdout
    assert "shape" in run.stdout and "UNCHANGED True" in run.stdout, run.stdout


# ---------------------------------------------------------------------- all or nothing
@pytest.mark.parametrize("impl", IMPLS)
def test_a_bad_gradient_on_the_second_parameter_changes_nothing(impl):
    opt = trained(impl)
    params = opt.param_groups[0]["params"]
    for p in params:
        p.grad = torch.ones_like(p)
    params[1].grad.data = torch.ones(4000)  # the wrong shape, on the second parameter
    before = snapshot(opt)
    with pytest.raises(RuntimeError, match=r"group 0, parameter 1: the gradient is \(4000,\)"):
        opt.step()
    assert_unchanged(opt, before)


@pytest.mark.parametrize("impl", IMPLS)
def test_an_error_in_the_second_group_leaves_the_first_untouched(impl):
    opt = trained(impl)
    extra = torch.zeros(5000, requires_grad=True)
    opt.add_param_group({"params": [extra]})
    for p in opt.param_groups[0]["params"]:
        p.grad = torch.ones_like(p)
    extra.grad = torch.ones(5000)
    extra.grad.data = torch.ones(50, 100)  # the wrong shape
    before = snapshot(opt)
    with pytest.raises(RuntimeError, match=r"group 1, parameter 0: the gradient is \(50, 100\)"):
        opt.step()
    assert_unchanged(opt, before)


def test_a_strided_parameter_next_to_a_large_one_under_numba_int8_changes_nothing():
    """impl='numba' cannot take a non-contiguous parameter: it says so before the large
    parameter of the same group (8-bit state) is updated."""
    large = torch.zeros(64, 128, requires_grad=True)
    strided = torch.zeros(8, 16)[:, ::2].requires_grad_()
    opt = rmsprop.RMSprop([large, strided], impl="numba", state_dtype="int8", momentum=0.9)
    for p in (large, strided):
        p.grad = torch.ones_like(p)
    before = snapshot(opt)
    with pytest.raises(RuntimeError, match="group 0: impl='numba' needs contiguous parameters"):
        opt.step()
    assert_unchanged(opt, before)
    assert not opt.state  # not even the state of the first step was made


def test_a_sparse_embedding_is_not_updated_before_numba_refuses_its_neighbour():
    table = torch.zeros(100, 4, requires_grad=True)
    strided = torch.zeros(8, 16)[:, ::2].requires_grad_()
    opt = rmsprop.RMSprop([table, strided], impl="numba")
    table.grad = torch.sparse_coo_tensor(torch.tensor([[3, 7]]), torch.ones(2, 4), (100, 4))
    strided.grad = torch.ones_like(strided)
    with pytest.raises(RuntimeError, match="impl='numba' needs contiguous"):
        opt.step()
    assert not bool(table.detach().any()) and not opt.state


def test_integer_parameters_are_refused_at_construction():
    p = torch.zeros(3, dtype=torch.int64)
    with pytest.raises(
        TypeError, match=r"group 0, parameter 0: dtype torch.int64; RMSprop updates"
    ):
        rmsprop.RMSprop([torch.zeros(2, requires_grad=True), p][1:])
    opt = rmsprop.RMSprop([torch.zeros(2, requires_grad=True)])
    with pytest.raises(TypeError, match=r"group 1, parameter 0: dtype torch.int64"):
        opt.add_param_group({"params": [p]})
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("impl", ["single", "numba"])
def test_a_non_float_step_counter_is_refused_before_any_write(impl):
    opt = trained(impl, n=2)
    params = opt.param_groups[0]["params"]
    opt.state[params[1]]["step"] = torch.tensor(2, dtype=torch.int64)
    for p in params:
        p.grad = torch.ones_like(p)
    before = snapshot(opt)
    with pytest.raises(RuntimeError, match=r"parameter 1: state 'step' is \(\) torch.int64"):
        opt.step()
    assert_unchanged(opt, before)


# ---------------------------------------------------------------------- auto never raises
def test_auto_runs_a_channels_last_checkpoint_loaded_into_a_contiguous_model(compile_in_place):
    """torch's state of a channels_last conv (channels_last buffers) loaded into a
    contiguous model: the state is laid out like the parameters, and auto's fused kernel
    runs it (before: auto chose numba, which raised at every step). The kernel is loaded
    in the step (``compile_in_place``): this is about what auto runs once it is there."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 8, 3).to(memory_format=torch.channels_last)
    theirs = torch.optim.RMSprop(conv.parameters(), lr=0.01, momentum=0.9)
    conv(torch.randn(2, 3, 8, 8).to(memory_format=torch.channels_last)).sum().backward()
    theirs.step()
    model = torch.nn.Conv2d(3, 8, 3)
    model.load_state_dict(conv.state_dict())
    ours = rmsprop.RMSprop(model.parameters(), lr=0.01, momentum=0.9)
    ours.load_state_dict(theirs.state_dict())
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    ours.step()
    assert ours.last_impl[0] == "numba" and ours.last_plan[0].tasks[0][0] == "native"
    assert all(v.is_contiguous() for s in ours.state.values() for v in s.values())


def test_auto_runs_float64_parameters_with_float32_state(ieee_sqrt):
    """state_dtype=torch.float32 next to float64 parameters: fp64 math on fp32 state, the
    same bits in numba and single (before: auto chose numba, which raised); foreach runs
    torch's foreach kernels, whose fp64 rounding is its own (within an ulp)."""
    results = {}
    for impl in ("auto", "single", "foreach", "numba"):
        p = torch.linspace(-1, 1, 5000, dtype=torch.float64).requires_grad_()
        opt = rmsprop.RMSprop([p], lr=0.01, momentum=0.9, state_dtype=torch.float32, impl=impl)
        for k in range(3):
            p.grad = torch.cos(torch.arange(5000, dtype=torch.float64) * (k + 1))
            opt.step()
        assert opt.state[p]["square_avg"].dtype == torch.float32
        results[impl] = p.detach()
    assert torch.equal(results["auto"], results["single"])
    assert torch.equal(results["numba"], results["single"])
    torch.testing.assert_close(results["foreach"], results["single"], rtol=1e-15, atol=1e-15)


# ---------------------------------------------------------------------- skip before clipping
@pytest.mark.parametrize("clip", [{"clipvalue": 1.0}, {"clipnorm": 1.0}, {"global_clipnorm": 1.0}])
@pytest.mark.parametrize("impl", ["single", "numba"])
def test_skip_reads_the_raw_gradient_not_the_clipped_one(impl, clip):
    """An Inf gradient clamped to 1 by clipvalue is still an Inf gradient: the step is
    skipped, as in the NumPy reference with the same switches."""
    p = torch.ones(4, requires_grad=True)
    opt = rmsprop.RMSprop([p], lr=0.1, nonfinite="skip", impl=impl, **clip)
    p.grad = torch.tensor([1.0, float("inf"), 0.5, 0.0])
    opt.step()
    assert opt.skipped_steps == 1 and torch.equal(p.detach(), torch.ones(4)) and not opt.state
    tx = ref.rmsprop(lr=0.1, nonfinite="skip", **clip)
    updates, state = tx.update(np.array([1.0, np.inf, 0.5, 0.0]), tx.init(np.ones(4)), np.ones(4))
    assert state.skipped == 1 and np.all(updates == 0)


# ---------------------------------------------------------------------- duplicates
def test_duplicate_parameters_are_kept_once_and_run_deterministically():
    """torch warns about a parameter listed twice in a group (and updates it twice, which
    under a parallel kernel is a data race). It is kept once here, with torch's warning:
    20 runs give the same bits, equal to listing it once."""
    gen = torch.Generator().manual_seed(3)
    start, grads = torch.randn(200_000, generator=gen), torch.randn(3, 200_000, generator=gen)
    results = set()
    for _ in range(20):
        p = start.clone().requires_grad_()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            opt = rmsprop.RMSprop([p, p, p], lr=0.01, momentum=0.9, impl="numba")
        assert any("duplicate parameters" in str(w.message) for w in caught)
        assert len(opt.param_groups[0]["params"]) == 1
        for g in grads:
            p.grad = g.clone()
            opt.step()
        results.add(p.detach().numpy().tobytes())
    once = start.clone().requires_grad_()
    opt = rmsprop.RMSprop([once], lr=0.01, momentum=0.9, impl="numba")
    for g in grads:
        once.grad = g.clone()
        opt.step()
    assert results == {once.detach().numpy().tobytes()}


def test_named_duplicate_parameters_keep_their_first_name():
    p, q = torch.zeros(2, requires_grad=True), torch.zeros(3, requires_grad=True)
    with pytest.warns(UserWarning, match="duplicate parameters"):
        opt = rmsprop.RMSprop([("a", p), ("b", q), ("c", p)])
    assert opt.param_groups[0]["param_names"] == ["a", "b"]


@pytest.mark.parametrize("impl", ["single", "foreach", "numba", "triton"])
def test_a_gradient_of_another_dtype_runs_on_working_copies(impl, ieee_sqrt, monkeypatch):
    """A float32 gradient for a bf16 parameter (``Tensor.grad_dtype``, torch's way to keep
    fp32 gradients for low-precision weights): every impl casts it to the math dtype
    first and gives the same bits."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    results = {}
    for name in ("single", impl):
        p = torch.linspace(-1, 1, 3000).to(torch.bfloat16).requires_grad_()
        p.grad_dtype = torch.float32
        opt = rmsprop.RMSprop([p], lr=0.01, momentum=0.9, state_dtype=torch.float32, impl=name)
        for k in range(3):
            p.grad = torch.cos(torch.arange(3000.0) * (k + 1))
            opt.step()
        assert opt.last_plan[0].tasks[0][0] == "widened"
        results[name] = p.detach(), opt.state[p]["momentum_buffer"]
    assert torch.equal(results[impl][0], results["single"][0])
    assert torch.equal(results[impl][1], results["single"][1])


# ---------------------------------------------------------------------- early, clear errors
def test_foreach_contradicting_impl_is_refused_at_construction():
    p = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(ValueError, match="foreach=True contradicts impl='numba'"):
        rmsprop.RMSprop(p, foreach=True, impl="numba")
    with pytest.raises(ValueError, match="foreach=False contradicts impl='foreach'"):
        rmsprop.RMSprop(p, foreach=False, impl="foreach")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_numba_runs_half_precision_parameters_on_fp32_copies(dtype):
    """impl='numba' with fp16/bf16 parameters (was ``KeyError: torch.float16``): fp32
    math on working copies, the same bits as impl='single' (fp32 math too) up to the
    square root's rounding (torch's vectorised sqrt is not always correctly rounded)."""
    results = {}
    for impl in ("single", "numba"):
        p = torch.linspace(-1, 1, 3000).to(dtype).requires_grad_()
        opt = rmsprop.RMSprop([p], lr=0.01, impl=impl)
        for k in range(3):
            p.grad = torch.cos(torch.arange(3000.0) * (k + 1)).to(dtype)
            opt.step()
        results[impl] = p.detach().float()
        assert opt.last_plan[0].tasks[0][0] == ("widened" if impl == "numba" else "native")
    ulp = torch.finfo(dtype).eps * results["single"].abs()
    assert bool(((results["numba"] - results["single"]).abs() <= ulp).all())


def test_a_complex_or_badly_shaped_tensor_lr_names_lr():
    p = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(TypeError, match=r"lr must be a real floating-point tensor or number"):
        rmsprop.RMSprop(p, lr=torch.tensor(0.1 + 0.1j))
    with pytest.raises(ValueError, match="Tensor lr must be 1-element"):
        rmsprop.RMSprop(p, lr=torch.tensor([0.1, 0.2]))


def test_torch_own_error_inputs_for_rmsprop_raise_torchs_errors():
    """torch's optimizer test suite (``TestOptimRenewedCPU.test_errors``) feeds these
    inputs to RMSprop and matches the error type and message (warnings for a duplicate
    parameter): a drop-in passes them."""
    common = pytest.importorskip("torch.testing._internal.common_optimizers")
    inputs = common.optim_error_inputs_func_rmsprop("cpu", torch.float32)
    assert len(inputs) >= 6
    for error_input in inputs:
        given_ = error_input.optimizer_error_input
        params = given_.params
        if params is None:
            params = [torch.nn.Parameter(torch.randn(1, 1))]
        if issubclass(error_input.error_type, Warning):
            with pytest.warns(error_input.error_type, match=error_input.error_regex):
                rmsprop.RMSprop(params, **given_.kwargs)
        else:
            with pytest.raises(error_input.error_type, match=error_input.error_regex):
                rmsprop.RMSprop(params, **given_.kwargs)


# ---------------------------------------------------------------------- copies keep settings
@pytest.mark.parametrize("copier", [copy.deepcopy, lambda o: pickle.loads(pickle.dumps(o))],
                         ids=["deepcopy", "pickle"])  # fmt: skip
def test_copies_keep_every_setting(copier):
    p = torch.zeros(3, requires_grad=True)
    opt = rmsprop.RMSprop([p], nonfinite="skip", state_dtype=torch.bfloat16)
    opt.rounding_seed = 7
    p.grad = torch.tensor([1.0, float("nan"), 0.0])
    opt.step()
    assert opt.skipped_steps == 1
    twin = copier(opt)
    assert (twin.nonfinite, twin.skipped_steps, twin.rounding_seed) == ("skip", 1, 7)
    assert twin.param_groups[0]["state_dtype"] is torch.bfloat16


# ---------------------------------------------------------------------- every impl, every α
@pytest.mark.parametrize("ema_form", ["torch", "multiply", "delta"])
@pytest.mark.parametrize("alpha", [0.1, 0.3, 0.4, 0.5, 0.9, 0.99])
def test_every_impl_same_bits_for_every_alpha_and_ema_form(alpha, ema_form, ieee_sqrt,
                                                           monkeypatch):  # fmt: skip
    """Centered with momentum: numba, Triton (interpreted), foreach and single agree bit
    for bit. For α ≤ 0.5 torch's ``lerp_`` takes its other formula, whose ``1 − w`` must be
    computed in float32 as torch does (Triton computed it in double before, which differs
    for α = 0.1 and 0.4, not for 0.3)."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    gen = torch.Generator().manual_seed(int(alpha * 100))
    start = [torch.randn(n, generator=gen) for n in (3000, 17)]
    grads = [[torch.randn(t.shape, generator=gen) for t in start] for _ in range(4)]
    results = {}
    for impl in IMPLS:
        params = [t.clone().requires_grad_() for t in start]
        opt = rmsprop.RMSprop(params, lr=0.01, alpha=alpha, centered=True, momentum=0.5,
                              ema_form=ema_form, impl=impl)  # fmt: skip
        for step_grads in grads:
            for p, g in zip(params, step_grads):
                p.grad = g.clone()
            opt.step()
        assert opt.last_impl[0] == impl
        results[impl] = [p.detach() for p in params] + [
            opt.state[p][k] for p in params for k in ("square_avg", "grad_avg", "momentum_buffer")
        ]
    for impl in IMPLS:
        assert all(torch.equal(a, b) for a, b in zip(results[impl], results["single"])), impl


# ---------------------------------------------------------------------- all or nothing, fuzzed
KINDS = ["ok", "ok", "ok", "short_grad", "grad_dtype", "strided", "grown", "sparse", "nan"]


def _parameter(kind: str, gen: torch.Generator) -> tuple[torch.Tensor, str]:
    """A 64 x 40 parameter (a strided view of a wider tensor for ``"strided"``)."""
    base = torch.randn(64, 80 if kind == "strided" else 40, generator=gen)
    return (base[:, ::2] if kind == "strided" else base).requires_grad_(), kind


def _damage(p: torch.Tensor, kind: str, gen: torch.Generator) -> None:
    p.grad = torch.randn(p.shape, generator=gen)
    if kind == "short_grad":
        p.grad.data = torch.randn(100, generator=gen)
    elif kind == "grad_dtype":
        p.grad.data = p.grad.double()
    elif kind == "grown":
        p.data = torch.randn(70, *p.shape[1:], generator=gen)
        p.grad = torch.randn(70, *p.shape[1:], generator=gen)
    elif kind == "sparse":
        p.grad = torch.sparse_coo_tensor(torch.tensor([[1, 5]]), torch.ones(2, *p.shape[1:]),
                                         p.shape)  # fmt: skip
    elif kind == "nan":
        p.grad[0, 0] = float("nan")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kinds=st.lists(st.lists(st.sampled_from(KINDS), min_size=1, max_size=3), min_size=1,
                   max_size=3),
    impl=st.sampled_from(["auto", "single", "foreach", "numba"]),
    state_dtype=st.sampled_from([None, torch.bfloat16, "int8"]),
    nonfinite=st.sampled_from(["update", "skip"]),
    seed=st.integers(0, 2**16),
)  # fmt: skip
def test_a_step_either_succeeds_or_changes_nothing(kinds, impl, state_dtype, nonfinite, seed):
    """Random groups mixing good parameters with damaged ones (a short gradient, a float64
    gradient, a strided parameter, a grown ``.data``, a sparse gradient, a NaN): after one
    good step, the second step either runs or raises, and when it raises, every parameter,
    state tensor and counter is as it was."""
    gen = torch.Generator().manual_seed(seed)
    groups = [[_parameter(kind, gen) for kind in group] for group in kinds]
    opt = rmsprop.RMSprop([{"params": [p for p, _ in g]} for g in groups], lr=0.01,
                          momentum=0.9, centered=True, impl="single", nonfinite=nonfinite,
                          state_dtype=state_dtype)  # fmt: skip
    for group in groups:
        for p, _ in group:
            p.grad = torch.randn(p.shape, generator=gen)
    opt.step()
    for group in opt.param_groups:
        group["impl"] = impl
    for group in groups:
        for p, kind in group:
            _damage(p, kind, gen)
    before = snapshot(opt)
    try:
        opt.step()
    except RuntimeError:
        assert_unchanged(opt, before)
        return
    bad = {kind for group in kinds for kind in group} & {"short_grad", "grown"}
    assert not bad, f"a step with {bad} ran"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kinds=st.lists(st.sampled_from([*KINDS, "small", "small", "double"]), min_size=1,
                   max_size=5),
    state_dtype=st.sampled_from([None, torch.float32, torch.bfloat16, "int8"]),
    momentum=st.sampled_from([0.0, 0.9]),
    seed=st.integers(0, 2**16),
)  # fmt: skip
def test_the_whole_group_check_agrees_with_the_per_tensor_check(kinds, state_dtype, momentum,
                                                                 seed):  # fmt: skip
    """The planner first checks a group in one pass (fast, for the usual step) and
    falls back to checking tensor by tensor: when the fast check accepts a group, its plan
    (back end, tasks, their facts and tensors, state found) is the per-tensor check's."""
    from rmsprop.optim import planner

    gen = torch.Generator().manual_seed(seed)
    params = []
    for kind in kinds:
        shape = (8, 2) if kind == "small" else (64, 80)
        base = torch.randn(shape, generator=gen, dtype=torch.float64 if kind == "double" else None)
        params.append((base, kind))
    opt = rmsprop.RMSprop([p.requires_grad_() for p, _ in params], lr=0.01, momentum=momentum,
                          centered=True, state_dtype=state_dtype)  # fmt: skip
    for p, _ in params:
        p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)
    opt.step()
    for p, kind in params:
        if kind not in ("small", "double"):
            _damage(p, kind, gen)
        else:
            p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)

    def outcome():
        try:
            plan = planner.plan_group(0, opt.param_groups[0], opt.state)
        except RuntimeError as err:
            return str(err)
        return plan.impl, plan.tasks, plan.fresh, [id(s) for s in plan.states]

    fast = outcome()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(planner, "_examine_uniform", lambda plan, state: None)
        assert outcome() == fast
