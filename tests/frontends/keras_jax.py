"""rmsprop.keras on Keras's JAX backend: what only JAX has. Run by ``test_keras.py`` in a
pytest process with ``KERAS_BACKEND=jax`` and two virtual CPU devices."""

from __future__ import annotations

import os

import pytest

if os.environ.get("KERAS_BACKEND") != "jax":  # pragma: no cover
    pytest.skip("runs under KERAS_BACKEND=jax (test_keras.py starts it)", allow_module_level=True)
