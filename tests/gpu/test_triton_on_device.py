"""The Triton kernel on its device: a CUDA GPU, or Triton's interpreter on the CPU.

Every test takes a ``device``: ``"cuda"`` (marked ``gpu``; skipped where there is no CUDA
device: run ``bash scripts/gpu-check.sh`` on one) and, for a small subset, ``"cpu"`` under
``TRITON_INTERPRET=1`` (marked ``triton``; what CI runs, so these bodies do not rot).

What is claimed, and why:

- **Bit for bit against the CPU oracle.** The kernel's arithmetic is fully specified: fp32
  adds, multiplies and ``tl.fma`` where written, ``div_rn`` and ``sqrt_rn`` (correctly
  rounded), no contraction (``enable_fp_fusion=False``); the codecs are integer
  arithmetic. Every one of these rounds the same on a GPU, in the interpreter and in
  numba, so the kernel on the GPU gives the bits of numba's CPU kernel and of the
  single-tensor path on the CPU with a correctly rounded square root (NumPy's), which
  ``tests/optim/test_shapes.py`` and ``tests/backends/test_triton.py`` hold equal to
  numba. Clipping by norm reduces on the device (the reduction order is the device's), so
  the oracle is given the gradients as the device clipped them; the clip itself is
  compared within ulps (``test_clipping_on_the_device``).
- **Within stated ulps against the single-tensor path on the same device**
  (``test_same_device_single_path_within_ulps``). torch's CUDA kernels round differently
  from the kernel: ``addcdiv`` computes ``a + value * (b / c)`` (the kernel and torch's
  CPU kernel: ``a + (value * b) / c``) and nvcc contracts ``a * b + c`` into an FMA at its
  discretion. Each step is compared from the same parameters and state (lock-step).
- **Bit for bit against numba** on the CPU, for the same inputs (``test_kernel_bits_equal_numba``).
"""

from __future__ import annotations

import contextlib
import io
import os

import numpy as np
import pytest
import torch

import rmsprop
from rmsprop.lowbit.state import decode
from rmsprop.optim.clipping import clip_gradients
from rmsprop.optim.settings import Settings

from parity_data import SWITCH_MATRIX

pytest.importorskip("triton")

HAS_CUDA = torch.cuda.is_available()
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
CUDA_MARKS = [
    pytest.mark.gpu,
    pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device (bash scripts/gpu-check.sh)"),
]
CPU_MARKS = [
    pytest.mark.triton,
    pytest.mark.skipif(
        HAS_CUDA or not INTERPRETED,
        reason="Triton's interpreter runs the kernel on the CPU only without a GPU "
        "(TRITON_INTERPRET=1, set by tests/conftest.py)",
    ),
]
DEVICES = [pytest.param("cuda", marks=CUDA_MARKS, id="cuda"),
           pytest.param("cpu", marks=CPU_MARKS, id="interpreter")]  # fmt: skip
CUDA_ONLY = [pytest.param("cuda", marks=CUDA_MARKS, id="cuda")]


def matrix(full, on_cpu) -> list:
    """``(device, *case)`` for every case on CUDA, and the cases in ``on_cpu`` also on the
    CPU under the interpreter."""
    out = []
    for case in full:
        name = "-".join(str(x) for x in case)
        out.append(pytest.param("cuda", *case, marks=CUDA_MARKS, id=f"cuda-{name}"))
        if case in on_cpu:
            out.append(pytest.param("cpu", *case, marks=CPU_MARKS, id=f"interpreter-{name}"))
    return out


DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
STATES = {"as-param": None, "fp32": torch.float32, "bf16-sr": torch.bfloat16, "int8": "int8"}
# many small tensors, 0 and 1 elements, one of 5,120 (int8 state applies from 4,096)
SHAPES = ((3, 5), (3000,), (7,), (0,), (1,), (), (64, 80))
CLIP_KEYS = ("clipvalue", "clipnorm", "global_clipnorm")
STEPS = 3
LRS = (0.01, 0.006, 0.0125)  # the lr changes every step (lr inside/outside the buffer differ)
EPS32 = torch.finfo(torch.float32).eps


