"""A fresh install's first steps do not wait for numba: the kernel compiles in another
process while the single-tensor path (with the kernel's IEEE square root) gives the same
bits; then steps run fused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("numba")

STEPS = textwrap.dedent("""
    import json, sys, time, torch, rmsprop
    impl, limit = sys.argv[1], int(sys.argv[2])
    gen = torch.Generator().manual_seed(0)
    p = torch.zeros(300_000, requires_grad=True)
    opt = rmsprop.RMSprop([p], lr=1e-3, momentum=0.9, centered=True, impl=impl)
    q = torch.zeros(300_000, requires_grad=True)
    ref = torch.optim.RMSprop([q], lr=1e-3, momentum=0.9, centered=True)
    q.grad = torch.randn(300_000); start = time.perf_counter(); ref.step()
    torch_first = time.perf_counter() - start
    ran, seconds, start = [], [], time.perf_counter()
    while len(ran) < limit and not (impl == "auto" and ran[-3:] == ["numba"] * 3):
        p.grad = torch.randn(300_000, generator=gen)
        t = time.perf_counter(); opt.step(); seconds.append(time.perf_counter() - t)
        ran.append(opt.last_impl[0])
        if ran[-1] == "single":
            time.sleep(0.25)  # the model's own work; the compile goes on meanwhile
    print(json.dumps({"torch_first": torch_first, "first": seconds[0], "ran": ran,
                      "fused_after": time.perf_counter() - start, "p": p.detach()[:5000].tolist()}))
""")


def _run(impl: str, limit: int, cache: str, background: str) -> dict:
    env = {**os.environ, "NUMBA_CACHE_DIR": cache, "RMSPROP_BACKGROUND_COMPILE": background}
    run = subprocess.run([sys.executable, "-c", STEPS, impl, str(limit)], capture_output=True,
                         text=True, env=env, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_first_steps_do_not_wait_for_the_compile_and_give_the_fused_bits(tmp_path):
    """An empty kernel cache: the first step is within 1 s of torch's first step (it runs
    the single-tensor path while another process compiles the kernel), later steps run
    fused, and the parameters equal those of the same run fused from its first step."""
    warming = _run("auto", 400, str(tmp_path), "1")
    assert warming["ran"][0] == "single"
    assert warming["first"] <= warming["torch_first"] + 1.0, warming["first"]
    assert warming["ran"][-1] == "numba", warming["ran"]
    fused = _run("numba", len(warming["ran"]), str(tmp_path), "0")
    assert fused["ran"] == ["numba"] * len(warming["ran"])
    assert fused["p"] == warming["p"]


GROUPS = textwrap.dedent("""
    import json, subprocess, sys, time, torch, rmsprop
    from rmsprop.backends import numba_compile
    started = []
    popen = subprocess.Popen
    subprocess.Popen = lambda *a, **k: started.append(a[0]) or popen(*a, **k)
    gen = torch.Generator().manual_seed(0)
    ps = [torch.zeros(50_000, requires_grad=True) for _ in range(3)]
    opt = rmsprop.RMSprop([{"params": [ps[0]]}, {"params": [ps[1]], "momentum": 0.9},
                           {"params": [ps[2]], "centered": True}], lr=1e-3, impl=sys.argv[1])
    ran, start = [], time.perf_counter()
    while time.perf_counter() - start < 300:
        for p in ps:
            p.grad = torch.randn(50_000, generator=gen)
        opt.step()
        ran.append([opt.last_impl[i] for i in range(3)])
        if ran[-1] == ["numba"] * 3 and len(ran) >= int(sys.argv[2]):
            break
        time.sleep(0.1)
    print(json.dumps({"compile_processes": len(started), "ran": ran,
                      "p": [p.detach()[:2000].tolist() for p in ps]}))
""")


@pytest.mark.slow
def test_one_background_process_compiles_every_kernel_a_program_needs(tmp_path):
    """Three parameter groups with three switch combinations on an empty cache: one
    compile process (not one per kernel), every group ends on its fused kernel, and the
    parameters equal a run that was fused from its first step."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path), "RMSPROP_BACKGROUND_COMPILE": "1"}
    run = subprocess.run([sys.executable, "-c", GROUPS, "auto", "0"], capture_output=True,
                         text=True, env=env, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    warming = json.loads(run.stdout.strip().splitlines()[-1])
    assert warming["compile_processes"] == 1
    assert warming["ran"][0] == ["single"] * 3 and warming["ran"][-1] == ["numba"] * 3
    env["RMSPROP_BACKGROUND_COMPILE"] = "0"
    run = subprocess.run([sys.executable, "-c", GROUPS, "numba", str(len(warming["ran"]))],
                         capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    fused = json.loads(run.stdout.strip().splitlines()[-1])
    assert fused["ran"] == [["numba"] * 3] * len(warming["ran"])
    assert fused["p"] == warming["p"]


def test_the_compile_process_answers_a_failed_kernel_and_goes_on(tmp_path):
    """A kernel that cannot compile is answered ``failed`` (the training process then
    loads it in a thread, where the error is reported) and the next one is compiled."""
    import torch

    import rmsprop
    from rmsprop.backends import numba_compile, numba_cpu
    from rmsprop.backends.base import Hyper
    from rmsprop.lowbit.forms import Storage

    opt = rmsprop.RMSprop([torch.zeros(3)], lr=1e-3)
    good = numba_cpu.kernel_key(Hyper.from_group(opt.param_groups[0]), Storage.FLOAT, False)
    lines = [json.dumps([list(good[0]), 99, False, "float32", "bad"]),
             json.dumps([list(good[0]), 0, False, "float32", "good"])]  # fmt: skip
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    run = subprocess.run([sys.executable, "-m", "rmsprop.backends.numba_compile"],
                         input="\n".join(lines) + "\n", capture_output=True, text=True,
                         env=env, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.splitlines() == ["failed bad", "ok good"]
    assert numba_compile.marker_name(good, "float32") in os.listdir(tmp_path)
