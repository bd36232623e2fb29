"""Named benchmark suites for ``rmsprop bench`` (data only).

Each suite is a model shape (tensor sizes), the optimizer configurations to time, and the
bytes per parameter a step must move at least (the floor a fused kernel can reach).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Config:
    name: str
    kwargs: dict[str, Any]
    bytes_per_param: int  # fp32: read p, g, each state; write p, each state


PLAIN = Config("plain", {}, 20)  # read p, g, v; write p, v
MOMENTUM_CENTERED = Config("momentum+centered", {"momentum": 0.9, "centered": True}, 36)


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    shapes: tuple[tuple[int, ...], ...]
    configs: tuple[Config, ...] = (PLAIN, MOMENTUM_CENTERED)
    sparse_rows: int = 0  # embedding suites: rows looked up per step (first shape is the table)
    skip: dict[str, str] = field(default_factory=dict)  # implementation -> why it is not timed
    # state suites: the param dtypes under which fp32, bf16 and int8 state are compared
    state_params: tuple[str, ...] = ()

    @property
    def numel(self) -> int:
        total = 0
        for shape in self.shapes:
            n = 1
            for d in shape:
                n *= d
            total += n
        return total


SUITES = {
    "large": Suite(
        "large",
        "16M fp32 parameters in 40 tensors (few large tensors)",
        tuple((400, 1000) for _ in range(40)),
    ),
    "many-small": Suite(
        "many-small",
        "4,000 tensors of 4,096 elements (thousands of small tensors)",
        tuple((4096,) for _ in range(4000)),
        skip={
            "torch.compile(torch.optim)": "compiling a 4,000-tensor step did not finish in 10 min",
            "rmsprop compiled": "compiling a 4,000-tensor step did not finish in 10 min",
        },
    ),
    "embedding": Suite(
        "embedding",
        "a 1,000,000 x 64 embedding, 4,096 rows looked up per step, plus a 64x64 MLP",
        ((1_000_000, 64), (64, 64), (64,)),
        configs=(PLAIN,),
        sparse_rows=4096,
    ),
    "state": Suite(
        "state",
        "16M parameters in 40 tensors with fp32, bf16 and int8 optimizer state (fp32 params, then\n"
        "bf16 params with stochastic rounding)",
        tuple((400, 1000) for _ in range(40)),
        state_params=("fp32", "bf16"),
    ),
    "state-many-small": Suite(
        "state-many-small",
        "4,000 tensors of 4,096 elements with fp32, bf16 and int8 optimizer state: the\n"
        "per-tensor bookkeeping of a step (6 state tensors per param under int8 momentum +\n"
        "centered, 3 under fp32) next to a small kernel",
        tuple((4096,) for _ in range(4000)),
        state_params=("fp32",),
    ),
    "mlp": Suite(
        "mlp",
        "an 85,002-parameter MLP (64-256-256-10: six tensors): a step's fixed costs",
        ((256, 64), (256,), (256, 256), (256,), (10, 256), (10,)),
    ),
    "tiny": Suite("tiny", "smoke test: 3 tensors", ((64, 64), (64,), (10, 64))),
}
