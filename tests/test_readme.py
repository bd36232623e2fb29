"""The README stays true: its Quick start has exactly two commands, and its NumPy example
runs and recovers slope 2 and intercept 1."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_quick_start_has_two_commands():
    section = README.read_text(encoding="utf-8").split("## Quick start", 1)[1].split("## ", 1)[0]
    commands = [line for line in _blocks("bash")[0].splitlines() if line.strip()]
    assert "```bash" in section
    assert len(commands) == 2
    assert commands[0].endswith("rmsprop demo")
    assert "pytest" in commands[1]


def test_linear_regression_example_recovers_the_line(capsys):
    code = next(b for b in _blocks("python") if "step_decay" in b)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    params = namespace["params"]
    assert abs(float(params["w"]) - 2) < 0.05
    assert abs(float(params["b"]) - 1) < 0.05
    assert "w" in capsys.readouterr().out
    assert np.isfinite(float(params["w"]))
