"""The README stays true: its Quick start has exactly two commands, and its NumPy example
runs and recovers slope 2 and intercept 1."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"
CONSTRAINTS = README.parent / "constraints.txt"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_quick_start_has_two_commands():
    section = README.read_text(encoding="utf-8").split("## Quick start", 1)[1].split("## ", 1)[0]
    commands = [line for line in _blocks("bash")[0].splitlines() if line.strip()]
    assert "```bash" in section
    assert len(commands) == 2
    assert commands[0].endswith("rmsprop demo")
    assert "pytest" in commands[1]


def test_the_quick_start_pins_only_releases_pypi_hosts():
    """The Quick start's constraints name no local version label (``torch==2.13.0+cpu``):
    PyPI hosts no such build, so with PyPI alone the install fails to resolve (``.ci/run``
    resolves both Quick start installs with pip's configuration off)."""
    pins = [line.split("#")[0].strip() for line in CONSTRAINTS.read_text().splitlines()]
    pins = [pin for pin in pins if pin]
    assert pins and all("+" not in pin for pin in pins), pins
    assert "-c constraints.txt" in _blocks("bash")[0]
    ci = (README.parent / ".ci" / "run").read_text()
    assert "PIP_CONFIG_FILE=/dev/null" in ci and "--dry-run" in ci


def test_the_demo_install_resolves_whenever_the_test_install_does():
    """``.ci/run`` resolves only the Quick start's test install with PyPI alone: the demo
    install's requirements are among the test install's (the same names and specifiers,
    under the same constraints), so any set of packages that satisfies the one satisfies
    the other."""
    import tomllib

    project = tomllib.loads((README.parent / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    commands = [line for line in _blocks("bash")[0].splitlines() if line.strip()]
    demo_extras = re.search(r'-e "\.\[([^\]]*)\]"', commands[0]).group(1).split(",")
    test_extras = re.search(r'-e "\.\[([^\]]*)\]"', commands[1]).group(1).split(",")
    resolved = (README.parent / ".ci" / "run").read_text()
    assert f"quick_start_resolves {','.join(test_extras)}" in resolved
    demo = {req for extra in demo_extras for req in extras[extra]}
    tested = {req for extra in test_extras for req in extras[extra]}
    assert demo and demo <= tested, sorted(demo - tested)


def test_linear_regression_example_recovers_the_line(capsys):
    code = next(b for b in _blocks("python") if "step_decay" in b)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    params = namespace["params"]
    assert abs(float(params["w"]) - 2) < 0.05
    assert abs(float(params["b"]) - 1) < 0.05
    assert "w" in capsys.readouterr().out
    assert np.isfinite(float(params["w"]))


def test_jax_and_keras_examples_run():
    """The README's JAX and Keras snippets run as written."""
    import pytest

    pytest.importorskip("jax")
    pytest.importorskip("optax")
    pytest.importorskip("keras")
    for marker in ("import rmsprop.optax", "import rmsprop.keras"):
        code = next(b for b in _blocks("python") if marker in b)
        exec(compile(code, "README.md", "exec"), {})


def test_float32_ulps_table_is_what_the_tests_hold():
    """The documentation's float32 table (docs/correctness.md) and the bounds the
    front-end tests assert are one list."""
    import pytest

    pytest.importorskip("jax")
    pytest.importorskip("keras")
    from frontends.test_keras import FLOAT32_ULPS as KERAS
    from frontends.test_optax import FLOAT32_ULPS as JAX

    text = (README.parent / "docs" / "correctness.md").read_text(encoding="utf-8")
    header = next(line for line in text.splitlines() if line.startswith("| preset | torch | keras"))
    presets = [c.strip() for c in header.strip("|").split("|")][1:]
    rows = {}
    for line in text.splitlines():
        if line.startswith(("| JAX (", "| Keras, ")):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = {p: float(v) for p, v in zip(presets, cells[1:])}
    assert rows["JAX (`rmsprop.optax`)"] == {p: float(v) for p, v in JAX.items()}
    assert rows["Keras, torch backend"] == {p: float(v) for p, v in KERAS["torch"].items()}
    assert rows["Keras, jax backend"] == {p: float(v) for p, v in KERAS["jax"].items()}


def test_ci_compiles_the_suites_recorded_kernels_ahead():
    """``.ci/run`` compiles the kernels of ``tests/kernels.txt`` before the tests; the list
    holds kernels this version builds (one flag per switch slot of ``kernel_key``)."""
    import torch

    from rmsprop.backends import numba_compile, numba_cpu
    from rmsprop.backends.base import Hyper
    from rmsprop.lowbit.forms import Storage

    ci = (README.parent / ".ci" / "run").read_text()
    assert "rmsprop warmup --kernels tests/kernels.txt" in ci
    kernels = numba_compile.read_recorded(README.parent / "tests" / "kernels.txt")
    slots = len(numba_cpu.kernel_key(Hyper(0.9, 1e-8, 0, 0, False, False), Storage.FLOAT, False)[0])
    assert len(kernels) >= 10
    assert all(len(key[0]) == slots for key, _ in kernels)
    assert {math for _, math in kernels} <= {str(torch.float32).removeprefix("torch."), "float64"}
