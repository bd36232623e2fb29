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

import pytest

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


@pytest.hookimpl(tryfirst=True)  # before ``-m`` selects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``quick`` the first collected case of each test function that is not slow."""
    seen: set[tuple[str, str]] = set()
    for item in items:
        key = (item.nodeid.split("::")[0], getattr(item, "originalname", item.name))
        if key not in seen and item.get_closest_marker("slow") is None:
            item.add_marker(pytest.mark.quick)
            seen.add(key)


@pytest.fixture
def compile_in_place(monkeypatch):
    """``impl="auto"`` compiles (or loads) a fused kernel in the step that first needs it,
    as with ``RMSPROP_BACKGROUND_COMPILE=0``: for tests about what auto runs once the
    kernel is there, not about the first steps of a fresh install."""
    monkeypatch.setenv("RMSPROP_BACKGROUND_COMPILE", "0")
