"""Write the exact equivalent for each target, and say what each framework's *native*
RMSprop can and cannot express.

The exact targets are this library's front ends (torch ``rmsprop.RMSprop.from_preset``,
JAX ``rmsprop.optax.from_preset``, Keras ``rmsprop.keras.RMSprop``), from the source
framework's own preset plus overrides. A native optimizer is described as data:
which switches it has (and how it names them) and which values it fixes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..presets import PRESETS, SWITCHES

CLIPS = ("clipvalue", "clipnorm", "global_clipnorm")
#: Switches that decide only the last bits (how the same math is written).
LAST_BIT = ("ema_form", "centered_clamp")
#: Switches that change nothing unless another one is on.
NEEDS = {"lr_in_momentum": "momentum", "nesterov": "momentum",
         "decoupled_weight_decay": "weight_decay", "centered_clamp": "centered"}  # fmt: skip


def matters(name: str, hp: dict[str, Any]) -> bool:
    """Does switch ``name`` change the update under ``hp`` (and not only its last bits)?"""
    if name in LAST_BIT or (name in NEEDS and not hp.get(NEEDS[name])):
        return False
    return not (name == "eps_in_sqrt" and not hp.get("eps"))  # eps 0: its place is moot


def preset_and_overrides(hp: dict[str, Any], preset: str) -> dict[str, Any]:
    """The switches (and maximize, clipping) in which ``hp`` differs from ``preset``: the
    overrides that make the preset the recipe. Starting from the source framework's own
    preset keeps its op order (``division_form``: optax's bits in JAX, Keras's in Keras)."""
    base = PRESETS[preset]
    overrides = {n: hp[n] for n in SWITCHES if getattr(base, n) != hp[n] and matters(n, hp)}
    overrides.update({k: hp[k] for k in ("maximize", *CLIPS) if hp.get(k)})
    return overrides


def number(value: float) -> str:
    """A float as Python writes it, except that a value that is exactly a float32 (as every
    number of a Keras ``get_config()``: 0.0010000000474974513) is written as the shortest
    decimal that rounds to the same float32 (0.001): the value the framework holds."""
    if math.isfinite(value) and value != 0 and float(np.float32(value)) == value:
        return repr(float(str(np.float32(value))))
    return repr(float(value))


def _value(value: Any) -> str:
    return number(value) if isinstance(value, float) else repr(value)


def _kwargs(pairs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v if isinstance(v, Code) else _value(v)}" for k, v in pairs.items())


class Code(str):
    """A Python expression printed as is (a name the user supplies, such as ``schedule``)."""


#: timm's ``param_groups_weight_decay`` rule, written for a torch model
TIMM_RULE = ('no_decay = set(getattr(model, "no_weight_decay", set)())\n'
             'decays = lambda n, p: p.ndim > 1 and not n.endswith(".bias") and n not in no_decay\n')  # fmt: skip


def exact_targets(hp: dict[str, Any], preset: str, timm_decay_filter: bool = False,
                  schedule: bool = False,
                  keras_extras: dict[str, Any] | None = None) -> dict[str, str]:  # fmt: skip
    """target name -> the Python statements that run exactly ``hp`` there (each assigns
    ``opt`` or ``tx``). ``schedule``: the lr is the recipe's schedule, named ``schedule``.
    ``keras_extras``: Keras options that are not switches (``use_ema``,
    ``gradient_accumulation_steps``, ...), passed on in the Keras line, which takes them."""
    overrides = preset_and_overrides(hp, preset)
    lr = Code("schedule") if schedule else hp["lr"]
    params, prefix = "model.parameters()", ""
    if timm_decay_filter:
        prefix = TIMM_RULE
        params = ('[{"params": [p for n, p in model.named_parameters() if decays(n, p)]},\n'
                  '     {"params": [p for n, p in model.named_parameters() if not decays(n, p)], '
                  '"weight_decay": 0.0}]')  # fmt: skip
    torch = f"{prefix}opt = rmsprop.RMSprop.from_preset({params}, {preset!r}, {_kwargs({'lr': lr, **overrides})})"
    jax = (
        f"tx = rmsprop.optax.from_preset({preset!r}, {_kwargs({'learning_rate': lr, **overrides})})"
    )
    if timm_decay_filter:  # RMSprop is elementwise: two transforms are the same update
        plain = {k: v for k, v in overrides.items() if k != "weight_decay"}
        undecayed = (
            f"rmsprop.optax.from_preset({preset!r}, {_kwargs({'learning_rate': lr, **plain})})"
        )
        jax = ("tx = optax.multi_transform(\n"
               f'    {{"decay": {jax.removeprefix("tx = ")},\n     "no_decay": {undecayed}}},\n'
               '    jax.tree.map(lambda p: "decay" if p.ndim > 1 else "no_decay", params))'
               "  # and label biases and no_weight_decay() names 'no_decay'")  # fmt: skip
    keras_names = {"alpha": "rho", "eps": "epsilon"}
    keras_args = {"learning_rate": lr, "preset": preset}
    keras_args.update({keras_names.get(k, k): v for k, v in overrides.items()})
    keras_args.update(keras_extras or {})
    keras = f"opt = rmsprop.keras.RMSprop({_kwargs(keras_args)})"
    if timm_decay_filter:
        keras += ("\nopt.exclude_from_weight_decay(var_list=[v for v in model.trainable_variables "
                  'if len(v.shape) <= 1], var_names=["bias"])')  # fmt: skip
    return {"torch": torch, "jax": jax, "keras": keras}


@dataclass(frozen=True)
class Native:
    """A framework's own RMSprop: its call, its argument names for our switches, the
    switches it fixes (name -> value), and how to do what it lacks where an idiom exists."""

    framework: str
    call: str
    names: dict[str, str]
    fixed: dict[str, Any]
    remedies: dict[str, str]
    clips: bool  # takes clipvalue / clipnorm / global_clipnorm itself
    preset: str  # the preset that holds its defaults

    def expressible(self, hp: dict[str, Any]) -> dict[str, Any]:
        """``hp`` with every switch this optimizer fixes set to its fixed value: what a
        port that keeps the native optimizer actually runs."""
        out = dict(hp)
        for name, value in self.fixed.items():
            if name == "decoupled_weight_decay" and not hp.get("weight_decay"):
                continue
            out[name] = value
        if not self.clips:
            out.update(dict.fromkeys(CLIPS))
        return out

    def differences(self, hp: dict[str, Any]) -> list[tuple[str, Any, Any, str]]:
        """(switch, wanted, what the native optimizer does, remedy) for each semantic
        switch it cannot express (last-bit switches are left out)."""
        runs = self.expressible(hp)
        return [(n, hp.get(n), runs.get(n), self.remedies.get(n, ""))
                for n in (*SWITCHES, "maximize", *CLIPS)
                if matters(n, hp) and hp.get(n) != runs.get(n)]  # fmt: skip

    def code(self, hp: dict[str, Any]) -> str:
        """The closest call of this optimizer (its own names, the values it can take)."""
        runs, defaults = self.expressible(hp), PRESETS[self.preset]
        args = {}
        for ours, theirs in self.names.items():
            value = runs.get(ours)
            default = getattr(defaults, ours, False if ours == "maximize" else None)
            if ours == "lr" or (matters(ours, runs) and value != default):
                args[theirs] = value
        first = "model.parameters(), " if self.framework == "torch" else ""
        return f"{self.call}({first}{_kwargs(args)})"


NATIVE = {
    "torch": Native(
        "torch",
        "torch.optim.RMSprop",
        {
            "lr": "lr",
            "alpha": "alpha",
            "eps": "eps",
            "weight_decay": "weight_decay",
            "momentum": "momentum",
            "centered": "centered",
            "maximize": "maximize",
        },
        {
            "eps_in_sqrt": False,
            "initial_accumulator_value": 0.0,
            "nesterov": False,
            "lr_in_momentum": False,
            "decoupled_weight_decay": False,
            "bias_correction": False,
            "ema_form": "torch",
            "centered_clamp": False,
        },
        {
            "lr_in_momentum": "equal while the lr is constant",
            "decoupled_weight_decay": "torch.optim.RMSprop has only coupled L2",
            "clipnorm": "torch.nn.utils.clip_grad_norm_ per tensor before step()",
            "global_clipnorm": "torch.nn.utils.clip_grad_norm_(model.parameters(), c)",
            "clipvalue": "torch.nn.utils.clip_grad_value_(model.parameters(), c)",
        },
        clips=False,
        preset="torch",
    ),
    "optax": Native(
        "optax",
        "optax.rmsprop",
        {
            "lr": "learning_rate",
            "alpha": "decay",
            "eps": "eps",
            "initial_accumulator_value": "initial_scale",
            "eps_in_sqrt": "eps_in_sqrt",
            "centered": "centered",
            "momentum": "momentum",
            "nesterov": "nesterov",
            "bias_correction": "bias_correction",
        },
        {
            "lr_in_momentum": True,
            "weight_decay": 0.0,
            "decoupled_weight_decay": False,
            "maximize": False,
            "ema_form": "multiply",
            "centered_clamp": False,
        },
        {
            "lr_in_momentum": "equal while the lr is constant; exact for any schedule: "
            "optax.chain(scale_by_rms(...) (scale_by_stddev if centered), trace(momentum), "
            "scale_by_learning_rate(lr))",
            "clipnorm": "optax clips all leaves together (optax.clip_by_global_norm), not each",
            "weight_decay": "coupled: optax.chain(optax.add_decayed_weights(wd), optax.rmsprop(...)); "
            "decoupled: append optax.add_decayed_weights(-lr*wd)",
            "clipvalue": "optax.chain(optax.clip(c), ...)",
            "global_clipnorm": "optax.chain(optax.clip_by_global_norm(c), ...)",
            "maximize": "negate the gradients",
        },
        clips=False,
        preset="optax",
    ),
    "keras": Native(
        "keras",
        "keras.optimizers.RMSprop",
        {
            "lr": "learning_rate",
            "alpha": "rho",
            "momentum": "momentum",
            "eps": "epsilon",
            "centered": "centered",
            "weight_decay": "weight_decay",
            "clipnorm": "clipnorm",
            "clipvalue": "clipvalue",
            "global_clipnorm": "global_clipnorm",
        },
        {
            "eps_in_sqrt": True,
            "initial_accumulator_value": 0.0,
            "nesterov": False,
            "lr_in_momentum": True,
            "decoupled_weight_decay": True,
            "bias_correction": False,
            "maximize": False,
            "ema_form": "multiply",
            "centered_clamp": False,
        },
        {
            "lr_in_momentum": "equal while the lr is constant",
            "initial_accumulator_value": "assign ones to the velocity variables after build()",
            "decoupled_weight_decay": "Keras decays decoupled (θ −= lr·wd·θ); coupled L2 needs a loss term",
        },
        clips=True,
        preset="keras",
    ),
}


def switch_rows(hp: dict[str, Any]) -> list[tuple[str, Any, dict[str, Any]]]:
    """(switch, exact value, {framework: what its native optimizer runs}) for every
    switch that is set or that a native optimizer changes."""
    runs = {name: native.expressible(hp) for name, native in NATIVE.items()}
    rows = []
    for n in ("lr", *SWITCHES, "maximize", *CLIPS):
        if (
            n in ("clipvalue", "clipnorm", "global_clipnorm")
            and hp.get(n) is None
            and all(r.get(n) is None for r in runs.values())
        ):
            continue
        rows.append((n, hp.get(n), {name: r.get(n) for name, r in runs.items()}))
    return rows
