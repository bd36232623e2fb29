"""rmsprop: every RMSprop variant, reproduced exactly, fast.

- ``rmsprop.RMSprop``: the PyTorch optimizer (a drop-in for ``torch.optim.RMSprop``,
  with every framework's switches and presets). Loads torch on first use.
- ``rmsprop.reference``: the NumPy reference, optax-style pure transforms.
- ``rmsprop.optax``: the same for JAX, as optax transforms (loads JAX on first use).
- ``rmsprop.keras``: the same for Keras 3, an optimizer for every backend.
- ``rmsprop.port``: a framework's optimizer description -> the exact equivalent in each.
- ``rmsprop.PRESETS``: name -> :class:`rmsprop.presets.Preset`, pure data.

``import rmsprop`` needs only NumPy.
"""

from __future__ import annotations

from typing import Any

from . import _fork, reference  # noqa: F401 (_fork: the fork hook, registered now)
from .algorithm import ALGORITHM
from .presets import PRESETS, Preset, get_preset

__version__ = "0.1.0"

#: attribute -> (module, attribute of it or None for the module itself, what it needs)
_LAZY = {
    "RMSprop": ("rmsprop.optim", "RMSprop", "torch"),
    "optim": ("rmsprop.optim", None, "torch"),
    "optax": ("rmsprop.optax", None, None),  # says itself what to install
    "keras": ("rmsprop.keras", None, None),
    "port": ("rmsprop.port", None, None),
}


def __getattr__(name: str) -> Any:
    """Import a front end on first use, with an ImportError that says what to install."""
    if name not in _LAZY:
        raise AttributeError(f"module 'rmsprop' has no attribute {name!r}")
    module_name, attribute, needs = _LAZY[name]
    if needs == "torch":
        try:
            import torch  # noqa: F401
        except ImportError as err:
            raise ImportError(
                f"rmsprop.{name} needs PyTorch: pip install torch (in rmsprop's clone: pip install -e '.[torch]')"
            ) from err
    import importlib

    module = importlib.import_module(module_name)
    return module if attribute is None else getattr(module, attribute)


__all__ = ["ALGORITHM", "PRESETS", "Preset", "RMSprop", "get_preset", "reference"]