def _state_cases():
    for config in SWITCH_MATRIX:
        for dtype in DTYPES:
            for state in STATES:
                if state == "fp32" and dtype == "f32":
                    continue  # the "as-param" case
                yield (config, dtype, state)


ORACLE_CASES = list(_state_cases())
ORACLE_ON_CPU = {("torch", "f32", "as-param"), ("tf1_everything", "f32", "as-param"),
                 ("bias_correction_centered", "f32", "int8"), ("global_clipnorm", "f32", "as-param"),
                 ("decoupled_wd_momentum", "bf16", "bf16-sr"),
                 ("coupled_wd_maximize", "f16", "fp32")}  # fmt: skip


# ------------------------------------------------------------------ helpers
def _problem(seed: int, shapes=SHAPES, alternating: bool = False):
    """Parameters ~ N(0, 1) and gradients over several magnitudes (float64 arrays). With
    ``alternating`` the gradient of each element changes sign every step and its magnitude
    stays within a factor of about 3: the centered variance ``v − ḡ²`` stays above half of
    ``v``, so rounding in ``v`` is not amplified by cancellation (the ulp bound's premise)."""
    rng = np.random.default_rng(seed)
    params = [rng.normal(size=s) for s in shapes]
    if alternating:
        base = [np.exp(rng.uniform(-3, 3, size=s)) for s in shapes]
        grads = [[(-1) ** t * b * rng.uniform(0.6, 1.6, size=np.shape(b)) for b in base]
                 for t in range(STEPS)]  # fmt: skip
    else:
        grads = [[rng.normal(size=s) * np.exp(rng.normal(size=s)) for s in shapes]
                 for _ in range(STEPS)]  # fmt: skip
    return params, grads


def _tensors(arrays, dtype, device, grad=False):
    return [torch.tensor(a, dtype=dtype, device=device, requires_grad=grad) for a in arrays]


def _run(impl, device, params0, grads, hp, dtype, state_dtype=None, *, record_clipped=None,
         steps=None, lrs=LRS):  # fmt: skip
    """``impl`` over ``grads`` with the lr of ``lrs`` (step t: ``lrs[t]``); with ``record_clipped`` (a list) the
    gradients as the optimizer clips them on this device are appended, one list a step."""
    params = _tensors(params0, dtype, device, grad=True)
    opt = rmsprop.RMSprop(params, impl=impl, state_dtype=state_dtype, **hp)
    for t, step_grads in enumerate(grads[:steps]):
        opt.param_groups[0]["lr"] = lrs[t % len(lrs)]
        gs = [g.to(device) if torch.is_tensor(g) else torch.tensor(g, dtype=dtype, device=device)
              for g in step_grads]  # fmt: skip
        for p, g in zip(params, gs):
            p.grad = g
        if record_clipped is not None:
            record_clipped.append(
                [c.cpu() for c in clip_gradients(gs, Settings.from_group(opt.param_groups[0]))]
            )
        opt.step()
        assert opt.last_impl[0] == impl, opt.last_plan
    return params, opt


@contextlib.contextmanager
def _numpy_sqrt(monkeypatch):
    """torch's ``sqrt``/``sqrt_`` on CPU tensors made correctly rounded (NumPy's), within a
    ``with``: the square root of the fused kernels (CUDA's own is already)."""

    def sqrt(t):
        if not t.is_cpu:
            return torch.sqrt(t)
        out = torch.empty_like(t)
        np.sqrt(t.detach().numpy(), out=out.numpy())
        return out

    def sqrt_(t):
        if not t.is_cpu:
            return torch.sqrt(t, out=t)
        np.sqrt(t.detach().numpy(), out=t.detach().numpy())
        return t

    with monkeypatch.context() as m:
        m.setattr(torch.Tensor, "sqrt", sqrt)
        m.setattr(torch.Tensor, "sqrt_", sqrt_)
        yield


