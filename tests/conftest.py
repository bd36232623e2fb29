"""Shared test setup: Keras runs on the torch backend; parity helpers; the quick tier.

The tests run what users get: the background compile is on (``impl="auto"`` runs the
stand-in path until a fused kernel is loaded). A test about what ``auto`` runs once its
kernel is loaded asks for ``compile_in_place``, which says so.

Tiers: ``python -m pytest`` runs everything (CI); ``-m "not slow"`` leaves out the
long-running suites; ``-m quick`` runs the first case of every test that is not slow (one
parametrisation per test function: every test function, hence every module, is touched
once), in a few minutes.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: the tests run one process there
    fcntl = None

os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# Triton kernels run on the CPU under Triton's interpreter when there is no GPU. This must
# be set before a kernel is defined, so it is set here, before any test imports rmsprop.
try:
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
except ImportError:  # pragma: no cover
    pass


#: tests the quick tier leaves to the full run: each starts other Python processes (torch's
#: import and a kernel load in each, 10-60 s on 2 cores) or trains for many seconds; the
#: modules they exercise are touched by other quick tests
QUICK_LEAVES_OUT = (
    "tests/distributed/",  # process groups of two ranks
    # Keras on its other backends: one pytest process each (started only for this test)
    "tests/frontends/test_keras.py::test_every_keras_test_on_the_other_backends",
    "tests/cli/test_cli.py::test_warmup_compiles_ahead",  # a compile, then a new process
    "tests/cli/test_cli.py::test_a_recorded_run",  # compiles, then two processes compile
    "tests/cli/test_cli.py::test_demo_command_prints_a_summary",  # the report tests run the demo
    "tests/optim/test_reliability.py::test_fuzz_no_crash",  # hundreds of random steps
    "tests/optim/test_reliability.py::test_resume_in_a_new_process",
    "tests/backends/test_warm_up.py::test_with_no_writable_cache",
    "tests/backends/test_numba.py::test_compiled_once_then_loaded",
)


@pytest.fixture(autouse=True)
def _alone_or_beside_others(request: pytest.FixtureRequest):
    """Under ``-n`` (pytest-xdist), a test marked ``alone`` runs while no other test runs
    (it times something, or waits for a compile that runs at the lowest CPU priority and
    so only on an idle core); the others run side by side. Two file locks shared by the
    workers: ``running`` (shared by the tests that run side by side, exclusive for one
    alone) and ``gate`` (held by the test that waits to run alone, so no new test starts
    meanwhile)."""
    uid = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if uid is None or fcntl is None:  # one process runs every test: nothing to share
        yield
        return
    folder = Path(tempfile.gettempdir()) / f"rmsprop-tests-{uid}"
    folder.mkdir(exist_ok=True)
    alone = request.node.get_closest_marker("alone") is not None
    with open(folder / "gate", "a") as gate, open(folder / "running", "a") as running:
        fcntl.flock(gate, fcntl.LOCK_EX)
        fcntl.flock(running, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        if not alone:
            fcntl.flock(gate, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(running, fcntl.LOCK_UN)
            fcntl.flock(gate, fcntl.LOCK_UN)


#: the most test workers ``-n auto`` starts: each imports torch, JAX, TensorFlow and Keras
#: (about 1.5 GB), and the tests that start processes of their own want cores left for them
MAX_WORKERS = 4


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: one worker per core, at most ``MAX_WORKERS``."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(MAX_WORKERS, cores or 1))


@pytest.hookimpl(tryfirst=True)  # before ``-m`` selects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``quick`` the first collected case of each test function that is not slow
    (nor in ``QUICK_LEAVES_OUT``)."""
    seen: set[tuple[str, str]] = set()
    for item in items:
        key = (item.nodeid.split("::")[0], getattr(item, "originalname", item.name))
        if (key not in seen and item.get_closest_marker("slow") is None
                and not item.nodeid.startswith(QUICK_LEAVES_OUT)):  # fmt: skip
            item.add_marker(pytest.mark.quick)
            seen.add(key)


@pytest.fixture
def ieee_sqrt(monkeypatch):
    """torch's vectorised CPU sqrt is not correctly rounded (AVX-512 builds; MKL's VML), the
    kernels' is: the torch paths get a correctly rounded sqrt (NumPy's, on the tensor's
    device), per tensor and foreach, so they can be compared with a kernel bit for bit."""
    import numpy as np
    import torch

    def sqrt(t):
        return torch.from_numpy(np.sqrt(t.detach().cpu().numpy())).to(t.device)

    monkeypatch.setattr(torch.Tensor, "sqrt", sqrt)
    monkeypatch.setattr(torch.Tensor, "sqrt_", lambda t: t.copy_(sqrt(t)))
    monkeypatch.setattr(torch, "_foreach_sqrt", lambda ts: [sqrt(t) for t in ts])
    monkeypatch.setattr(torch, "_foreach_sqrt_", lambda ts: [t.copy_(sqrt(t)) for t in ts])


@pytest.fixture
def compile_in_place(monkeypatch):
    """``impl="auto"`` compiles (or loads) a fused kernel in the step that first needs it,
    as with ``RMSPROP_BACKGROUND_COMPILE=0``: for tests about what auto runs once the
    kernel is there, not about the first steps of a fresh install."""
    monkeypatch.setenv("RMSPROP_BACKGROUND_COMPILE", "0")
