"""Checking a ``state_dict`` against the optimizer before anything is changed."""

from __future__ import annotations

import math
from typing import Any

import torch

from ..lowbit.forms import scale_shape
from .validation import GROUP_KEYS, STATE_KEYS, check_group


def check_state_dict(optimizer: Any, state_dict: Any) -> None:
    """Raise ``ValueError`` (naming the group, parameter and key) if ``state_dict`` does
    not fit ``optimizer``'s parameters; ``TypeError`` if it is not a state dict at all."""
    if not isinstance(state_dict, dict) or not {"state", "param_groups"} <= set(state_dict):
        raise TypeError(
            "state_dict must be a dict with 'state' and 'param_groups' (from .state_dict())"
        )
    saved_groups = state_dict["param_groups"]
    if len(saved_groups) != len(optimizer.param_groups):
        raise ValueError(
            f"the checkpoint has {len(saved_groups)} parameter groups, the optimizer "
            f"{len(optimizer.param_groups)}"
        )
    state = state_dict["state"]
    for gi, (saved, group) in enumerate(zip(saved_groups, optimizer.param_groups)):
        if len(saved["params"]) != len(group["params"]):
            raise ValueError(
                f"group {gi}: the checkpoint has {len(saved['params'])} parameters, the "
                f"optimizer {len(group['params'])}"
            )
        hyper = {k: saved.get(k, optimizer.defaults[k]) for k in GROUP_KEYS}
        try:
            check_group(hyper)
        except (TypeError, ValueError) as err:
            raise ValueError(f"group {gi} of the checkpoint: {err}") from err
        for pid, param in zip(saved["params"], group["params"]):
            entry = state.get(pid)
            if entry is not None:
                _check_entry(gi, pid, entry, param, STATE_KEYS)


def _check_entry(gi: int, pid: Any, entry: dict[str, Any], param: torch.Tensor, keys) -> None:
    where = f"group {gi}, parameter {pid}"
    unknown = sorted(set(entry) - set(keys))
    if unknown:
        raise ValueError(f"{where}: unknown state key(s) {unknown}; RMSprop state has {list(keys)}")
    step = entry.get("step")
    if step is not None and torch.is_tensor(step) and step.numel() != 1:
        raise ValueError(f"{where}: 'step' must be a scalar, got shape {tuple(step.shape)}")
    for key in ("square_avg", "momentum_buffer", "grad_avg"):
        codes, scale = entry.get(f"{key}_codes"), entry.get(f"{key}_scale")
        if (codes is None) != (scale is None):
            raise ValueError(f"{where}: {key!r} needs both '{key}_codes' and '{key}_scale'")
        if codes is not None:
            blocks = scale_shape(param)
            if (codes.shape != param.shape or codes.dtype != torch.uint8
                    or tuple(scale.shape) not in (blocks, (math.prod(blocks),))):  # fmt: skip
                raise ValueError(
                    f"{where}: 8-bit {key!r} must be uint8 codes of shape {tuple(param.shape)} and "
                    f"scales of shape {blocks}; got {codes.dtype} {tuple(codes.shape)} and "
                    f"{tuple(scale.shape)}"
                )
        value = entry.get(key)
        if value is None:
            continue
        if not torch.is_tensor(value):
            raise ValueError(f"{where}: {key!r} must be a tensor, got {type(value).__name__}")
        if value.shape != param.shape:
            raise ValueError(
                f"{where}: {key!r} has shape {tuple(value.shape)}, the parameter {tuple(param.shape)}"
            )
        if torch.is_complex(value) != torch.is_complex(param) or not (
            value.is_floating_point() or torch.is_complex(value)
        ):
            raise ValueError(
                f"{where}: {key!r} has dtype {value.dtype}, the parameter {param.dtype}"
            )
