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
