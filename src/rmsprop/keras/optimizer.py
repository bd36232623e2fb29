"""``rmsprop.keras.RMSprop``: every switch and preset as a Keras 3 optimizer.

Where the switches are Keras's own (the ``keras`` preset, with any ``rho``, ``momentum``,
``epsilon``, ``centered`` and decoupled ``weight_decay``), the step *is* Keras's code
(``keras.optimizers.RMSprop``'s ``update_step``, and on the torch backend its
``torch._foreach`` step), so it is Keras bit for bit by construction. Any other switch
runs :meth:`RMSprop.update_step` below, written in ``keras.ops`` with the step numbers
of :data:`rmsprop.algorithm.ALGORITHM` and torch's op order (``division_form="divide"``).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from .. import formula
from .._validation import (
    NON_NEGATIVE,
    UNIT,
    check_real,
    validate_hyperparameters,
)
from ..presets import SWITCHES, get_preset

#: Our switch names that Keras spells differently.
KERAS_NAMES = {"alpha": "rho", "eps": "epsilon", "lr": "learning_rate"}
#: The switch values keras.optimizers.RMSprop has (rho, momentum, epsilon, centered and a
#: decoupled weight_decay are free): with these, the step is Keras's own code.
KERAS_OWN = {"eps_in_sqrt": True, "initial_accumulator_value": 0.0, "nesterov": False,
             "lr_in_momentum": True, "decoupled_weight_decay": True, "bias_correction": False,
             "maximize": False, "ema_form": "multiply", "centered_clamp": False,
             "division_form": "lr_first"}  # fmt: skip
EXTRA = ("maximize", "division_form", "sparse_mode")  # switches beyond the preset's
SPARSE_MODES = ("lazy", "dense")


#: ``rmsprop.formula``'s functions in ``keras.ops`` (any backend), in Keras's text
#: (``ρ·v + (1 − ρ)·g²``, ``ops.square``; ``max(s, 0)`` as ``relu``: in ``s``'s own dtype)
KERAS_OPS = formula.ArrayOps(
    sqrt=ops.sqrt,
    rsqrt=ops.rsqrt,
    square=ops.square,
    abs_sq=lambda m: m * m,
    clamp_at_zero=ops.relu,
)


def indexed_rows(gradient):
    """``(rows, values)`` of a TensorFlow ``IndexedSlices`` gradient (an ``Embedding``'s on
    the tensorflow backend) with duplicate rows summed, as TF1's optimizer sums them before
    ``SparseApplyRMSProp``; ``(None, gradient)`` for a dense gradient."""
    if keras.backend.backend() != "tensorflow":
        return None, gradient
    import tensorflow as tf

    if not isinstance(gradient, tf.IndexedSlices):
        return None, gradient
    rows, position = tf.unique(gradient.indices)
    return rows, tf.math.unsorted_segment_sum(gradient.values, position, tf.shape(rows)[0])


class Rows:
    """Reads and writes of a whole tensor (``rows=None``) or of the rows of a lazy sparse
    step: :meth:`read` gathers the rows, :meth:`write` scatters them back (Keras's
    tensorflow optimizer scatters an ``IndexedSlices`` value)."""

    def __init__(self, optimizer, rows) -> None:
        self.optimizer, self.rows = optimizer, rows

    def read(self, variable):
        return variable if self.rows is None else ops.take(variable, self.rows, axis=0)

    def _slices(self, value):
        if self.rows is None:
            return value
        import tensorflow as tf

        return tf.IndexedSlices(value, self.rows)

    def write(self, variable, value) -> None:
        self.optimizer.assign(variable, self._slices(value))

    def subtract(self, variable, value) -> None:
        self.optimizer.assign_sub(variable, self._slices(value))


@keras.saving.register_keras_serializable(package="rmsprop", name="RMSprop")
class RMSprop(keras.optimizers.RMSprop):
    r"""RMSprop with every switch of every framework, as a Keras 3 optimizer.

    Keras's arguments keep Keras's names and defaults (``learning_rate=0.001, rho=0.9,
    momentum=0.0, epsilon=1e-7, centered=False``, ``weight_decay``, ``clipnorm``,
    ``clipvalue``, ``global_clipnorm``, ``use_ema``, ``loss_scale_factor``,
    ``gradient_accumulation_steps``, schedules, ``exclude_from_weight_decay``); the
    switches of :data:`rmsprop.algorithm.ALGORITHM` are keywords, and ``preset=`` takes
    every switch and default from a preset (``rmsprop.PRESETS``); arguments you pass win::

        v = rho*v + (1-rho)*g²                       # v starts at initial_accumulator_value
        d = sqrt(v [- ḡ²] + epsilon)   or   sqrt(v [- ḡ²]) + epsilon   (eps_in_sqrt)
        θ -= lr * g/d   (momentum: lr inside the buffer, Keras, or outside, torch)

    Args:
      preset: a preset name (``"torch"``, ``"tf1"``, ``"timm_tf"``, ...) or ``None``
        (Keras's switches).
      eps_in_sqrt: ``sqrt(v + epsilon)`` (Keras, the default) or ``sqrt(v) + epsilon``.
      initial_accumulator_value: the starting ``v`` (1 for TF1 and timm).
      nesterov: Nesterov momentum.
      lr_in_momentum: the lr inside the momentum buffer (Keras, the default) or outside
        (torch).
      bias_correction: divide the averages by ``1 − rhoᵗ`` (optax).
      maximize: ascend instead of descend (torch).
      ema_form: how the averages are written (``"multiply"``, ``"torch"``, ``"delta"``).
      centered_clamp: clamp ``v − ḡ²`` at 0 before the square root.
      decoupled_weight_decay: ``weight_decay`` is Keras's decoupled ``θ −= η λ θ`` (the
        default) or, when False, torch's coupled ``g += λ θ``; both respect
        ``exclude_from_weight_decay``. Coupled decay is held in ``coupled_weight_decay``
        (Keras's own ``weight_decay`` attribute means decoupled decay, so it is None).
      division_form: ``"lr_first"`` (Keras: ``(lr·g)/d``), ``"divide"`` (torch's op
        order) or ``"rsqrt"`` (optax's).
      sparse_mode: for an ``IndexedSlices`` gradient (an ``Embedding``'s on the tensorflow
        backend), ``"lazy"``: only the rows present are updated, duplicates summed, and
        absent rows keep their parameter and every state (their momentum does not move
        them): TF1's ``SparseApplyRMSProp`` and ``rmsprop.RMSprop``'s default; or
        ``"dense"``: the gradient made dense, as Keras's own optimizers do. Default:
        ``"dense"`` with Keras's own switches (the step is Keras's), ``"lazy"`` otherwise.
        Keras's decoupled ``weight_decay`` decays every row either way.

    Differences from keras.optimizers.RMSprop:
      With Keras's switches it *is* Keras's step. Variables keep Keras's names
      (``velocity``, ``momentum``, ``average_gradient``), so a checkpoint of a Keras
      RMSprop loads into it. Variables compute in their own dtype, as in Keras.

    Examples:
      >>> import keras, rmsprop.keras
      >>> opt = rmsprop.keras.RMSprop(learning_rate=0.1, preset="keras")
      >>> var = keras.Variable([10.0])
      >>> opt.apply_gradients([(keras.ops.convert_to_tensor([10.0]), var)])  # g = θ
      >>> print(round(float(keras.ops.convert_to_numpy(var)[0]), 4))
      9.6838
    """

    def __init__(
        self,
        learning_rate: Any = None,
        rho: float | None = None,
        momentum: float | None = None,
        epsilon: float | None = None,
        centered: bool | None = None,
        weight_decay: float | None = None,
        clipnorm: float | None = None,
        clipvalue: float | None = None,
        global_clipnorm: float | None = None,
        use_ema: bool = False,
        ema_momentum: float = 0.99,
        ema_overwrite_frequency: int | None = None,
        loss_scale_factor: float | None = None,
        gradient_accumulation_steps: int | None = None,
        name: str | None = None,
        *,
        preset: str | None = None,
        eps_in_sqrt: bool | None = None,
        initial_accumulator_value: float | None = None,
        nesterov: bool | None = None,
        lr_in_momentum: bool | None = None,
        decoupled_weight_decay: bool | None = None,
        bias_correction: bool | None = None,
        maximize: bool | None = None,
        ema_form: str | None = None,
        centered_clamp: bool | None = None,
        division_form: str | None = None,
        sparse_mode: str | None = None,
        **kwargs: Any,
    ) -> None:
        for ours in set(kwargs) & set(KERAS_NAMES):  # torch's names, as a port would carry them
            raise TypeError(f"RMSprop() got {ours}=, torch's name for Keras's "
                            f"{KERAS_NAMES[ours]}=: here the arguments have Keras's names")  # fmt: skip
        given = {"lr": learning_rate, "alpha": rho, "momentum": momentum, "eps": epsilon,
                 "centered": centered, "eps_in_sqrt": eps_in_sqrt,
                 "initial_accumulator_value": initial_accumulator_value, "nesterov": nesterov,
                 "lr_in_momentum": lr_in_momentum, "decoupled_weight_decay": decoupled_weight_decay,
                 "bias_correction": bias_correction, "maximize": maximize, "ema_form": ema_form,
                 "centered_clamp": centered_clamp, "division_form": division_form}  # fmt: skip
        hp = resolve(preset, {k: v for k, v in given.items() if v is not None}, weight_decay)
        decay = hp.pop("weight_decay")
        super().__init__(
            learning_rate=hp.pop("lr"), rho=hp.pop("alpha"), momentum=hp.pop("momentum"),
            epsilon=hp.pop("eps"), centered=hp.pop("centered"),
            weight_decay=decay if decay and hp["decoupled_weight_decay"] else None,
            clipnorm=clipnorm, clipvalue=clipvalue, global_clipnorm=global_clipnorm,
            use_ema=use_ema, ema_momentum=ema_momentum,
            ema_overwrite_frequency=ema_overwrite_frequency,
            loss_scale_factor=loss_scale_factor,
            gradient_accumulation_steps=gradient_accumulation_steps, name=name or "rmsprop",
            **kwargs,
        )  # fmt: skip
        self.preset = preset
        self.coupled_weight_decay = 0.0 if hp["decoupled_weight_decay"] else decay
        for key, value in hp.items():
            setattr(self, key, value)
        self.keras_own = all(hp[k] == v for k, v in KERAS_OWN.items())
        if sparse_mode is not None and sparse_mode not in SPARSE_MODES:
            raise ValueError(f"sparse_mode must be one of {SPARSE_MODES}, got {sparse_mode!r}")
        self.sparse_mode = sparse_mode or ("dense" if self.keras_own else "lazy")

    def add_variable_from_reference(self, reference_variable, name=None, initializer="zeros"):
        """Keras's ``velocity`` starts at ``initial_accumulator_value`` (1 for TF1, timm):
        it is the variable's initializer, so it holds wherever Keras builds the optimizer
        (inside ``model.fit``'s ``tf.function`` an ``assign`` after building was lost)."""
        if name == "velocity" and self.initial_accumulator_value:
            initializer = keras.initializers.Constant(self.initial_accumulator_value)
        return super().add_variable_from_reference(reference_variable, name, initializer)

    def _apply_weight_decay(self, variables) -> None:
        """(3) decoupled: ``θ ← θ − η λ θ`` (Keras's ``_apply_weight_decay``, which respects
        ``exclude_from_weight_decay``).

        Keras casts ``λ`` from the Python float to the variable's dtype; on tensorflow that
        cast goes through float32, so a float64 variable decays by ``float32(λ)``. With
        Keras's own switches that is kept (the step is Keras's); with any other switch
        ``λ`` is cast from float64, exact as on the torch and jax backends."""
        decay = self.weight_decay
        if self.keras_own or decay is None:
            super()._apply_weight_decay(variables)
            return
        self.weight_decay = np.float64(decay)  # a NumPy scalar: every backend casts it exactly
        try:
            super()._apply_weight_decay(variables)
        finally:
            self.weight_decay = decay

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        if self.keras_own and keras.backend.backend() == "torch":
            import torch
            from keras.src.backend.torch.optimizers import torch_rmsprop

            with torch.no_grad():  # Keras's own torch step (torch._foreach ops)
                torch_rmsprop.RMSprop._parallel_update_step(
                    self, grads, trainable_variables, learning_rate
                )
            return
        super()._backend_update_step(grads, trainable_variables, learning_rate)

    def update_step(self, gradient, variable, learning_rate) -> None:
        """Steps (1), (3)-(10) for one variable; clipping (2) and decoupled decay (3) ran
        in Keras's ``apply`` before it."""
        rows, values = indexed_rows(gradient)
        if self.keras_own and (rows is None or self.sparse_mode == "dense"):
            super().update_step(gradient, variable, learning_rate)  # (densifies a sparse one)
            return
        if rows is not None and self.sparse_mode == "dense":
            rows, values = None, ops.convert_to_tensor(gradient)
        at = Rows(self, rows)
        # the variable's dtype by Keras's name ("float32"): on tensorflow the variable is a
        # tf.Variable and its dtype a tf.DType, which NumPy and string comparisons misread
        dtype = keras.backend.standardize_dtype(variable.dtype)
        lr, grad = ops.cast(learning_rate, dtype), ops.cast(values, dtype)
        index = self._get_variable_index(variable)
        grad = -grad if self.maximize else grad  # (1)
        if self.coupled_weight_decay and self._use_weight_decay(variable):
            grad = grad + self.coupled_weight_decay * at.read(variable)  # (3) coupled
        velocity = self._velocities[index]
        s = formula.ema_of_square(at.read(velocity), grad, self.rho, self.ema_form,
                                  KERAS_OPS)  # (4)  # fmt: skip
        at.write(velocity, s)
        mean = None
        if self.centered:
            mean = formula.ema_of_mean(at.read(self._average_gradients[index]), grad, self.rho,
                                       self.ema_form, KERAS_OPS, dtype)  # (5)  # fmt: skip
            at.write(self._average_gradients[index], mean)
        if self.bias_correction:  # (6): 1 − ρᵗ in float32 at least (ρ rounds to 1 in bf16)
            wide = "float64" if dtype == "float64" else "float32"
            # convert_to_tensor, not cast: TensorFlow casts a Python float via float32
            rho = ops.convert_to_tensor(self.rho, dtype=wide)
            power = ops.power(rho, ops.cast(self.iterations + 1, wide))
            correction = ops.cast(1 - power, dtype)
            s = s / correction
            mean = None if mean is None else mean / correction
        if mean is not None:
            s = formula.variance(s, mean, self.centered_clamp, KERAS_OPS)
        d = formula.denominator(s, self.epsilon, self.eps_in_sqrt, KERAS_OPS,
                                reciprocal=self.division_form == "rsqrt")  # (7)  # fmt: skip
        self._apply(at, variable, grad, d, lr, index)  # (8)-(10)

    def _apply(self, at: Rows, variable, grad, d, lr, index) -> None:
        """(8)-(10) ``u = g / d``, momentum with the lr inside or outside, ``θ ← θ − Δ``.
        ``"divide"`` follows torch's single-tensor path (its ``addcdiv_`` computes
        ``(lr·g)/d``); ``"lr_first"`` is Keras's ``(lr·g)/d``; ``"rsqrt"`` multiplies."""
        scaled = (lambda x: x * d) if self.division_form == "rsqrt" else (lambda x: x / d)
        if not self.momentum:
            at.subtract(variable, scaled(lr * grad))
            return
        buffer = self._momentums[index]
        if self.lr_in_momentum:
            step = scaled(lr * grad)
            new = at.read(buffer) * self.momentum + step
            at.write(buffer, new)
            at.subtract(variable, new * self.momentum + step if self.nesterov else new)
            return
        u = scaled(grad)
        new = at.read(buffer) * self.momentum + u
        at.write(buffer, new)
        at.subtract(variable, lr * (new * self.momentum + u) if self.nesterov else lr * new)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["weight_decay"] = self.coupled_weight_decay or config["weight_decay"]
        config.update({name: getattr(self, name) for name in (*SWITCHES, *EXTRA)
                       if name not in KERAS_NAMES and name not in config and hasattr(self, name)})  # fmt: skip
        config["preset"] = self.preset
        return config


def resolve(
    preset: str | None, given: dict[str, Any], weight_decay: float | None
) -> dict[str, Any]:
    """Every switch with our names: the preset's (Keras's by default), then ``given``."""
    base = get_preset(preset or "keras")
    hp = {"lr": base.lr, **{name: getattr(base, name) for name in SWITCHES},
          "maximize": False, "division_form": base.division_form}  # fmt: skip
    hp.update(given)
    hp["weight_decay"] = weight_decay if weight_decay is not None else hp["weight_decay"]
    if hp["lr"] is None:
        raise ValueError(f"preset {preset!r} has no default learning rate; pass learning_rate=...")
    for ours, theirs in KERAS_NAMES.items():
        if ours != "lr":
            check_real(theirs, hp[ours], UNIT if ours == "alpha" else NON_NEGATIVE)
    if not callable(hp["lr"]) and not isinstance(
        hp["lr"], keras.optimizers.schedules.LearningRateSchedule
    ):
        check_real("learning_rate", hp["lr"], NON_NEGATIVE)
    if (
        "division_form" not in given
        and hp["division_form"] == "lr_first"
        and not hp["lr_in_momentum"]
    ):
        hp["division_form"] = "divide"  # the lr outside the buffer: torch's op order
    checked = validate_hyperparameters({k: v for k, v in hp.items() if k not in KERAS_NAMES})
    if checked["division_form"] == "lr_first" and not checked["lr_in_momentum"] and hp["momentum"]:
        raise ValueError(
            "division_form='lr_first' multiplies by the lr before the momentum buffer; "
            "it needs lr_in_momentum=True (or division_form='divide')"
        )
    return {**hp, **checked}
