"""Forked processes: whether this one was forked, and whether its parent had imported
numba by then. The hook is registered at ``import rmsprop`` (a process forked before that
is not known as one).

A child forked from a process that had imported numba never enters a numba kernel: its
thread pool and compiler locks were copied mid-state. A child forked before numba was
imported may use numba, on its ``workqueue`` threads (``NUMBA_THREADING_LAYER`` is set
for it, unless already set): GNU OpenMP, numba's default layer, hangs in a child forked
after its parent used OpenMP, as torch does for its own operations.
"""

from __future__ import annotations

import os
import sys

forked = False  # this process was forked (after ``import rmsprop``)
parent_had_numba = False  # ... from a process that had imported numba


def _after_fork_in_child() -> None:
    global forked, parent_had_numba
    forked = True
    parent_had_numba = parent_had_numba or "numba" in sys.modules
    if not parent_had_numba:
        os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")


os.register_at_fork(after_in_child=_after_fork_in_child)
