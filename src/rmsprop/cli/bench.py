"""``rmsprop bench``: every implementation of ours and the peers, timed in the same run.

For each suite (``bench_suites.SUITES``) and configuration: ``torch.optim.RMSprop``
(for-loop: torch's CPU default; foreach), ``torch.compile`` of it (compile time reported
separately), and each ``impl`` of ``rmsprop.RMSprop``. Reported: median step time with
p10/p90, effective bandwidth (the bytes a step must move / time), that as a fraction of
the machine's triad bandwidth (``c = a + s*b``, measured in the same run), and the speedup
over torch's default. Medians of repeated steps after warm-up; the machines are shared
and noisy, so ratios are taken within one run.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .bench_suites import SUITES, Config, Suite


@dataclass
class Row:
    suite: str
    config: str
    impl: str
    median_ms: float
    p10_ms: float
    p90_ms: float
    gbps: float | None
    fraction_of_triad: float | None
    speedup_vs_torch: float | None
    note: str = ""


def timings(
    fn: Callable[[], Any], repeats: int, warmup: int, sync: Callable[[], None]
) -> list[float]:
    for _ in range(warmup):
        fn()
    sync()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - start)
    return out


def _stats(ts: list[float]) -> tuple[float, float, float]:
    q = np.percentile(np.array(ts) * 1e3, [50, 10, 90])
    return float(q[0]), float(q[1]), float(q[2])


def triad_bandwidth(numel: int, repeats: int, device: str) -> dict[str, float]:
    """GB/s of ``c = a + s*b`` (12 bytes per element moved), with torch and with numba."""
    import torch

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    a, b, c = (torch.rand(numel, device=device) for _ in range(3))
    out = {}
    t = statistics.median(timings(lambda: torch.add(a, b, alpha=1.5, out=c), repeats, 3, sync))
    out["torch"] = 12 * numel / t / 1e9
    if device == "cpu":
        try:
            from ..backends.numba_kernels import triad

            an, bn, cn = a.numpy(), b.numpy(), c.numpy()
            t = statistics.median(timings(lambda: triad(cn, an, bn, 1.5), repeats, 3, sync))
            out["numba"] = 12 * numel / t / 1e9
        except ImportError:
            pass
    return out


def _make_params(suite: Suite, device: str, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=g).to(device).requires_grad_() for s in suite.shapes]
    grads = [torch.randn(s, generator=g).to(device) * 0.1 for s in suite.shapes]
    return params, grads


def _candidates(device: str) -> dict[str, Callable[[list, dict], Any]]:
    import torch

    import rmsprop

    from ..backends import unavailable_reason

    out: dict[str, Callable[[list, dict], Any]] = {
        "torch.optim for-loop": lambda ps, kw: torch.optim.RMSprop(
            ps, lr=1e-3, foreach=False, **kw
        ),
        "torch.optim foreach": lambda ps, kw: torch.optim.RMSprop(ps, lr=1e-3, foreach=True, **kw),
        "torch.compile(torch.optim)": lambda ps, kw: torch.optim.RMSprop(ps, lr=1e-3, **kw),
        "rmsprop single": lambda ps, kw: rmsprop.RMSprop(ps, lr=1e-3, impl="single", **kw),
        "rmsprop foreach": lambda ps, kw: rmsprop.RMSprop(ps, lr=1e-3, impl="foreach", **kw),
        STAND_IN: lambda ps, kw: rmsprop.RMSprop(ps, lr=1e-3, **kw),  # before numba loads
        "rmsprop auto": lambda ps, kw: rmsprop.RMSprop(ps, lr=1e-3, **kw),
    }
    for impl in ("numba", "triton", "compiled"):
        if (
            unavailable_reason(impl) is None
            and (impl != "numba" or device == "cpu")
            and (impl != "triton" or device == "cuda")
        ):
            out[f"rmsprop {impl}"] = lambda ps, kw, i=impl: rmsprop.RMSprop(
                ps, lr=1e-3, impl=i, **kw
            )
    return out


STAND_IN = "rmsprop stand-in"  # impl="auto" on a fresh install, until its kernel is loaded


@contextmanager
def _kernels_held_back():
    """What a fresh install's steps run while the fused kernel compiles: ``impl="auto"``
    with no kernel loaded (and none requested: the stand-in is timed, not the compile)."""
    from ..backends import numba_compile

    saved = numba_compile.ready, numba_compile.prepare, os.environ.get("RMSPROP_BACKGROUND_COMPILE")
    numba_compile.ready, numba_compile.prepare = (lambda key, math: False), (lambda key, math: None)
    os.environ["RMSPROP_BACKGROUND_COMPILE"] = "1"
    try:
        yield
    finally:
        numba_compile.ready, numba_compile.prepare = saved[:2]
        if saved[2] is None:
            del os.environ["RMSPROP_BACKGROUND_COMPILE"]
        else:
            os.environ["RMSPROP_BACKGROUND_COMPILE"] = saved[2]


@contextmanager
def _quiet_compiler():
    """torch.compile's warnings (foreign log lines in the table's output) held back."""
    import torch

    torch._logging.set_logs(dynamo=logging.ERROR)
    try:
        yield
    finally:
        torch._logging.set_logs()


def run_dense(suite: Suite, config: Config, repeats: int, device: str, triad: float, progress,
              only: set[str] | None = None) -> list[Row]:  # fmt: skip
    import torch

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    params, grads = _make_params(suite, device)
    for p, g in zip(params, grads):
        p.grad = g
    rows, baseline = [], None
    for name, make in _candidates(device).items():
        if only and not any(o in name for o in only):
            continue
        if name in suite.skip:
            rows.append(Row(suite.name, config.name, name, float("nan"), float("nan"), float("nan"),
                            None, None, None, f"not timed: {suite.skip[name]}"))  # fmt: skip
            continue
        progress(f"{suite.name} / {config.name}: {name}")
        opt = make(params, dict(config.kwargs))
        note = ""
        step = opt.step
        if name.startswith("torch.compile") or name.endswith("compiled"):
            start = time.perf_counter()
            step = torch.compile(opt.step) if name.startswith("torch.compile") else opt.step
            with _quiet_compiler():  # dynamo warns that it ignores torch.optim's profiler spans
                step()
            sync()
            note = f"compile {time.perf_counter() - start:.1f} s"
        if name == STAND_IN:
            with _kernels_held_back():
                ts = timings(step, repeats, 3, sync)
        else:
            ts = timings(step, repeats, 3, sync)
        if name in ("rmsprop auto", STAND_IN):
            note = f"ran {opt.last_impl.get(0)}"
        med, p10, p90 = _stats(ts)
        if name == "torch.optim for-loop":
            baseline = med
        gbps = config.bytes_per_param * suite.numel / (med / 1e3) / 1e9
        rows.append(Row(suite.name, config.name, name, med, p10, p90, gbps, gbps / triad,
                        None, note))  # fmt: skip
        del opt
    for row in rows:
        if baseline and row.median_ms == row.median_ms:  # not NaN
            row.speedup_vs_torch = baseline / row.median_ms
    return rows


def run_embedding(suite: Suite, repeats: int, device: str, progress) -> list[Row]:
    import torch

    import rmsprop

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    params, grads = _make_params(suite, device)
    table = params[0]
    ids = torch.randint(0, table.shape[0], (suite.sparse_rows,), device=device)
    values = torch.randn(suite.sparse_rows, table.shape[1], device=device)
    sparse = torch.sparse_coo_tensor(ids.unsqueeze(0), values, table.shape).coalesce()
    rows = []
    cases = {
        "torch.optim for-loop (dense grad)": (lambda ps: torch.optim.RMSprop(ps, lr=1e-3, foreach=False),
                                              sparse.to_dense()),
        "rmsprop auto (dense grad)": (lambda ps: rmsprop.RMSprop(ps, lr=1e-3), sparse.to_dense()),
        "rmsprop lazy (sparse grad)": (lambda ps: rmsprop.RMSprop(ps, lr=1e-3), sparse),
    }  # fmt: skip
    baseline = None
    for name, (make, table_grad) in cases.items():
        progress(f"{suite.name}: {name}")
        table.grad = table_grad
        for p, g in zip(params[1:], grads[1:]):
            p.grad = g
        opt = make(params)
        med, p10, p90 = _stats(timings(opt.step, repeats, 2, sync))
        baseline = baseline or med
        rows.append(Row(suite.name, "plain", name, med, p10, p90, None, None, baseline / med,
                        f"{suite.sparse_rows} of {table.shape[0]:,} rows"))  # fmt: skip
        del opt
    return rows


def interleaved_timings(steps: dict[str, Callable[[], Any]], repeats: int, warmup: int,
                        sync: Callable[[], None]) -> dict[str, list[float]]:  # fmt: skip
    """Time several steps round-robin (one of each per round), so that the drift of a
    shared machine hits them alike and per-round ratios compare like with like."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    sync()
    out: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            sync()
            out[name].append(time.perf_counter() - start)
    return out


