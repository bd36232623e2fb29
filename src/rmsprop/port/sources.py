"""Read a framework's optimizer description into the switches of the algorithm box.

One reader per source format; each knows the framework's argument names and defaults
(cited in ``rmsprop.presets`` and ``../shared/reference/semantics.md``) and returns
:class:`Source`: every switch and the lr, with notes for what is not a switch (a schedule,
EMA, which parameters are decayed). Unknown keys are errors that name the key.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .._validation import NON_NEGATIVE, POSITIVE, UNIT, check_bool, check_real
from ..presets import get_preset

#: source argument names -> allowed values, checked before the switches are built so that
#: an error names the source's own argument
RULES = {"lr": NON_NEGATIVE, "learning_rate": NON_NEGATIVE, "alpha": UNIT, "rho": UNIT,
         "decay": UNIT, "eps": NON_NEGATIVE, "epsilon": NON_NEGATIVE, "momentum": UNIT,
         "weight_decay": NON_NEGATIVE, "initial_scale": NON_NEGATIVE, "clipnorm": POSITIVE,
         "clipvalue": POSITIVE, "global_clipnorm": POSITIVE}  # fmt: skip
FLAGS = ("centered", "maximize", "nesterov", "eps_in_sqrt", "bias_correction", "capturable",
         "differentiable", "use_locking", "filter_bias_and_bn", "decoupled_decay",
         "lr_in_momentum", "use_ema")  # fmt: skip


@dataclass(frozen=True)
class Source:
    """What a description says, with our names: ``hyperparameters`` holds ``lr`` and every
    switch of ``rmsprop.presets.SWITCHES`` plus ``maximize`` and the clipping options."""

    framework: str
    title: str
    hyperparameters: dict[str, Any]
    preset: str  # the framework's own preset: the exact lines start from it
    notes: tuple[str, ...] = ()
    timm_decay_filter: bool = False  # timm's filter_bias_and_bn: no decay on some parameters
    extras: dict[str, Any] = field(default_factory=dict)  # Keras-only options to carry over
    schedule: str | None = None  # the recipe's lr is this schedule (measured at its start)


def _switches(preset: str, lr: Any) -> dict[str, Any]:
    """Every switch of ``preset`` with ``lr``, no maximize and no clipping."""
    return get_preset(preset).hyperparameters(lr=lr, maximize=False, clipvalue=None,
                                              clipnorm=None, global_clipnorm=None)  # fmt: skip


def _take(description: Any, known: Mapping[str, Any], what: str) -> dict[str, Any]:
    """``known`` (name -> default) filled from ``description``; an unknown key raises, and
    every value is checked under the source's own name (numbers become floats)."""
    if not isinstance(description, Mapping):
        raise ValueError(f"a {what} description is a mapping of argument names to values, "
                         f"got {type(description).__name__}")  # fmt: skip
    unknown = sorted(set(description) - set(known))
    if unknown:
        raise ValueError(
            f"unknown key {unknown[0]!r} in a {what} description; known keys: {', '.join(known)}"
        )
    args = {**known, **description}
    try:
        for name, value in description.items():
            if name in RULES and value is not None and not isinstance(value, Mapping):
                args[name] = check_real(name, value, RULES[name])
            elif name in FLAGS:
                args[name] = check_bool(name, value)
    except TypeError as err:  # a wrong type is bad input too: one message, one exception type
        raise ValueError(str(err)) from err
    return args


def _required_lr(args: Mapping[str, Any], what: str, name: str = "learning_rate") -> float:
    if args[name] is None:
        raise ValueError(f"a {what} description needs {name} (it has no default)")
    return args[name]


def from_torch(description: Mapping[str, Any]) -> Source:
    """``torch.optim.RMSprop(params, **description)`` keyword arguments."""
    args = _take(description, {"lr": 1e-2, "alpha": 0.99, "eps": 1e-8, "weight_decay": 0.0,
                               "momentum": 0.0, "centered": False, "capturable": False,
                               "foreach": None, "maximize": False, "differentiable": False},
                 "torch.optim.RMSprop")  # fmt: skip
    hp = _switches("torch", args["lr"])
    hp.update({k: args[k] for k in ("alpha", "eps", "weight_decay", "momentum", "centered",
                                    "maximize")})  # fmt: skip
    return Source("torch", "torch.optim.RMSprop", hp, "torch")


