"""Saving and loading optimizer state to a file, without ever losing a run.

``save`` is atomic: the state is written to a temporary file in the same folder, flushed
to disk (``fsync``) and renamed over the target, so a save that fails part-way (a full
disk, a killed process) leaves the previous checkpoint as it was. ``load`` reads with
``torch.load(..., weights_only=True)`` (tensors, numbers, strings and dtypes; no pickled
code runs) and says which file is missing, empty, truncated, not a checkpoint or another
optimizer's; the state is then checked against the optimizer's parameters before
anything changes (``RMSprop.load_state_dict``).

>>> import tempfile, pathlib, torch, rmsprop
>>> from rmsprop.optim import checkpoint
>>> p = torch.zeros(3, requires_grad=True); opt = rmsprop.RMSprop([p], lr=0.1)
>>> path = pathlib.Path(tempfile.mkdtemp()) / "opt.pt"
>>> checkpoint.save(opt, path); checkpoint.load(opt, path)
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

_UMASK = os.umask(0)  # read once, at import (setting it back at once)
os.umask(_UMASK)
#: what ``torch.load`` raises for a file that is not a whole checkpoint
UNREADABLE = (EOFError, OSError, RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile,
              KeyError, ValueError, AttributeError, IndexError)  # fmt: skip


def save(optimizer: torch.optim.Optimizer, path: str | Path) -> None:
    """Write ``optimizer.state_dict()`` to ``path`` atomically (the old file survives any
    failure)."""
    write_atomically(optimizer.state_dict(), Path(path))


def write_atomically(obj: Any, path: Path) -> None:
    """``torch.save(obj, path)`` through a temporary file in ``path``'s folder, flushed to
    disk and renamed over ``path`` (over the file a symbolic link points to, keeping the
    link); on any failure the temporary file is removed. A new file gets the permissions
    the process's umask gives, an existing one keeps its own."""
    path = path.resolve() if path.is_symlink() else path
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(temporary, path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_UMASK)
        with os.fdopen(handle, "wb") as file:
            torch.save(obj, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """Make the rename durable (the folder's entry), where the system allows it."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def read(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """The state dict in ``path``; ``ValueError`` naming the file when it is empty,
    truncated, or not an optimizer checkpoint (``FileNotFoundError`` when missing)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise ValueError(f"checkpoint {path} is empty (0 bytes): was a save interrupted?")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except UNREADABLE as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(
            f"checkpoint {path} ({path.stat().st_size} bytes) cannot be read: it is truncated "
            f"or was not written by torch.save ({reason})"
        ) from err
    if not isinstance(state, dict) or not {"state", "param_groups"} <= set(state):
        raise ValueError(
            f"checkpoint {path} holds a {type(state).__name__}, not an optimizer state_dict "
            "(a dict with 'state' and 'param_groups')"
        )
    return state


def load(optimizer: torch.optim.Optimizer, path: str | Path, map_location: Any = "cpu") -> None:
    """Load a checkpoint written by :func:`save` (or by ``torch.save(opt.state_dict())``);
    errors name the file."""
    state = read(path, map_location)
    try:
        optimizer.load_state_dict(state)
    except (TypeError, ValueError) as err:
        raise ValueError(f"checkpoint {path}: {err}") from err
