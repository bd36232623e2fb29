"""Hyperparameter validation: every rule written once, used by every front end.

The NumPy reference, ``rmsprop.RMSprop`` (construction, ``add_param_group`` and
``load_state_dict``) and the presets all call :func:`validate_hyperparameters`, so a
bad value produces the same message whichever door it came through. Messages name the
argument, the value and what is allowed. This module imports nothing but the standard
library.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

EMA_FORMS = ("torch", "multiply", "delta")
"""How the moving averages are written (they differ only in the last bits):

- ``"torch"``: ``v = alpha*v + (1-alpha)*g*g`` (``mul_`` then ``addcmul_``) and
  ``grad_avg.lerp_(g, 1-alpha)`` for the centered mean, as ``torch.optim.RMSprop``;
- ``"multiply"``: ``rho*v + (1-rho)*x`` for both averages (Keras 3, optax, XLA);
- ``"delta"``: ``v + (1-rho)*(x - v)`` for both (TF1 CPU/GPU kernels, timm ``RMSpropTF``).
"""


@dataclass(frozen=True)
class Interval:
    """A closed or half-open interval of allowed real values."""

    low: float
    high: float = math.inf
    low_closed: bool = True
    high_closed: bool = False

    def __contains__(self, value: float) -> bool:
        above = value >= self.low if self.low_closed else value > self.low
        below = value <= self.high if self.high_closed else value < self.high
        return above and below

    def __str__(self) -> str:
        left = "[" if self.low_closed else "("
        right = "]" if self.high_closed and math.isfinite(self.high) else ")"
        high = "inf" if math.isinf(self.high) else f"{self.high:g}"
        return f"{left}{self.low:g}, {high}{right}"


NON_NEGATIVE = Interval(0.0)
POSITIVE = Interval(0.0, low_closed=False)
UNIT = Interval(0.0, 1.0)  # [0, 1)

REAL_RULES: Mapping[str, Interval] = {
    "lr": NON_NEGATIVE,
    "alpha": UNIT,
    "eps": NON_NEGATIVE,
    "momentum": UNIT,
    "weight_decay": NON_NEGATIVE,
    "initial_accumulator_value": NON_NEGATIVE,
    "clipvalue": POSITIVE,
    "clipnorm": POSITIVE,
    "global_clipnorm": POSITIVE,
    "lr_decay": NON_NEGATIVE,
}
BOOL_ARGS = (
    "centered",
    "maximize",
    "nesterov",
    "eps_in_sqrt",
    "lr_in_momentum",
    "decoupled_weight_decay",
    "bias_correction",
    "centered_clamp",
    "capturable",
    "differentiable",
    "stochastic_rounding",
)
OPTIONAL_REALS = ("clipvalue", "clipnorm", "global_clipnorm")
DIVISION_FORMS = ("divide", "rsqrt", "lr_first")
"""How steps (7)-(9) are written, for last-bit parity in a framework's own front end:

- ``"divide"``: ``u = g / d``, then the lr multiplies (torch, timm; every preset in the
  torch optimizer, whose kernels always divide);
- ``"rsqrt"``: ``u = g * rsqrt(s + eps)`` (or ``g * (1 / (sqrt(s) + eps))``) (optax);
- ``"lr_first"``: ``(lr * g) / sqrt(s + eps)`` (Keras 3).
"""

CHOICES: Mapping[str, tuple[Any, ...]] = {
    "ema_form": EMA_FORMS,
    "division_form": DIVISION_FORMS,
    "nonfinite": ("update", "skip", "raise"),
}


#: How ``torch.optim`` words an out-of-range value of its own arguments ("Invalid
#: momentum value: -1.0"): our messages start the same way, so code and tests that match
#: torch's messages match ours.
TORCH_PHRASES = {
    "lr": "learning rate",
    "eps": "epsilon value",
    "alpha": "alpha value",
    "momentum": "momentum value",
    "weight_decay": "weight_decay value",
}


def check_real(name: str, value: Any, allowed: Interval) -> float:
    """Return ``value`` as a float, or raise naming ``name``, the value and ``allowed``."""
    if isinstance(value, bool) or (
        not isinstance(value, (int, float)) and not _is_real_scalar(value)
    ):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    number = float(value)
    if math.isnan(number) or number not in allowed:
        if name in TORCH_PHRASES:
            raise ValueError(
                f"Invalid {TORCH_PHRASES[name]}: {value} ({name} must be in {allowed})"
            )
        raise ValueError(f"{name}={value!r} is invalid: it must be in {allowed}")
    return number


def check_bool(name: str, value: Any) -> bool:
    """Accept only real booleans (``0``/``1`` and strings are refused)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return value


