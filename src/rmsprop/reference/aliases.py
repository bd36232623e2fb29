"""Named optimizers: compositions of the blocks in :mod:`.transforms`.

The order of each chain *is* its semantics; see :data:`rmsprop.algorithm.ALGORITHM`.
"""

from __future__ import annotations

from typing import Any

from .._validation import NON_NEGATIVE, check_real, validate_hyperparameters
from ..presets import get_preset
from .base import Transform, chain
from .schedules import Schedule
from .transforms import (
    add_decayed_weights,
    add_decoupled_weight_decay,
    clip,
    clip_by_global_norm,
    clip_by_norm,
    guard_nonfinite,
    negate,
    scale_by_learning_rate,
    scale_by_rms,
    scale_by_rss,
    scale_by_stddev,
    trace,
)


def check_lr(lr: Any) -> float | Schedule:
    """A learning rate is a real number >= 0 or a schedule ``step -> lr``."""
    return lr if callable(lr) else check_real("lr", lr, NON_NEGATIVE)


def rmsprop(
    lr: float | Schedule = 1e-2,
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
    nonfinite: str = "update",
) -> Transform:
    """RMSprop with every switch of every framework, as a pure NumPy transform.

    The defaults are ``torch.optim.RMSprop``'s. The algorithm (steps (1)-(10)) is
    :data:`rmsprop.algorithm.ALGORITHM`; in short::

        v = alpha*v + (1-alpha)*g²                  # v starts at initial_accumulator_value
        d = sqrt(v [- ḡ²]) + eps   or   sqrt(v [- ḡ²] + eps)   (eps_in_sqrt)
        θ -= lr * g/d   (with momentum: in or out of the buffer, lr_in_momentum)

    Args:
      lr: a float >= 0, or a schedule ``step -> lr`` (``step`` counts from 0).
      alpha: decay of the moving averages, in [0, 1) (Keras ``rho``, optax/TF1 ``decay``).
      eps: added inside or outside the square root, >= 0.
      eps_in_sqrt: ``sqrt(v + eps)`` (Keras, TF1, optax, timm) instead of ``sqrt(v) + eps``.
      initial_accumulator_value: start of ``v`` (TF1 and timm ``RMSpropTF`` use 1).
      centered: divide by the root of the variance ``v - ḡ²`` (Graves 2013).
      momentum: heavy-ball momentum in [0, 1).
      nesterov: Nesterov momentum (optax); needs ``momentum > 0``.
      lr_in_momentum: the lr multiplies the gradient before it enters the momentum buffer
        (TF1, Keras, optax, timm). The default (torch) multiplies the buffer.
      weight_decay: ``λ`` >= 0. Coupled L2 (``g += λθ``, torch) unless
        ``decoupled_weight_decay`` (``θ -= lr·λ·θ``, Keras 3).
      bias_correction: divide the averages by ``1 - alpha**t`` (optax).
      maximize: ascend instead of descend (torch); the gradient is negated first.
      clipvalue: clamp each gradient element to ``[-clipvalue, clipvalue]`` (Keras).
      clipnorm: scale each gradient tensor to norm at most ``clipnorm`` (Keras; at most
        one of the three clipping options).
      global_clipnorm: scale all gradients together to global norm at most this (Keras).
      ema_form: ``"torch"``, ``"multiply"`` or ``"delta"``: how the averages are written,
        for last-bit parity with a framework (see ``rmsprop.algorithm``).
      centered_clamp: clamp ``v - ḡ²`` at 0 before the square root.
      nonfinite: ``"update"`` (NaN/Inf flow through, as in every framework), ``"skip"`` (a
        step with a non-finite gradient returns zero updates and leaves the state as it
        was; the state counts it) or ``"raise"`` (``FloatingPointError``).

    Returns:
      A :class:`~rmsprop.reference.base.Transform`; its state is a tuple of block states.

    Differences from torch / Keras / optax:
      Every switch of each is here; their defaults are torch's. Unlike optax,
      ``scale_by_learning_rate`` does not flip the sign: the chain ends in ``negate``.
      Hyperparameters are validated (alpha and momentum must be < 1; torch accepts more).

    Examples:
      >>> import numpy as np
      >>> from rmsprop import reference as ref
      >>> tx = ref.rmsprop(lr=0.1, alpha=0.9, eps=1e-7, eps_in_sqrt=True)  # Keras's math
      >>> params = np.array([10.0]); state = tx.init(params)
      >>> updates, state = tx.update(params, state, params)    # loss = θ²/2, so g = θ
      >>> print(np.round(ref.apply_updates(params, updates), 6))
      [9.683772]
    """
    hp = validate_hyperparameters(
        {
            "lr": lr, "alpha": alpha, "eps": eps, "eps_in_sqrt": eps_in_sqrt,
            "initial_accumulator_value": initial_accumulator_value, "centered": centered,
            "momentum": momentum, "nesterov": nesterov, "lr_in_momentum": lr_in_momentum,
            "weight_decay": weight_decay, "decoupled_weight_decay": decoupled_weight_decay,
            "bias_correction": bias_correction, "maximize": maximize, "clipvalue": clipvalue,
            "clipnorm": clipnorm, "global_clipnorm": global_clipnorm, "ema_form": ema_form,
            "centered_clamp": centered_clamp, "nonfinite": nonfinite,
        },
        lr_check=check_lr,
    )  # fmt: skip
    mode = hp.pop("nonfinite")
    tx = chain(*_rmsprop_blocks(**hp))
    return tx if mode == "update" else guard_nonfinite(tx, mode)


