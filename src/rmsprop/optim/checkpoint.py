"""Saving and loading optimizer state to a file, safely.

``load`` reads with ``torch.load(..., weights_only=True)``: a checkpoint can hold tensors,
numbers, strings and dtypes, and no pickled code runs. The state is checked against the
optimizer's parameters before anything changes (``RMSprop.load_state_dict``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def save(optimizer: torch.optim.Optimizer, path: str | Path) -> None:
    """Write ``optimizer.state_dict()`` to ``path``."""
    torch.save(optimizer.state_dict(), path)


def load(optimizer: torch.optim.Optimizer, path: str | Path, map_location: Any = "cpu") -> None:
    """Load a checkpoint written by :func:`save` (or by ``torch.save(opt.state_dict())``)."""
    state = torch.load(path, map_location=map_location, weights_only=True)
    optimizer.load_state_dict(state)
