"""Two processes share a list of jobs: this one and one helper (spawned, so nothing of
this process's state is copied into it).

The helper takes jobs from the front of the list, one at a time, as it finishes the
previous one; this process asks for a result with :meth:`SharedWork.result`, which runs
the job here when the helper has not taken it yet, or waits for the helper's result.
Asking for the last jobs first lets both processes stay busy to the end (work
stealing from the back). Where no process can be started, or the helper dies, every job
it did not finish runs here, so results never depend on where a job ran (the jobs are
deterministic functions of their arguments).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any


@dataclass(eq=False)
class Job:
    """``function(*args)``: a module-level function and picklable arguments and result."""

    function: Callable[..., Any]
    args: tuple[Any, ...] = ()
    future: Future | None = None  # set when the helper takes it


class SharedWork:
    """``with SharedWork(jobs) as work: ... work.result(job)``; the helper's CPU priority
    is lowered by ``nice`` (0 to 19, as the ``nice`` command), so that the work in this
    process, when it is the longer, keeps the cores."""

    def __init__(self, jobs: list[Job], nice: int = 0) -> None:
        self._waiting = deque(jobs)
        self._nice = nice
        self._lock = threading.Lock()
        self._pool = None
        self._running: Future | None = None
        self._later: list[tuple[Job, Callable[[Any], None] | None]] = []

    def __enter__(self) -> SharedWork:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        try:
            self._pool = ProcessPoolExecutor(
                1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=lower_priority,
                initargs=(self._nice,),
            )
        except (OSError, NotImplementedError, RuntimeError):  # no processes here
            self._pool = None
        self._give_next()
        return self

    def _give_next(self, finished: Future | None = None) -> None:
        """Hand an idle helper the first waiting job (called again as each one finishes)."""
        with self._lock:
            if finished is not None and finished is self._running:
                self._running = None
            if self._pool is None or self._running is not None or not self._waiting:
                return
            job = self._waiting[0]
            try:
                job.future = self._pool.submit(job.function, *job.args)
            except RuntimeError:  # the helper died or is shut down: the rest run here
                return
            self._waiting.popleft()
            self._running = job.future
        job.future.add_done_callback(self._give_next)

    def later(
        self, function: Callable[..., Any], args: tuple, then: Callable[[Any], None] | None = None
    ) -> None:
        """Add a job whose result is only needed at :meth:`finish`, which passes it to
        ``then``."""
        job = Job(function, args)
        with self._lock:
            self._waiting.append(job)
            self._later.append((job, then))
        self._give_next()

    def finish(self) -> None:
        """Wait for (or run here) every job added with :meth:`later`, newest first."""
        while self._later:
            job, then = self._later.pop()
            value = self.result(job)
            if then is not None:
                then(value)

    def result(self, job: Job) -> Any:
        """The job's result: computed here if the helper has not taken it (or died)."""
        from concurrent.futures.process import BrokenProcessPool

        with self._lock:
            here = job in self._waiting
            if here:
                self._waiting.remove(job)
        if not here and job.future is not None:
            try:
                return job.future.result()
            except BrokenProcessPool:  # killed (out of memory, say): run it here
                pass
        return job.function(*job.args)

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._waiting.clear()
        if self._pool is not None:  # the helper exits while this process goes on
            self._pool.shutdown(wait=False, cancel_futures=True)


def lower_priority(nice: int) -> None:
    """Lower this process's CPU priority by ``nice`` where the system allows it."""
    with contextlib.suppress(AttributeError, OSError):  # no nice here: the same priority
        os.nice(nice)


def run_now(
    function: Callable[..., Any], args: tuple, then: Callable[[Any], None] | None = None
) -> None:
    """:meth:`SharedWork.later` without a helper: run it here, now."""
    value = function(*args)
    if then is not None:
        then(value)
