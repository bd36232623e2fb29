"""The fused numba kernel: bit for bit equal to the single-tensor path given the same
square root, equal to the reference in float64, chosen by auto, cached on disk."""

from __future__ import annotations

import json
import os
import shutil
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
    from rmsprop.backends import numba_kernels as numba_cpu

    calls = []
    real = numba_cpu.kernel_for

    def counting(hp, *form):
        kernel = real(hp, *form)
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
        "from rmsprop.backends import numba_kernels as numba_cpu\n"
        "from rmsprop.backends.base import Hyper\n"
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


VARIANT_STEPS = """
import json, sys, torch, rmsprop
errors = []
for switches in json.loads(sys.argv[1]):  # each variant's steps against torch's, in turn
    p = torch.linspace(-1, 1, 1000).requires_grad_()
    q = p.detach().clone().requires_grad_()
    ours = rmsprop.RMSprop([p], lr=0.01, impl="numba", **switches)
    torch_ = torch.optim.RMSprop([q], lr=0.01, **switches)
    for k in range(3):
        p.grad = torch.cos(p.detach() * (k + 1)); q.grad = torch.cos(q.detach() * (k + 1))
        ours.step(); torch_.step()
    errors.append(float((p - q).detach().abs().max() / q.detach().abs().max()))
print(json.dumps(errors))
"""


def test_each_kernel_variant_has_a_cache_index_of_its_own(tmp_path):
    """Two programs compiling two kernel variants at once into one empty cache: each
    variant has an index file of its own, and each, loaded in a new process, steps as
    torch does (to float32 rounding). numba keeps one index per function and numbers a new
    entry's data file by reading that index and writing it back: two processes compiling
    two variants at once could take the same number, and one variant's key then loaded the
    other's code (a whole-suite run on a warm cache: 7 failures from wrong kernels)."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path), "RMSPROP_BACKGROUND_COMPILE": "0"}
    variants = [{"momentum": 0.9}, {"momentum": 0.9, "centered": True}]
    runs = [subprocess.Popen([sys.executable, "-c", VARIANT_STEPS, json.dumps([v])], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for v in variants]  # fmt: skip
    for run in runs:
        _, err = run.communicate(timeout=600)
        assert run.returncode == 0, err[-3000:]
    indexes = sorted(path.name for path in tmp_path.rglob("*.run_*.nbi"))
    assert len(indexes) == 2 and indexes[0] != indexes[1], indexes
    for v in variants:  # loaded from the cache now
        out = subprocess.run([sys.executable, "-c", VARIANT_STEPS, json.dumps([v])], env=env,
                             capture_output=True, text=True, check=True)  # fmt: skip
        assert json.loads(out.stdout)[0] < 1e-5, (v, out.stdout)


def test_two_kernel_variants_compiled_by_two_processes_each_run_their_own_code(tmp_path):
    """Two variants compiled by two processes making the same calls in the same order, then
    loaded from one cache by one program: each steps as torch does. numba names a compiled
    function's symbol by the function's name and a counter of the process that compiled
    it, and a process resolves a symbol once: the two variants had the same symbols, and
    the program ran the first one's code for the second (here a relative error of 4e-2; in
    a whole-suite run, a weight-decay group stepped without its decay). Each variant's
    functions now carry the variant in their names. (Each process compiles into an empty
    cache of its own, so both compile the same functions in turn; the second cache is
    then copied into the first, as one cache fills over time: a compile process starts
    afresh after ``RECYCLE_AFTER`` kernels, programs compile in place.)"""
    variants = [{"momentum": 0.9}, {"momentum": 0.9, "weight_decay": 0.1}]
    for k, v in enumerate(variants):
        env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / str(k)),
               "RMSPROP_BACKGROUND_COMPILE": "0"}  # fmt: skip
        subprocess.run([sys.executable, "-c", VARIANT_STEPS, json.dumps([v])], env=env,
                       capture_output=True, text=True, check=True)  # fmt: skip
    shutil.copytree(tmp_path / "1", tmp_path / "0", dirs_exist_ok=True)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "0"), "RMSPROP_BACKGROUND_COMPILE": "0"}
    out = subprocess.run([sys.executable, "-c", VARIANT_STEPS, json.dumps(variants)], env=env,
                         capture_output=True, text=True, check=True)  # fmt: skip
    errors = json.loads(out.stdout)
    assert max(errors) < 1e-5, errors


def _every_float32_in_unit_range(step: int = 1) -> np.ndarray:
    """Every float32 in [-1, 1] (every ``step``-th bit pattern), plus the edges."""
    bits = np.arange(0, 0x3F800001, step, dtype=np.uint32)
    positive = np.concatenate([bits, [0x3F800000, 0x00000001, 0x00800000]]).astype(np.uint32)
    return np.concatenate([positive, positive | np.uint32(0x80000000)]).view(np.float32)


@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
@pytest.mark.parametrize("name", ["square_avg", "grad_avg", "momentum_buffer"])
def test_int8_element_codecs_equal_the_torch_codec(name, rounding):
    """The kernel's per-element encoder and decoder give the codec's bits for every 64th
    float32 in [-1, 1] (about 16M values, every rounding boundary of the 8-bit codes
    included: they sit at multiples of 2**19 in the bit pattern), with the nearest-code
    rounding and with each buffer's field of the shared hash, NaN and Inf included, and
    for every code."""
    from numba import njit

    from rmsprop.backends import numba_kernels as numba_cpu
    from rmsprop.lowbit.codecs import (
        S_SHIFT,
        U_SHIFT,
        code_noise,
        decode_codes,
        encode_normalized,
        hash32,
    )

    signed = name != "square_avg"
    encode_one = numba_cpu._encode_signed if signed else numba_cpu._encode_unsigned
    decode_one = numba_cpu._decode_signed if signed else numba_cpu._decode_unsigned
    field = {"square_avg": numba_cpu._V_NOISE, "grad_avg": numba_cpu._M_NOISE,
             "momentum_buffer": numba_cpu._B_NOISE}[name]  # fmt: skip

    @njit
    def encode_all(x, hashes, out, stochastic):
        half = np.uint32(1 << ((S_SHIFT if signed else U_SHIFT) - 1))
        for i in range(x.shape[0]):
            out[i] = encode_one(x[i], field(hashes[i]) if stochastic else half)

    @njit
    def decode_all(codes, out):
        for i in range(codes.shape[0]):
            out[i] = decode_one(codes[i])

    specials = np.array(
        [0x7FC00000, 0xFFC00000, 0x7F800000, 0xFF800000, 0x7F7FFFFF], np.uint32
    ).view(np.float32)  # NaN, -NaN, ±Inf, the largest float32
    x = np.concatenate([_every_float32_in_unit_range(64), specials])
    hashes = hash32(torch.arange(x.size), step=3, seed=7)
    noise = code_noise(hashes, name) if rounding == "stochastic" else None
    expected = encode_normalized(torch.from_numpy(x), signed, noise).numpy()
    got = np.empty(x.shape, np.uint8)
    encode_all(x, hashes.numpy().astype(np.uint32), got, rounding == "stochastic")
    np.testing.assert_array_equal(got, expected)
    codes = np.arange(256, dtype=np.uint8)
    values = np.empty(256, np.float32)
    decode_all(codes, values)
    np.testing.assert_array_equal(
        values.view(np.uint32),
        decode_codes(torch.from_numpy(codes), signed).numpy().view(np.uint32),
    )


VECTOR_LOOP = """
import json, re, torch, rmsprop
from rmsprop.backends import numba_kernels
from rmsprop.backends.base import Hyper
from rmsprop.lowbit.forms import Storage