def _rmsprop_blocks(**hp: Any) -> list[Transform]:
    blocks = [negate()] if hp["maximize"] else []  # (1)
    blocks += _clip_blocks(hp)  # (2)
    if hp["weight_decay"] and not hp["decoupled_weight_decay"]:
        blocks.append(add_decayed_weights(hp["weight_decay"]))  # (3) coupled
    rms_args = {
        "eps_in_sqrt": hp["eps_in_sqrt"],
        "initial_accumulator_value": hp["initial_accumulator_value"],
        "bias_correction_": hp["bias_correction"],
        "ema_form": hp["ema_form"],
    }
    if hp["centered"]:  # (4)-(8)
        blocks.append(
            scale_by_stddev(hp["alpha"], hp["eps"], centered_clamp=hp["centered_clamp"], **rms_args)
        )
    else:
        blocks.append(scale_by_rms(hp["alpha"], hp["eps"], **rms_args))
    blocks += _lr_and_momentum(hp["lr"], hp["momentum"], hp["nesterov"], hp["lr_in_momentum"])
    if hp["weight_decay"] and hp["decoupled_weight_decay"]:
        blocks.append(add_decoupled_weight_decay(hp["weight_decay"], hp["lr"]))  # (3) decoupled
    blocks.append(negate())  # (10)
    return blocks


def _clip_blocks(hp: dict[str, Any]) -> list[Transform]:
    if hp.get("clipvalue") is not None:
        return [clip(hp["clipvalue"])]
    if hp.get("clipnorm") is not None:
        return [clip_by_norm(hp["clipnorm"])]
    if hp.get("global_clipnorm") is not None:
        return [clip_by_global_norm(hp["global_clipnorm"])]
    return []


def _lr_and_momentum(
    lr: float | Schedule, momentum: float, nesterov: bool, lr_in_momentum: bool
) -> list[Transform]:
    """(9): the lr before the trace puts it inside the buffer; after, outside."""
    if not momentum:
        return [scale_by_learning_rate(lr)]
    if lr_in_momentum:
        return [scale_by_learning_rate(lr), trace(momentum, nesterov=nesterov)]
    return [trace(momentum, nesterov=nesterov), scale_by_learning_rate(lr)]


def from_preset(name: str, **overrides: Any) -> Transform:
    """:func:`rmsprop` with the switches of preset ``name`` (see ``rmsprop.PRESETS``);
    ``overrides`` win over the preset.

    Examples:
      >>> from rmsprop import reference as ref
      >>> tx = ref.from_preset("tf1", lr=0.1)          # v starts at 1, eps inside, lr inside
    """
    return rmsprop(**get_preset(name).hyperparameters(**overrides))


def sgd(
    lr: float | Schedule = 1e-2,
    momentum: float = 0.0,
    *,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    maximize: bool = False,
) -> Transform:
    """Gradient descent with optional heavy-ball or Nesterov momentum, as ``torch.optim.SGD``
    (dampening 0): ``b = μb + g; θ -= lr·b`` (Nesterov: ``θ -= lr·(g + μb)``)."""
    hp = validate_hyperparameters(
        {"lr": lr, "momentum": momentum, "nesterov": nesterov, "weight_decay": weight_decay,
         "maximize": maximize},
        lr_check=check_lr,
    )  # fmt: skip
    blocks = [negate()] if hp["maximize"] else []
    if hp["weight_decay"]:
        blocks.append(add_decayed_weights(hp["weight_decay"]))
    blocks += _lr_and_momentum(hp["lr"], hp["momentum"], hp["nesterov"], lr_in_momentum=False)
    return chain(*blocks, negate())


def momentum(lr: float | Schedule = 1e-2, momentum: float = 0.9) -> Transform:
    """Heavy-ball momentum: :func:`sgd` with ``momentum``."""
    return sgd(lr, momentum)


def nag(lr: float | Schedule = 1e-2, momentum: float = 0.9) -> Transform:
    """Nesterov accelerated gradient: :func:`sgd` with ``nesterov=True``."""
    return sgd(lr, momentum, nesterov=True)


def adagrad(
    lr: float = 1e-2,
    lr_decay: float = 0.0,
    weight_decay: float = 0.0,
    initial_accumulator_value: float = 0.0,
    eps: float = 1e-10,
) -> Transform:
    """Adagrad as ``torch.optim.Adagrad``: ``sum += g²; θ -= clr·g/(sqrt(sum) + eps)``
    with ``clr = lr / (1 + (t-1)·lr_decay)``."""
    hp = validate_hyperparameters(
        {"lr": lr, "lr_decay": lr_decay, "weight_decay": weight_decay,
         "initial_accumulator_value": initial_accumulator_value, "eps": eps},
    )  # fmt: skip
    blocks = [add_decayed_weights(hp["weight_decay"])] if hp["weight_decay"] else []
    rate, decay = hp["lr"], hp["lr_decay"]
    blocks += [
        scale_by_rss(hp["initial_accumulator_value"], hp["eps"]),
        scale_by_learning_rate(lambda step: rate / (1 + step * decay)),
        negate(),
    ]
    return chain(*blocks)
