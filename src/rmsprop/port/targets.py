"""Write the exact equivalent for each target, and say what each framework's *native*
RMSprop can and cannot express.

The exact targets are this library's front ends (torch ``rmsprop.RMSprop.from_preset``,
JAX ``rmsprop.optax.from_preset``, Keras ``rmsprop.keras.RMSprop``), from the preset with
the fewest differing switches plus overrides. A native optimizer is described as data:
which switches it has (and how it names them) and which values it fixes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..presets import PRESETS, SWITCHES

CLIPS = ("clipvalue", "clipnorm", "global_clipnorm")
#: Switches that decide only the last bits (how the same math is written).
LAST_BIT = ("ema_form", "centered_clamp")
#: Switches that change nothing unless another one is on.
NEEDS = {"lr_in_momentum": "momentum", "nesterov": "momentum",
         "decoupled_weight_decay": "weight_decay", "centered_clamp": "centered"}  # fmt: skip


def matters(name: str, hp: dict[str, Any]) -> bool:
    """Does switch ``name`` change the update under ``hp`` (and not only its last bits)?"""
    return name not in LAST_BIT and (name not in NEEDS or bool(hp.get(NEEDS[name])))


def closest_preset(hp: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The preset with the fewest switches different from ``hp``, and those differences
    (the overrides that make it ``hp``); ties go to the first in ``PRESETS``."""
    best = min(PRESETS.values(), key=lambda p: sum(getattr(p, n) != hp[n] for n in SWITCHES))
    overrides = {n: hp[n] for n in SWITCHES if getattr(best, n) != hp[n]}
    overrides.update({k: hp[k] for k in ("maximize", *CLIPS) if hp.get(k)})
    return best.name, overrides


def _value(value: Any) -> str:
    return repr(float(value)) if isinstance(value, float) else repr(value)


def _kwargs(pairs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_value(v)}" for k, v in pairs.items())


def exact_targets(hp: dict[str, Any], decay_matrices_only: bool = False) -> dict[str, str]:
    """target name -> the Python that runs exactly ``hp`` there."""
    name, overrides = closest_preset(hp)
    params = "model.parameters()"
    if decay_matrices_only:
        params = ('[{"params": [p for p in model.parameters() if p.ndim > 1]},\n'
                  '      {"params": [p for p in model.parameters() if p.ndim <= 1], '
                  '"weight_decay": 0.0}]')  # fmt: skip
    torch = (
        f"rmsprop.RMSprop.from_preset({params}, {name!r}, {_kwargs({'lr': hp['lr'], **overrides})})"
    )
    jax = (
        f"rmsprop.optax.from_preset({name!r}, {_kwargs({'learning_rate': hp['lr'], **overrides})})"
    )
    if decay_matrices_only:  # RMSprop is elementwise: two transforms are the same update
        plain = {k: v for k, v in overrides.items() if k != "weight_decay"}
        undecayed = (
            f"rmsprop.optax.from_preset({name!r}, {_kwargs({'learning_rate': hp['lr'], **plain})})"
        )
        jax = (
            f'optax.multi_transform(\n      {{"decay": {jax},\n       "no_decay": {undecayed}}},\n'
            '      jax.tree.map(lambda p: "decay" if p.ndim > 1 else "no_decay", params))'
        )
    keras_names = {"alpha": "rho", "eps": "epsilon"}
    keras_args = {"learning_rate": hp["lr"], "preset": name}
    keras_args.update({keras_names.get(k, k): v for k, v in overrides.items()})
    keras = f"opt = rmsprop.keras.RMSprop({_kwargs(keras_args)})"
    if decay_matrices_only:
        keras += ("\n    opt.exclude_from_weight_decay(var_list=[v for v in model.trainable_variables "
                  "if len(v.shape) <= 1])")  # fmt: skip
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
            value, default = runs.get(ours), getattr(defaults, ours, None)
            if not matters(ours, runs):
                continue
            if (
                ours == "lr"
                or (value != default and value not in (None, False, 0.0))
                or (value is False and default is True)
            ):
                args[theirs] = value
        return f"{self.call}({_kwargs(args)})"


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
            "optax.chain(scale_by_rms(...), trace(momentum), "
            "scale_by_learning_rate(lr))",
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
            "weight_decay": "Keras decays decoupled (θ −= lr·wd·θ); coupled L2 needs a loss term",
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