_STATE_KINDS = ("fp32", "bf16", "int8")
_STATE_NAMES = tuple(f"rmsprop auto, {params}{label} state"
                     for params in ("", "bf16 params SR, ") for label in _STATE_KINDS)  # fmt: skip


def run_state(suite: Suite, config: Config, repeats: int, device: str, progress,
              bf16_params: bool = False) -> list[Row]:  # fmt: skip
    """The same step with fp32, bf16 and int8 state, timed round-robin: step time, state
    bytes per parameter, and the median of the per-round ratios to fp32 state.
    ``bf16_params``: bf16 parameters and gradients with ``stochastic_rounding=True``
    (pure-bf16 training)."""
    import torch

    import rmsprop

    from ..lowbit.state import state_bytes

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    params, grads = _make_params(suite, device)
    if bf16_params:
        params = [torch.nn.Parameter(p.detach().to(torch.bfloat16)) for p in params]
        grads = [g.to(torch.bfloat16) for g in grads]
    for p, g in zip(params, grads):
        p.grad = g
    what = "bf16 params (stochastic rounding), " if bf16_params else ""
    progress(f"{suite.name} / {config.name}: {what}fp32, bf16 and int8 state, interleaved")
    kinds = {"fp32": torch.float32, "bf16": torch.bfloat16, "int8": "int8"}
    opts = {label: rmsprop.RMSprop(params, lr=1e-3, state_dtype=state_dtype,
                                   stochastic_rounding=bf16_params, **config.kwargs)
            for label, state_dtype in kinds.items()}  # fmt: skip
    times = interleaved_timings({label: opt.step for label, opt in opts.items()}, repeats, 2, sync)
    rows = []
    for label, opt in opts.items():
        med, p10, p90 = _stats(times[label])
        per_param = sum(state_bytes(opt.state[p]) for p in params) / suite.numel
        ratio = float(np.median(np.array(times["fp32"]) / np.array(times[label])))
        note = (f"{per_param:.3f} state bytes/param; ran {opt.last_impl.get(0)}; ratio: fp32-state "
                "time / this, median over rounds")  # fmt: skip
        name = f"rmsprop auto, {'bf16 params SR, ' if bf16_params else ''}{label} state"
        rows.append(Row(suite.name, config.name, name, med, p10, p90, None, None, ratio, note))
    return rows


