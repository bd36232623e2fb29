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

from ..presets import SWITCHES, get_preset


@dataclass(frozen=True)
class Source:
    """What a description says, with our names: ``hyperparameters`` holds ``lr`` and every
    switch of ``rmsprop.presets.SWITCHES`` plus ``maximize`` and the clipping options."""

    framework: str
    title: str
    hyperparameters: dict[str, Any]
    notes: tuple[str, ...] = ()
    decay_matrices_only: bool = False  # weight decay only on parameters with ndim > 1
    extras: dict[str, Any] = field(default_factory=dict)  # Keras-only options to carry over


def _switches(preset: str, lr: Any) -> dict[str, Any]:
    base = get_preset(preset)
    return {"lr": lr, **{n: getattr(base, n) for n in SWITCHES}, "maximize": False,
            "clipvalue": None, "clipnorm": None, "global_clipnorm": None}  # fmt: skip


def _take(description: Mapping[str, Any], known: Mapping[str, Any], what: str) -> dict[str, Any]:
    """``known`` (name -> default) filled from ``description``; an unknown key raises."""
    unknown = sorted(set(description) - set(known))
    if unknown:
        raise ValueError(
            f"unknown key {unknown[0]!r} in a {what} description; known keys: {', '.join(known)}"
        )
    return {**known, **description}


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
    return Source("torch", "torch.optim.RMSprop", hp)


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
    notes = []
    lr = args["learning_rate"]
    if isinstance(lr, Mapping):  # a serialized schedule
        inner = lr.get("config", {})
        notes.append(f"learning_rate is a {lr.get('class_name', 'schedule')} schedule: use the "
                     "same schedule in the target (measured here at its initial value)")  # fmt: skip
        lr = inner.get("initial_learning_rate", 0.001)
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
    return Source("keras", "keras.optimizers.RMSprop", hp, tuple(notes), extras=extras)


def from_tf1(description: Mapping[str, Any]) -> Source:
    """``tf.compat.v1.train.RMSPropOptimizer(**description)`` arguments."""
    args = _take(description, {"learning_rate": None, "decay": 0.9, "momentum": 0.0,
                               "epsilon": 1e-10, "use_locking": False, "centered": False,
                               "name": "RMSProp"}, "TF1 RMSPropOptimizer")  # fmt: skip
    hp = _switches("tf1", _required_lr(args, "TF1 RMSPropOptimizer"))
    hp.update({"alpha": args["decay"], "eps": args["epsilon"], "momentum": args["momentum"],
               "centered": args["centered"]})  # fmt: skip
    return Source("tf1", "tf.compat.v1.train.RMSPropOptimizer", hp)


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
    return Source("optax", "optax.rmsprop", hp)


def from_timm(description: Mapping[str, Any]) -> Source:
    """``timm.optim.create_optimizer_v2(model, **description)`` with ``opt='rmsproptf'`` or
    ``'rmsprop'``: the factory's defaults (alpha 0.9, momentum 0.9, no weight decay on
    1-D parameters when ``filter_bias_and_bn``) and the class's (eps 1e-10 / 1e-8)."""
    args = dict(description)
    opt = str(args.pop("opt", "sgd")).lower()
    if opt not in ("rmsproptf", "rmsprop"):
        raise ValueError(f"opt={opt!r}: rmsprop port reads timm's 'rmsproptf' and 'rmsprop'")
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
    decay_matrices_only = bool(args["weight_decay"]) and args["filter_bias_and_bn"]
    if decay_matrices_only:
        notes.append("filter_bias_and_bn: no weight decay on 1-D parameters (biases, norms) "
                     "or the model's no_weight_decay() names; the targets below do the same")  # fmt: skip
    title = f"timm create_optimizer_v2(opt={opt!r})"
    return Source("timm", title, hp, tuple(notes), decay_matrices_only=decay_matrices_only)


#: source format -> reader
READERS: dict[str, Callable[[Any], Source]] = {
    "torch": from_torch,
    "keras": from_keras,
    "tf1": from_tf1,
    "optax": from_optax,
    "timm": from_timm,
}
