"""Getting the fused CPU kernels compiled without making a step wait: one compile process
per kernel cache, shared by every program on the machine.

A kernel is compiled once per switch combination, storage and dtype (2-4 s each on two
cores, 11-12 s with 8-bit state, about 6 s more centered: ``benchmarks/kernel_compile.py``,
BENCHMARKS.md) and cached on disk by
numba. With ``impl="auto"``, a step whose kernel is not loaded yet does not wait: the
planner asks :func:`ready` and, if not, :func:`prepare` requests the kernel and steps run
the stand-in path meanwhile (torch's operations, per tensor or foreach, with the kernel's
correctly rounded square root: the same bits; ``numba_cpu.stand_in_for``). Once the
kernel is in the cache, a thread of this process loads it (numba's import and the load
take a second or two) and later steps run fused.

The protocol lives in numba's cache folder (:func:`cache_folder`, found as numba finds
it), so every program that shares a cache shares it:

- ``rmsprop-requests/NAME.PID``: program PID asked for kernel NAME (written atomically).
- ``rmsprop-compile.lock``: held (``flock``) by the one compile process of this folder.
  A program that requests a kernel takes the lock if it is free and hands it to the
  compile process it starts, so at most one runs per folder, whatever the number of
  programs (``torchrun`` ranks, a sweep, test workers).
- ``rmsprop-compile.json``: that process, the kernel it compiles, and since when
  (``rmsprop info`` shows it).
- ``rmsprop-kernel-HASH.ready`` / ``.failed``: a kernel compiled into the cache here, or
  its compile failed (the text says why). The name changes with the kernels' source and
  numba's version, as numba's own cache does.
- ``rmsprop-compile.log``: one line per kernel compiled: when, which, the outcome, the
  seconds it took, by which process.

The compile process takes the oldest request, compiles it, and exits when the queue is
empty. Requests outlive the program that wrote them: a short program's kernels are
compiled after it exits, once each, so that its next run finds them in the cache; no
kernel is compiled that no program asked for. It runs at the lowest CPU priority, in the
program's own session (a session of its own would get an equal share of the CPU under
Linux's autogroup scheduling, whatever its nice value): training comes first, and on a
machine whose cores the training keeps busy the compile waits for idle time (``rmsprop
warmup`` compiles ahead of time). After ``RECYCLE_AFTER`` kernels it starts afresh in
place (``exec``, the lock kept), which bounds its memory (LLVM keeps what it compiled).

A forked child of a process that has imported numba never enters a numba kernel (its
thread pool and compiler locks were copied mid-state by ``fork``; ``rmsprop._fork`` has
the rules): ``auto`` runs the single-tensor path there and an explicit ``impl="numba"``
says why not. With no writable cache folder at all, numba cannot compile: ``auto`` runs
the single-tensor path, with one log line.
``RMSPROP_BACKGROUND_COMPILE=0`` compiles and loads in the step instead (as an explicit
``impl="numba"`` always does); ``rmsprop warmup`` compiles ahead of time.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import _fork

log = logging.getLogger("rmsprop")

Key = tuple[Any, ...]  # (switch flags, storage, bf16 params): see numba_cpu.kernel_key

LOOK_EVERY = 0.25  # seconds between two looks at the cache for a kernel a step waits for
RECYCLE_AFTER = 8  # kernels one compile process compiles before a fresh one takes over
KERNELS_SOURCE = Path(os.path.abspath(os.path.join(os.path.dirname(__file__), "numba_kernels.py")))
LOCK, STATUS, REQUESTS = "rmsprop-compile.lock", "rmsprop-compile.json", "rmsprop-requests"
HISTORY = "rmsprop-compile.log"  # one line per kernel compiled here: when, name, outcome

_COMPILED: set[str] = set()  # kernels this process has run (loaded or compiled)
_LOADERS: dict[str, threading.Thread] = {}  # kernels being loaded (or compiled) by a thread
_REQUESTED: set[Path] = set()  # this process's request files
_NEXT_LOOK: dict[str, float] = {}  # kernel -> when a step looks at the cache again
_STARTED: list[subprocess.Popen] = []  # compile processes this process started
_SAID: set[str] = set()  # reasons already logged


def background() -> bool:
    """Compile in a separate process (the default) unless RMSPROP_BACKGROUND_COMPILE=0."""
    return os.environ.get("RMSPROP_BACKGROUND_COMPILE", "1") != "0"


@contextlib.contextmanager
def in_place() -> Iterator[None]:
    """Within: a step compiles (or loads) the kernel it needs itself, as with
    ``RMSPROP_BACKGROUND_COMPILE=0`` (a benchmark times the fused kernel, ``rmsprop info``
    asks what ``auto`` runs once it is there)."""
    previous = os.environ.get("RMSPROP_BACKGROUND_COMPILE")
    os.environ["RMSPROP_BACKGROUND_COMPILE"] = "0"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["RMSPROP_BACKGROUND_COMPILE"]
        else:
            os.environ["RMSPROP_BACKGROUND_COMPILE"] = previous


def unavailable_reason() -> str | None:
    """Why this process cannot run numba's kernels although numba is installed (None: it
    can): forked from a process that had imported numba, or no writable cache folder.
    Said once in the log: ``auto`` then runs the single-tensor path."""
    if _fork.parent_had_numba:
        reason = ("this process was forked from one that had loaded numba, whose thread pool "
                  "and compiler are not fork-safe; start it with the 'spawn' start method "
                  "(multiprocessing.set_start_method('spawn')) to run the fused kernel")  # fmt: skip
    elif cache_folder() is None:
        reason = ("numba has no writable folder for its kernel cache (beside the package, "
                  "under HOME or in NUMBA_CACHE_DIR); set NUMBA_CACHE_DIR to a writable folder")  # fmt: skip
    else:
        return None
    if reason not in _SAID:
        _SAID.add(reason)
        log.warning("rmsprop: the fused CPU kernel is not used: %s", reason)
    return reason


def ready(key: Key, math: str) -> bool:
    """Is the kernel loaded in this process? If not, ``prepare`` gets it there without
    making a step wait."""
    return marker_name(key, math) in _COMPILED


def any_loaded() -> bool:
    """Has this process loaded a kernel (so numba is imported and loading one is cheap)?"""
    return bool(_COMPILED)


def prepare(key: Key, math: str) -> None:
    """Get the kernel ready without blocking: requested from the folder's compile process
    (started if none runs), then, once the cache has it, loaded by a thread. Cheap to call
    on every step until ``ready``: it looks at the cache every ``LOOK_EVERY`` seconds."""
    name = marker_name(key, math)
    now = time.monotonic()
    if name in _COMPILED or name in _LOADERS or now < _NEXT_LOOK.get(name, 0.0):
        return
    _NEXT_LOOK[name] = now + LOOK_EVERY
    folder = cache_folder()
    if folder is None:  # pragma: no cover - the planner asks unavailable_reason first
        return
    failed = folder / name.replace(".ready", ".failed")
    if not done(folder, name):
        _request(folder, key, math, name)
        start_compiler(folder)
        return
    if failed.exists():
        log.warning("the background compile of a numba kernel failed (%s); loading it in a "
                    "thread, where the error is reported", failed)  # fmt: skip
    _withdraw(folder, name)
    _LOADERS[name] = threading.Thread(target=_load, args=(key, math), daemon=True)
    _LOADERS[name].start()


def await_the_compiler(key: Key, math: str) -> None:
    """Before this process compiles a kernel itself (an explicit ``impl="numba"``, or
    ``RMSPROP_BACKGROUND_COMPILE=0``): if the folder's compile process is compiling that
    kernel now, wait for it and load it from the cache, rather than compile it twice."""
    folder = cache_folder()
    name = marker_name(key, math)
    if folder is None or name in _COMPILED:
        return
    while not (folder / name).exists():
        status = compiler_status(folder)
        if status is None or status.get("kernel") != name:
            return
        time.sleep(0.1)


def _load(key: Key, math: str) -> None:
    """Load the kernel from the disk cache (compiling it if the cache lacks it) by running
    it once on dummy data; then steps take it."""
    try:
        compile_here(key, math)
    except Exception:  # pragma: no cover - a foreground step will say what is wrong
        log.exception("loading a numba kernel failed; steps stay on the stand-in path")


def compile_here(key: Key, math: str) -> None:
    """Compile (or load from the disk cache) the kernel of ``key`` in this process."""
    from ..lowbit.forms import Storage
    from . import numba_kernels

    flags, storage, bf16 = key
    numba_kernels.compile_kernel((tuple(flags), Storage(storage), bool(bf16)), math)
    mark(key, math)


# ------------------------------------------------------------------ the requests
def _request(folder: Path, key: Key, math: str, name: str) -> None:
    """Write this process's request for kernel ``name`` (once; atomically)."""
    path = folder / REQUESTS / f"{name}.{os.getpid()}"
    if path in _REQUESTED and path.exists():
        return
    flags, storage, bf16 = key
    _write_atomically(path, json.dumps([list(flags), int(storage), bool(bf16), math, name]))
    _REQUESTED.add(path)
    log.info("compiling a fused CPU kernel in the background; until it is ready, steps run "
             "the stand-in path (the same bits)")  # fmt: skip