def _cpu_oracle(params0, grads, hp, dtype, state_dtype, monkeypatch):
    """The single-tensor path on the CPU with a correctly rounded square root (NumPy's): the
    bits of numba's kernel. ``grads``: the device's clipped gradients (clipping off here)."""
    with _numpy_sqrt(monkeypatch):
        unclipped = {k: v for k, v in hp.items() if k not in CLIP_KEYS}
        return _run("single", "cpu", params0, grads, unclipped, dtype, state_dtype)


def _assert_same_bits(ours, opt_ours, theirs, opt_theirs, what):
    for i, (a, b) in enumerate(zip(ours, theirs)):
        a, b = a.detach().cpu(), b.detach().cpu()
        assert a.dtype == b.dtype and torch.equal(a, b), (what, "param", i, (a - b).abs().max())
        sa, sb = opt_ours.state[ours[i]], opt_theirs.state[theirs[i]]
        assert sorted(sa) == sorted(sb), (what, i, sorted(sa), sorted(sb))
        for key in sa:
            x, y = sa[key].cpu(), sb[key].cpu()
            assert x.dtype == y.dtype and torch.equal(x, y), (what, "state", i, key)


# ------------------------------------------------------------------ bit for bit
@pytest.mark.parametrize(("device", "config", "dtype", "state"),
                         matrix(ORACLE_CASES, ORACLE_ON_CPU))  # fmt: skip
def test_kernel_bits_equal_the_cpu_oracle(device, config, dtype, state, monkeypatch):
    """Every switch x fp32/fp16/bf16 params x every state form (as the param, fp32, bf16
    with stochastic rounding, int8 blocks; centered compact state keeps the variance form),
    on many small tensors, 0 and 1 elements: params and every state buffer bit for bit,
    three steps with a changing lr."""
    hp = {"alpha": 0.9, **SWITCH_MATRIX[config]}
    dtype, state_dtype = DTYPES[dtype], STATES[state]
    params0, grads = _problem(seed=len(config) + 3 * len(state))
    clipped: list = []
    ours, opt = _run("triton", device, params0, grads, hp, dtype, state_dtype,
                     record_clipped=clipped)  # fmt: skip
    theirs, opt_cpu = _cpu_oracle(params0, clipped, hp, dtype, state_dtype, monkeypatch)
    _assert_same_bits(ours, opt, theirs, opt_cpu, (device, config))


NUMBA_CASES = [(config, "f32", "as-param") for config in SWITCH_MATRIX] + [
    ("tf1_everything", "f32", "bf16-sr"), ("tf1_everything", "f32", "int8"),
    ("nesterov_inside", "bf16", "as-param"),
]  # fmt: skip
NUMBA_ON_CPU = {("torch", "f32", "as-param")}


@pytest.mark.parametrize(("device", "config", "dtype", "state"), matrix(NUMBA_CASES, NUMBA_ON_CPU))
def test_kernel_bits_equal_numba(device, config, dtype, state):
    """The kernel on its device and numba's kernel on the CPU, same inputs: the same bits
    (params and state). Clipping by norm: numba is given the device's clipped gradients."""
    pytest.importorskip("numba")
    hp = {"alpha": 0.9, **SWITCH_MATRIX[config]}
    dtype, state_dtype = DTYPES[dtype], STATES[state]
    params0, grads = _problem(seed=len(config))
    clipped: list = []
    ours, opt = _run("triton", device, params0, grads, hp, dtype, state_dtype,
                     record_clipped=clipped)  # fmt: skip
    unclipped = {k: v for k, v in hp.items() if k not in CLIP_KEYS}
    theirs, opt_numba = _run("numba", "cpu", params0, clipped, unclipped, dtype, state_dtype)
    _assert_same_bits(ours, opt, theirs, opt_numba, (device, config))


