"""``rmsprop.optax.rmsprop`` and ``from_preset``: the blocks of :mod:`.transforms` chained
in the order that *is* each framework's semantics (see :data:`rmsprop.algorithm.ALGORITHM`)."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
import optax

from .._validation import NON_NEGATIVE, check_real, validate_hyperparameters
from ..presets import get_preset
from . import transforms as t

#: The division forms this front end writes (Keras's ``"lr_first"`` is written ``"divide"``).
DIVISION_FORMS = ("divide", "rsqrt")


def check_learning_rate(learning_rate: Any) -> Any:
    """A learning rate is a real number >= 0, a scalar array (checked when its value is
    known, not while jit traces it), or an optax schedule."""
    if callable(learning_rate):
        return learning_rate
    if getattr(learning_rate, "shape", ()) != ():
        raise TypeError(
            "learning_rate must be a scalar (a number, a 0-d array or a schedule), got an "
            f"array of shape {tuple(learning_rate.shape)}"
        )
    if isinstance(learning_rate, jax.Array):
        if not isinstance(learning_rate, jax.core.Tracer):
            check_real("learning_rate", float(learning_rate), NON_NEGATIVE)
        return learning_rate
    return check_real("learning_rate", learning_rate, NON_NEGATIVE)


#: the hyperparameters that decide the chain's structure: Python numbers, never arrays
STATIC = ("alpha", "eps", "initial_accumulator_value", "momentum", "weight_decay",
          "clipvalue", "clipnorm", "global_clipnorm")  # fmt: skip


def _refuse_arrays(values: dict[str, Any]) -> None:
    """Every hyperparameter but the learning rate is a Python number: it decides the
    chain. The advice names every one of them (followed literally, it works)."""
    arrays = [name for name in STATIC if isinstance(values.get(name), (jax.Array, np.ndarray))]
    if arrays:
        raise TypeError(
            f"{', '.join(arrays)} must be Python numbers (they decide the chain), got "
            f"array(s); with optax.inject_hyperparams, inject only the learning rate: "
            f"static_args={STATIC!r}"
        )


def rmsprop(
    learning_rate: float | t.Schedule,
    alpha: float = 0.99,
    eps: float = 1e-8,
    *,
    eps_in_sqrt: bool = False,
    initial_accumulator_value: float = 0.0,
    centered: bool = False,
    momentum: float = 0.0,
    nesterov: bool = False,
    lr_in_momentum: bool = False,
    weight_decay: float = 0.0,
    decoupled_weight_decay: bool = False,
    bias_correction: bool = False,
    maximize: bool = False,
    clipvalue: float | None = None,
    clipnorm: float | None = None,
    global_clipnorm: float | None = None,
    ema_form: str = "torch",
    centered_clamp: bool = False,
    division_form: str = "divide",
    nonfinite: str = "update",
) -> optax.GradientTransformation:
    r"""RMSprop with every switch of every framework, as an optax ``GradientTransformation``.

    The defaults are ``torch.optim.RMSprop``'s (with ``learning_rate`` required, as in
    optax). The algorithm, steps (1)-(10), is :data:`rmsprop.algorithm.ALGORITHM`::

        v = alpha*v + (1-alpha)*g²                  # v starts at initial_accumulator_value
        d = sqrt(v [- ḡ²]) + eps   or   sqrt(v [- ḡ²] + eps)   (eps_in_sqrt)
        θ -= lr * g/d   (with momentum: lr inside or outside the buffer, lr_in_momentum)

    Args:
      learning_rate: a float >= 0 or an optax schedule ``count -> lr`` (count from 0).
      alpha: decay of the moving averages, in [0, 1) (optax/TF1 ``decay``, Keras ``rho``).
      eps: added inside (``eps_in_sqrt``) or outside the square root, >= 0.
      eps_in_sqrt: ``sqrt(v + eps)`` (Keras, TF1, optax, timm) instead of ``sqrt(v) + eps``.
      initial_accumulator_value: start of ``v`` (optax ``initial_scale``; 1 in TF1, timm).
      centered: divide by the root of the variance ``v − ḡ²`` (Graves 2013).
      momentum: heavy-ball momentum in [0, 1); ``nesterov`` for Nesterov momentum.
      lr_in_momentum: the lr multiplies the gradient before the momentum buffer (TF1,
        Keras, optax, timm). The default (torch) multiplies the buffer.
      weight_decay: ``λ`` >= 0: coupled L2 (``g += λθ``, torch) unless
        ``decoupled_weight_decay`` (``θ −= η λ θ``, Keras 3).
      bias_correction: divide the averages by ``1 − alphaᵗ`` (optax).
      maximize: ascend instead of descend (torch).
      clipvalue: clamp each gradient element to ``[-clipvalue, clipvalue]`` (Keras).
      clipnorm: scale each leaf to norm at most ``clipnorm`` (Keras; at most one of the
        three clipping options).
      global_clipnorm: scale all leaves together to global norm at most this (Keras).
      ema_form: ``"torch"``, ``"multiply"`` or ``"delta"``: how the averages are written.
      centered_clamp: clamp ``v − ḡ²`` at 0 before the square root.
      division_form: ``"divide"`` (``g / d``) or ``"rsqrt"`` (optax's ``rsqrt(s + eps) * g``).
      nonfinite: ``"update"`` (NaN/Inf flow through, as in every framework) or ``"skip"``
        (a step with a non-finite gradient returns zero updates and leaves the state as it
        was; ``state.skipped`` counts it). ``"raise"`` cannot run under ``jax.jit``.

    Returns:
      An ``optax.GradientTransformation``; its state is a tuple of block states with
      torch's names (``square_avg``, ``grad_avg``, ``momentum_buffer``).

    Differences from optax / torch / Keras:
      ``optax.rmsprop`` has no coupled or decoupled weight decay, no lr outside the
      momentum buffer, no ``v0`` other than ``initial_scale``'s and no op order but its own;
      here every switch is available, and ``from_preset("optax")`` is ``optax.rmsprop``
      bit for bit. Half-precision leaves compute in float32 (optax computes in bfloat16).
      To change the learning rate during training with ``optax.inject_hyperparams``,
      inject only it: ``optax.inject_hyperparams(rmsprop, static_args=("alpha", "eps",
      "initial_accumulator_value", "momentum", "weight_decay", "clipvalue", "clipnorm",
      "global_clipnorm"))(learning_rate=1e-3)`` (``rmsprop.optax.aliases.STATIC``).
      Complex leaves square as optax does: ``|g|² = g·conj(g)``.

    Examples:
      >>> import jax.numpy as jnp, optax
      >>> from rmsprop.optax import rmsprop
      >>> tx = rmsprop(0.1, alpha=0.9, eps=1e-7, eps_in_sqrt=True)   # Keras's math
      >>> params = jnp.array([10.0]); state = tx.init(params)
      >>> updates, state = tx.update(params, state, params)          # loss = θ²/2, g = θ
      >>> print(optax.apply_updates(params, updates).round(4))
      [9.6838]
    """
    _refuse_arrays({"alpha": alpha, "eps": eps, "initial_accumulator_value": initial_accumulator_value,
                    "momentum": momentum, "weight_decay": weight_decay, "clipvalue": clipvalue,
                    "clipnorm": clipnorm, "global_clipnorm": global_clipnorm})  # fmt: skip
    hp = validate_hyperparameters(
        {
            "lr": learning_rate, "alpha": alpha, "eps": eps, "eps_in_sqrt": eps_in_sqrt,
            "initial_accumulator_value": initial_accumulator_value, "centered": centered,
            "momentum": momentum, "nesterov": nesterov, "lr_in_momentum": lr_in_momentum,
            "weight_decay": weight_decay, "decoupled_weight_decay": decoupled_weight_decay,
            "bias_correction": bias_correction, "maximize": maximize, "clipvalue": clipvalue,
            "clipnorm": clipnorm, "global_clipnorm": global_clipnorm, "ema_form": ema_form,
            "centered_clamp": centered_clamp, "division_form": division_form,
            "nonfinite": nonfinite,
        },
        lr_check=check_learning_rate,
    )  # fmt: skip
    if hp["division_form"] not in DIVISION_FORMS:
        raise ValueError(
            f"division_form={division_form!r} is Keras's op order; rmsprop.optax writes "
            f"{' or '.join(map(repr, DIVISION_FORMS))} (use rmsprop.keras for Keras's bits)"
        )
    if hp["nonfinite"] == "raise":
        raise ValueError(
            "nonfinite='raise' cannot raise inside jax.jit; use nonfinite='skip' (or "
            "jax.experimental.checkify around the step)"
        )
    tx = optax.chain(*blocks(hp))
    return t.guard_nonfinite(tx) if hp["nonfinite"] == "skip" else tx


def blocks(hp: dict[str, Any]) -> list[optax.GradientTransformation]:
    """The chain for validated hyperparameters ``hp``, in the order of the box. Before the
    lr block values are descent directions; the lr block multiplies by ``−η_t`` (as
    optax's ``scale_by_learning_rate``), so after it they are updates."""
    chain = [optax.scale(-1.0)] if hp["maximize"] else []  # (1)
    chain += _clip(hp)  # (2)
    if hp["weight_decay"] and not hp["decoupled_weight_decay"]:
        chain.append(t.add_decayed_weights(hp["weight_decay"]))  # (3) coupled
    scaling = {
        "eps_in_sqrt": hp["eps_in_sqrt"],
        "initial_accumulator_value": hp["initial_accumulator_value"],
        "bias_correction": hp["bias_correction"],
        "ema_form": hp["ema_form"],
        "division_form": hp["division_form"],
    }
    if hp["centered"]:  # (4)-(8)
        chain.append(t.scale_by_stddev(hp["alpha"], hp["eps"],
                                       centered_clamp=hp["centered_clamp"], **scaling))  # fmt: skip
    else:
        chain.append(t.scale_by_rms(hp["alpha"], hp["eps"], **scaling))
    chain += _lr_and_momentum(hp)  # (9)
    if hp["weight_decay"] and hp["decoupled_weight_decay"]:
        chain.append(t.add_decoupled_weight_decay(hp["weight_decay"], hp["lr"]))  # (3), (10)
    return chain


def _clip(hp: dict[str, Any]) -> list[optax.GradientTransformation]:
    if hp["clipvalue"] is not None:
        return [optax.clip(hp["clipvalue"])]
    if hp["clipnorm"] is not None:
        return [t.clip_by_norm(hp["clipnorm"])]
    if hp["global_clipnorm"] is not None:
        return [t.clip_by_global_norm(hp["global_clipnorm"])]
    return []


def _lr_and_momentum(hp: dict[str, Any]) -> list[optax.GradientTransformation]:
    """(9): the lr before the trace puts it inside the buffer; after, outside."""
    rate = optax.scale_by_learning_rate(hp["lr"])  # −η_t: descent direction -> update
    if not hp["momentum"]:
        return [rate]
    momentum = t.trace(hp["momentum"], nesterov=hp["nesterov"])
    return [rate, momentum] if hp["lr_in_momentum"] else [momentum, rate]


def from_preset(
    name: str, learning_rate: float | t.Schedule | None = None, **overrides: Any
) -> optax.GradientTransformation:
    """:func:`rmsprop` with the switches of preset ``name`` (``rmsprop.PRESETS``) and its
    op order (``division_form``: optax's ``rsqrt`` for ``"optax"``); ``overrides`` win.
    ``learning_rate`` defaults to the preset's (TF1 and optax have none: pass one).

    Examples:
      >>> from rmsprop.optax import from_preset
      >>> tx = from_preset("torch", learning_rate=1e-2, momentum=0.9)
    """
    if "lr" in overrides:
        raise TypeError("pass the learning rate as learning_rate=..., not lr=...")
    preset = get_preset(name)
    if learning_rate is None and preset.lr is None:
        raise ValueError(
            f"preset {name!r} has no default learning rate ({preset.title} requires one); "
            "pass learning_rate=..."
        )
    form = preset.division_form if preset.division_form in DIVISION_FORMS else "divide"
    hp = preset.hyperparameters(
        **{"division_form": form, **overrides},
        **({} if learning_rate is None else {"lr": learning_rate}),
    )
    return rmsprop(hp.pop("lr"), **hp)