def _withdraw(folder: Path, name: str) -> None:
    """Remove this process's request for kernel ``name`` (it is compiled, or failed)."""
    path = folder / REQUESTS / f"{name}.{os.getpid()}"
    _REQUESTED.discard(path)
    _remove(path)


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def waiting(folder: Path) -> list[tuple[float, str, list[Any]]]:
    """The kernels asked for that are neither compiled nor failed, oldest request first:
    (time, name, request). Requests of kernels already done are removed on the way."""
    jobs: dict[str, tuple[float, list[Any]]] = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder / REQUESTS):
            name, _, pid = entry.name.rpartition(".")
            if entry.name.startswith(".") or not pid.isdigit():
                continue
            if done(folder, name):
                _remove(entry.path)
                continue
            try:
                when = entry.stat().st_mtime
                request = json.loads(Path(entry.path).read_text())
            except (OSError, ValueError):
                continue
            if name not in jobs or when < jobs[name][0]:
                jobs[name] = (when, request)
    return sorted((when, name, request) for name, (when, request) in jobs.items())


def done(folder: Path, name: str) -> bool:
    """Is kernel ``name`` compiled into the cache, or has its compile failed?"""
    return (folder / name).exists() or (folder / name.replace(".ready", ".failed")).exists()


def _remove(path: str | Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


# ------------------------------------------------------------------ the compile process
def _try_lock(folder: Path) -> int | None:
    """An open descriptor holding the folder's compile lock, or None if another holds it."""
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def start_compiler(folder: Path) -> bool:
    """Start the folder's compile process unless one runs; True if this call started it.
    The lock is taken here and handed to the process, so two programs never both start
    one."""
    try:
        fd = _try_lock(folder)
    except OSError:
        return False
    if fd is None:
        return False
    try:
        process = _spawn(folder, fd)
    finally:
        os.close(fd)  # the process holds the lock now
    _STARTED.append(process)
    # its exit status is collected as it ends (no zombie while the program goes on)
    threading.Thread(target=process.wait, daemon=True, name="rmsprop-compile-reaper").start()
    return True


def _command(folder: Path, fd: int) -> list[str]:
    """The compile process's command line (this module by its own name: in the compile
    process ``__name__`` is ``"__main__"``)."""
    return [sys.executable, "-m", __spec__.name, str(folder), str(fd)]


def _spawn(folder: Path, fd: int) -> subprocess.Popen:
    return subprocess.Popen(
        _command(folder, fd), pass_fds=(fd,),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    # (not a session of its own: Linux's autogroup scheduling would then share the CPU
    # between the session and the program's as equals, whatever its nice value says)


def compiler_status(folder: Path) -> dict[str, Any] | None:
    """The folder's compile process (pid, kernel, since, compiled), or None if none runs."""
    try:
        status = json.loads((folder / STATUS).read_text())
    except (OSError, ValueError):
        return None
    return status if _alive(int(status.get("pid", 0))) else None


def _serve(folder: Path, fd: int) -> None:
    """The compile process: holding the lock (``fd``), compile the oldest request, one after
    another, at the lowest CPU priority (taken before anything is imported: see the end of
    this file); exit when none is left."""
    compiled = 0
    while True:
        jobs = waiting(folder)
        if not jobs:
            _remove(folder / STATUS)
            os.close(fd)  # releases the lock; then look once more, for a request written
            jobs = waiting(folder)  # while this process was deciding to exit
            if not jobs or (fd := _try_lock(folder)) is None:
                return
            continue
        if compiled >= RECYCLE_AFTER:  # a fresh process keeps the memory bounded
            _start_afresh(folder, fd)
        _, name, (flags, storage, bf16, math, _) = jobs[0]
        status = {"pid": os.getpid(), "kernel": name, "since": time.time(), "compiled": compiled}
        _write_atomically(folder / STATUS, json.dumps(status))
        began, outcome = time.perf_counter(), "ok"
        try:
            compile_here((tuple(flags), storage, bf16), math)
            # the name asked for, too (the kernels' source may have changed since: the
            # requester's name was taken from the source it had then)
            (folder / name).touch()
        except Exception as err:  # the waiting programs load it in a thread and report it
            _write_atomically(folder / name.replace(".ready", ".failed"), repr(err))
            outcome = "failed"
        compiled += 1
        for request in (folder / REQUESTS).glob(f"{name}.*"):  # asked for, and answered
            _remove(request)
        with contextlib.suppress(OSError), open(folder / HISTORY, "a") as history:
            history.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {name} {outcome} "
                          f"{time.perf_counter() - began:.1f}s pid {os.getpid()}\n")  # fmt: skip


def _start_afresh(folder: Path, fd: int) -> None:
    """The compile process replaced by a fresh one in place (``exec``: the same process,
    its memory freed, the lock ``fd`` still held): never two compile processes, not even
    for the moment an old one would take to exit."""
    os.set_inheritable(fd, True)
    os.execv(sys.executable, _command(folder, fd))


# ------------------------------------------------------------------ markers and the folder
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

    source = KERNELS_SOURCE.stat()
    return source.st_mtime_ns, source.st_size, importlib.metadata.version("numba")


def cache_folder() -> Path | None:
    """The folder numba caches the kernels in, found in numba's order: ``NUMBA_CACHE_DIR``,
    ``__pycache__`` beside the kernels' source, the user's cache (``XDG_CACHE_HOME`` or
    ``~/.cache``, under ``numba``), each only if it can be written (numba's own test).
    None when none can: numba cannot cache (nor compile) the kernels here."""
    return _find_folder(
        os.environ.get("NUMBA_CACHE_DIR", ""),
        os.environ.get("XDG_CACHE_HOME", ""),
        os.path.expanduser("~"),
    )


@functools.lru_cache(maxsize=8)
def _find_folder(numba_cache_dir: str, xdg_cache_home: str, home: str) -> Path | None:
    source_dir = os.path.dirname(str(KERNELS_SOURCE))
    subpath = f"{os.path.basename(source_dir)}_{hashlib.sha1(source_dir.encode()).hexdigest()}"
    candidates = [os.path.join(source_dir, "__pycache__")]
    if numba_cache_dir:
        candidates.insert(0, os.path.join(numba_cache_dir, subpath))
    if sys.platform == "darwin":
        user = os.path.join(home, "Library", "Caches")
    else:
        user = xdg_cache_home or os.path.join(home, ".cache")
    candidates.append(os.path.join(user, "numba", subpath))
    for candidate in candidates:
        try:
            os.makedirs(candidate, exist_ok=True)
            tempfile.TemporaryFile(dir=candidate).close()
        except OSError:
            continue
        return Path(candidate)
    return None


def mark(key: Key, math: str) -> None:
    """Record that the kernel is loaded here and compiled in the disk cache (and, with
    ``RMSPROP_RECORD_KERNELS`` set, in that file: ``record``)."""
    name = marker_name(key, math)
    if name in _COMPILED:
        return
    folder = cache_folder()
    if folder is not None:
        with contextlib.suppress(OSError):
            (folder / name).touch()
            _withdraw(folder, name)
    _COMPILED.add(name)
    record(key, math)


RECORD = "RMSPROP_RECORD_KERNELS"


def record(key: Key, math: str) -> None:
    """With ``RMSPROP_RECORD_KERNELS=FILE``: append the kernel this process loaded (once per
    process) to FILE, one JSON line ``[flags, storage, bf16 params, math]``, for ``rmsprop
    warmup --kernels FILE`` to compile ahead of time (e.g. into a container image). Every
    process that inherits the variable appends to the same file (one short ``O_APPEND``
    write: lines do not interleave)."""
    path = os.environ.get(RECORD)
    if not path:
        return
    line = recorded_line(key, math)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    except OSError as err:
        said = f"{RECORD}={path}: {err.strerror}"
        if said not in _SAID:
            _SAID.add(said)
            log.warning("rmsprop: the kernels this process loads are not recorded: %s", said)


def recorded_line(key: Key, math: str) -> str:
    """One kernel as a line of a recorded file (``read_recorded`` reads it back)."""
    flags, storage, bf16 = key
    return json.dumps([list(flags), int(storage), bool(bf16), math]) + "\n"


def read_recorded(path: Path) -> list[tuple[Key, str]]:
    """The kernels listed in ``path`` (``record``'s lines; blank lines and ``#`` comments
    skipped), each once, in order. ``ValueError`` naming the line if one is not a kernel of
    this version (its number of switch slots, codes 0-2, storage 0-2, a bool, a math dtype)."""
    from .base import Hyper

    slots = len(Hyper(0.9, 1e-8, 0.0, 0.0, False, False).kernel_switches()) + 1
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file of recorded kernels") from None
    kernels: dict[tuple[Key, str], None] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            flags, storage, bf16, math = json.loads(line)
            if not (isinstance(flags, list) and len(flags) == slots
                    and all(type(f) is int and 0 <= f <= 2 for f in flags)
                    and type(storage) is int and 0 <= storage <= 2 and type(bf16) is bool
                    and math in ("float32", "float64")):  # fmt: skip
                raise ValueError
            key = (tuple(flags), storage, bf16)
        except (ValueError, TypeError) as err:
            raise ValueError(f"{path}, line {number}: not a kernel recorded by "
                             f"{RECORD} ([flags, storage, bf16 params, math]): {line!r}") from err  # fmt: skip
        kernels[(key, math)] = None
    return list(kernels)


def _after_fork_in_child() -> None:
    """A forked child starts with none of its parent's loads, requests or processes
    (whether it may use numba at all: ``rmsprop._fork``)."""
    _COMPILED.clear()
    _LOADERS.clear()
    _REQUESTED.clear()
    _NEXT_LOOK.clear()
    _STARTED.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


if __name__ == "__main__":
    # The training processes come first, from this process's first instruction on: it runs
    # at the lowest priority before it imports numba and torch (seconds of CPU at start).
    # (This module imports neither at its top; ``python -m`` imported only light packages.)
    with contextlib.suppress(OSError):
        os.nice(19)
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C meant for the program does not
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # cut a compile short; it exits when done
    _serve(Path(sys.argv[1]), int(sys.argv[2]))
