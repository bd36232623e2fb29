"""The demo's two processes share its jobs (``rmsprop.cli.shared_work``): the helper
takes them from the front, this process runs those the helper has not taken; where no
process can be started, or the helper dies, they run here, with the same results."""

from __future__ import annotations

import os
import time

import pytest

from rmsprop.cli import demo as demo_module
from rmsprop.cli.demo_memory import train_char_lstm
from rmsprop.cli.shared_work import Job, SharedWork


def pid_and(value: int) -> tuple[int, int]:
    return os.getpid(), value * 2


def slow_pid(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def die_unless_in(pid: int) -> int:
    if os.getpid() != pid:
        os._exit(3)  # the helper is killed (say, out of memory)
    return pid


def test_the_helper_runs_the_jobs_in_order():
    jobs = [Job(pid_and, (n,)) for n in range(4)]
    with SharedWork(jobs) as work:
        deadline = time.monotonic() + 120
        while not all(job.future and job.future.done() for job in jobs):
            assert time.monotonic() < deadline, "the helper did not finish four short jobs"
            time.sleep(0.05)
        results = [work.result(job) for job in jobs]
    assert [value for _, value in results] == [0, 2, 4, 6]
    assert all(pid != os.getpid() for pid, _ in results)


def test_a_job_the_helper_has_not_taken_runs_here():
    busy, later, last = Job(slow_pid, (3.0,)), Job(pid_and, (1,)), Job(pid_and, (2,))
    with SharedWork([busy, later, last]) as work:
        assert work.result(last) == (os.getpid(), 4)  # taken from the back
        assert work.result(later) == (os.getpid(), 2)
        assert work.result(busy) != os.getpid()


def test_no_process_here_runs_every_job_here(monkeypatch):
    import concurrent.futures

    def refuse(*args, **kwargs):
        raise OSError("no semaphores here")

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", refuse)
    jobs = [Job(pid_and, (n,)) for n in range(3)]
    with SharedWork(jobs) as work:
        assert [work.result(job) for job in jobs] == [(os.getpid(), 2 * n) for n in range(3)]


def test_jobs_of_a_helper_that_dies_run_here():
    jobs = [Job(die_unless_in, (os.getpid(),)), Job(pid_and, (5,)), Job(pid_and, (6,))]
    with SharedWork(jobs) as work:
        assert work.result(jobs[0]) == os.getpid()
        assert work.result(jobs[1]) == (os.getpid(), 10)
        assert work.result(jobs[2]) == (os.getpid(), 12)


def test_an_error_in_the_helper_reaches_the_caller():
    job = Job(int, ("not a number",))
    with SharedWork([job]) as work, pytest.raises(ValueError, match="not a number"):
        work.result(job)


def test_the_numpy_sections_give_the_same_numbers_in_either_process(tmp_path):
    """What the report shows does not depend on where sections 1 and 2 ran."""
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    job = Job(demo_module.numpy_sections, (tmp_path / "a", 0, True))
    with SharedWork([job]) as work:
        _, race_there, there = work.result(job)
    _, race_here, here = demo_module.numpy_sections(tmp_path / "b", 0, True)
    assert (there.slope, there.intercept, there.race) == (here.slope, here.intercept, here.race)
    assert race_there.tables == race_here.tables and race_there.conclusion == race_here.conclusion


@pytest.mark.parametrize("state", ["fp32", "int8"])
def test_the_character_lstm_gives_the_same_bits_in_either_process(state):
    job = Job(train_char_lstm, (state, 0, 8))
    with SharedWork([job]) as work:
        there = work.result(job)
    assert job.future is not None  # the helper ran it
    here = train_char_lstm(state, 0, 8)
    assert there[0] == here[0] and there[1] == here[1] and there[3] == here[3]


def test_later_jobs_reach_then_at_finish_newest_first():
    seen = []
    with SharedWork([]) as work:
        for n in range(3):
            work.later(pid_and, (n,), then=seen.append)
        work.finish()
    assert [value for _, value in seen] == [4, 2, 0]


def test_later_without_a_helper_runs_now():
    from rmsprop.cli.shared_work import run_now

    seen = []
    run_now(pid_and, (4,), then=seen.append)
    assert seen == [(os.getpid(), 8)]


def test_the_demo_figures_are_the_same_drawn_in_either_process(tmp_path):
    """The figures of sections 3 and 5 are drawn by the helper: the same PNG bytes."""
    from rmsprop.cli.demo_digits import draw_digits

    curves = {
        "SGD": ([1.0, 0.5, 0.25], [0.5, 0.7, 0.9]),
        "RMSprop": ([1.0, 0.3, 0.1], [0.6, 0.8, 0.95]),
    }
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    with SharedWork([job := Job(draw_digits, (tmp_path / "a", curves))]) as work:
        work.result(job)
    assert job.future is not None  # drawn by the helper
    draw_digits(tmp_path / "b", curves)
    assert (tmp_path / "a/digits.png").read_bytes() == (tmp_path / "b/digits.png").read_bytes()
