"""RMSprop for Keras 3: ``rmsprop.keras.RMSprop``, a ``keras.optimizers.Optimizer`` with
Keras's argument names plus ``preset=`` and every switch, on every Keras backend
(tested on tensorflow, jax and torch), serializable with ``model.save`` / ``keras.models.load_model``.

Needs Keras 3 and a backend: ``pip install keras`` (in rmsprop's clone: ``pip install -e ".[keras]"``,
or ``".[tensorflow]"`` for Keras with TensorFlow's CPU build).
"""

from __future__ import annotations

try:
    import keras
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "rmsprop.keras needs Keras 3 and a backend (torch, jax or tensorflow): pip install "
        "keras (in rmsprop's clone: pip install -e '.[keras]')"
    ) from err

if not keras.__version__.startswith("3"):  # pragma: no cover
    raise ImportError(f"rmsprop.keras needs Keras 3 (found keras {keras.__version__})")

from .optimizer import RMSprop

__all__ = ["RMSprop"]
