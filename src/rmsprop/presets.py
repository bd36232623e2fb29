"""Presets: the exact RMSprop of each framework, as data.

A :class:`Preset` records every switch of the algorithm (see :mod:`rmsprop.algorithm`)
and the framework's default hyperparameters, each with the source it was read from.
Nothing here computes anything; the NumPy reference (``rmsprop.reference.from_preset``)
and the torch optimizer (``rmsprop.RMSprop.from_preset``) both consume these records.
Importing this module needs only the standard library.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ._validation import did_you_mean

__all__ = ["PRESETS", "SWITCHES", "Preset", "get_preset"]

#: The switches a preset fixes, in the order the algorithm box applies them.
SWITCHES = (
    "alpha",
    "eps",
    "eps_in_sqrt",
    "initial_accumulator_value",
    "centered",
    "momentum",
    "nesterov",
    "lr_in_momentum",
    "weight_decay",
    "decoupled_weight_decay",
    "bias_correction",
    "ema_form",
    "centered_clamp",
)


@dataclass(frozen=True)
class Preset:
    """One framework's RMSprop: every switch, its defaults, and where each came from.

    Attributes:
      name: the key in :data:`PRESETS`.
      title: what it reproduces, in words.
      lr: the framework's default learning rate, or ``None`` where the framework has none
        (TF1, optax): then ``lr`` must be passed.
      alpha ... centered_clamp: the switches, with the meaning of ``rmsprop.RMSprop``.
      division_form: how the framework writes steps (7)-(9), ``"divide"``, ``"rsqrt"``
        (optax) or ``"lr_first"`` (Keras); not a switch of the math, only of its last bit.
        The JAX and Keras front ends follow it; the torch optimizer always divides.
      source: the files (and commits) the switches were read from.
      notes: per switch, why it has this value (switch name -> sentence).
    """

    name: str
    title: str
    lr: float | None
    alpha: float
    eps: float
    eps_in_sqrt: bool
    initial_accumulator_value: float = 0.0
    centered: bool = False
    momentum: float = 0.0
    nesterov: bool = False
    lr_in_momentum: bool = False
    weight_decay: float = 0.0
    decoupled_weight_decay: bool = False
    bias_correction: bool = False
    ema_form: str = "multiply"
    centered_clamp: bool = False
    division_form: str = "divide"
    source: str = ""
    notes: Mapping[str, str] = field(default_factory=dict)

    def hyperparameters(self, **overrides: Any) -> dict[str, Any]:
        """The keyword arguments this preset passes to an optimizer; overrides win.

        Overrides may name any argument of the optimizer they are meant for (``maximize``,
        ``clipnorm``, ``impl``, ...); the optimizer validates them.

        Raises:
          ValueError: the preset has no default ``lr`` and none was given.
        """
        values = {"lr": self.lr, **{name: getattr(self, name) for name in SWITCHES}}
        values.update(overrides)
        if values["lr"] is None:
            raise ValueError(
                f"preset {self.name!r} has no default lr ({self.title} requires one); pass lr=..."
            )
        return values

    def differences(self, other: Preset) -> dict[str, tuple[Any, Any]]:
        """Switches (and default lr) whose values differ: name -> (self's, other's)."""
        names = ("lr", *SWITCHES)
        return {
            n: (getattr(self, n), getattr(other, n))
            for n in names
            if getattr(self, n) != getattr(other, n)
        }


def _frozen(**notes: str) -> Mapping[str, str]:
    return MappingProxyType(dict(notes))


_TORCH = "pytorch/pytorch:torch/optim/rmsprop.py (_single_tensor_rmsprop) @ torch 2.13.0"
_KERAS = (
    "keras-team/keras:keras/src/optimizers/rmsprop.py (update_step), "
    "base_optimizer.py (_apply_weight_decay, _clip_gradients) @ 3.15"
)
_TF1 = (
    "tensorflow/tensorflow:tensorflow/python/training/rmsprop.py (RMSPropOptimizer, "
    "_create_slots: rms=ones) + core/kernels/training_ops.cc (ApplyRMSProp<CPU>)"
)
_OPTAX = "google-deepmind/optax:optax/_src/alias.py (rmsprop), _src/transform.py (scale_by_rms)"
_TIMM = "huggingface/pytorch-image-models:timm/optim/rmsprop_tf.py (RMSpropTF.step) @ 1.0.x"

_PRESET_LIST = (
    Preset(
        name="torch",
        title="PyTorch torch.optim.RMSprop",
        lr=1e-2,
        alpha=0.99,
        eps=1e-8,
        eps_in_sqrt=False,
        ema_form="torch",
        source=_TORCH,
        notes=_frozen(
            eps_in_sqrt="avg = square_avg.sqrt().add_(eps): eps outside the sqrt",
            initial_accumulator_value="square_avg = zeros_like(p)",
            lr_in_momentum="buf = momentum*buf + g/avg; p -= lr*buf: lr outside the buffer",
            weight_decay="coupled L2: grad = grad.add(p, alpha=weight_decay)",
            ema_form="square_avg.mul_(alpha).addcmul_(g, g, value=1-alpha); grad_avg.lerp_",
            centered_clamp="no clamp: sqrt of a rounding-negative variance is NaN",
        ),
    ),
    Preset(
        name="keras",
        title="Keras 3 keras.optimizers.RMSprop",
        lr=1e-3,
        alpha=0.9,
        eps=1e-7,
        eps_in_sqrt=True,
        lr_in_momentum=True,
        decoupled_weight_decay=True,
        ema_form="multiply",
        division_form="lr_first",
        source=_KERAS,
        notes=_frozen(
            alpha="rho=0.9",
            eps_in_sqrt="increment = lr*g / sqrt(velocity + epsilon): eps inside",
            initial_accumulator_value="velocity initializer='zeros'",
            lr_in_momentum="momentum = momentum*m + increment; var -= momentum",
            decoupled_weight_decay="var -= var*wd*lr before the step (_apply_weight_decay)",
            ema_form="rho*velocity + (1-rho)*square(g)",
            lr="float learning rates are stored in a float32 variable",
            division_form="increment = divide(multiply(lr, g), sqrt(denominator))",
        ),
    ),
    Preset(
        name="tf1",
        title="TensorFlow 1 tf.compat.v1.train.RMSPropOptimizer",
        lr=None,
        alpha=0.9,
        eps=1e-10,
        eps_in_sqrt=True,
        initial_accumulator_value=1.0,
        lr_in_momentum=True,
        ema_form="delta",
        source=_TF1,
        notes=_frozen(
            lr="learning_rate has no default",
            alpha="decay=0.9",
            eps_in_sqrt="mom = mom*momentum + lr*g/sqrt(ms + epsilon)",
            initial_accumulator_value="the 'rms' slot uses ones_initializer",
            lr_in_momentum="lr multiplies g before it enters mom; var -= mom",
            ema_form="ms += (g*g - ms) * (1 - rho) (CPU and GPU kernels)",
            eps="Python-float decay, momentum and epsilon become float32 tensors (_prepare), "
            "so float64 variables see float32(0.9); pass those values for float64 parity",
        ),
    ),
    Preset(
        name="optax",
        title="optax.rmsprop (JAX)",
        lr=None,
        alpha=0.9,
        eps=1e-8,
        eps_in_sqrt=True,
        lr_in_momentum=True,
        ema_form="multiply",
        division_form="rsqrt",
        source=_OPTAX,
        notes=_frozen(
            lr="learning_rate is required",
            alpha="decay=0.9",
            eps_in_sqrt="eps_in_sqrt=True by default: rsqrt(nu + eps)",
            initial_accumulator_value="initial_scale=0.0",
            lr_in_momentum="chain(scale_by_rms, scale_by_learning_rate, trace): lr inside",
            nesterov="nesterov=False; trace(nesterov=True) when set",
            bias_correction="bias_correction=False; nu/(1-decay**count) when set",
            ema_form="(1-decay)*g**2 + decay*nu",
            division_form="updates = rsqrt(nu + eps) * g, then scale(-lr)",
        ),
    ),
    Preset(
        name="timm_tf",
        title="timm RMSpropTF (TF1 semantics in PyTorch)",
        lr=1e-2,
        alpha=0.9,
        eps=1e-10,
        eps_in_sqrt=True,
        initial_accumulator_value=1.0,
        lr_in_momentum=True,
        ema_form="delta",
        source=_TIMM,
        notes=_frozen(
            eps_in_sqrt="avg = square_avg.add(eps).sqrt_()",
            initial_accumulator_value="square_avg = ones_like(p) ('PyTorch inits to zero')",
            lr_in_momentum="lr_in_momentum=True: buf = momentum*buf + lr*g/avg; p -= buf",
            weight_decay="decoupled_decay=False: coupled L2 grad.add(p, alpha=wd)",
            ema_form="square_avg.add_(g.pow(2) - square_avg, alpha=1-alpha)",
        ),
    ),
    Preset(
        name="hinton",
        title="Hinton, Coursera lecture 6e (2012), as the tutorials teach it",
        lr=1e-3,
        alpha=0.9,
        eps=1e-8,
        eps_in_sqrt=True,
        ema_form="multiply",
        source="Hinton, Srivastava, Swersky: Neural Networks for Machine Learning, lecture 6e",
        notes=_frozen(
            alpha="MeanSquare = 0.9*MeanSquare + 0.1*g^2",
            eps_in_sqrt="w -= lr / sqrt(s + eps) * g, eps=1e-8 guards the division",
            initial_accumulator_value="s starts at 0",
        ),
    ),
    Preset(
        name="graves",
        title="Graves 2013, 'Generating Sequences with RNNs', eqs. 38-41",
        lr=1e-4,
        alpha=0.95,
        eps=1e-4,
        eps_in_sqrt=True,
        centered=True,
        momentum=0.9,
        lr_in_momentum=True,
        ema_form="multiply",
        source="arXiv 1308.0850 sec. 4.2, as implemented in kaishengtai/torch-ntm:rmsprop.lua",
        notes=_frozen(
            centered="delta = 0.9*delta - lr*g/sqrt(n - gbar^2 + eps)",
            lr_in_momentum="the lr is inside the momentum term delta",
        ),
    ),
    Preset(
        name="dqn",
        title="DQN (Nature 2015), DeepMind's Lua release",
        lr=2.5e-4,
        alpha=0.95,
        eps=0.01,
        eps_in_sqrt=True,
        centered=True,
        ema_form="multiply",
        source="kuz/DeepMind-Atari-Deep-Q-Learner:dqn/NeuralQLearner.lua (qLearnMinibatch)",
        notes=_frozen(
            centered="g = 0.95g + 0.05dw; g2 = 0.95g2 + 0.05dw^2; tmp = sqrt(g2 - g^2 + 0.01)",
            momentum="no momentum term",
            initial_accumulator_value="g and g2 start at 0 (not TF1's 1)",
        ),
    ),
    Preset(
        name="dopamine",
        title="Dopamine DQN (TF1 RMSPropOptimizer, centered)",
        lr=2.5e-4,
        alpha=0.95,
        eps=1e-5,
        eps_in_sqrt=True,
        initial_accumulator_value=1.0,
        centered=True,
        lr_in_momentum=True,
        ema_form="delta",
        source="google/dopamine:dopamine/agents/dqn/dqn_agent.py (DQNAgent.__init__) on " + _TF1,
        notes=_frozen(
            initial_accumulator_value="TF1 'rms' slot starts at ones, unlike DQN-Lua",
            eps="epsilon=0.00001, not DQN-Lua's 0.01",
        ),
    ),
    Preset(
        name="impala",
        title="IMPALA (scalable_agent, TF1 RMSPropOptimizer)",
        lr=4.8e-4,
        alpha=0.99,
        eps=0.1,
        eps_in_sqrt=True,
        initial_accumulator_value=1.0,
        lr_in_momentum=True,
        ema_form="delta",
        source="google-deepmind/scalable_agent:experiment.py (build_learner) on " + _TF1,
        notes=_frozen(
            lr="polynomial_decay(0.00048 -> 0): pass a schedule",
            eps="epsilon=.1 inside the sqrt; torchbeast's eps=0.01 outside only approximates it",
        ),
    ),
    Preset(
        name="sb3_tf_like",
        title="Stable-Baselines3 RMSpropTFLike (TF eps and init, PyTorch momentum)",
        lr=1e-2,
        alpha=0.99,
        eps=1e-8,
        eps_in_sqrt=True,
        initial_accumulator_value=1.0,
        ema_form="multiply",
        source="DLR-RM/stable-baselines3:stable_baselines3/common/sb2_compat/rmsprop_tf_like.py",
        notes=_frozen(
            lr_in_momentum="lr stays outside the momentum buffer, PyTorch style",
            initial_accumulator_value="square_avg = ones_like(p)",
        ),
    ),
)

#: name -> :class:`Preset`. Read-only.
PRESETS: Mapping[str, Preset] = MappingProxyType({p.name: p for p in _PRESET_LIST})


def get_preset(name: str) -> Preset:
    """The preset called ``name``; an unknown name raises and lists the known ones."""
    if not isinstance(name, str) or name not in PRESETS:
        raise ValueError(
            f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}"
            f"{did_you_mean(name, PRESETS)}"
        )
    return PRESETS[name]
