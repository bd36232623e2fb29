"""Shared test setup: Keras runs on the torch backend; parity helpers."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Kernels compile in the test process (a test that checks the background compile, which
# users get, turns it on in a subprocess of its own).
os.environ.setdefault("RMSPROP_BACKGROUND_COMPILE", "0")

# Triton kernels run on the CPU under Triton's interpreter when there is no GPU. This must
# be set before a kernel is defined, so it is set here, before any test imports rmsprop.
try:
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
except ImportError:  # pragma: no cover
    pass
