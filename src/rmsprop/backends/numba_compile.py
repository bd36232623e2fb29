"""Getting the fused CPU kernels compiled without making a step wait.

A kernel is compiled once per switch combination, storage and dtype (8-30 s each on two
cores) and cached on disk by numba. With ``impl="auto"``, a step whose kernel is not
loaded yet does not wait: the planner asks :func:`ready` and, if not, :func:`prepare`
queues the kernel for one background process, which compiles the kernels it is sent one
after another, at the lowest CPU priority, into numba's disk cache (one numba import for
all of them, and never more than one compile competing with training). Meanwhile steps
run the single-tensor path with an IEEE square root, which gives the kernel's bits. Once
the process reports a kernel compiled, a thread of this process loads it from the cache
(numba's import and the load take a second or two) and later steps run fused.

The process outlives a short program: it finishes the kernels it was sent, so that the
next run finds them in the cache, then exits. A marker file beside numba's cache records
each compiled kernel (its name changes with the kernels' source and numba's version, as
numba's own cache does). ``RMSPROP_BACKGROUND_COMPILE=0`` compiles and loads in the step
instead (as an explicit ``impl="numba"`` always does); ``rmsprop warmup`` compiles ahead
of time.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from ..lowbit.forms import Storage

log = logging.getLogger("rmsprop")

Key = tuple[Any, ...]  # (switch flags, storage, bf16 params): see numba_cpu.kernel_key

_COMPILED: set[str] = set()  # kernels this process has run (loaded or compiled)
_LOADERS: dict[str, threading.Thread] = {}  # kernels being loaded (or compiled) by a thread


def background() -> bool:
    """Compile in a separate process (the default) unless RMSPROP_BACKGROUND_COMPILE=0."""
    return os.environ.get("RMSPROP_BACKGROUND_COMPILE", "1") != "0"


def ready(key: Key, math: str) -> bool:
    """Is the kernel loaded in this process? If not, ``prepare`` gets it there without
    making a step wait."""
    return marker_name(key, math) in _COMPILED


def any_loaded() -> bool:
    """Has this process loaded a kernel (so numba is imported and loading one is cheap)?"""
    return bool(_COMPILED)


def prepare(key: Key, math: str) -> None:
    """Get the kernel ready without blocking: queued for the background compiler (unless a
    marker says the disk cache has it), then loaded by a thread. Idempotent; cheap to call
    on every step until ``ready``."""
    name = marker_name(key, math)
    if name in _COMPILED or name in _LOADERS:
        return
    if not (cache_folder() / name).exists():
        if _COMPILER.pending(name):
            return
        if name not in _COMPILER.failed:
            _COMPILER.send(key, math, name)
            return
        log.warning("the background compile of a numba kernel failed; loading it in a thread")
    _LOADERS[name] = threading.Thread(target=_load, args=(key, math), daemon=True)
    _LOADERS[name].start()


def _load(key: Key, math: str) -> None:
    """Load the kernel from the disk cache (compiling it if the cache lacks it) by running
    it once on dummy data; then steps take it."""
    try:
        compile_here(key, math)
    except Exception:  # pragma: no cover - a foreground step will say what is wrong
        log.exception("loading a numba kernel failed; steps stay on the single-tensor path")


def compile_here(key: Key, math: str) -> None:
    """Compile (or load from the disk cache) the kernel of ``key`` in this process."""
    from . import numba_kernels

    flags, storage, bf16 = key
    numba_kernels.compile_kernel((tuple(flags), Storage(storage), bool(bf16)), math)
    mark(key, math)


class _Compiler:
    """The one background process of this program: kernels are sent as JSON lines on its
    stdin; it answers ``ok NAME`` or ``failed NAME`` on its stdout, read without blocking."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.sent: set[str] = set()
        self.failed: set[str] = set()
        self.unread = b""

    def send(self, key: Key, math: str, name: str) -> None:
        if self.process is None or self.process.poll() is not None:
            self.process = subprocess.Popen(
                [sys.executable, "-m", __name__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            os.set_blocking(self.process.stdout.fileno(), False)
            self.unread = b""
        flags, storage, bf16 = key
        line = json.dumps([list(flags), int(storage), bool(bf16), math, name]) + "\n"
        try:
            self.process.stdin.write(line.encode())
            self.process.stdin.flush()
        except OSError:  # the process died: the kernel is loaded (compiled) by a thread
            self.failed.add(name)
            return
        self.sent.add(name)
        log.info("compiling a fused CPU kernel in the background; until it is ready, steps "
                 "run the single-tensor path (the same bits)")  # fmt: skip

    def pending(self, name: str) -> bool:
        """Sent and not answered yet (the answers that arrived are read here)."""
        if name not in self.sent:
            return False
        self._read()
        if name in self.sent and self.process.poll() is not None:
            self._read()  # its last answers, then whatever it did not answer failed
            self.failed |= self.sent
            self.sent.clear()
        return name in self.sent

    def _read(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while chunk := self.process.stdout.read(65536):
                self.unread += chunk
        *lines, self.unread = self.unread.split(b"\n")
        for line in lines:
            outcome, _, name = line.decode().partition(" ")
            self.sent.discard(name)
            if outcome != "ok":
                self.failed.add(name)


_COMPILER = _Compiler()


def _serve() -> None:
    """The background process: compile each kernel sent on stdin, in order, at the lowest
    priority; answer on stdout. Kernels still queued when the program exits are compiled
    all the same (the next run finds them in the cache)."""
    with contextlib.suppress(OSError):
        os.nice(19)  # the training process comes first
    answers = True
    for line in sys.stdin:
        flags, storage, bf16, math, name = json.loads(line)
        try:
            if not (cache_folder() / name).exists():  # another program may have compiled it
                compile_here((tuple(flags), storage, bf16), math)
            outcome = "ok"
        except Exception:  # the training process loads it in a thread and reports the error
            outcome = "failed"
        if answers:
            try:
                print(outcome, name, flush=True)
            except OSError:  # the program has exited: keep compiling, stop answering
                answers = False


@functools.lru_cache(maxsize=256)
def marker_name(key: Key, math: str) -> str:
    """A name for the compiled kernel of ``key``: it changes with the kernels' source and
    numba's version, as numba's own cache does."""
    flags, storage, bf16 = key
    text = repr((tuple(flags), int(storage), bool(bf16), math, _source_stamp()))
    return "rmsprop-kernel-" + hashlib.sha1(text.encode()).hexdigest()[:20] + ".ready"


@functools.lru_cache(maxsize=1)
def _source_stamp() -> tuple[Any, ...]:
    import importlib.metadata

    source = Path(__file__).with_name("numba_kernels.py").stat()
    return source.st_mtime_ns, source.st_size, importlib.metadata.version("numba")


def cache_folder() -> Path:
    """Where numba caches the kernels (NUMBA_CACHE_DIR, else ``__pycache__`` beside them)."""
    folder = os.environ.get("NUMBA_CACHE_DIR")
    return Path(folder) if folder else Path(__file__).parent / "__pycache__"


def mark(key: Key, math: str) -> None:
    """Record that the kernel is loaded here and compiled in the disk cache."""
    name = marker_name(key, math)
    if name in _COMPILED:
        return
    folder = cache_folder()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).touch()
    except OSError:  # a read-only install: the process-local record still helps
        pass
    _COMPILED.add(name)


if __name__ == "__main__":
    _serve()
