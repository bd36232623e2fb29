"""rmsprop: every RMSprop variant, reproduced exactly, fast.

- ``rmsprop.RMSprop``: the PyTorch optimizer (a drop-in for ``torch.optim.RMSprop``,
  with every framework's switches and presets). Loads torch on first use.
- ``rmsprop.reference``: the NumPy reference, optax-style pure transforms.
- ``rmsprop.PRESETS``: name -> :class:`rmsprop.presets.Preset`, pure data.

``import rmsprop`` needs only NumPy.
"""

from __future__ import annotations

from typing import Any

from . import reference
from .algorithm import ALGORITHM
from .presets import PRESETS, Preset, get_preset

__version__ = "0.1.0"

_LAZY = {"RMSprop": "rmsprop.optim", "optim": "rmsprop.optim"}


def __getattr__(name: str) -> Any:
    """Import the torch side on first use, with an ImportError that says what to install."""
    if name not in _LAZY:
        raise AttributeError(f"module 'rmsprop' has no attribute {name!r}")
    try:
        import torch  # noqa: F401
    except ImportError as err:
        raise ImportError(
            f"rmsprop.{name} needs PyTorch: pip install 'rmsprop[torch]' (or pip install torch)"
        ) from err
    import importlib

    module = importlib.import_module(_LAZY[name])
    return module if name == "optim" else getattr(module, name)


__all__ = ["ALGORITHM", "PRESETS", "Preset", "RMSprop", "get_preset", "reference"]
