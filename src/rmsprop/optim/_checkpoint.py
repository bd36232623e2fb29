"""Checking a ``state_dict`` against the optimizer before anything is changed.

Everything ``load_state_dict`` will use is checked here first, so a refused checkpoint
leaves the optimizer as it was: the structure (groups, their parameters), that the groups
are RMSprop's (another optimizer's state_dict is named as such), every hyperparameter
(the rules of construction), every state entry (known keys, a step counter that is a
whole number, the first buffer present once a step was taken, every buffer a tensor of
its parameter's shape with a dtype that can hold it, 8-bit codes with their scales), and
the counters ``skipped_steps`` and ``rounding_seed``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..lowbit.forms import scale_shape
from ..lowbit.state import ALL_BUFFERS, VARIANCE
from .validation import GROUP_KEYS, RUNTIME_KEYS, STATE_KEYS, check_group

#: what every RMSprop group has (torch's and ours): their absence means another optimizer
RMSPROP_KEYS = ("lr", "alpha", "eps", "weight_decay", "momentum", "centered")
#: group keys torch or its schedulers add, beside the optimizer's own
TORCH_EXTRAS = ("params", "param_names", "initial_lr")


def check_state_dict(optimizer: Any, state_dict: Any) -> None:
    """Raise ``ValueError`` (naming the group, parameter and key) if ``state_dict`` does
    not fit ``optimizer``'s parameters; ``TypeError`` if it is not a state dict at all."""
    if not isinstance(state_dict, dict) or not {"state", "param_groups"} <= set(state_dict):
        raise TypeError(
            "state_dict must be a dict with 'state' and 'param_groups' (from .state_dict())"
        )
    saved_groups, state = state_dict["param_groups"], state_dict["state"]
    if not isinstance(saved_groups, list) or not isinstance(state, dict):
        raise ValueError("state_dict['param_groups'] must be a list and ['state'] a dict")
    if len(saved_groups) != len(optimizer.param_groups):
        raise ValueError(
            f"the checkpoint has {len(saved_groups)} parameter groups, the optimizer "
            f"{len(optimizer.param_groups)}"
        )
    for gi, (saved, group) in enumerate(zip(saved_groups, optimizer.param_groups)):
        hyper = _check_group(gi, saved, group, optimizer.defaults)
        for pid, param in zip(saved["params"], group["params"]):
            entry = state.get(pid)
            if entry is not None:
                _check_entry(f"group {gi}, parameter {pid}", entry, param, hyper)
    _check_counters(state_dict)


