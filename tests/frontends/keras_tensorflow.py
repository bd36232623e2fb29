"""rmsprop.keras on Keras's TensorFlow backend: what only TensorFlow has. Run by
``test_keras.py`` in a pytest process with ``KERAS_BACKEND=tensorflow``."""

from __future__ import annotations

import os

import pytest

if os.environ.get("KERAS_BACKEND") != "tensorflow":  # pragma: no cover
    pytest.skip("runs under KERAS_BACKEND=tensorflow (test_keras.py starts it)",
                allow_module_level=True)  # fmt: skip