def from_keras(description: Mapping[str, Any] | str) -> Source:
    """A Keras 3 ``RMSprop.get_config()`` dict (or its JSON, or ``keras.saving``'s
    ``{"class_name": "RMSprop", "config": {...}}`` form)."""
    config = json.loads(description) if isinstance(description, str) else dict(description)
    if "config" in config and "class_name" in config:
        if config["class_name"] != "RMSprop":
            raise ValueError(f"a Keras config of class {config['class_name']!r}, not RMSprop")
        config = dict(config["config"])
    args = _take(config, {"name": "rmsprop", "learning_rate": 0.001, "rho": 0.9, "momentum": 0.0,
                          "epsilon": 1e-7, "centered": False, "weight_decay": None,
                          "clipnorm": None, "clipvalue": None, "global_clipnorm": None,
                          "use_ema": False, "ema_momentum": 0.99, "ema_overwrite_frequency": None,
                          "loss_scale_factor": None, "gradient_accumulation_steps": None},
                 "Keras RMSprop get_config()")  # fmt: skip
    notes, schedule = [], None
    lr = args["learning_rate"]
    if isinstance(lr, Mapping):  # a serialized schedule
        schedule, lr = _schedule_start(lr)
        notes.append(f"learning_rate is a {schedule} schedule: pass the same schedule in the "
                     f"target (the comparison below holds it at its first value, {lr:g})")  # fmt: skip
    hp = _switches("keras", lr)
    hp.update({"alpha": args["rho"], "eps": args["epsilon"], "momentum": args["momentum"],
               "centered": args["centered"], "weight_decay": args["weight_decay"] or 0.0,
               "clipnorm": args["clipnorm"], "clipvalue": args["clipvalue"],
               "global_clipnorm": args["global_clipnorm"]})  # fmt: skip
    extras = {k: args[k] for k in ("use_ema", "ema_momentum", "ema_overwrite_frequency",
                                   "loss_scale_factor", "gradient_accumulation_steps")
              if args[k] not in (None, False) and not (k == "ema_momentum" and not args["use_ema"])}  # fmt: skip
    if extras.get("use_ema"):
        notes.append("use_ema: keep an EMA of the weights (torch: torch.optim.swa_utils."
                     "AveragedModel; JAX: optax.ema on the params)")  # fmt: skip
    if extras.get("gradient_accumulation_steps"):
        notes.append("gradient_accumulation_steps: torch: accumulate .grad over the steps; "
                     "JAX: optax.MultiSteps(tx, every_k_schedule=k)")  # fmt: skip
    return Source(
        "keras",
        "keras.optimizers.RMSprop",
        hp,
        "keras",
        tuple(notes),
        extras=extras,
        schedule=schedule,
    )


def from_tf1(description: Mapping[str, Any]) -> Source:
    """``tf.compat.v1.train.RMSPropOptimizer(**description)`` arguments."""
    args = _take(description, {"learning_rate": None, "decay": 0.9, "momentum": 0.0,
                               "epsilon": 1e-10, "use_locking": False, "centered": False,
                               "name": "RMSProp"}, "TF1 RMSPropOptimizer")  # fmt: skip
    hp = _switches("tf1", _required_lr(args, "TF1 RMSPropOptimizer"))
    hp.update({"alpha": args["decay"], "eps": args["epsilon"], "momentum": args["momentum"],
               "centered": args["centered"]})  # fmt: skip
    return Source("tf1", "tf.compat.v1.train.RMSPropOptimizer", hp, "tf1")


def from_optax(description: Mapping[str, Any]) -> Source:
    """``optax.rmsprop(**description)`` arguments."""
    args = _take(description, {"learning_rate": None, "decay": 0.9, "eps": 1e-8,
                               "initial_scale": 0.0, "eps_in_sqrt": True, "centered": False,
                               "momentum": None, "nesterov": False, "bias_correction": False},
                 "optax.rmsprop")  # fmt: skip
    hp = _switches("optax", _required_lr(args, "optax.rmsprop"))
    hp.update({"alpha": args["decay"], "eps": args["eps"],
               "initial_accumulator_value": args["initial_scale"],
               "eps_in_sqrt": args["eps_in_sqrt"], "centered": args["centered"],
               "momentum": args["momentum"] or 0.0, "nesterov": args["nesterov"],
               "bias_correction": args["bias_correction"]})  # fmt: skip
    return Source("optax", "optax.rmsprop", hp, "optax")