def assembly(dispatcher):  # its own code and that of the compiled functions it calls
    calls = [c.cell_contents for c in dispatcher.py_func.__closure__ or ()
             if hasattr(c.cell_contents, "inspect_asm")]
    return "".join(dispatcher.inspect_asm().values()) + "".join(map(assembly, calls))


found = {}
for state, storage in ((torch.bfloat16, Storage.BF16), ("int8", Storage.INT8)):
    p = torch.zeros(70_000, requires_grad=True)
    opt = rmsprop.RMSprop([p], momentum=0.9, centered=True, impl="numba", state_dtype=state)
    p.grad = torch.ones(70_000)
    opt.step()
    kernel = numba_kernels.kernel_for(Hyper.from_group(opt.param_groups[0]), storage, False)
    found[storage.name] = len(re.findall(r"\\bvsqrtps\\b", assembly(kernel)))
print(json.dumps(found))
"""


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="reads x86 assembly")
def test_centered_kernels_vectorise_their_element_loop(tmp_path):
    """The element loops of the centered kernels (torch's EMA form: the mean is torch's
    ``lerp``, one of two formulas by its weight) are vectorised: their compiled code has a
    packed square root (``vsqrtps``, 8 lanes of AVX2). Before, a per-element choice
    between lerp's two formulas made LLVM's cost model keep the bf16 and 8-bit state loops
    scalar: 5-6x slower steps (BENCHMARKS.md, "The centered compact-state kernels")."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path), "RMSPROP_BACKGROUND_COMPILE": "0"}
    run = subprocess.run([sys.executable, "-c", VECTOR_LOOP], env=env, capture_output=True,
                         text=True)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    found = json.loads(run.stdout.strip().splitlines()[-1])
    assert found and all(count > 0 for count in found.values()), found
