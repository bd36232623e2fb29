"""What the command line checks before it starts long work: each returns a clean value or
raises ``UsageError`` with one line that names the option and what is allowed."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path


class UsageError(ValueError):
    """A command-line value that cannot work; printed as one line, exit status 2."""


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not allowed: it must be at least 1")
    return value


def writable_folder(option: str, folder: Path) -> Path:
    """``folder`` exists (made if needed) and a file can be written in it."""
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{option} {folder}: exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".rmsprop-check-"):
            pass
    except OSError as err:
        raise UsageError(f"{option} {folder}: cannot write there ({err.strerror or err})") from None
    return folder


def writable_file(option: str, path: Path) -> Path:
    """A file can be written at ``path`` (its folder exists and takes files; ``path`` is not
    a folder)."""
    if path.is_dir():
        raise UsageError(f"{option} {path}: is a folder, not a file")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise UsageError(f"{option} {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"{option} {path}: cannot write there (permission denied)")
    return path


def device(name: str) -> str:
    """``cuda`` only where torch sees a CUDA device."""
    if name == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UsageError("--device cuda: torch sees no CUDA device here (use --device cpu)")
    return name
