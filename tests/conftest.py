"""Shared test setup: Keras runs on the torch backend; parity helpers.

The tests run what users get: the background compile is on (``impl="auto"`` runs the
stand-in path until a fused kernel is loaded). A test about what ``auto`` runs once its
kernel is loaded asks for ``compile_in_place``, which says so.
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


@pytest.fixture
def compile_in_place(monkeypatch):
    """``impl="auto"`` compiles (or loads) a fused kernel in the step that first needs it,
    as with ``RMSPROP_BACKGROUND_COMPILE=0``: for tests about what auto runs once the
    kernel is there, not about the first steps of a fresh install."""
    monkeypatch.setenv("RMSPROP_BACKGROUND_COMPILE", "0")