def _check_group(gi: int, saved: Any, group: dict[str, Any],
                 defaults: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """The saved group is RMSprop's, fits ``group``, and its settings are valid; returns
    them (the optimizer's defaults where the checkpoint has none)."""
    if not isinstance(saved, dict) or not isinstance(saved.get("params"), list):
        raise ValueError(f"group {gi} of the checkpoint must be a dict with a 'params' list")
    missing = [k for k in RMSPROP_KEYS if k not in saved]
    if missing:
        foreign = sorted(set(saved) - set(GROUP_KEYS) - set(TORCH_EXTRAS))
        has = f" and has {foreign}" if foreign else ""
        raise ValueError(
            f"group {gi} of the checkpoint is not RMSprop's: it lacks {missing}{has} "
            "(another optimizer's state_dict?)"
        )
    if len(saved["params"]) != len(group["params"]):
        raise ValueError(
            f"group {gi}: the checkpoint has {len(saved['params'])} parameters, the "
            f"optimizer {len(group['params'])}"
        )
    hyper = {k: saved.get(k, defaults[k]) for k in GROUP_KEYS}
    hyper.update({k: group[k] for k in RUNTIME_KEYS})  # kept from this optimizer on load
    try:
        return check_group(hyper)
    except (TypeError, ValueError, ImportError) as err:
        raise ValueError(f"group {gi} of the checkpoint: {err}") from err


def _check_entry(where: str, entry: Any, param: torch.Tensor, hyper: dict[str, Any]) -> None:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: the state must be a dict, got {type(entry).__name__}")
    unknown = sorted(set(entry) - set(STATE_KEYS))
    if unknown:
        raise ValueError(
            f"{where}: unknown state key(s) {unknown}; RMSprop state has {list(STATE_KEYS)}"
        )
    buffers = [name for name in ALL_BUFFERS if name in entry or f"{name}_codes" in entry]
    if "step" not in entry and buffers:
        raise ValueError(f"{where}: state buffers {buffers} without a 'step'")
    if (
        "step" in entry
        and step_value(where, entry["step"]) > 0
        and not ({"square_avg", VARIANCE} & set(buffers))
    ):
        raise ValueError(
            f"{where}: a step was taken (step={step_value(where, entry['step']):g}) but the "
            "state has no 'square_avg' (nor 'grad_var'); a new one would make the next step "
            "far too large"
        )
    if {"square_avg", VARIANCE} <= set(buffers):
        raise ValueError(
            f"{where}: both 'square_avg' and 'grad_var' (the variance form): one state has one"
        )
    for name in ALL_BUFFERS:
        _check_buffer(where, name, entry, param)


def step_value(where: str, step: Any) -> float:
    """The value of a saved step counter (a number or a one-element tensor, as torch saves
    it): a whole number >= 0."""
    if isinstance(step, torch.Tensor) and step.numel() == 1 and not step.is_complex():
        value = float(step.detach().reshape(()))
    elif isinstance(step, int | float) and not isinstance(step, bool):
        value = float(step)
    else:
        raise ValueError(f"{where}: 'step' must be a number or a one-element tensor, got {step!r}")
    if not (math.isfinite(value) and value >= 0 and value == int(value)):
        raise ValueError(f"{where}: 'step' must be a whole number >= 0, got {value!r}")
    return value


def _check_buffer(where: str, name: str, entry: dict[str, Any], param: torch.Tensor) -> None:
    for key in (name, f"{name}_codes", f"{name}_scale"):
        if key in entry and not isinstance(entry[key], torch.Tensor):
            raise ValueError(f"{where}: {key!r} must be a tensor, got {entry[key]!r}")
    if name in entry and f"{name}_codes" in entry:
        raise ValueError(f"{where}: {name!r} is there twice, as a tensor and as 8-bit codes")
    codes, scale = entry.get(f"{name}_codes"), entry.get(f"{name}_scale")
    if (codes is None) != (scale is None):
        raise ValueError(f"{where}: {name!r} needs both '{name}_codes' and '{name}_scale'")
    if codes is not None:
        blocks = scale_shape(param)
        if not (isinstance(codes, torch.Tensor) and isinstance(scale, torch.Tensor)
                and codes.shape == param.shape and codes.dtype == torch.uint8
                and scale.dtype == torch.float32
                and tuple(scale.shape) in (blocks, (math.prod(blocks),))):  # fmt: skip
            raise ValueError(
                f"{where}: 8-bit {name!r} must be uint8 codes of shape {tuple(param.shape)} and "
                f"float32 scales of shape {blocks}"
            )
    value = entry.get(name)
    if value is None:
        return
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{where}: {name!r} must be a tensor, got {type(value).__name__}")
    if value.shape != param.shape:
        raise ValueError(
            f"{where}: {name!r} has shape {tuple(value.shape)}, the parameter {tuple(param.shape)}"
        )
    if value.is_complex() != param.is_complex() or not (
        value.is_floating_point() or value.is_complex()
    ):
        raise ValueError(f"{where}: {name!r} has dtype {value.dtype}, the parameter {param.dtype}")


def _check_counters(state_dict: dict[str, Any]) -> None:
    """The optimizer's counters, where the checkpoint has them: at its top and in each
    group (``torch.distributed.checkpoint`` keeps only the groups)."""
    places = [("", state_dict)] + [
        (f"group {i}: ", g) for i, g in enumerate(state_dict["param_groups"])
    ]
    for where, place in places:
        for key in ("skipped_steps", "rounding_seed"):
            if key in place:
                value = place[key]
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValueError(f"{where}{key!r} must be an integer, got {value!r}")
                if key == "skipped_steps" and value < 0:
                    raise ValueError(f"{where}'skipped_steps' must be >= 0, got {value}")