def check_choice(name: str, value: Any, choices: tuple[Any, ...]) -> Any:
    """Accept one of ``choices``."""
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(
            f"{name}={value!r} is invalid: it must be one of {listed}{did_you_mean(value, choices)}"
        )
    return value


def did_you_mean(value: Any, choices: Iterable[Any]) -> str:
    """``"; did you mean 'x'?"`` for the choice closest to a mistyped string (``difflib``'s
    ratio at least 0.6), else ``""``."""
    if not isinstance(value, str):
        return ""
    close = difflib.get_close_matches(value, [c for c in choices if isinstance(c, str)], n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


#: Other frameworks' names for our arguments (Keras, TF1, optax, timm), as users type them.
OTHER_NAMES = {
    "learning_rate": "lr", "rho": "alpha", "decay": "alpha", "epsilon": "eps",
    "initial_scale": "initial_accumulator_value", "decoupled_decay": "decoupled_weight_decay",
    "use_nesterov": "nesterov", "lr_in_momentum_buffer": "lr_in_momentum",
}  # fmt: skip


def unknown_arguments(given: Iterable[str], known: Iterable[str], where: str) -> str | None:
    """The message for arguments of ``given`` that ``where`` does not take (None if all
    are known): each with the name it has here when it is another framework's name for
    one of ``known``, or the closest known name."""
    known = list(known)
    parts = []
    for name in given:
        if name in known:
            continue
        ours = OTHER_NAMES.get(name)
        if ours in known:
            parts.append(f"{name!r} is another framework's name: here it is {ours}=")
        else:
            parts.append(f"{name!r} is not an argument{did_you_mean(name, known)}")
    if not parts:
        return None
    return f"{where} got unexpected keyword argument(s): " + "; ".join(parts)


def _is_real_scalar(value: Any) -> bool:
    """NumPy scalars and 0-d arrays pass; anything with more than one element does not."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a hard dependency
        return False
    return (
        isinstance(value, np.generic | np.ndarray) and np.ndim(value) == 0 and np.isrealobj(value)
    )


def validate_hyperparameters(
    hyperparameters: Mapping[str, Any],
    *,
    known: tuple[str, ...] | None = None,
    lr_check: Callable[[Any], Any] | None = None,
) -> dict[str, Any]:
    """Validate a mapping of hyperparameters and return it normalised (floats and bools).

    Args:
      hyperparameters: name -> value. Names outside ``known`` raise ``TypeError``.
      known: the names this front end accepts (defaults to every name this module knows).
      lr_check: how to validate ``lr`` when it may be something other than a number
        (a schedule in the reference, a tensor in torch). It returns the normalised lr.

    Raises:
      TypeError: unknown name, or a value of the wrong type.
      ValueError: a value out of range, or an inconsistent combination (``nesterov``
        without ``momentum``, more than one clipping option).
    """
    allowed_names = known if known is not None else (*REAL_RULES, *BOOL_ARGS, *CHOICES)
    unknown = sorted(set(hyperparameters) - set(allowed_names))
    if unknown:
        raise TypeError(
            f"unexpected keyword argument(s) {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(allowed_names)}"
        )
    out: dict[str, Any] = {}
    for name, value in hyperparameters.items():
        if name == "lr" and lr_check is not None:
            out[name] = lr_check(value)
        elif name in OPTIONAL_REALS and value is None:
            out[name] = None
        elif name in REAL_RULES:
            out[name] = check_real(name, value, REAL_RULES[name])
        elif name in BOOL_ARGS:
            out[name] = check_bool(name, value)
        elif name in CHOICES:
            out[name] = check_choice(name, value, CHOICES[name])
        else:
            out[name] = value
    _check_combinations(out)
    return out


def _check_combinations(hp: Mapping[str, Any]) -> None:
    if hp.get("nesterov") and not hp.get("momentum"):
        raise ValueError(
            f"nesterov=True needs momentum > 0 (got momentum={hp.get('momentum', 0)!r})"
        )
    clips = [name for name in OPTIONAL_REALS if hp.get(name) is not None]
    if len(clips) > 1:
        raise ValueError(
            f"at most one of clipvalue, clipnorm, global_clipnorm may be set (got {', '.join(clips)})"
        )
