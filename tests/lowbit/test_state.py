"""bf16 and int8 optimizer state: size, agreement across impls, closeness to fp32 state,
checkpoints in compact form."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import rmsprop
from rmsprop.lowbit.codecs import dequantize_blockwise
from rmsprop.lowbit.state import state_bytes

COMPACT = [torch.bfloat16, "int8"]
CONFIGS = {"plain": {}, "momentum_centered": {"momentum": 0.9, "centered": True},
           "tf1_nesterov": {"initial_accumulator_value": 1.0, "eps_in_sqrt": True, "ema_form": "delta",
                            "momentum": 0.9, "nesterov": True, "lr_in_momentum": True}}  # fmt: skip


def _train(state_dtype, cfg, impl="auto", steps=200, shape=(64, 96), seed=0):
    torch.manual_seed(seed)
    w = torch.randn(shape) * 0.3
    p = torch.zeros(shape, requires_grad=True)
    opt = rmsprop.RMSprop([p], lr=0.01, state_dtype=state_dtype, impl=impl, **cfg)
    g = torch.Generator().manual_seed(seed + 1)
    for _ in range(steps):
        x = torch.randn(32, shape[0], generator=g)
        y = x @ w + 0.1 * torch.randn(32, shape[1], generator=g)  # noisy: no exact solution
        opt.zero_grad()
        ((x @ p - y) ** 2).mean().backward()
        opt.step()
    return p, opt  # the parameter itself: opt.state is keyed by it


@pytest.mark.parametrize(("state_dtype", "cfg", "limit"), [
    ("int8", {}, 1.05), ("int8", {"momentum": 0.9}, 2.1),
    (torch.bfloat16, {}, 2.0), (torch.bfloat16, {"momentum": 0.9, "centered": True}, 6.0),
])  # fmt: skip
def test_state_bytes_per_parameter(state_dtype, cfg, limit):
    p, opt = _train(state_dtype, cfg, steps=1)
    per_param = state_bytes(opt.state[p]) / p.numel()
    assert per_param <= limit
    if state_dtype == "int8":
        assert per_param == pytest.approx(
            limit / 1.05 * (1 + 4 / 256) if limit < 2 else 2 * (1 + 4 / 256)
        )


def test_small_tensors_keep_fp32_state_under_int8():
    p = torch.zeros(100, requires_grad=True)
    opt = rmsprop.RMSprop([p], state_dtype="int8")
    p.grad = torch.ones(100)
    opt.step()
    assert opt.state[p]["square_avg"].dtype == torch.float32


@pytest.fixture
def ieee_sqrt(monkeypatch):
    def sqrt(t):
        return torch.from_numpy(np.sqrt(t.detach().numpy()))

    monkeypatch.setattr(torch.Tensor, "sqrt", sqrt)
    monkeypatch.setattr(torch.Tensor, "sqrt_", lambda t: t.copy_(sqrt(t)))
    monkeypatch.setattr(torch, "_foreach_sqrt", lambda ts: [sqrt(t) for t in ts])
    monkeypatch.setattr(torch, "_foreach_sqrt_", lambda ts: [t.copy_(sqrt(t)) for t in ts])


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("state_dtype", COMPACT, ids=["bf16", "int8"])
def test_every_impl_gives_the_same_bits(state_dtype, config, ieee_sqrt):
    """Same random stream, same codes: the implementations agree bit for bit (given an IEEE
    sqrt in the torch paths, the one place torch's CPU kernels round differently)."""
    runs = {impl: _train(state_dtype, CONFIGS[config], impl=impl, steps=20)
            for impl in ("single", "foreach", "numba", "triton")}  # fmt: skip
    for impl, (p, opt) in runs.items():
        assert torch.equal(p, runs["single"][0]), impl
        for key, value in opt.state[p].items():
            assert torch.equal(value, runs["single"][1].state[runs["single"][0]][key]), (impl, key)


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize(("state_dtype", "tolerance"), [(torch.bfloat16, 0.01), ("int8", 0.02)],
                         ids=["bf16", "int8"])  # fmt: skip
def test_close_to_fp32_state_over_200_steps(state_dtype, tolerance, config):
    reference, _ = _train(None, CONFIGS[config])
    compact, _ = _train(state_dtype, CONFIGS[config])
    assert float((compact - reference).norm() / reference.norm()) <= tolerance


@pytest.mark.parametrize("state_dtype", COMPACT, ids=["bf16", "int8"])
def test_compact_checkpoint_round_trip_is_exact(state_dtype, tmp_path):
    from rmsprop.optim import checkpoint

    p, opt = _train(state_dtype, CONFIGS["momentum_centered"], steps=5)
    checkpoint.save(opt, tmp_path / "opt.pt")
    twin = p.detach().clone().requires_grad_()
    fresh = rmsprop.RMSprop([twin], lr=0.01, state_dtype=state_dtype, momentum=0.9, centered=True)
    checkpoint.load(fresh, tmp_path / "opt.pt")  # weights_only=True
    for key, value in opt.state[p].items():
        assert torch.equal(value, fresh.state[twin][key]), key
        assert value.dtype == fresh.state[twin][key].dtype
    for _ in range(3):
        g = torch.randn_like(p)
        p.grad, twin.grad = g.clone(), g.clone()
        opt.step()
        fresh.step()
    assert torch.equal(p, twin)


def test_checkpoints_convert_between_state_dtypes():
    p, opt = _train("int8", {}, steps=3)
    saved = copy.deepcopy(opt.state_dict())
    expected = dequantize_blockwise(saved["state"][0]["square_avg_codes"],
                                    saved["state"][0]["square_avg_scale"], signed=False)  # fmt: skip
    as_fp32 = rmsprop.RMSprop(
        [p.detach().clone().requires_grad_()]
    )  # state_dtype None: the param's dtype
    as_fp32.load_state_dict(saved)
    q = as_fp32.param_groups[0]["params"][0]
    assert torch.equal(as_fp32.state[q]["square_avg"], expected)
    as_bf16 = rmsprop.RMSprop([q], state_dtype=torch.bfloat16)
    as_bf16.load_state_dict(as_fp32.state_dict())
    assert as_bf16.state[q]["square_avg"].dtype == torch.bfloat16


@pytest.mark.parametrize("impl", ["numba", "single", "foreach"])
def test_nan_gradient_with_int8_state_acts_like_torch_and_spares_its_block(impl):
    """nonfinite='update' (torch's behaviour): the element with the NaN gradient becomes
    NaN; every other element is updated exactly as without it, and the NaN stays out of
    its block's scale (the neighbours' state survives). 'skip' touches nothing."""
    torch.manual_seed(0)
    p = torch.randn(64, 64, requires_grad=True)
    twin = p.detach().clone().requires_grad_()
    opts = [rmsprop.RMSprop([q], state_dtype="int8", momentum=0.9, centered=True, impl=impl)
            for q in (p, twin)]  # fmt: skip
    for _ in range(3):
        g = torch.randn(64, 64)
        p.grad, twin.grad = g.clone(), g.clone()
        for opt in opts:
            opt.step()
    g = torch.randn(64, 64)
    p.grad, twin.grad = g.clone(), g.clone()
    p.grad[7, 3], twin.grad[7, 3] = float("nan"), 0.0
    for opt in opts:
        opt.step()
    assert bool(p[7, 3].isnan())
    others = torch.ones(64, 64, dtype=torch.bool)
    others[7, 3] = False
    assert torch.equal(p[others], twin[others])
    for key, value in opts[0].state[p].items():
        assert bool(torch.isfinite(value.float()).all()), key
        if key.endswith("_codes"):  # other blocks: identical; the NaN's block: close
            assert torch.equal(value.view(-1)[:256], opts[1].state[twin][key].view(-1)[:256])
            assert torch.equal(value.view(-1)[512:], opts[1].state[twin][key].view(-1)[512:])
    skipping = rmsprop.RMSprop([twin], state_dtype="int8", nonfinite="skip", impl=impl)
    before = twin.detach().clone()
    twin.grad = torch.full((64, 64), float("nan"))
    skipping.step()
    assert skipping.skipped_steps == 1 and torch.equal(twin, before) and not skipping.state


def _bf16_run(sr: bool, impl: str = "auto", steps: int = 50, state_dtype=None, momentum=0.0,
              random_grads: bool = False):  # fmt: skip
    p = torch.ones(20_000, dtype=torch.bfloat16, requires_grad=True)
    opt = rmsprop.RMSprop([p], lr=1e-4, alpha=0.9, stochastic_rounding=sr, impl=impl,
                          state_dtype=state_dtype, momentum=momentum)  # fmt: skip
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        noise = torch.rand(p.shape, generator=g) if random_grads else torch.zeros(p.shape)
        p.grad = (1 + noise).to(torch.bfloat16)
        opt.step()
    return p.detach().float(), opt


def test_bf16_params_with_stochastic_rounding_keep_small_updates():
    exact = torch.ones(20_000, requires_grad=True)  # the same run in fp32
    opt = rmsprop.RMSprop([exact], lr=1e-4, alpha=0.9)
    for _ in range(50):
        exact.grad = torch.ones_like(exact)
        opt.step()
    target = float(exact[0])
    assert float(_bf16_run(sr=False)[0].mean()) == 1.0  # round-to-nearest drops every update
    assert float(_bf16_run(sr=True)[0].mean()) == pytest.approx(target, abs=2e-4)


@pytest.mark.parametrize("state_dtype", [None, torch.float32, torch.bfloat16, "int8"],
                         ids=["state-as-param", "fp32", "bf16", "int8"])  # fmt: skip
def test_stochastic_rounding_gives_the_same_bits_in_every_impl(state_dtype, ieee_sqrt,
                                                                monkeypatch):  # fmt: skip
    """bf16 params rounded stochastically: the per-tensor path (fp32 work copies) and the
    fused numba and Triton kernels (one pass, rounding in registers; the per-tensor path
    is removed while they run, so they must take it) write the same bits; on the CPU
    ``auto`` picks numba's. State kept as the param's dtype (bf16 rounded to nearest)
    runs per tensor everywhere."""
    runs = {impl: _bf16_run(sr=True, impl=impl, steps=5, state_dtype=state_dtype, momentum=0.9,
                            random_grads=True) for impl in ("single", "foreach")}  # fmt: skip
    if state_dtype is not None:
        monkeypatch.setattr(rmsprop.RMSprop, "_step_per_tensor", None)
    for impl in ("numba", "triton", "auto"):
        runs[impl] = _bf16_run(sr=True, impl=impl, steps=5, state_dtype=state_dtype, momentum=0.9,
                               random_grads=True)  # fmt: skip
    assert runs["auto"][1].last_impl[0] == "numba"
    for impl, (p, opt) in runs.items():
        assert torch.equal(p, runs["single"][0]), impl
        q = opt.param_groups[0]["params"][0]
        reference = runs["single"][1]
        for key, value in opt.state[q].items():
            assert torch.equal(value, reference.state[reference.param_groups[0]["params"][0]][key])


def test_rounded_bf16_params_with_int8_state_small_and_large_tensors_fused(monkeypatch,
                                                                         ieee_sqrt):  # fmt: skip
    """A group of bf16 params with int8 state: the large tensor keeps 8-bit codes, the small
    one fp32 state (under 4,096 elements); numba runs both forms fused (two launches), with
    every switch that touches the param (decoupled decay, Nesterov, centered), and writes
    the same bits as the per-tensor path."""

    def run(impl):
        g = torch.Generator().manual_seed(1)
        params = [torch.randn(n, generator=g).to(torch.bfloat16).requires_grad_()
                  for n in (5_000, 1_000)]  # fmt: skip
        opt = rmsprop.RMSprop(params, lr=1e-3, momentum=0.9, nesterov=True, centered=True,
                              weight_decay=0.1, decoupled_weight_decay=True, state_dtype="int8",
                              stochastic_rounding=True, impl=impl)  # fmt: skip
        for _ in range(4):
            for p in params:
                p.grad = torch.randn(p.shape, generator=g).to(torch.bfloat16)
            opt.step()
        return params, opt

    reference, ref_opt = run("single")
    monkeypatch.setattr(rmsprop.RMSprop, "_step_per_tensor", None)
    fused, opt = run("numba")
    assert "square_avg_codes" in opt.state[fused[0]] and "square_avg" in opt.state[fused[1]]
    for p, q in zip(fused, reference):
        assert torch.equal(p, q)
        for key, value in opt.state[p].items():
            assert torch.equal(value, ref_opt.state[q][key]), key


@pytest.mark.parametrize("state_dtype", COMPACT, ids=["bf16", "int8"])
def test_float64_params_with_compact_state_agree_across_impls(state_dtype, ieee_sqrt):
    """fp64 params keep fp64 math with compact state (the state widened exactly, stored
    rounded from fp32): per tensor in every impl, fused in numba for bf16 state, and in a
    group mixing fp32 and fp64 params (per tensor; the fused kernels take one dtype)."""

    def run(impl, mixed):
        dtypes = (torch.float64, torch.float32) if mixed else (torch.float64,)
        gens = [torch.Generator().manual_seed(2 + k) for k in range(len(dtypes))]
        params = [torch.randn(5_000, generator=g, dtype=d).requires_grad_()
                  for g, d in zip(gens, dtypes)]  # fmt: skip
        opt = rmsprop.RMSprop(params, lr=1e-3, momentum=0.9, centered=True,
                              state_dtype=state_dtype, impl=impl)  # fmt: skip
        for _ in range(3):
            for p, g in zip(params, gens):
                p.grad = torch.randn(p.shape, generator=g, dtype=p.dtype)
            opt.step()
        return params[0], opt.state[params[0]]

    reference, ref_state = run("single", False)
    for impl, mixed in (("foreach", False), ("numba", False), ("numba", True), ("single", True)):
        p, state = run(impl, mixed)
        assert p.dtype == torch.float64 and torch.equal(p, reference), (impl, mixed)
        for key, value in state.items():
            assert torch.equal(value, ref_state[key]), (impl, mixed, key)


@pytest.mark.parametrize("state_dtype", COMPACT, ids=["bf16", "int8"])
def test_compact_state_runs_the_fused_kernels(state_dtype, monkeypatch):
    """numba and Triton take compact state in their one-pass kernels, not through the
    per-tensor fp32 copies (which would fail here)."""
    monkeypatch.setattr(rmsprop.RMSprop, "_step_per_tensor", None)
    for impl in ("numba", "triton"):
        _, opt = _train(state_dtype, CONFIGS["momentum_centered"], impl=impl, steps=2)
        assert opt.last_impl[0] == impl


@pytest.mark.parametrize("state_dtype", [None, *COMPACT], ids=["fp32", "bf16", "int8"])
@pytest.mark.parametrize("impl", ["numba", "triton"])
@pytest.mark.parametrize("damage", ["strided", "dtype"])
def test_fused_kernels_refuse_state_they_cannot_read_and_change_nothing(state_dtype, impl, damage,
                                                                       monkeypatch):  # fmt: skip
    """A state buffer replaced by a strided view or by another dtype (which a kernel would
    read as the wrong bytes) is refused with a clear error before anything is written:
    parameters, every state tensor and the step counters stay as they were."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    p, opt = _train(state_dtype, CONFIGS["momentum_centered"], impl=impl, steps=1, shape=(64, 128))
    key = "momentum_buffer_codes" if state_dtype == "int8" else "momentum_buffer"
    good = opt.state[p][key]
    if damage == "strided":
        wide = torch.empty(good.shape[0], good.shape[1] * 2, dtype=good.dtype)
        wide[:, ::2] = good
        opt.state[p][key] = wide[:, ::2]
    else:
        opt.state[p][key] = good.double()
    p.grad = torch.ones_like(p)
    before = p.detach().clone(), {k: v.clone() for k, v in opt.state[p].items()}
    with pytest.raises(RuntimeError, match=f"impl='{impl}' needs"):
        opt.step()
    assert torch.equal(p.detach(), before[0])
    for k, v in opt.state[p].items():
        assert torch.equal(v, before[1][k]), k


def test_sparse_gradient_with_compact_state_is_refused_before_any_update():
    """Compact state has no sparse path: the error comes before the dense parameter next
    to the sparse one is updated."""
    dense = torch.zeros(64, 96, requires_grad=True)
    table = torch.zeros(4096, 4, requires_grad=True)
    opt = rmsprop.RMSprop([dense, table], lr=0.01, state_dtype="int8", momentum=0.9)
    dense.grad, table.grad = torch.ones_like(dense), torch.ones_like(table)
    opt.step()
    before = dense.detach().clone(), {k: v.clone() for k, v in opt.state[dense].items()}
    dense.grad = torch.ones_like(dense)
    table.grad = torch.sparse_coo_tensor(torch.tensor([[3]]), torch.ones(1, 4), (4096, 4))
    with pytest.raises(RuntimeError, match="sparse gradients with state_dtype"):
        opt.step()
    assert torch.equal(dense.detach(), before[0])
    for key, value in opt.state[dense].items():
        assert torch.equal(value, before[1][key]), key
