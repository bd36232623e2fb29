"""A fresh install's first steps do not wait for numba: the kernel compiles in another
process while the single-tensor path (with the kernel's IEEE square root) gives the same
bits; then steps run fused."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("numba")

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"

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
@pytest.mark.alone  # waits for a compile that runs at the lowest priority: an idle core
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
@pytest.mark.alone  # waits for a compile that runs at the lowest priority: an idle core
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
    # the stand-in for 50,000-element tensors is torch's foreach (numba_cpu.stand_in_for)
    assert warming["ran"][0] == ["foreach"] * 3 and warming["ran"][-1] == ["numba"] * 3
    env["RMSPROP_BACKGROUND_COMPILE"] = "0"
    run = subprocess.run([sys.executable, "-c", GROUPS, "numba", str(len(warming["ran"]))],
                         capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    fused = json.loads(run.stdout.strip().splitlines()[-1])
    assert fused["ran"] == [["numba"] * 3] * len(warming["ran"])
    assert fused["p"] == warming["p"]


def _key():
    import torch

    import rmsprop
    from rmsprop.backends import numba_cpu
    from rmsprop.backends.base import Hyper
    from rmsprop.lowbit.forms import Storage

    opt = rmsprop.RMSprop([torch.zeros(3)], lr=1e-3)
    return numba_cpu.kernel_key(Hyper.from_group(opt.param_groups[0]), Storage.FLOAT, False)


def _request(folder, name, key, pid, when):
    from rmsprop.backends import numba_compile

    path = folder / numba_compile.REQUESTS / f"{name}.{pid}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([list(key[0]), key[1], key[2], "float32", name]))
    os.utime(path, (when, when))
    return path


def test_the_compile_process_records_a_failed_kernel_and_goes_on(tmp_path, monkeypatch):
    """A kernel that cannot compile gets a ``.failed`` marker saying why (a waiting program
    then loads it in a thread, where the error is reported) and the next one is compiled;
    the process exits when the queue is empty, leaving no request behind."""
    from rmsprop.backends import numba_compile

    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    folder = numba_compile.cache_folder()
    assert folder.parent == tmp_path
    flags, _, bf16 = good = _key()
    name = numba_compile.marker_name(good, "float32")
    _request(folder, "rmsprop-kernel-bad.ready", (flags, 99, bf16), os.getpid(), 1000)
    _request(folder, name, good, os.getpid(), 2000)
    assert numba_compile.start_compiler(folder)
    assert not numba_compile.start_compiler(folder)  # one process per folder
    assert numba_compile._STARTED[-1].wait(timeout=600) == 0
    assert "99 is not a valid Storage" in (folder / "rmsprop-kernel-bad.failed").read_text()
    assert (folder / name).exists()
    history = [
        line.split()[1:3] for line in (folder / numba_compile.HISTORY).read_text().splitlines()
    ]
    assert history == [["rmsprop-kernel-bad.ready", "failed"], [name, "ok"]]
    assert not list((folder / numba_compile.REQUESTS).iterdir())


def test_a_short_programs_kernel_is_compiled_after_it_exits_then_the_process_exits(
    tmp_path, monkeypatch
):
    """A program that asked for a kernel and exited (or was killed): the compile process
    still compiles it, once (the next run finds it in the cache), answers the request,
    leaves no status behind and exits. A request named from an older source of the
    kernels (the package was upgraded under a running program) is answered under the name
    it asked for, once, not compiled again and again."""
    from rmsprop.backends import numba_compile

    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    folder = numba_compile.cache_folder()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    key = _key()
    name = numba_compile.marker_name(key, "float32")
    request = _request(folder, name, key, gone.pid, 1000)
    older = _request(folder, "rmsprop-kernel-an-older-source.ready", key, os.getpid(), 2000)
    assert numba_compile.start_compiler(folder)
    assert numba_compile._STARTED[-1].wait(timeout=600) == 0
    assert (folder / name).exists() and not request.exists()
    assert (folder / "rmsprop-kernel-an-older-source.ready").exists() and not older.exists()
    history = (folder / numba_compile.HISTORY).read_text().splitlines()
    assert [line.split()[1] for line in history] == [name, "rmsprop-kernel-an-older-source.ready"]
    assert not (folder / numba_compile.STATUS).exists()
    assert numba_compile.compiler_status(folder) is None
    assert numba_compile.waiting(folder) == []


@pytest.mark.slow
@pytest.mark.alone  # waits for a compile that runs at the lowest priority: an idle core
def test_six_programs_on_one_empty_cache_share_one_compile_process(tmp_path):
    """Six programs started together on an empty cache (two kernels each): at most one
    compile process alive at any time (counted by environment), each kernel compiled
    once, every program ends fused, and no process is left once the queue is done. (The
    programs sleep between steps, as a model's own work would leave the CPU idle: the
    compile runs at the lowest priority.)"""
    run = subprocess.run([sys.executable, str(BENCHMARKS / "shared_compile.py"), "--programs", "6",
                          "--cache", str(tmp_path), "--timeout", "500"],
                         capture_output=True, text=True, timeout=900)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout)
    assert result["most_compile_processes_at_once"] == 1, result
    assert result["compile_processes_left_after_the_programs"] == 0, result
    names = [name for name, outcome in result["kernels_compiled"] if outcome == "ok"]
    assert len(names) == len(set(names)) == 2, result["kernels_compiled"]
    assert result["programs_last_step"] == [["numba", "numba"]] * 6, result


AFRESH = textwrap.dedent("""
    import sys, torch, rmsprop
    from pathlib import Path
    from rmsprop.backends import numba_compile, numba_cpu
    from rmsprop.backends.base import Hyper
    from rmsprop.lowbit.forms import Storage
    folder = Path(sys.argv[1])
    for momentum in (0.0, 0.9):  # two requests: two kernels
        group = rmsprop.RMSprop([torch.zeros(3)], lr=1e-3, momentum=momentum).param_groups[0]
        key = numba_cpu.kernel_key(Hyper.from_group(group), Storage.FLOAT, False)
        numba_compile._request(folder, key, "float32", numba_compile.marker_name(key, "float32"))
    numba_compile.RECYCLE_AFTER = 1  # a fresh start after the first kernel
    numba_compile._serve(folder, numba_compile._try_lock(folder))
