"""The command line: demo (quick) with its report, presets, explain, diff, python -m."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from html import unescape
from pathlib import Path

import pytest

from rmsprop.cli.main import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The quick demo, run once for the module, and how far each figure's drawing reaches
    past its edges (inches; 0 or less: every label is inside), measured as it is saved."""
    from rmsprop.cli import demo, figures

    spills = {}
    save = figures.save

    def measured_save(fig, out, name, pngs=None):
        figures.set_margins(fig)
        drawn = fig.get_tightbbox()
        width, height = fig.get_size_inches()
        spills[name] = max(-drawn.x0, -drawn.y0, drawn.x1 - width, drawn.y1 - height)
        return save(fig, out, name, pngs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(figures, "save", measured_save)
        patch.setattr(demo, "save", measured_save)
        result = demo.demo(tmp_path_factory.mktemp("report"), seed=0, quick=True)
    return result, spills


@pytest.fixture(scope="module")
def quick_demo(demo_run):
    return demo_run[0]


def test_every_figure_holds_its_labels(demo_run):
    """The margins are set in inches, not measured (``figures.set_margins``): each of the
    five figures' titles, tick labels, axis labels and legends lie inside it."""
    result, spills = demo_run
    assert sorted(spills) == sorted(p.name for p in result.pngs)
    assert len(spills) == 5
    assert all(spill <= 0 for spill in spills.values()), spills


def test_demo_report_content(quick_demo):
    r = quick_demo
    assert abs(r.slope - 2) < 0.05
    assert abs(r.intercept - 1) < 0.05
    bowl = r.race["bowl"]
    assert bowl["RMSprop"]["steps"] is not None
    assert (
        bowl["gradient descent"]["steps"] is None
        or bowl["RMSprop"]["steps"] < bowl["gradient descent"]["steps"]
    )
    for name in ("RMSprop (torch)", "RMSprop (keras)", "RMSprop (tf1)"):
        assert r.digits[name]["accuracy"] >= 0.90, name
    assert {p.name for p in r.pngs} == {
        "regression.png",
        "race_bowl.png",
        "race_rosenbrock.png",
        "digits.png",
        "memory.png",
    }
    for png in r.pngs:
        data = png.read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 10_000
    html = r.report.read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") == 5
    for title in ("Linear regression", "The race", "digits dataset", "optimizers compared"):
        assert title in html
    assert "RMSprop presets (from rmsprop.PRESETS)" in html
    assert "Smaller optimizer state" in html
    assert "tf1" in html and "timm_tf" in html


def test_demo_report_speaks_to_users(quick_demo, capsys):
    """No internal names or self-contradictions: what ran is said in words (not impl names
    or plan summaries), the presets' spread is explained from the numbers, section 5 says
    how its runs differ from section 3's and quotes the bytes its table shows, RMSprop's
    distance from the least-squares fit is explained, and the summary says what a missing
    step count means."""
    from rmsprop.cli.demo import _print_summary

    html = unescape(quick_demo.report.read_text(encoding="utf-8"))
    for internal in ("tensor(s)", "single then", "foreach then", "within 0.0%",
                     "(same seed, same batches)", "8 for fp32 with momentum"):  # fmt: skip
        assert internal not in html, internal
    assert "the fused CPU kernel" in html
    assert "short of the exact fit" in html and "last lr" in html
    fp32_bytes = f"{quick_demo.memory['lstm']['fp32']['bytes']:.2f} for fp32"
    assert fp32_bytes in html
    assert "presets end" in html
    _print_summary(quick_demo)
    out = capsys.readouterr().out
    assert "steps to loss < 1e-3 on rosenbrock" in out
    assert any(r["steps"] is not None for r in quick_demo.race["rosenbrock"].values())
    missing = [n for n, r in quick_demo.race["rosenbrock"].items() if r["steps"] is None]
    assert not missing or "not within 1000" in out


def test_demo_report_explains_itself(quick_demo):
    """Each measured section says what to take from it (from its numbers), the contents
    are links, the digits table gives every learning rate and times without the first
    epoch's one-time costs, the environment is recorded, and the state figure names every
    curve: the three state forms and each compact form's difference from fp32."""
    html = unescape(quick_demo.report.read_text(encoding="utf-8"))
    assert html.count("What to take from it.") == 4  # sections 1, 2, 3 and 5
    assert "seeds" not in html
    assert all(f"<a href='#s{i}'>" in html and f"id='s{i}'" in html for i in range(5))
    digits = quick_demo.digits
    assert {r["lr"] for r in digits.values()} == {0.1, 0.05, 1e-3}
    assert "ms per epoch (median after the first)" in html and "first epoch ms" in html
    # which implementation each run's steps took: the stand-in while a kernel compiles
    # (the background compile is on, as shipped), then the fused kernel once it is loaded
    assert "ran on" in html and digits["SGD"]["ran on"] == "torch.optim"
    # (the stand-in for this model's small tensors is torch's foreach: numba_cpu.stand_in_for)
    for name in [n for n in digits if n.startswith("RMSprop")]:
        assert digits[name]["ran on"] in ("foreach", "numba", "foreach then numba"), digits[name]
    for what in ("Environment", "python / torch / numba", "impl='auto' for float32 parameters"):
        assert what in html
    legend = quick_demo.memory["legend"]
    for name in ("fp32 state", "bf16 state", "int8 state", "bf16 − fp32", "int8 − fp32"):
        assert legend.count(name) == 3, (name, legend)
    assert "RMSprop loses" in html or "fastest is RMSprop" in html


def test_compact_state_trains_as_well_as_fp32_state(quick_demo):
    """Issue 7's quality bar: same seed, final loss within 2% and accuracy within 0.5
    points of fp32 state, on the digits MLP and the character LSTM."""
    for model in ("digits", "lstm"):
        runs = quick_demo.memory[model]
        for state in ("bf16", "int8"):
            assert abs(runs[state]["loss"] - runs["fp32"]["loss"]) <= 0.02 * runs["fp32"]["loss"], (
                model,
                state,
            )
            assert abs(runs[state]["accuracy"] - runs["fp32"]["accuracy"]) <= 0.005, (model, state)
    assert quick_demo.memory["lstm"]["int8"]["bytes"] < 1.3  # small tensors (biases) stay fp32


def test_demo_command_prints_a_summary(tmp_path, capsys):
    assert main(["demo", "--quick", "--out", str(tmp_path), "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "rmsprop demo: summary" in out and "index.html" in out


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_report_renders_in_headless_chromium(quick_demo, tmp_path):
    shot = tmp_path / "report.png"
    cmd = [
        "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,2400",
        f"--screenshot={shot}", quick_demo.report.as_uri(),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    data = shot.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 50_000  # a blank page is a few KB


def test_presets_explain_diff(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in ("torch", "keras", "tf1", "optax", "timm_tf", "hinton", "graves", "dqn"):
        assert name in out
    assert main(["explain", "tf1"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"v ← v \+ 0\.1·\(g² − v\) +v₀ = 1", out)
    assert "√(v + 1e-10)" in out and "ones_initializer" in out
    assert main(["explain", "torch"]) == 0
    assert "d ← √(v) + 1e-08" in capsys.readouterr().out
    assert main(["diff", "torch", "keras"]) == 0
    out = capsys.readouterr().out
    assert "eps_in_sqrt" in out and "lr_in_momentum" in out and "alpha" in out
    assert "initial_accumulator_value" not in out  # both start at 0


def test_unknown_preset_is_a_clean_error(capsys):
    assert main(["explain", "tf2"]) == 2
    assert "unknown preset 'tf2'; known presets: torch, keras" in capsys.readouterr().err


def test_warmup_refuses_an_unknown_preset_before_compiling_anything(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    assert main(["warmup", "--preset", "tf2", "--preset", "keras"]) == 2
    assert "unknown preset 'tf2'" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.nbi"))  # nothing compiled for the valid one either


def test_python_dash_m_is_the_same_command():
    out = subprocess.run([sys.executable, "-m", "rmsprop", "diff", "tf1", "timm_tf"],
                         capture_output=True, text=True, check=True)  # fmt: skip
    assert "tf1 vs timm_tf" in out.stdout


def test_bench_tiny_smoke(tmp_path):
    import json

    path = tmp_path / "bench.json"
    assert main(["bench", "--suite", "tiny", "--repeats", "2", "--only", "for-loop,numba,single",
                 "--json", str(path)]) == 0  # fmt: skip
    data = json.loads(Path(path).read_text())
    impls = {row["impl"] for row in data["rows"]}
    assert {"torch.optim for-loop", "rmsprop single", "rmsprop numba"} <= impls
    assert data["triad_gbps"]["torch"] > 0
    assert all(row["median_ms"] > 0 for row in data["rows"])


def test_bench_state_suite_compares_the_state_forms(tmp_path, monkeypatch):
    """The state suites time fp32, bf16 and int8 state round-robin (fp32 params, then bf16
    params with stochastic rounding) and report each form's bytes per parameter."""
    import json

    from rmsprop.cli.bench_suites import SUITES, Suite

    shapes = ((32, 64), (8192,))  # a tensor under the 8-bit threshold, one above it
    monkeypatch.setitem(
        SUITES, "state-tiny", Suite("state-tiny", "smoke", shapes, state_params=("fp32", "bf16"))
    )
    path = tmp_path / "bench.json"
    assert main(["bench", "--suite", "state-tiny", "--repeats", "2", "--json", str(path)]) == 0
    rows = json.loads(Path(path).read_text())["rows"]
    assert len(rows) == 3 * 2 * 2  # state forms x configs x param forms
    numel = 32 * 64 + 8192
    plain = {row["impl"]: row for row in rows if row["config"] == "plain"}
    expected_bytes = {  # square_avg only: fp32 4; bf16 2; int8 codes + a scale per 256 (+ fp32 small)
        "fp32": 4.0, "bf16": 2.0, "int8": (4 * 32 * 64 + 8192 + 4 * 8192 / 256) / numel,
    }  # fmt: skip
    for form, per_param in expected_bytes.items():
        for prefix in ("", "bf16 params SR, "):
            row = plain[f"rmsprop auto, {prefix}{form} state"]
            assert row["note"].startswith(f"{per_param:.3f} state bytes/param; ran numba")
            assert row["median_ms"] > 0 and row["speedup_vs_torch"] > 0
    assert plain["rmsprop auto, fp32 state"]["speedup_vs_torch"] == 1.0


@pytest.mark.parametrize(
    "argv",
    [
        ["bench", "--repeats", "0"],
        ["bench", "--repeats", "-3"],
        ["demo", "--out", "/proc/forbidden"],
        ["demo", "--out", "/etc/passwd"],
        ["demo", "--out", "/dev/null/x"],
        ["bench", "--suite", "tiny", "--json", "/dev/null/x.json"],
        ["bench", "--suite", "tiny", "--only", "zzz"],
        ["bench", "--suite", "nope"],
        ["explain", "nope"],
        ["diff", "torch", "nope"],
        ["nope"],
    ],
    ids=lambda argv: " ".join(argv),
)
def test_every_cli_error_is_one_line_and_a_nonzero_exit(argv, capsys):
    """Checked before any long work starts: no traceback, one line on stderr."""
    import time

    start = time.perf_counter()
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    err = capsys.readouterr().err
    assert code not in (0, None)
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and "error" in err
    assert time.perf_counter() - start < 5


def test_bench_device_cuda_without_cuda_is_refused_before_measuring(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is here")
    assert main(["bench", "--suite", "tiny", "--device", "cuda"]) == 2
    assert "torch sees no CUDA device" in capsys.readouterr().err


def _render(show, *args, width=80):
    from rich.console import Console

    console = Console(width=width, record=True, soft_wrap=show.__name__ == "show_explain")
    show(*args, console=console)
    return console.export_text()


def test_tables_fit_80_columns_without_splitting_a_value():
    from rmsprop import PRESETS
    from rmsprop.cli import tables

    text = _render(tables.show_presets)
    assert max(len(line) for line in text.splitlines()) <= 80
    for preset in PRESETS.values():
        for value in (preset.name, tables._fmt(preset.lr), tables._fmt(preset.eps)):
            assert value in text, value
    diff = _render(tables.show_diff, "torch", "sb3_tf_like", {})
    assert max(len(line) for line in diff.splitlines()) <= 80
    assert "initial_accumulator_value" in diff and "sb3_tf_like" in diff


def test_explain_takes_overrides_and_aligns_its_remarks():
    from rmsprop.cli import tables

    text = _render(tables.show_explain, "graves", {"momentum": 0.5, "centered": False})
    assert "graves with momentum=0.5, centered=False" in text
    assert "b ← 0.5·b + η_t·u" in text and "ḡ" not in text.split("why")[0].split("(4)")[1]
    remarks = [line.index(note) for line in text.splitlines()
               for note in ("v₀ =", "eps inside", "lr inside") if note in line]  # fmt: skip
    assert len(remarks) == 3 and len(set(remarks)) == 1


def test_explain_and_diff_overrides_from_the_command_line(capsys):
    assert main(["explain", "tf1", "--momentum", "0.9", "--centered"]) == 0
    out = capsys.readouterr().out
    assert "ḡ ← 0.9·ḡ + 0.1·g" in out and "b ← 0.9·b + η_t·u" in out
    assert main(["diff", "torch", "keras", "--momentum", "0.9", "--no-centered"]) == 0
    assert "lr_in_momentum" in capsys.readouterr().out
    assert main(["explain", "tf1", "--momentum", "2"]) == 2
    assert "Invalid momentum value: 2.0" in capsys.readouterr().err


def test_info_names_versions_back_ends_cache_and_what_auto_takes(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for heading in ("versions", "back ends", "threads", "numba cache", "impl='auto' takes"):
        assert heading in out
    assert "float32 parameters on the CPU: numba: 1 tensor(s) as stored" in out
    assert "float16 parameters on the CPU: single" in out


def test_info_prints_brackets_as_text(monkeypatch, capsys):
    """A back end's reason with brackets (``pip install -e '.[gpu]'``) is printed as is, not
    read as rich markup (which dropped ``[gpu]``)."""
    from rmsprop.cli import info

    reason = "needs triton: pip install triton (in rmsprop's clone: pip install -e '.[gpu]')"
    monkeypatch.setattr(info, "backends", lambda: {"triton": reason})
    assert main(["info"]) == 0
    assert reason in capsys.readouterr().out


def test_a_recorded_run_s_kernels_are_compiled_ahead_by_warmup_on_two_processes(tmp_path):
    """A run with ``RMSPROP_RECORD_KERNELS=FILE`` lists each kernel it loaded once per
    process; ``rmsprop warmup --kernels FILE --jobs 2`` compiles each into another empty
    cache (two processes, each its share), where the step's readiness markers then say so."""
    import json

    from rmsprop.backends import numba_compile

    listing = tmp_path / "kernels.txt"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "first"),
           "RMSPROP_BACKGROUND_COMPILE": "0", "RMSPROP_RECORD_KERNELS": str(listing)}  # fmt: skip
    code = ("import torch, rmsprop\n"
            "for momentum in (0.0, 0.9, 0.0):\n"
            "    p = torch.zeros(1000, requires_grad=True); p.grad = torch.ones(1000)\n"
            "    opt = rmsprop.RMSprop([p], momentum=momentum); opt.step(); opt.step()\n"
            "    assert opt.last_impl[0] == 'numba', opt.last_plan\n")  # fmt: skip
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    lines = [json.loads(line) for line in listing.read_text().splitlines()]
    assert len(lines) == 2 and lines[0][0] != lines[1][0], lines  # plain, momentum: once each
    kernels = numba_compile.read_recorded(listing)
    assert [[list(key[0]), key[1], key[2], math] for key, math in kernels] == lines

    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "second")}
    env.pop("RMSPROP_RECORD_KERNELS", None)
    warm = subprocess.run([sys.executable, "-m", "rmsprop", "warmup", "--kernels", str(listing),
                           "--jobs", "2"], capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    assert warm.returncode == 0, warm.stdout + warm.stderr[-3000:]
    assert warm.stdout.count("fp32 state, float32 params:") == 2, warm.stdout
    assert warm.stdout.count("1 kernel(s) from") == 2, warm.stdout  # one share per process
    folder = numba_compile._find_folder(str(tmp_path / "second"), "", os.path.expanduser("~"))
    for key, math in kernels:
        assert (folder / numba_compile.marker_name(key, math)).exists(), (key, math)


def test_warmup_kernels_refuses_bad_input_by_name(tmp_path, capsys):
    """A file that is missing or holds something other than kernels, ``--jobs 0``, or
    ``--kernels`` with switches: an error naming the option and the line, nothing compiled."""
    bad = tmp_path / "bad.txt"
    bad.write_text('# a comment\n\n[[0, 0], 7, false, "float32"]\n')
    good = tmp_path / "good.txt"
    good.write_text('[[0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 0, false, "float32"]\n')
    cases = [
        (["--kernels", str(tmp_path / "missing.txt")], "cannot be read"),
        (["--kernels", str(bad)], "bad.txt, line 3: not a kernel recorded by RMSPROP_RECORD_KERNELS"),
        (["--kernels", str(good), "--jobs", "0"], "--jobs 0: must be at least 1"),
        (["--kernels", str(good), "--preset", "keras"], "--kernels takes no --preset"),
        (["--jobs", "2"], "--jobs goes with --kernels"),
    ]  # fmt: skip
    stale = {  # another version's slot count, an unknown code, a string for a bool, overflow
        "slots": '[[0, 0], 0, false, "float32"]',
        "code": '[[0, 0, 0, 0, 0, 0, 0, 0, 0, 7], 0, false, "float32"]',
        "bool": '[[0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 0, "false", "float32"]',
        "overflow": '[[0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 1e400, false, "float32"]',
    }
    for name, line in stale.items():
        path = tmp_path / f"{name}.txt"
        path.write_text(line + "\n")
        cases.append((["--kernels", str(path)], f"{name}.txt, line 1: not a kernel recorded"))
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00")
    cases.append((["--kernels", str(binary)], "binary.txt: not a text file of recorded kernels"))
    for argv, message in cases:
        assert main(["warmup", *argv]) == 2
        assert message in capsys.readouterr().err, argv


def test_warmup_compiles_ahead_and_a_later_auto_step_runs_fused_at_once(tmp_path):
    """``rmsprop warmup`` writes the kernels to numba's disk cache: a new process with the
    background compile on then loads the kernel and runs fused within a few steps."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path), "RMSPROP_BACKGROUND_COMPILE": "1"}
    run = subprocess.run([sys.executable, "-m", "rmsprop", "warmup", "--preset", "keras"],
                         capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    assert run.returncode == 0 and "keras, fp32 state, plain" in run.stdout, run.stderr
    code = ("import time, torch, rmsprop\n"
            "p = torch.zeros(1000, requires_grad=True)\n"
            "opt = rmsprop.RMSprop.from_preset([p], 'keras', lr=1e-3)\n"
            "start = time.perf_counter()\n"
            "while time.perf_counter() - start < 30:\n"
            "    p.grad = torch.ones(1000); opt.step()\n"
            "    if opt.last_impl[0] == 'numba': break\n"
            "    time.sleep(0.1)\n"
            "print(opt.last_impl[0], round(time.perf_counter() - start, 1))\n")  # fmt: skip
    after = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env=env, timeout=120)  # fmt: skip
    impl, seconds = after.stdout.split()
    assert impl == "numba" and float(seconds) < 15, after.stdout + after.stderr[-2000:]
