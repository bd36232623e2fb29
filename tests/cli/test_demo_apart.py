"""The demo's NumPy sections run in a second process beside the networks; where no
process can be started, or it dies, they run in the demo's own process with the same
result."""

from __future__ import annotations

import os

import pytest

from rmsprop.cli import demo as demo_module
from rmsprop.cli.demo import _Beside


def pid_and(value: int) -> tuple[int, int]:
    return os.getpid(), value * 2


def die_unless_in(pid: int) -> int:
    if os.getpid() != pid:
        os._exit(3)  # the second process is killed (say, out of memory)
    return pid


def test_the_function_runs_in_a_second_process():
    with _Beside(pid_and, 21) as apart:
        where, value = apart.result()
    assert where != os.getpid() and value == 42


def test_no_process_here_runs_it_in_this_one(monkeypatch):
    import concurrent.futures

    def refuse(*args, **kwargs):
        raise OSError("no semaphores here")

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", refuse)
    with _Beside(pid_and, 21) as apart:
        assert apart.result() == (os.getpid(), 42)


def test_a_process_that_dies_is_replaced_by_this_one():
    with _Beside(die_unless_in, os.getpid()) as apart:
        assert apart.result() == os.getpid()


def test_an_error_in_the_second_process_reaches_the_caller():
    with _Beside(int, "not a number") as apart, pytest.raises(ValueError, match="not a number"):
        apart.result()


def test_the_numpy_sections_give_the_same_numbers_in_either_process(tmp_path):
    """What the report shows does not depend on where sections 1 and 2 ran."""
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    with _Beside(demo_module.numpy_sections, tmp_path / "a", 0, True) as apart:
        _, race_there, there = apart.result()
    _, race_here, here = demo_module.numpy_sections(tmp_path / "b", 0, True)
    assert (there.slope, there.intercept, there.race) == (here.slope, here.intercept, here.race)
    assert race_there.tables == race_here.tables and race_there.conclusion == race_here.conclusion