@pytest.mark.parametrize("device", DEVICES)
def test_many_small_tensors_and_one_large(device, monkeypatch):
    """4,000 small tensors (1-300 elements) and one large one (2**24 + 3 elements on a GPU,
    so work items cross many blocks and the grid is large; 2**13 + 3 under the
    interpreter) in one group, momentum + centered, int8 and float state: the CPU
    oracle's bits."""
    rng = np.random.default_rng(5)
    count, large = (4000, 2**24 + 3) if device == "cuda" else (40, 2**13 + 3)
    shapes = [(int(n),) for n in rng.integers(1, 300, size=count)] + [(large,)]
    params0, grads = _problem(seed=6, shapes=shapes)
    hp = {"alpha": 0.9, "momentum": 0.9, "centered": True}
    for state_dtype in (None, "int8"):
        ours, opt = _run("triton", device, params0, grads[:2], hp, torch.float32, state_dtype)
        theirs, opt_cpu = _cpu_oracle(params0, grads[:2], hp, torch.float32, state_dtype,
                                      monkeypatch)  # fmt: skip
        _assert_same_bits(ours, opt, theirs, opt_cpu, (device, state_dtype))


# ------------------------------------------------------------------ the same device, in ulps
SAME_DEVICE_K = 16  # fp32 ulps of max(|before|, |after|) per step; see the test's docstring
SAME_DEVICE_CASES = [(config, dtype, "as-param") for config in SWITCH_MATRIX
                     for dtype in DTYPES if config not in CLIP_KEYS] + [
    ("tf1_everything", "f32", "bf16-sr"), ("tf1_everything", "f32", "int8"),
    ("decoupled_wd_momentum", "bf16", "fp32"),
]  # fmt: skip
SAME_DEVICE_ON_CPU = {("tf1_everything", "f32", "as-param"), ("tf1_everything", "f32", "int8")}


def _copy_into(src_params, src_opt, dst_params, dst_opt):
    with torch.no_grad():
        for a, b in zip(src_params, dst_params):
            b.copy_(a)
            for key, value in src_opt.state[a].items():
                dst_opt.state[b][key].copy_(value)


def _assert_within(ours, theirs, before, low_dtype, what, unit=0.0):
    """|ours − theirs| <= (K fp32 ulps + ``unit``) of max(|before|, |theirs|) + 1 ulp of
    the stored dtype when it is fp16/bf16 (the fp32 results, K ulps apart, may round to
    neighbouring stored values)."""
    ours, theirs, before = (x.detach().double().cpu() for x in (ours, theirs, before))
    scale = torch.maximum(before.abs(), theirs.abs())
    low = torch.finfo(low_dtype).eps if low_dtype in (torch.float16, torch.bfloat16) else 0.0
    tol = (SAME_DEVICE_K * EPS32 + low + unit) * scale
    excess = (ours - theirs).abs() - tol
    assert bool((excess <= 0).all()), (what, float(excess.max()), float(tol.max()))


@pytest.mark.parametrize(("device", "config", "dtype", "state"),
                         matrix(SAME_DEVICE_CASES, SAME_DEVICE_ON_CPU))  # fmt: skip
