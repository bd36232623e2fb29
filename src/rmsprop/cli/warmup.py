"""``rmsprop warmup``: compile the fused CPU kernels ahead of time, into numba's disk
cache, so that no training run waits for them (or runs its first steps on the
single-tensor path while they compile in the background)."""

from __future__ import annotations

import time
from typing import Any

COMBINATIONS = {"plain": {}, "momentum": {"momentum": 0.9}, "centered": {"centered": True},
                "momentum + centered": {"momentum": 0.9, "centered": True}}  # fmt: skip
STATES = {"fp32": None, "bf16": "bfloat16", "int8": "int8"}


def warm_up(presets: list[str], states: list[str], changes: dict[str, Any], console) -> int:
    """Compile the kernel of each preset x state form x switch combination (with
    ``changes`` applied; without changes: plain, momentum, centered, both)."""
    import torch

    import rmsprop
    from rmsprop.presets import get_preset

    from ..backends import numba_compile, unavailable_reason
    from .checks import UsageError

    reason = unavailable_reason("numba")
    if reason is not None:
        raise UsageError(f"the fused CPU kernels cannot be compiled here: {reason}")
    console.print(f"numba's kernel cache: {numba_compile.cache_folder()}", soft_wrap=True)
    combinations = {"as given": changes} if changes else COMBINATIONS
    for preset in presets:
        for state in states:
            for name, switches in combinations.items():
                start = time.perf_counter()
                settings = get_preset(preset).hyperparameters(**{"lr": 1e-3, **switches})
                p = torch.zeros(8192, requires_grad=True)
                state_dtype = torch.bfloat16 if STATES[state] == "bfloat16" else STATES[state]
                opt = rmsprop.RMSprop([p], **{**settings, "impl": "numba",
                                              "state_dtype": state_dtype})  # fmt: skip
                p.grad = torch.ones_like(p)
                opt.step()  # an explicit impl compiles (or loads) here, into the disk cache
                console.print(f"{preset}, {state} state, {name}: "
                              f"{time.perf_counter() - start:.1f} s")  # fmt: skip
    return 0