NOISY = 1.5  # p90 / p10 above this: the machine was busy during the measurement


def _flag_noise(rows: list[Row]) -> None:
    """Say so in the note of a row whose timings spread widely, or whose bandwidth exceeds
    the triad's by a fifth (the machine's bandwidth moved between the measurements)."""
    for row in rows:
        flags = []
        if row.p10_ms > 0 and row.p90_ms / row.p10_ms > NOISY:
            flags.append(f"noisy: p90/p10 {row.p90_ms / row.p10_ms:.1f}")
        if row.fraction_of_triad is not None and row.fraction_of_triad > 1.2:
            flags.append("above the triad: bandwidth moved during the run")
        if flags:
            row.note = "; ".join([row.note, *flags] if row.note else flags)


def environment(device: str) -> dict[str, Any]:
    import torch

    info = {
        "machine": platform.machine(),
        "processor": _cpu_model(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device if device == "cpu" else torch.cuda.get_device_name(0),
    }
    try:
        import numba

        info["numba"] = numba.__version__
    except ImportError:
        pass
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def run_bench(suites: list[str], repeats: int, device: str, json_path: Path | None,
              only: set[str] | None = None) -> int:  # fmt: skip
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    console = Console(width=170) if not Console().is_terminal else Console()
    unknown = [s for s in suites if s not in SUITES]
    if unknown:
        raise ValueError(f"--suite: unknown suite(s) {unknown}; known: {', '.join(SUITES)}")
    if only is not None:
        names = [*_candidates(device), *_STATE_NAMES]
        if not any(o in name for o in only for name in names):
            raise ValueError(
                f"--only {','.join(sorted(only))} matches no implementation; they are: "
                f"{', '.join(_candidates(device))} (and, in the state suites, {', '.join(_STATE_NAMES)})"
            )
    rows: list[Row] = []
    from ..backends.numba_compile import in_place

    # "rmsprop auto" is timed as it runs once its kernel is there (the stand-in has a row)
    with Progress(transient=True, console=console) as bar, in_place():
        task = bar.add_task("bench", total=len(suites))

        def progress(what: str) -> None:
            bar.update(task, description=what)

        numel = max(SUITES[s].numel for s in suites if not SUITES[s].sparse_rows) if any(
            not SUITES[s].sparse_rows for s in suites) else 1 << 22  # fmt: skip
        progress("triad bandwidth")
        triads = triad_bandwidth(max(numel, 1 << 22), max(repeats, 10), device)
        triad = max(triads.values())
        for name in suites:
            suite = SUITES[name]
            if suite.sparse_rows:
                rows += run_embedding(suite, repeats, device, progress)
            elif suite.state_params:
                for param_dtype in suite.state_params:
                    for config in suite.configs:
                        rows += run_state(suite, config, repeats, device, progress,
                                          bf16_params=param_dtype == "bf16")  # fmt: skip
            else:
                for config in suite.configs:
                    rows += run_dense(suite, config, repeats, device, triad, progress, only)
            bar.advance(task)
        progress("triad bandwidth, again")
        after = max(triad_bandwidth(max(numel, 1 << 22), max(repeats, 10), device).values())
    env = environment(device)
    _flag_noise(rows)
    each = ", ".join(f"{k} {v:.1f}" for k, v in triads.items())
    title = f"rmsprop bench: {env['processor']}, {env['torch_threads']} threads; triad {triad:.1f} GB/s ({each})"
    table = Table(title=title)
    text_columns = ("suite", "config", "implementation", "note")
    for col in ("suite", "config", "implementation", "median ms", "p10-p90 ms", "GB/s", "of triad",
                "vs torch", "note"):  # fmt: skip
        table.add_column(col, justify="left" if col in text_columns else "right")
    for r in rows:
        table.add_row(
            r.suite, r.config, r.impl, f"{r.median_ms:.2f}", f"{r.p10_ms:.2f}-{r.p90_ms:.2f}",
            "-" if r.gbps is None else f"{r.gbps:.1f}",
            "-" if r.fraction_of_triad is None else f"{r.fraction_of_triad:.0%}",
            "-" if r.speedup_vs_torch is None else f"{r.speedup_vs_torch:.2f}x", r.note,
        )  # fmt: skip
    console.print(table)
    drift = max(triad, after) / min(triad, after) - 1
    if drift > 0.2:
        console.print(f"note: the triad bandwidth moved {drift:.0%} during the run ({triad:.1f} "
                      f"then {after:.1f} GB/s): compare ratios within this run, not times "
                      "across runs", soft_wrap=True)  # fmt: skip
    if json_path is not None:
        payload = {"environment": env, "triad_gbps": triads, "repeats": repeats,
                   "rows": [asdict(r) for r in rows]}  # fmt: skip
        json_path.write_text(json.dumps(payload, indent=2))
        console.print(f"wrote {json_path}", soft_wrap=True)
    return 0