def test_same_device_single_path_within_ulps(device, config, dtype, state):
    """The kernel and the single-tensor path on the same device, each step from the same
    params and state, differ by at most K = 16 fp32 ulps of max(|before|, |after|) in the
    params and every float state buffer (+1 ulp of the stored dtype for fp16/bf16 values
    and bf16 state; int8 state: one code step, 1/16 of the value unsigned, 1/8 signed, or
    a flush to 0 below 2**-15 of the block's scale).

    Why not bit for bit on a GPU: torch's CUDA ``addcdiv`` computes ``a + value * (b / c)``
    where the kernel (as torch's CPU kernel) computes ``a + (value * b) / c``, and nvcc
    contracts torch's ``a * b + c`` into an FMA where it chooses. Why 16: a step has at most
    about six operations rounded differently (the EMA of v and of ḡ, v − ḡ², the division,
    the momentum update, the parameter update, the bias correction's divisions), each at
    most 1 ulp of its value; the update and the buffers are at most twice max(|before|,
    |after|), and the gradients (``_problem(alternating=True)``) keep v − ḡ² above half of
    v, so the square root passes on at most about 2 ulps. A switch taken wrongly moves the
    parameter by a fraction of the update (lr·g/d ≈ 1e-2), thousands of ulps. Under the
    interpreter on the CPU the single path's square root is torch's CPU one (not always
    correctly rounded), so the same bound applies there."""
    hp = {"alpha": 0.9, **SWITCH_MATRIX[config]}
    dtype, state_dtype = DTYPES[dtype], STATES[state]
    params0, grads = _problem(seed=11 + len(config), alternating=True)
    ours = _tensors(params0, dtype, device, grad=True)
    theirs = _tensors(params0, dtype, device, grad=True)
    opt = rmsprop.RMSprop(ours, impl="triton", state_dtype=state_dtype, **hp)
    opt_single = rmsprop.RMSprop(theirs, impl="single", state_dtype=state_dtype, **hp)
    for t, step_grads in enumerate(grads):
        if t:
            _copy_into(ours, opt, theirs, opt_single)  # the same start for this step
        before = [p.detach().clone() for p in ours]
        state_before = [{k: decode(opt.state[p], k.removesuffix("_codes")).clone()
                         for k in opt.state[p] if k != "step" and not k.endswith("_scale")}
                        for p in ours] if t else None  # fmt: skip
        for o in (opt, opt_single):
            o.param_groups[0]["lr"] = LRS[t]
        for p, q, g in zip(ours, theirs, _tensors(step_grads, dtype, device)):
            p.grad, q.grad = g, g.clone()
        opt.step()
        opt_single.step()
        assert (opt.last_impl[0], opt_single.last_impl[0]) == ("triton", "single")
        for i, (a, b) in enumerate(zip(ours, theirs)):
            _assert_within(a, b, before[i], dtype, (device, config, t, "param", i))
            for key in opt.state[a]:
                if key == "step" or key.endswith("_scale"):
                    continue
                name = key.removesuffix("_codes")
                x, y = decode(opt.state[a], name), decode(opt_single.state[b], name)
                old = state_before[i][key] if t else torch.zeros_like(y)
                stored = opt.state[a][key].dtype
                unit = 0.0
                if key.endswith("_codes"):
                    unit = 1 / 16 if name in ("square_avg", "grad_var") else 1 / 8
                    block = opt.state[a][f"{name}_scale"].repeat_interleave(256)[: y.numel()]
                    old = torch.maximum(old.abs().reshape(-1).cpu(),
                                        2**-15 / unit * block.cpu()).reshape(y.shape)  # fmt: skip
                _assert_within(x, y, old, stored, (device, config, t, key, i), unit)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("config", ["clipnorm", "global_clipnorm"])
def test_clipping_on_the_device(device, config):
    """The gradients the optimizer clips on the device, against the same clip on the CPU:
    the norm is a sum of squares in the device's order (fp32, a tree on a GPU), so the
    scale may differ by a few ulps: at most n·eps32 relative for n summed elements
    (Higham's bound for any summation order), which is what is asserted."""
    hp = {"lr": 0.01, **SWITCH_MATRIX[config]}
    params0, grads = _problem(seed=2)
    on_device: list = []
    on_cpu: list = []
    _run("triton", device, params0, grads[:1], hp, torch.float32, record_clipped=on_device)
    p = _tensors(params0, torch.float32, "cpu", grad=True)
    group = rmsprop.RMSprop(p, impl="single", **hp).param_groups[0]
    on_cpu.append(
        clip_gradients(_tensors(grads[0], torch.float32, "cpu"), Settings.from_group(group))
    )
    n = sum(int(np.prod(s)) for s in SHAPES)
    for a, b in zip(on_device[0], on_cpu[0]):
        assert torch.allclose(a, b, rtol=n * EPS32, atol=0), (device, config)