""")


@pytest.mark.slow
@pytest.mark.alone  # the compile process restarted in place runs at the lowest priority
def test_the_compile_process_starts_afresh_in_place_and_finishes_the_queue(tmp_path):
    """After ``RECYCLE_AFTER`` kernels the compile process starts afresh (its memory
    freed) as the same process, still holding the lock: both kernels are compiled by one
    process id, never two processes at once, and the lock is free once the queue is done.
    (Before, it started another process by the name ``__main__``, which did not run, so
    the rest of the queue waited for a program to start a compile process again.)"""
    from rmsprop.backends import numba_compile

    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    run = subprocess.Popen([sys.executable, "-c", AFRESH, str(tmp_path)], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    _, err = run.communicate(timeout=600)  # the same process id, after exec, until it is done
    assert run.returncode == 0, err[-3000:]
    history = (tmp_path / numba_compile.HISTORY).read_text().splitlines()
    assert [line.split()[2] for line in history] == ["ok", "ok"], history
    assert {line.split()[-1] for line in history} == {str(run.pid)}, history
    assert numba_compile.waiting(tmp_path) == []
    fd = numba_compile._try_lock(tmp_path)
    assert fd is not None  # nobody holds the lock
    os.close(fd)


ISOLATED = textwrap.dedent("""
    import json, sys, time, torch, rmsprop
    from rmsprop.backends import numba_compile
    p = torch.zeros(20_000, requires_grad=True)
    opt = rmsprop.RMSprop([p], lr=1e-3, momentum=0.9)
    ran, start = [], time.perf_counter()
    while time.perf_counter() - start < float(sys.argv[1]):
        p.grad = torch.ones(20_000); opt.step(); ran.append(opt.last_impl[0])
        if ran[-1] == "numba" or len(ran) >= int(sys.argv[2]):
            break
        time.sleep(0.1)
    folder = numba_compile.cache_folder()
    print(json.dumps({"package": rmsprop.__file__, "ran": ran,
                      "folder": None if folder is None else str(folder)}))
