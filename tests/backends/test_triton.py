"""The Triton kernel, run by Triton's interpreter on the CPU (TRITON_INTERPRET=1) when
there is no GPU: the same numbers as the numba kernel, fp32 math for fp16/bf16, one
launch per group."""

from __future__ import annotations

import os

import pytest
import torch

import rmsprop

from parity_data import SWITCH_MATRIX, random_problem

pytest.importorskip("triton")
pytestmark = pytest.mark.triton

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no GPU and TRITON_INTERPRET is not set", allow_module_level=True)

SHAPES = ((3, 5), (3000,), (7,))


def _run(impl, hp, dtype, steps=4, seed=0):
    params0, grads, _ = random_problem(seed=seed, steps=steps, shapes=SHAPES)
    params = [torch.tensor(p, dtype=dtype, device=DEVICE, requires_grad=True) for p in params0]
    opt = rmsprop.RMSprop(params, impl=impl, **hp)
    for g in grads:
        for p, gi in zip(params, g):
            p.grad = torch.tensor(gi, dtype=dtype, device=DEVICE)
        opt.step()
    assert opt.last_impl[0] == impl
    return [p.detach().cpu() for p in params], opt


@pytest.mark.parametrize("config", SWITCH_MATRIX)
def test_triton_equals_numba_bit_for_bit(config):
    if DEVICE != "cpu":
        pytest.skip(
            "numba runs on CPU tensors; on a GPU tests/gpu/test_triton_on_device.py compares "
            "them (test_kernel_bits_equal_numba)"
        )
    hp = {"lr": 0.01, "alpha": 0.9, **SWITCH_MATRIX[config]}
    ours, _ = _run("triton", hp, torch.float32, seed=len(config))
    theirs, _ = _run("numba", hp, torch.float32, seed=len(config))
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs)), config


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("config", ["torch", "momentum_lr_inside", "tf1_everything"])
def test_low_precision_params_update_in_fp32(config, dtype, ieee_sqrt):
    """fp16/bf16 params: loaded, updated in fp32, stored back; as the single-tensor path."""
    if DEVICE != "cpu":
        pytest.skip(
            "compared with the CPU single-tensor path; on a GPU tests/gpu/"
            "test_triton_on_device.py compares fp16/bf16 (test_kernel_bits_equal_the_cpu_oracle)"
        )
    hp = {"lr": 0.01, "alpha": 0.9, **SWITCH_MATRIX[config]}
    if dtype == torch.bfloat16 and os.environ.get("TRITON_INTERPRET") == "1":
        # The interpreter truncates fp32 -> bf16 (GPUs round to nearest even), so one step
        # may end one bf16 ulp away; everything before the final store is the same.
        ours, _ = _run("triton", hp, dtype, steps=1)
        theirs, _ = _run("single", hp, dtype, steps=1)
        for a, b in zip(ours, theirs):
            ulp = torch.finfo(torch.bfloat16).eps * b.float().abs()
            assert bool(((a.float() - b.float()).abs() <= ulp).all()), config
        return
    ours, _ = _run("triton", hp, dtype, steps=3)
    theirs, _ = _run("single", hp, dtype, steps=3)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs)), config


def test_one_launch_per_group(monkeypatch):
    from rmsprop.backends import triton_cuda

    launches = []
    kernel = triton_cuda._kernel

    class Counting:
        def __getitem__(self, grid):
            launches.append(grid)
            return kernel[grid]

    monkeypatch.setattr(triton_cuda, "_kernel", Counting())
    params = [torch.zeros(100, device=DEVICE, requires_grad=True) for _ in range(50)]
    for p in params:
        p.grad = torch.ones(100, device=DEVICE)
    rmsprop.RMSprop(params, impl="triton").step()
    assert len(launches) == 1
    assert all(float(p[0]) != 0 for p in params)


def test_triton_refuses_float64_and_strided_tensors():
    p = torch.zeros(4, dtype=torch.float64, device=DEVICE, requires_grad=True)
    p.grad = torch.ones_like(p)
    with pytest.raises(RuntimeError, match="float32, float16 or bfloat16 params"):
        rmsprop.RMSprop([p], impl="triton").step()
    q = torch.zeros(4, 4, device=DEVICE)[:, ::2].requires_grad_()
    q.grad = torch.ones_like(q)
    with pytest.raises(RuntimeError, match="contiguous"):
        rmsprop.RMSprop([q], impl="triton").step()


def test_capturable_groups_are_not_given_to_the_triton_kernel():
    """``capturable=True`` asks for a step a CUDA graph can capture; the Triton step copies
    its address tables from the host each step, which a capture cannot hold: an explicit
    ``impl="triton"`` is refused before any write, naming the way out."""
    p = torch.ones(64, device=DEVICE, requires_grad=True)
    p.grad = torch.full_like(p, 0.5)
    opt = rmsprop.RMSprop([p], lr=0.1, impl="triton", capturable=True)
    with pytest.raises(RuntimeError, match=r"cannot be captured in a CUDA graph.*impl='foreach'"):
        opt.step()
    assert torch.equal(p.detach(), torch.ones(64, device=DEVICE)) and opt.state[p] == {}