# ------------------------------------------------------------------ edges
@pytest.mark.parametrize("device", DEVICES)
def test_empty_and_one_element_params(device, monkeypatch):
    """A group of only 0-element params launches nothing and counts the step; 0-d and
    one-element params beside them get the oracle's bits."""
    empty = [torch.zeros(0, device=device, requires_grad=True) for _ in range(3)]
    for p in empty:
        p.grad = torch.zeros(0, device=device)
    opt = rmsprop.RMSprop(empty, impl="triton", momentum=0.9)
    opt.step()
    assert opt.last_impl[0] == "triton"
    assert all(float(opt.state[p]["step"]) == 1 and p.numel() == 0 for p in empty)
    shapes = ((), (1,), (0,), (1, 1))
    params0, grads = _problem(seed=9, shapes=shapes)
    hp = {"alpha": 0.9, "momentum": 0.9, **SWITCH_MATRIX["bias_correction_centered"]}
    ours, opt = _run("triton", device, params0, grads, hp, torch.float32)
    theirs, opt_cpu = _cpu_oracle(params0, grads, hp, torch.float32, None, monkeypatch)
    _assert_same_bits(ours, opt, theirs, opt_cpu, device)


@pytest.mark.parametrize("device", DEVICES)
def test_nonfinite_skip(device, monkeypatch):
    """``nonfinite="skip"``: a step with a NaN in one gradient changes no param, no state and
    no counter and is counted; the run goes on as if that step had not been given."""
    params0, grads = _problem(seed=4)
    bad = [g.copy() for g in grads[1]]
    bad[1][7] = np.nan
    hp = {"alpha": 0.9, "momentum": 0.5, "centered": True, "nonfinite": "skip"}
    lrs = (LRS[0], 1.0, *LRS[1:])  # the skipped step's lr is never used
    ours, opt = _run("triton", device, params0, [*grads[:1], bad, *grads[1:]], hp, torch.float32,
                     lrs=lrs)  # fmt: skip
    assert opt.skipped_steps == 1
    theirs, opt_cpu = _cpu_oracle(params0, grads, hp, torch.float32, None, monkeypatch)
    _assert_same_bits(ours, opt, theirs, opt_cpu, device)


@pytest.mark.parametrize("device", DEVICES)
def test_sparse_gradients_beside_the_kernel(device):
    """An embedding with a sparse gradient in the kernel's group: its rows present are
    updated as a dense step of those rows on the same device (lazy mode, from zero state),
    absent rows keep their values, and the dense parameter beside it gets the bits of a
    group without the embedding."""
    torch.manual_seed(0)
    emb = torch.nn.Embedding(50, 8, sparse=True).to(device)
    dense = torch.randn(300, device=device, requires_grad=True)
    dense0 = dense.detach().clone()
    rows0 = emb.weight.detach().clone()
    opt = rmsprop.RMSprop([emb.weight, dense], impl="triton", alpha=0.9, momentum=0.9)
    index = torch.tensor([3, 7, 7, 20], device=device)
    (emb(index) ** 2).sum().backward()
    dense.grad = torch.linspace(-2, 3, 300, device=device)
    sparse_grad = emb.weight.grad.coalesce()
    opt.step()
    # the rows present, stepped densely on the same device by the single-tensor path
    rows = rows0[[3, 7, 20]].clone().requires_grad_()
    rows.grad = sparse_grad.to_dense()[[3, 7, 20]]
    rmsprop.RMSprop([rows], impl="single", alpha=0.9, momentum=0.9).step()
    assert torch.equal(emb.weight.detach()[[3, 7, 20]], rows.detach())
    absent = torch.ones(50, dtype=torch.bool, device=device)
    absent[[3, 7, 20]] = False
    assert torch.equal(emb.weight.detach()[absent], rows0[absent])
    alone = dense0.clone().requires_grad_()
    alone.grad = dense.grad.clone()
    rmsprop.RMSprop([alone], impl="triton", alpha=0.9, momentum=0.9).step()
    assert torch.equal(dense.detach(), alone.detach())