""")


def _isolated_install(tmp_path):
    """A copy of the package whose own folder cannot be written (its backends/__pycache__
    is a file: not even root can create the cache there), and an empty HOME."""
    import rmsprop

    site = tmp_path / "site"
    shutil.copytree(Path(rmsprop.__file__).parent, site / "rmsprop",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    (site / "rmsprop" / "backends" / "__pycache__").write_text("not a folder")
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME", "RMSPROP_BACKGROUND_COMPILE")}  # fmt: skip
    env.update(PYTHONPATH=str(site), HOME=str(tmp_path / "home"), PYTHONDONTWRITEBYTECODE="1")
    return site, env


@pytest.mark.slow
@pytest.mark.alone  # waits for a compile that runs at the lowest priority: an idle core
def test_a_read_only_package_folder_reaches_the_fused_kernel(tmp_path):
    """No NUMBA_CACHE_DIR and a package folder that cannot be written (a root-owned
    site-packages, a read-only image): numba caches under HOME, the readiness marker is
    written where the kernel really is, and auto goes fused; ``rmsprop info`` and
    ``rmsprop warmup`` name that folder."""
    site, env = _isolated_install(tmp_path)
    run = subprocess.run([sys.executable, "-c", ISOLATED, "500", "100000"], capture_output=True,
                         text=True, env=env, timeout=900)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["package"].startswith(str(site))
    folder = Path(result["folder"])
    assert folder.parent == tmp_path / "home" / ".cache" / "numba"
    assert list(folder.glob("numba_kernels*.nbi")), "numba did not cache the kernel there"
    assert list(folder.glob("rmsprop-kernel-*.ready"))
    # the stand-in for a 20,000-element tensor is torch's foreach (numba_cpu.stand_in_for)
    assert result["ran"][0] == "foreach" and result["ran"][-1] == "numba", result["ran"]
    for command in (["info"], ["warmup", "--momentum", "0.9"]):
        shown = subprocess.run([sys.executable, "-m", "rmsprop", *command], capture_output=True,
                               text=True, env=env, timeout=900)  # fmt: skip
        assert shown.returncode == 0 and str(folder) in shown.stdout, shown.stdout + shown.stderr


def test_with_no_writable_cache_auto_runs_the_single_path_and_says_so_once(tmp_path):
    """Nothing writable (package folder, HOME, no NUMBA_CACHE_DIR): steps run the
    single-tensor path with one log line; warmup and an explicit impl='numba' say why in
    one line; info says there is no cache."""
    _, env = _isolated_install(tmp_path)
    env["HOME"] = str(tmp_path / "a-file")
    (tmp_path / "a-file").write_text("HOME cannot hold a cache folder")
    run = subprocess.run([sys.executable, "-c", ISOLATED, "60", "5"], capture_output=True,
                         text=True, env=env, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["ran"] == ["single"] * 5 and result["folder"] is None
    said = [line for line in run.stderr.splitlines() if "NUMBA_CACHE_DIR" in line]
    assert len(said) == 1 and "writable" in said[0], run.stderr
    warmup = subprocess.run([sys.executable, "-m", "rmsprop", "warmup"], capture_output=True,
                            text=True, env=env, timeout=300)  # fmt: skip
    assert warmup.returncode == 2 and "internal error" not in warmup.stderr
    assert "NUMBA_CACHE_DIR" in warmup.stderr.splitlines()[-1], warmup.stderr
    explicit = subprocess.run(
        [sys.executable, "-c", "import torch, rmsprop; rmsprop.RMSprop([torch.zeros(2)], impl='numba')"],
        capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert explicit.returncode == 1 and "NUMBA_CACHE_DIR" in explicit.stderr.splitlines()[-1]
    info = subprocess.run([sys.executable, "-m", "rmsprop", "info"], capture_output=True,
                          text=True, env=env, timeout=300)  # fmt: skip
    assert info.returncode == 0 and "numba cache  none" in info.stdout, info.stdout + info.stderr
