"""The fused numba kernel: bit for bit equal to the single-tensor path given the same
square root, equal to the reference in float64, chosen by auto, cached on disk."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
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

pytest.importorskip("numba")


@pytest.fixture
def ieee_sqrt(monkeypatch):
    """torch's vectorised CPU sqrt is not correctly rounded (AVX-512 builds); the kernel's
    is. Give the single-tensor path an IEEE sqrt so the two can be compared bit for bit."""

    def sqrt(t):
        return torch.from_numpy(np.sqrt(t.detach().numpy()))

    def sqrt_(t):
        return t.copy_(sqrt(t))

    monkeypatch.setattr(torch.Tensor, "sqrt", sqrt)
    monkeypatch.setattr(torch.Tensor, "sqrt_", sqrt_)


def _shapes():
    # a tensor longer than a chunk, odd sizes (vector tails), a scalar-like one
    return ((3, 5), (40_000,), (7,), (1,), (33, 31))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("config", SWITCH_MATRIX)
def test_numba_bitwise_equal_to_single_tensor_path(config, dtype, ieee_sqrt):
    hp = {"lr": 0.01, "alpha": 0.9, **SWITCH_MATRIX[config]}
    params0, grads, lrs = random_problem(seed=7 + len(config), steps=6, shapes=_shapes())
    runs = {}
    for impl in ("single", "numba"):
        runs[impl], opt = optimizer_trajectory(
            lambda ps, i=impl: rmsprop.RMSprop(ps, impl=i, **hp), params0, grads, lrs, dtype
        )
        assert opt.last_impl[0] == impl
    for step, (a, b) in enumerate(zip(runs["single"], runs["numba"])):
        for x, y in zip(a, b):
            assert torch.equal(x, y), f"{config} step {step + 1}"


@pytest.mark.parametrize("config", SWITCH_MATRIX)
def test_numba_matches_reference_float64(config):
    hp = {"lr": 0.01, "alpha": 0.9, **SWITCH_MATRIX[config]}
    params0, grads, lrs = random_problem(seed=60 + len(config))
    ours, _ = optimizer_trajectory(lambda ps: rmsprop.RMSprop(ps, impl="numba", **hp),
                                   params0, grads, lrs, torch.float64)  # fmt: skip
    for step, (a, b) in enumerate(zip(ours, reference_trajectory(hp, params0, grads, lrs))):
        for x, y in zip(a, b):
            assert_close_f64(x.numpy(), y, what=f"{config} step {step + 1}")


def test_numba_against_torch_itself_differs_by_sqrt_rounding_only():
    """Without the IEEE sqrt patch, one step: a one-ulp difference in sqrt moves the update
    by at most ~2 ulps of the update, plus the rounding of θ − Δ (one ulp of θ)."""
    params0, grads, lrs = random_problem(seed=1, steps=1, shapes=((500, 40),))
    ours, _ = optimizer_trajectory(lambda ps: rmsprop.RMSprop(ps, impl="numba", momentum=0.9),
                                   params0, grads, lrs, torch.float32)  # fmt: skip
    theirs, _ = optimizer_trajectory(lambda ps: torch.optim.RMSprop(ps, momentum=0.9),
                                     params0, grads, lrs, torch.float32)  # fmt: skip
    a, b = ours[0][0], theirs[0][0]
    update = (b - torch.tensor(params0[0], dtype=torch.float32)).abs()
    bound = torch.finfo(torch.float32).eps * (2 * update + b.abs())
    assert bool(((a - b).abs() <= bound).all())
    # (on CPUs where torch's sqrt is correctly rounded the two are simply equal)


def test_auto_chooses_numba_for_cpu_float_tensors_and_single_otherwise():
    p32 = torch.zeros(10, requires_grad=True)
    p16 = torch.zeros(10, dtype=torch.float16, requires_grad=True)
    for p, expected in ((p32, "numba"), (p16, "single")):
        opt = rmsprop.RMSprop([p])
        p.grad = torch.ones_like(p)
        opt.step()
        assert opt.last_impl[0] == expected
    opt = rmsprop.RMSprop([p32], foreach=False)  # torch's own path, as torch users pass it
    p32.grad = torch.ones(10)
    opt.step()
    assert opt.last_impl[0] == "single"


def test_explicit_numba_refuses_what_it_cannot_run():
    base = torch.zeros(4, 6)
    strided = base[:, ::2].requires_grad_()
    opt = rmsprop.RMSprop([strided], impl="numba")
    strided.grad = torch.ones_like(strided)
    with pytest.raises(RuntimeError, match="contiguous"):
        opt.step()
    c = torch.zeros(3, dtype=torch.complex64, requires_grad=True)
    c.grad = torch.ones_like(c)
    with pytest.raises(RuntimeError, match="complex"):
        rmsprop.RMSprop([c], impl="numba").step()
    with pytest.raises(ValueError, match="impl='fused' is invalid"):
        rmsprop.RMSprop([c], impl="fused")


def test_many_small_tensors_go_through_one_call(monkeypatch):
    from rmsprop.kernels import numba_cpu

    calls = []
    real = numba_cpu.kernel_for

    def counting(hp):
        kernel = real(hp)
        return lambda *a: calls.append(1) or kernel(*a)

    monkeypatch.setattr(numba_cpu, "kernel_for", counting)
    params = [torch.zeros(16, requires_grad=True) for _ in range(500)]
    for p in params:
        p.grad = torch.ones(16)
    rmsprop.RMSprop(params, impl="numba").step()
    assert len(calls) == 1
    assert all(float(p[0]) != 0 for p in params)


def test_compiled_once_then_loaded_from_the_disk_cache(tmp_path):
    code = (
        "import torch, rmsprop\n"
        "from rmsprop.kernels import numba_cpu\n"
        "from rmsprop.optim._common import Hyper\n"
        "p = torch.zeros(100, requires_grad=True); p.grad = torch.ones(100)\n"
        "hp = dict(momentum=0.5, centered=True, eps_in_sqrt=True)\n"
        "rmsprop.RMSprop([p], impl='numba', **hp).step()\n"
        "opt = rmsprop.RMSprop([p], impl='numba', **hp)\n"
        "k = numba_cpu.kernel_for(Hyper.from_group(opt.param_groups[0]))\n"
        "print(sum(k.stats.cache_hits.values()), sum(k.stats.cache_misses.values()))\n"
    )
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            for _ in range(2)]  # fmt: skip
    hits, misses = map(int, runs[1].stdout.split())
    assert hits >= 1 and misses == 0, runs[1].stdout


@pytest.mark.parametrize("signed", [False, True])
def test_int8_search_table_is_never_more_than_one_code_short(signed):
    """The fused 8-bit encoder takes one step up from the table: check that suffices for
    every float32 prefix boundary and for random values over the whole range."""
    from rmsprop.kernels.numba_cpu import search_table
    from rmsprop.lowbit.codecs import dynamic_map

    cmap = dynamic_map(signed)
    table = search_table(cmap).astype(np.int64)
    prefixes = np.arange(65536, dtype=np.uint32)
    edges = np.concatenate([(prefixes << 16), (prefixes << 16) | 0xFFFF]).view(np.float32)
    rng = np.random.default_rng(0)
    values = rng.uniform(-1, 1, 500_000).astype(np.float32) * (
        10.0 ** -rng.integers(0, 9, 500_000)
    ).astype(np.float32)
    x = np.concatenate([edges[np.isfinite(edges) & (np.abs(edges) <= 1)], values, cmap])
    exact = np.searchsorted(cmap, x, side="left")
    lo = table[x.view(np.uint32) >> 16]
    assert np.all(lo <= exact)
    assert np.all(exact - lo <= 1)