@pytest.mark.parametrize("device", CUDA_ONLY)
@pytest.mark.parametrize("impl", ["triton", "auto", "foreach"])
def test_cuda_graph_capture(device, impl):
    """``capturable=True`` (torch's argument): the step captured in a CUDA graph and
    replayed on new gradients gives the eager steps' bits (torch's recipe: warm-up steps
    on a side stream, capture, copy each step's gradients into the static ones, replay).
    ``foreach`` is torch's capturable form, the control."""
    torch.manual_seed(1)
    sizes = (1000, 37, 4096)
    start = [torch.randn(n, device=device) for n in sizes]
    grads = [[torch.randn(n, device=device) for n in sizes] for _ in range(6)]
    hp = {"lr": 0.01, "alpha": 0.9, "momentum": 0.9, "centered": True, "capturable": True}
    if impl == "triton":  # its host-side address tables cannot be captured: refused, unchanged
        refused = [s.clone().requires_grad_() for s in start]
        for p, g in zip(refused, grads[0]):
            p.grad = g.clone()
        with pytest.raises(RuntimeError, match="cannot be captured in a CUDA graph"):
            rmsprop.RMSprop(refused, impl="triton", **hp).step()
        assert all(torch.equal(p.detach(), s) for p, s in zip(refused, start))
        return

    eager = [s.clone().requires_grad_() for s in start]
    opt_eager = rmsprop.RMSprop(eager, impl=impl, **hp)
    for step_grads in grads:
        for p, g in zip(eager, step_grads):
            p.grad = g.clone()
        opt_eager.step()

    params = [s.clone().requires_grad_() for s in start]
    opt = rmsprop.RMSprop(params, impl=impl, **hp)
    for p, g in zip(params, grads[0]):
        p.grad = g.clone()  # the static gradients
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for step_grads in grads[:2]:  # two eager warm-up steps (state created)
            for p, g in zip(params, step_grads):
                p.grad.copy_(g)
            opt.step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        opt.step()
    for step_grads in grads[2:]:
        for p, g in zip(params, step_grads):
            p.grad.copy_(g)
        graph.replay()
    torch.cuda.synchronize()
    for a, b in zip(params, eager):
        assert torch.equal(a.detach(), b.detach()), impl
    assert float(opt.state[params[0]]["step"]) == len(grads)
    assert opt.last_impl[0] == "foreach"  # auto passes the Triton kernel over when capturable


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("state", ["as-param", "bf16-sr", "int8"])
def test_state_dict_from_the_device_continues_on_the_cpu(device, state, monkeypatch):
    """A state_dict saved after two steps on the device, loaded on the CPU (``map_location``)
    into an optimizer of CPU params, continued two steps there: the bits of continuing on
    the device (the kernel's bits are the CPU oracle's), params and state."""
    hp = {"alpha": 0.9, "momentum": 0.9, "centered": True}
    state_dtype = STATES[state]
    params0, grads = _problem(seed=8, shapes=((64, 80), (7,), ()))
    grads = grads + grads[:1]  # four steps
    params, opt = _run("triton", device, params0, grads, hp, torch.float32, state_dtype,
                       steps=2)  # fmt: skip
    buffer = io.BytesIO()
    torch.save({"params": [p.detach() for p in params], "opt": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, map_location="cpu", weights_only=False)
    cpu_params = [p.clone().requires_grad_() for p in saved["params"]]
    cpu_opt = rmsprop.RMSprop(cpu_params, impl="single", state_dtype=state_dtype, **hp)
    cpu_opt.load_state_dict(saved["opt"])
    for t, step_grads in enumerate(grads[2:], start=2):
        for o in (opt, cpu_opt):
            o.param_groups[0]["lr"] = LRS[t % len(LRS)]
        for p, q, g in zip(params, cpu_params, step_grads):
            p.grad = torch.tensor(g, dtype=torch.float32, device=device)
            q.grad = torch.tensor(g, dtype=torch.float32)
        opt.step()
        with _numpy_sqrt(monkeypatch):  # the oracle's square root
            cpu_opt.step()
    _assert_same_bits(params, opt, cpu_params, cpu_opt, (device, state))