def from_timm(description: Mapping[str, Any]) -> Source:
    """``timm.optim.create_optimizer_v2(model, **description)`` with ``opt='rmsproptf'`` or
    ``'rmsprop'``: the factory's defaults (alpha 0.9, momentum 0.9, no weight decay on
    1-D parameters when ``filter_bias_and_bn``) and the class's (eps 1e-10 / 1e-8)."""
    if not isinstance(description, Mapping):
        raise ValueError("a timm description is a mapping of argument names to values")
    args = dict(description)
    if "opt" not in args:
        raise ValueError("a timm description needs opt ('rmsproptf' or 'rmsprop')")
    opt = str(args.pop("opt")).lower()
    if opt not in ("rmsproptf", "rmsprop"):
        raise ValueError(f"opt={opt!r}: rmsprop port reads timm's 'rmsproptf' and 'rmsprop' "
                         "(not the lookahead_, caution or corrected-decay variants)")  # fmt: skip
    for name in ("corrected_weight_decay", "caution"):
        if args.get(name):
            raise ValueError(f"{name}=True is not supported by rmsprop port (no such switch)")
        args.pop(name, None)
    tf_style = opt == "rmsproptf"
    known = {"lr": None, "weight_decay": 0.0, "momentum": 0.9, "filter_bias_and_bn": True,
             "foreach": None, "layer_decay": None, "alpha": 0.9,
             "eps": 1e-10 if tf_style else 1e-8, "centered": False}  # fmt: skip
    if tf_style:
        known.update({"decoupled_decay": False, "lr_in_momentum": True})
    args = _take(args, known, f"timm create_optimizer_v2(opt={opt!r})")
    if args["layer_decay"] is not None:
        raise ValueError("layer_decay: per-layer lr scales are not an optimizer switch; "
                         "port them as parameter groups")  # fmt: skip
    hp = _switches(
        "timm_tf" if tf_style else "torch", args["lr"] if args["lr"] is not None else 1e-2
    )
    hp.update({"alpha": args["alpha"], "eps": args["eps"], "momentum": args["momentum"],
               "centered": args["centered"], "weight_decay": args["weight_decay"]})  # fmt: skip
    if tf_style:
        hp.update({"decoupled_weight_decay": args["decoupled_decay"],
                   "lr_in_momentum": args["lr_in_momentum"]})  # fmt: skip
    notes = ["timm's factory defaults: alpha 0.9 and momentum 0.9 (not the class defaults)"]
    if args["lr"] is None:
        notes.append("lr not given: timm's class default 1e-2")
    decay_filter = bool(args["weight_decay"]) and args["filter_bias_and_bn"]
    if decay_filter:
        notes.append("filter_bias_and_bn: no weight decay on 1-D parameters, on names ending "
                     "in '.bias' and on the model's no_weight_decay() names (the PyTorch line "
                     "below applies the same rule; the JAX and Keras lines by dimension and "
                     "name)")  # fmt: skip
    title = f"timm create_optimizer_v2(opt={opt!r})"
    return Source("timm", title, hp, "timm_tf" if tf_style else "torch", tuple(notes),
                  timm_decay_filter=decay_filter)  # fmt: skip


def _schedule_start(schedule: Mapping[str, Any]) -> tuple[str, float]:
    """A serialized Keras schedule: its class name and its first learning rate."""
    name, config = str(schedule.get("class_name", "schedule")), schedule.get("config", {})
    if "initial_learning_rate" in config:
        return name, check_real(
            "initial_learning_rate", config["initial_learning_rate"], NON_NEGATIVE
        )
    if config.get("values"):  # PiecewiseConstantDecay
        return name, check_real("values[0]", config["values"][0], NON_NEGATIVE)
    raise ValueError(f"learning_rate is a {name} schedule whose first value cannot be read; "
                     "pass learning_rate as a number")  # fmt: skip


#: source format -> reader
READERS: dict[str, Callable[[Any], Source]] = {
    "torch": from_torch,
    "keras": from_keras,
    "tf1": from_tf1,
    "optax": from_optax,
    "timm": from_timm,
}
