"""``state_dict(format="torch")``: the optimizer's state as ``torch.optim.RMSprop`` keeps
it, so a run with compact state (or any of this library's state) can continue under
torch: every buffer decoded to the parameter's dtype under torch's keys (``square_avg``
from the variance form: v = S + ḡ²), the groups reduced to torch's settings. Groups
whose switches torch's RMSprop does not have are refused, naming the switches: torch
would run a different algorithm from there on.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from ..lowbit.state import VARIANCE, decode, has

#: torch.optim.RMSprop's group settings
TORCH_KEYS = ("lr", "momentum", "alpha", "eps", "centered", "weight_decay", "capturable",
              "foreach", "maximize", "differentiable")  # fmt: skip
#: this library's switches, at the value that is torch's algorithm
TORCH_SWITCHES = {"eps_in_sqrt": False, "initial_accumulator_value": 0.0, "nesterov": False,
                  "lr_in_momentum": False, "decoupled_weight_decay": False,
                  "bias_correction": False, "clipvalue": None, "clipnorm": None,
                  "global_clipnorm": None, "centered_clamp": False}  # fmt: skip


def torch_state_dict(state_dict: dict[str, Any], params: list[torch.Tensor]) -> dict[str, Any]:
    """``state_dict`` (this optimizer's, for ``params`` in order) in torch's format."""
    groups = []
    for gi, group in enumerate(state_dict["param_groups"]):
        other = {k: group[k] for k, v in TORCH_SWITCHES.items() if k in group and group[k] != v}
        if other:
            raise ValueError(
                f"group {gi} uses switches torch.optim.RMSprop does not have: {other}; its "
                "state cannot continue under torch (the algorithm would change)"
            )
        kept = (*TORCH_KEYS, "params", "param_names", "initial_lr")
        groups.append({k: copy.copy(v) for k, v in group.items() if k in kept})
    wanted = {}
    for group in state_dict["param_groups"]:
        uses = {name for name, on in (("grad_avg", group["centered"]),
                                      ("momentum_buffer", group["momentum"] > 0)) if on}  # fmt: skip
        wanted.update({pid: uses for pid in group["params"]})
    state = {pid: _torch_entry(entry, params[pid], wanted[pid])
             for pid, entry in state_dict["state"].items()}  # fmt: skip
    return {"state": state, "param_groups": groups}


def _torch_entry(entry: dict[str, Any], param: torch.Tensor, wanted: set[str]) -> dict[str, Any]:
    """One parameter's state with torch's keys, every buffer in the parameter's dtype
    (``wanted``: the buffers the group's switches use)."""
    step = entry["step"]
    dtype = step.dtype if isinstance(step, torch.Tensor) else torch.float32
    out: dict[str, Any] = {"step": torch.tensor(float(step), dtype=dtype)}
    if has(entry, VARIANCE):  # v = S + ḡ² (no bias correction under torch's switches)
        mean = decode(entry, "grad_avg")
        out["square_avg"] = decode(entry, VARIANCE) + mean * mean
    elif has(entry, "square_avg"):
        out["square_avg"] = decode(entry, "square_avg")
    for name in ("momentum_buffer", "grad_avg"):
        if has(entry, name):
            out[name] = decode(entry, name)
        elif name in wanted:  # switched on after the last step: it starts at 0, as here
            out[name] = torch.zeros(param.shape)
    for name in ("square_avg", "momentum_buffer", "grad_avg"):
        if name in out:
            out[name] = out[name].to(param.dtype).clone().view(param.shape)
    return out
