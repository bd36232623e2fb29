"""Forked children (torch.multiprocessing's default start method on Linux; hogwild-style
training steps an optimizer in each child) never hang and never enter a numba kernel
whose thread pool or compiler was started in the parent: forked before, during and after
the parent's compile, and spawned. Each child's parameters equal a run of the path it
took in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("numba")

CHILD = textwrap.dedent("""
    import json, os, sys, time
    import multiprocessing as mp
    import torch, rmsprop

    def train(impl, out, steps=None):
        # torch's own OpenMP pool hangs in a child forked after the parent used it (GNU
        # OpenMP is not fork-safe): a forked worker keeps torch to one thread
        torch.set_num_threads(1)
        gen = torch.Generator().manual_seed(0)
        p = torch.zeros(40_000, requires_grad=True)
        opt = rmsprop.RMSprop([p], lr=1e-3, momentum=0.9, centered=True, impl=impl)
        ran, start = [], time.time()
        while len(ran) < (steps or 10_000):  # without a count: until 3 fused steps (or 400 s)
            p.grad = torch.randn(40_000, generator=gen)
            opt.step()
            ran.append(opt.last_impl[0])
            if steps is None and (ran[-3:] == ["numba"] * 3 or time.time() - start > 400):
                break
            time.sleep(0.02)
        from rmsprop.backends import numba_compile
        with open(out, "w") as f:
            json.dump({"ran": ran, "p": p.detach()[:3000].tolist(),
                       "why": numba_compile.unavailable_reason()}, f)

    if __name__ == "__main__":
        when, out = sys.argv[1], sys.argv[2]
        q = torch.zeros(40_000, requires_grad=True)
        if when in ("during", "after"):  # the parent steps first: it asks for the kernel
            if when == "after":
                os.environ["RMSPROP_BACKGROUND_COMPILE"] = "0"  # compiled and run here
            opt = rmsprop.RMSprop([q], lr=1e-3, momentum=0.9, centered=True)
            q.grad = torch.ones(40_000)
            opt.step()
            assert opt.last_impl[0] == ("numba" if when == "after" else "foreach")
            os.environ.pop("RMSPROP_BACKGROUND_COMPILE", None)
        if when == "spawn":
            child = mp.get_context("spawn").Process(target=train, args=("auto", out, None))
            child.start()
            child.join(600)
            sys.exit(0 if child.exitcode == 0 else 1)
        pid = os.fork()
        if pid == 0:
            try:
                train("auto", out, None if when != "after" else 12)
            finally:
                os._exit(0)
        deadline = time.time() + 600
        while time.time() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                sys.exit(os.waitstatus_to_exitcode(status))
            time.sleep(0.1)
        os.kill(pid, 9)
        print("the forked child hung", file=sys.stderr)
        sys.exit(3)
""")


def _child_result(tmp_path, when: str) -> dict:
    script, out = tmp_path / "fork_child.py", tmp_path / f"{when}.json"
    script.write_text(CHILD)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("RMSPROP_BACKGROUND_COMPILE", None)  # as shipped: on
    run = subprocess.run([sys.executable, str(script), when, str(out)], capture_output=True,
                         text=True, env=env, timeout=900)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(out.read_text())


def _fresh_run(tmp_path, impl: str, steps: int) -> list[float]:
    """The same training in a new process with ``impl`` (numba compiles in place)."""
    script = tmp_path / "fresh.py"
    script.write_text(CHILD.split("if __name__")[0]
                      + "train(sys.argv[1], sys.argv[2], int(sys.argv[3]))\n")  # fmt: skip
    out = tmp_path / f"fresh-{impl}.json"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache"),
           "RMSPROP_BACKGROUND_COMPILE": "0"}  # fmt: skip
    run = subprocess.run([sys.executable, str(script), impl, str(out), str(steps)],
                         capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(out.read_text())["p"]


@pytest.mark.slow
@pytest.mark.alone  # waits for a compile that runs at the lowest priority: an idle core
def test_a_child_forked_after_the_parent_ran_fused_steps_on_the_single_path(tmp_path):
    """The parent imported numba and ran its kernel (its thread pool is up): the child
    finishes every step on the single-tensor path, with impl='single''s result, and says
    why numba is not used."""
    child = _child_result(tmp_path, "after")
    assert child["ran"] == ["single"] * 12
    assert "forked" in child["why"] and "spawn" in child["why"]
    assert child["p"] == _fresh_run(tmp_path, "single", 12)


@pytest.mark.slow
@pytest.mark.alone  # waits for a compile that runs at the lowest priority: an idle core
@pytest.mark.parametrize("when", ["before", "during", "spawn"])
def test_a_child_forked_before_numba_was_loaded_or_spawned_takes_the_fused_bits(tmp_path, when):
    """Forked before the parent touched numba, while the parent's kernel compiles in the
    background (the parent has not imported numba), or spawned: the child may use numba
    itself; it runs the stand-in until its kernel is loaded, then fused (the kernel's bits
    throughout), and finishes."""
    child = _child_result(tmp_path, when)
    assert child["why"] is None
    # the stand-in for a 40,000-element tensor is torch's foreach (numba_cpu.stand_in_for)
    assert child["ran"][0] == "foreach" and child["ran"][-3:] == ["numba"] * 3, child["ran"]
    assert child["p"] == _fresh_run(tmp_path, "numba", len(child["ran"]))


def test_the_fork_hook_forgets_the_parents_kernels_requests_and_processes():
    """In a forked child, nothing of the parent's compile bookkeeping is taken as the
    child's own, and numba is refused once the parent has imported it."""
    code = textwrap.dedent("""
        import os, sys
        from rmsprop.backends import numba_compile as nc
        nc._COMPILED.add("a-kernel"); nc._NEXT_LOOK["a-kernel"] = 1e18
        import numba  # noqa: F401
        pid = os.fork()
        if pid == 0:
            ok = (not nc._COMPILED and not nc._NEXT_LOOK and nc.unavailable_reason()
                  and "fork" in nc.unavailable_reason())
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        sys.exit(os.waitstatus_to_exitcode(status) or (nc.unavailable_reason() is not None))
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
