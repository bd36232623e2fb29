"""Every check of what a user gives ``rmsprop.RMSprop`` before it steps: the group's
hyperparameters (numbers via ``rmsprop._validation``, shared with the NumPy reference),
``impl``/``foreach``/``differentiable`` conflicts, ``state_dtype``, ``sparse_mode``,
``nonfinite``, and the parameters themselves (floating-point or complex; a parameter
listed twice in a group is kept once). Called at construction, by ``add_param_group``
and by ``load_state_dict``. Tensors that change after construction (a gradient, a
replaced ``.data``, state) are checked at every step by ``planner``.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

from .._validation import NON_NEGATIVE, check_choice, check_real, validate_hyperparameters
from ..backends import IMPLS, unavailable_reason
from ..lowbit.forms import StateForm
from ..lowbit.state import ALL_BUFFERS

SPARSE_MODES = (None, "lazy", "dense")
NONFINITE = ("update", "skip", "raise")
GROUP_KEYS = (
    "lr", "alpha", "eps", "weight_decay", "momentum", "centered", "capturable", "foreach",
    "maximize", "differentiable", "eps_in_sqrt", "initial_accumulator_value", "nesterov",
    "lr_in_momentum", "decoupled_weight_decay", "bias_correction", "clipvalue", "clipnorm",
    "global_clipnorm", "impl", "state_dtype", "ema_form", "centered_clamp", "sparse_mode",
    "stochastic_rounding",
)  # fmt: skip
STATE_KEYS = ("step", *ALL_BUFFERS,
              *(f"{b}_{part}" for b in ALL_BUFFERS for part in ("codes", "scale")))  # fmt: skip
#: How to run and how to store state belong to the machine, not the checkpoint:
#: load_state_dict keeps the optimizer's own values (and converts the state to its state_dtype).
RUNTIME_KEYS = ("impl", "foreach", "state_dtype")
FLOATING = (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64,
            torch.complex128)  # fmt: skip


def check_torch_lr(lr: Any) -> float | Tensor:
    """A float >= 0, or a real 1-element tensor >= 0 (as torch accepts)."""
    if isinstance(lr, Tensor):
        if lr.numel() != 1:
            raise ValueError(f"lr: Tensor lr must be 1-element (got shape {tuple(lr.shape)})")
        if lr.is_complex() or not lr.is_floating_point():
            raise TypeError(f"lr must be a real floating-point tensor or number, got {lr.dtype}")
        check_real("lr", float(lr.detach().reshape(())), NON_NEGATIVE)
        return lr
    return check_real("lr", lr, NON_NEGATIVE)


def check_group(group: dict[str, Any]) -> dict[str, Any]:
    """One parameter group's settings, validated and normalised (construction,
    ``add_param_group``, a checkpoint's groups)."""
    hp = {k: v for k, v in group.items() if k in GROUP_KEYS}
    special = {k: hp.pop(k) for k in ("foreach", "impl", "state_dtype", "sparse_mode") if k in hp}
    checked = validate_hyperparameters(hp, lr_check=check_torch_lr)
    if "state_dtype" in special:
        StateForm.parse(special["state_dtype"])
    if "sparse_mode" in special:
        check_choice("sparse_mode", special["sparse_mode"], SPARSE_MODES)
    _check_impl(special.get("impl", "auto"), special.get("foreach"), checked)
    return {**group, **checked, **special}


def _check_impl(impl: Any, foreach: Any, checked: dict[str, Any]) -> None:
    """``impl`` is known and loads here; ``foreach`` and ``differentiable`` agree with it."""
    if not (foreach is None or isinstance(foreach, bool)):
        raise TypeError(f"foreach must be None, True or False, got {foreach!r}")
    check_choice("impl", impl, IMPLS)
    if foreach is not None and impl not in ("auto", "foreach" if foreach else "single"):
        raise ValueError(
            f"foreach={foreach} contradicts impl={impl!r}: foreach=True means impl='foreach', "
            "foreach=False means impl='single'; set one of them"
        )
    if checked.get("differentiable") and impl not in ("auto", "single"):
        raise ValueError(f"differentiable=True needs impl='single' (got impl={impl!r})")
    reason = unavailable_reason(impl) if impl != "auto" else None
    if reason is not None:
        raise ImportError(f"impl={impl!r} is not available here: {reason}")


def check_nonfinite(value: Any) -> str:
    return check_choice("nonfinite", value, NONFINITE)


def check_params(group: dict[str, Any], index: int) -> None:
    """The group's parameters are floating-point or complex tensors, each listed once: a
    parameter listed twice (torch warns that this will become an error) is kept once, so
    every implementation updates it once per step, deterministically."""
    params = group["params"]
    for position, p in enumerate(params):
        if p.dtype not in FLOATING:
            raise TypeError(
                f"group {index}, parameter {position}: dtype {p.dtype}; RMSprop updates "
                "floating-point or complex parameters"
            )
    first = {id(p): i for i, p in reversed(list(enumerate(params)))}
    if len(first) == len(params):
        return
    keep = sorted(first.values())
    warnings.warn(
        f"group {index} lists {len(params) - len(keep)} parameter(s) more than once; each is "
        "kept once (updated once per step)",
        UserWarning,
        stacklevel=3,
    )
    group["params"] = [params[i] for i in keep]
    if "param_names" in group:
        group["param_names"] = [group["param_names"][i] for i in keep]
