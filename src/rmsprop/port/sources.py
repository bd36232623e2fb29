"""Read a framework's optimizer description into the switches of the algorithm box.

One reader per source format; each knows the framework's argument names and defaults
(cited in ``rmsprop.presets`` and ``../shared/reference/semantics.md``) and returns
:class:`Source`: every switch and the lr, with notes for what is not a switch (a schedule,
EMA, which parameters are decayed). Unknown keys are errors that name the key.
"""

from __future__ import annotations

import argparse
import ast
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .._validation import NON_NEGATIVE, POSITIVE, UNIT, Interval, check_real, did_you_mean
from ..presets import get_preset

#: source argument names -> allowed values, checked before the switches are built so that
#: an error names the source's own argument
RULES = {"lr": NON_NEGATIVE, "learning_rate": NON_NEGATIVE, "alpha": UNIT, "rho": UNIT,
         "decay": UNIT, "eps": NON_NEGATIVE, "epsilon": NON_NEGATIVE, "momentum": UNIT,
         "weight_decay": NON_NEGATIVE, "initial_scale": NON_NEGATIVE, "clipnorm": POSITIVE,
         "clipvalue": POSITIVE, "global_clipnorm": POSITIVE}  # fmt: skip
FLAGS = ("centered", "maximize", "nesterov", "eps_in_sqrt", "bias_correction", "capturable",
         "differentiable", "use_locking", "filter_bias_and_bn", "decoupled_decay",
         "lr_in_momentum", "use_ema", "use_rms_prop")  # fmt: skip
#: arguments that are True, False or None (None: the framework decides)
OPTIONAL_FLAGS = ("foreach", "opt_foreach")
#: arguments that are None or an integer of at least this (Keras's own checks)
INTEGERS = {"gradient_accumulation_steps": 2, "ema_overwrite_frequency": 1}
#: arguments that are None or a real number in this interval
OPTIONAL_REALS = {"ema_momentum": Interval(0.0, 1.0, high_closed=True),
                  "loss_scale_factor": POSITIVE, "layer_decay": NON_NEGATIVE,
                  "clip_grad": POSITIVE, "max_grad_norm": POSITIVE}  # fmt: skip
STRINGS = ("name",)


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
    #: Keras options that are not switches (use_ema, gradient_accumulation_steps, ...): the
    #: Keras line carries them; the PyTorch and JAX lines say they lack them, and how to add them
    extras: dict[str, Any] = field(default_factory=dict)
    schedule: str | None = None  # the recipe's lr is this schedule (measured at its start)
    #: what the recipe's training loop does beside the optimizer (name=value -> how to keep
    #: it): no optimizer line carries it
    loop: dict[str, str] = field(default_factory=dict)


#: a Keras option that is not a switch -> how to add it to the PyTorch and the JAX line
KERAS_EXTRAS = {
    "use_ema": ("torch: torch.optim.swa_utils.AveragedModel(model, multi_avg_fn="
                "get_ema_multi_avg_fn(ema_momentum)) updated after each step; JAX: optax.ema "
                "on the params, kept beside them"),
    "ema_overwrite_frequency": ("copy the EMA weights into the model every this many "
                                "iterations (Keras does it in the optimizer)"),
    "gradient_accumulation_steps": ("torch: sum .grad over this many backward passes, divide "
                                    "by it, then step(); JAX: optax.MultiSteps(tx, "
                                    "every_k_schedule=k) (the mean of k gradients; a schedule "
                                    "then counts updates where Keras counts micro-steps)"),
    "loss_scale_factor": ("the loss is scaled by it and the gradients unscaled before the "
                          "update (a float16 overflow guard; the same math): torch.amp.GradScaler "
                          "or jmp; in float32 leave it out"),
}  # fmt: skip


def _switches(preset: str, lr: Any) -> dict[str, Any]:
    """Every switch of ``preset`` with ``lr``, no maximize and no clipping."""
    return get_preset(preset).hyperparameters(lr=lr, maximize=False, clipvalue=None,
                                              clipnorm=None, global_clipnorm=None)  # fmt: skip


def shown(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to about ``limit`` characters, so that an error never echoes a
    pasted 100 KB value whole."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    """``value`` if it is a mapping with string keys, else a one-line error naming ``what``."""
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a mapping of names to values, got "
                         f"{shown(value)} ({type(value).__name__})")  # fmt: skip
    for key in value:
        if not isinstance(key, str):
            raise ValueError(f"{what}: every key is a name (a string), got {shown(key)}")
    return value


def _real(name: str, value: Any, allowed: Any) -> float:
    """``check_real`` with the value shown at bounded length in the message."""
    try:
        return check_real(name, value, allowed)
    except TypeError:
        raise ValueError(f"{name} must be a real number, got {shown(value)} "
                         f"({type(value).__name__})") from None  # fmt: skip


def _integer(name: str, value: Any, low: int) -> int | None:
    """``None`` or an integer of at least ``low`` (Keras's rule for its step counts)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low} or None, got {shown(value)}")
    return value


def _check(name: str, value: Any) -> Any:
    """``value`` checked under the source's own argument ``name`` (numbers become floats)."""
    if name in RULES and value is not None:
        return _real(name, value, RULES[name])
    if name in FLAGS:
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be True or False, got {shown(value)} "
                             f"({type(value).__name__})")  # fmt: skip
        return value
    if name in OPTIONAL_FLAGS and value is not None and not isinstance(value, bool):
        raise ValueError(f"{name} must be True, False or None, got {shown(value)}")
    if name in INTEGERS:
        return _integer(name, value, INTEGERS[name])
    if name in OPTIONAL_REALS and value is not None:
        return _real(name, value, OPTIONAL_REALS[name])
    if name in STRINGS and not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {shown(value)}")
    return value


def _take(
    description: Any, known: Mapping[str, Any], what: str, later: tuple[str, ...] = ()
) -> dict[str, Any]:
    """``known`` (name -> default) filled from ``description``; an unknown key raises
    (with the closest known name), and every value is checked under the source's own name
    (``later``: names the reader checks itself, such as an lr that may be a schedule)."""
    description = _mapping(description, f"a {what} description")
    unknown = sorted(set(description) - set(known))
    if unknown:
        raise ValueError(f"unknown key {shown(unknown[0])} in a {what} description; known keys: "
                         f"{', '.join(known)}{did_you_mean(unknown[0], known)}")  # fmt: skip
    args = {**known, **description}
    for name, value in description.items():
        args[name] = value if name in later else _check(name, value)
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
    if isinstance(description, str):
        try:
            description = json.loads(description)
        except json.JSONDecodeError as err:
            raise ValueError(f"a Keras config given as text must be JSON ({err})") from None
    config = _mapping(description, "a Keras RMSprop get_config() description")
    if "config" in config and "class_name" in config:
        if config["class_name"] != "RMSprop":
            raise ValueError(f"a Keras config of class {shown(config['class_name'])}, not RMSprop")
        config = _mapping(config["config"], "the Keras config's 'config'")
    args = _take(config, {"name": "rmsprop", "learning_rate": 0.001, "rho": 0.9, "momentum": 0.0,
                          "epsilon": 1e-7, "centered": False, "weight_decay": None,
                          "clipnorm": None, "clipvalue": None, "global_clipnorm": None,
                          "use_ema": False, "ema_momentum": 0.99, "ema_overwrite_frequency": None,
                          "loss_scale_factor": None, "gradient_accumulation_steps": None},
                 "Keras RMSprop get_config()", later=("learning_rate",))  # fmt: skip
    notes, schedule = [], None
    lr = args["learning_rate"]
    if isinstance(lr, Mapping):  # a serialized schedule
        schedule, lr = _schedule_start(lr)
        notes.append(f"learning_rate is a {schedule} schedule: pass the same schedule in the "
                     f"target (the comparison below holds it at its first value, {lr:g})")  # fmt: skip
    else:
        lr = _real("learning_rate", lr, NON_NEGATIVE)
    hp = _switches("keras", lr)
    hp.update({"alpha": args["rho"], "eps": args["epsilon"], "momentum": args["momentum"],
               "centered": args["centered"], "weight_decay": args["weight_decay"] or 0.0,
               "clipnorm": args["clipnorm"], "clipvalue": args["clipvalue"],
               "global_clipnorm": args["global_clipnorm"]})  # fmt: skip
    # Keras's own options that are not switches: kept in the Keras line (EMA settings only
    # when the EMA is on: Keras ignores them otherwise)
    extras = {k: args[k] for k in ("use_ema", "ema_momentum", "ema_overwrite_frequency",
                                   "loss_scale_factor", "gradient_accumulation_steps")
              if args[k] not in (None, False)
              and (args["use_ema"] or k not in ("ema_momentum", "ema_overwrite_frequency"))}  # fmt: skip
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


#: timm's train.py config names (its argparse dests, also the keys of its YAML configs)
#: -> create_optimizer_v2's names (timm.optim.optimizer_kwargs)
TIMM_CONFIG = {"opt_eps": "eps", "opt_betas": "betas", "opt_foreach": "foreach"}


def from_timm(description: Mapping[str, Any] | list[str] | tuple[str, ...]) -> Source:
    """``timm.optim.create_optimizer_v2(model, **description)`` with ``opt='rmsproptf'`` or
    ``'rmsprop'``: the factory's defaults (alpha 0.9, momentum 0.9, no weight decay on
    1-D parameters when ``filter_bias_and_bn``) and the class's (eps 1e-10 / 1e-8).

    Also read: train.py's config names (``opt_eps``, ``opt_betas``, ``opt_foreach``,
    ``opt_kwargs``/``opt_args``, ``clip_grad``, ``clip_mode``) and, as a list of words,
    train.py's own flags as typed (``["--opt", "rmsproptf", "--opt-eps", ".001", ...]``,
    with train.py's defaults: ``--weight-decay`` 2e-5, ``--momentum`` 0.9)."""
    notes: list[str] = []
    if isinstance(description, (list, tuple)):
        description, notes = timm_train_flags(description)
    args = dict(_mapping(description, "a timm description"))
    for extra in ("opt_kwargs", "opt_args"):  # train.py passes these on as keyword arguments
        kwargs = _mapping(args.pop(extra, None) or {}, extra)
        for name in kwargs:
            if name in args:
                raise ValueError(f"{extra} gives {name} again: timm would fail with 'got "
                                 "multiple values'")  # fmt: skip
        args.update(kwargs)
    for config_name, name in TIMM_CONFIG.items():
        if config_name in args:
            if name in args:
                raise ValueError(f"{config_name} and {name} are the same argument: give one")
            args[name] = args.pop(config_name)
    if "opt" not in args:
        raise ValueError("a timm description needs opt ('rmsproptf' or 'rmsprop')")
    opt = args.pop("opt")
    if not isinstance(opt, str) or opt.lower() not in ("rmsproptf", "rmsprop"):
        raise ValueError(f"opt={shown(opt)}: rmsprop port reads timm's 'rmsproptf' and 'rmsprop' "
                         "(not the lookahead_, caution or corrected-decay variants)")  # fmt: skip
    opt = opt.lower()
    for name in ("corrected_weight_decay", "caution"):
        if args.get(name):
            raise ValueError(f"{name}=True is not supported by rmsprop port (no such switch)")
        args.pop(name, None)
    betas = args.pop("betas", None)
    if betas is not None:
        if not isinstance(betas, (list, tuple)) or not all(
            isinstance(b, (int, float)) and not isinstance(b, bool) for b in betas
        ):
            raise ValueError(f"betas (opt_betas) must be a list of numbers, got {shown(betas)}")
        notes.append("opt_betas: timm drops betas for RMSprop (it has none)")
    tf_style = opt == "rmsproptf"
    known = {"lr": None, "weight_decay": 0.0, "momentum": 0.9, "filter_bias_and_bn": True,
             "foreach": None, "layer_decay": None, "alpha": 0.9,
             "eps": 1e-10 if tf_style else 1e-8, "centered": False, "clip_grad": None,
             "clip_mode": "norm"}  # fmt: skip
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
    notes.insert(0, "timm's factory defaults: alpha 0.9 and momentum 0.9 (not the class defaults)")
    if args["lr"] is None:
        notes.append("lr not given: timm's class default 1e-2")
    decay_filter = bool(args["weight_decay"]) and args["filter_bias_and_bn"]
    if decay_filter:
        notes.append("filter_bias_and_bn: no weight decay on 1-D parameters, on names ending "
                     "in '.bias' and on the model's no_weight_decay() names (the PyTorch line "
                     "below applies the same rule; the JAX and Keras lines by dimension and "
                     "name)")  # fmt: skip
    loop = {}
    if args["clip_grad"] is not None:
        loop.update(_timm_clip(args["clip_grad"], args["clip_mode"]))
    title = f"timm create_optimizer_v2(opt={opt!r})"
    return Source("timm", title, hp, "timm_tf" if tf_style else "torch", tuple(notes),
                  timm_decay_filter=decay_filter, loop=loop)  # fmt: skip


def _timm_clip(value: float, mode: Any) -> dict[str, str]:
    """train.py's gradient clipping (timm.utils.dispatch_clip_grad, in its training loop)."""
    if mode == "norm":
        return {f"clip_grad={value:g}": GLOBAL_NORM_LOOP.format(c=f"{value:g}")}
    if mode == "value":
        return {f"clip_grad={value:g} (clip_mode='value')":
                f"torch.nn.utils.clip_grad_value_(model.parameters(), {value:g}) before step(); "
                f"JAX: optax.chain(optax.clip({value:g}), tx); Keras: clipvalue={value:g}"}  # fmt: skip
    if mode == "agc":
        return {f"clip_grad={value:g} (clip_mode='agc')":
                "timm.utils.adaptive_clip_grad(model.parameters(), clip_factor) before step(); "
                "JAX: optax.adaptive_grad_clip(clip_factor); Keras has none"}  # fmt: skip
    raise ValueError(f"clip_mode={shown(mode)} is invalid: timm's modes are 'norm', 'value', 'agc'")


#: a training loop's torch.nn.utils.clip_grad_norm_ (timm, SB3), said once
GLOBAL_NORM_LOOP = ("the training loop clips all gradients together: "
                    "torch.nn.utils.clip_grad_norm_(model.parameters(), {c}) before step(); JAX: "
                    "optax.chain(optax.clip_by_global_norm({c}), tx); Keras: global_clipnorm={c} "
                    "(these two scale by c/max(‖g‖, c), torch by c/(‖g‖ + 1e-6))")  # fmt: skip


class _WordsParser(argparse.ArgumentParser):
    """argparse whose errors are a ``ValueError`` (one line, for ``translate``)."""

    def error(self, message: str):  # type: ignore[override]
        raise ValueError(
            f"timm train.py flags: {message[:200]}{'...' if len(message) > 200 else ''}"
        )


def _kwarg_words(words: list[str]) -> dict[str, Any]:
    """train.py's ``--opt-kwargs KEY=VALUE ...`` (timm.utils.ParseKwargs: Python literals,
    else the text)."""
    out = {}
    for word in words:
        key, sep, text = word.partition("=")
        if not sep or not key:
            raise ValueError(f"--opt-kwargs takes KEY=VALUE words, got {shown(word)}")
        try:
            out[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            out[key] = text
    return out


def timm_train_flags(words: list[str] | tuple[str, ...]) -> tuple[dict[str, Any], list[str]]:
    """timm's train.py optimizer flags as typed -> (its config names and values, notes).
    train.py's defaults apply (``--weight-decay`` 2e-5, ``--momentum`` 0.9); a flag that is
    not one of its optimizer flags is an error that names it."""
    if not all(isinstance(w, str) for w in words):
        raise ValueError("timm train.py flags are words (strings)")
    parser = _WordsParser(prog="train.py", add_help=False, allow_abbrev=False)
    parser.add_argument("--opt", default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--opt-eps", type=float, default=None)
    parser.add_argument("--opt-betas", type=float, nargs="+", default=None)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--weight-decay", type=float, default=None)
    parser.add_argument("--clip-grad", type=float, default=None)
    parser.add_argument("--clip-mode", default="norm")
    parser.add_argument("--layer-decay", type=float, default=None)
    parser.add_argument("--opt-kwargs", nargs="*", default=[])
    flags, rest = parser.parse_known_args(list(words))
    if rest:
        first = rest[0]
        if first.split("=")[0] in ("--lr-base", "--lr-base-size", "--lr-base-scale"):
            why = "train.py derives the lr from --lr-base and the global batch size: give --lr"
        elif first.startswith("-"):
            why = ("not one of train.py's optimizer flags (--opt, --lr, --opt-eps, --opt-betas, "
                   "--momentum, --weight-decay, --clip-grad, --clip-mode, --layer-decay, "
                   "--opt-kwargs): leave the others out")  # fmt: skip
        else:
            why = ("a word outside a flag (write optimizer keyword arguments after --opt-kwargs, "
                   "or give only KEY=VALUE pairs)")  # fmt: skip
        raise ValueError(f"timm train.py flags: {shown(first)}: {why}")
    if flags.opt is None:
        raise ValueError("timm train.py flags: --opt is needed (train.py's default is sgd): "
                         "--opt rmsproptf or --opt rmsprop")  # fmt: skip
    config: dict[str, Any] = {"opt": flags.opt, "momentum": flags.momentum}
    notes = []
    if flags.weight_decay is None:
        notes.append("--weight-decay not given: train.py's default 2e-5")
    config["weight_decay"] = 2e-5 if flags.weight_decay is None else flags.weight_decay
    for name in ("lr", "opt_eps", "opt_betas", "clip_grad", "layer_decay"):
        if getattr(flags, name) is not None:
            config[name] = getattr(flags, name)
    if flags.clip_grad is not None:
        config["clip_mode"] = flags.clip_mode
    if flags.opt_kwargs:
        config["opt_kwargs"] = _kwarg_words(flags.opt_kwargs)
    return config, notes


#: SB3 algorithm arguments that do not touch the optimizer (read past, not an error)
SB3_OTHER = ("policy", "env", "n_steps", "gamma", "gae_lambda", "ent_coef", "vf_coef",
             "normalize_advantage", "use_sde", "sde_sample_freq", "rollout_buffer_class",
             "rollout_buffer_kwargs", "stats_window_size", "tensorboard_log", "verbose", "seed",
             "device", "batch_size", "n_epochs", "clip_range", "clip_range_vf", "target_kl",
             "n_envs", "n_timesteps", "env_wrapper", "frame_stack", "normalize",
             "normalize_kwargs", "callback", "env_kwargs", "monitor_kwargs", "vec_env_wrapper")  # fmt: skip
#: SB3 optimizer classes rmsprop port reads -> our preset
SB3_CLASSES = {"RMSprop": "torch", "RMSpropTFLike": "sb3_tf_like"}
#: the keyword arguments each class takes (SB3 passes lr itself, from learning_rate)
SB3_KWARGS = {
    "torch": {"alpha": 0.99, "eps": 1e-8, "weight_decay": 0.0, "momentum": 0.0,
              "centered": False, "maximize": False, "foreach": None, "capturable": False,
              "differentiable": False},
    "sb3_tf_like": {"alpha": 0.99, "eps": 1e-8, "weight_decay": 0.0, "momentum": 0.0,
                    "centered": False},
}  # fmt: skip


def from_sb3(description: Mapping[str, Any]) -> Source:
    """Stable-Baselines3 ``A2C(...)``/``PPO(...)`` keyword arguments (``algo``: ``"A2C"``,
    the default, or ``"PPO"``), or an RL Zoo hyperparameter entry, whose optimizer is
    torch's ``RMSprop`` (A2C's default: ``use_rms_prop=True``, ``alpha=0.99``,
    ``eps=rms_prop_eps`` 1e-5, lr 7e-4) or SB3's ``RMSpropTFLike`` (``policy_kwargs=
    dict(optimizer_class=RMSpropTFLike, optimizer_kwargs=dict(eps=1e-5))``, also as the
    RL Zoo's string). ``max_grad_norm`` (0.5) is SB3's training loop's clip, said apart."""
    args = dict(_mapping(description, "an SB3 description"))
    algo = args.pop("algo", "A2C")
    if not isinstance(algo, str) or algo.upper() not in ("A2C", "PPO"):
        raise ValueError(f"algo={shown(algo)}: rmsprop port reads SB3's 'A2C' and 'PPO'")
    algo = algo.upper()
    policy = _policy_kwargs(args.pop("policy_kwargs", None))
    for name in ("optimizer_class", "optimizer_kwargs"):  # a shortcut for policy_kwargs
        if name in args:
            if name in policy:
                raise ValueError(f"{name} is given twice (and in policy_kwargs)")
            policy[name] = args.pop(name)
    for name in SB3_OTHER:
        args.pop(name, None)
    known = {"learning_rate": 7e-4 if algo == "A2C" else 3e-4, "max_grad_norm": 0.5}
    if algo == "A2C":
        known.update({"use_rms_prop": True, "rms_prop_eps": 1e-5})
    args = _take(args, known, f"SB3 {algo}", later=("learning_rate",))
    notes, schedule = [], None
    lr = args["learning_rate"]
    if isinstance(lr, str) and lr.startswith("lin_"):  # the RL Zoo's linear schedule
        schedule = "linear (RL Zoo lin_)"
        lr = _real("learning_rate", _number(lr[4:], "learning_rate"), NON_NEGATIVE)
        notes.append(f"learning_rate is {lr:g} decayed linearly to 0 over the run: pass that "
                     f"schedule in the target (the comparison below holds it at {lr:g})")  # fmt: skip
    else:
        lr = _real("learning_rate", lr, NON_NEGATIVE)
    if "optimizer_class" in policy:  # then SB3 does not read use_rms_prop nor rms_prop_eps
        preset = _sb3_class(policy["optimizer_class"])
        kwargs = _literal_dict(policy.get("optimizer_kwargs") or {}, "optimizer_kwargs")
    elif algo == "A2C" and args["use_rms_prop"]:
        preset = "torch"
        eps = _real("rms_prop_eps", args["rms_prop_eps"], NON_NEGATIVE)
        kwargs = {"alpha": 0.99, "eps": eps, "weight_decay": 0.0}
    else:
        raise ValueError(f"SB3 {algo}'s optimizer here is Adam (use_rms_prop=False, or PPO's "
                         "default): give policy_kwargs optimizer_class=RMSprop or RMSpropTFLike")  # fmt: skip
    if "lr" in kwargs:
        raise ValueError("optimizer_kwargs lr: SB3 passes the lr itself (from learning_rate)")
    title = "torch.optim.RMSprop" if preset == "torch" else "RMSpropTFLike"
    opt = _take(kwargs, SB3_KWARGS[preset], f"SB3 optimizer_kwargs ({title})")
    hp = _switches(preset, lr)
    hp.update({k: opt[k] for k in ("alpha", "eps", "weight_decay", "momentum", "centered")})
    hp["maximize"] = opt.get("maximize", False)
    loop = {}
    if args["max_grad_norm"] is not None:
        c = f"{args['max_grad_norm']:g}"
        loop[f"max_grad_norm={c}"] = GLOBAL_NORM_LOOP.format(c=c)
    return Source("sb3", f"SB3 {algo} with {title}", hp, preset, tuple(notes),
                  schedule=schedule, loop=loop)  # fmt: skip


def _number(text: str, name: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number or 'lin_<number>', got {shown(text)}") from None


def _sb3_class(value: Any) -> str:
    """An SB3 optimizer class (the class itself, or its name, dotted or not) -> our preset."""
    name = getattr(value, "__name__", value)
    if isinstance(name, str) and name.rsplit(".", 1)[-1] in SB3_CLASSES:
        return SB3_CLASSES[name.rsplit(".", 1)[-1]]
    raise ValueError(f"optimizer_class={shown(name)}: rmsprop port reads torch's RMSprop and "
                     "SB3's RMSpropTFLike")  # fmt: skip


def _policy_kwargs(value: Any) -> dict[str, Any]:
    """SB3's ``policy_kwargs``: a mapping, or the RL Zoo's string ``"dict(...)"``."""
    return dict(_literal_dict(value, "policy_kwargs")) if value is not None else {}


def _literal_dict(value: Any, name: str) -> Mapping[str, Any]:
    """A mapping, or a string ``"dict(a=1, b=dict(...))"`` / ``"{'a': 1}"`` read without
    running it: literals, ``dict(...)`` calls, and bare names (kept as their text, as
    ``RMSpropTFLike`` or ``th.optim.RMSprop``)."""
    if isinstance(value, str):
        try:
            value = _literal(ast.parse(value, mode="eval").body)
        except (SyntaxError, ValueError, RecursionError):
            raise ValueError(f"{name} must be a dict or the text dict(...), got "
                             f"{shown(value)}") from None  # fmt: skip
    return _mapping(value, name)


def _literal(node: ast.AST) -> Any:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
        if node.args or any(k.arg is None for k in node.keywords):
            raise ValueError("dict() with positional or ** arguments")
        return {k.arg: _literal(k.value) for k in node.keywords}
    if isinstance(node, (ast.Name, ast.Attribute)):
        return ast.unparse(node)
    if isinstance(node, ast.Dict):
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values)}
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(e) for e in node.elts]
    return ast.literal_eval(node)


def _schedule_start(schedule: Mapping[str, Any]) -> tuple[str, float]:
    """A serialized Keras schedule: its class name and its first learning rate. A schedule
    of another shape is an error that names learning_rate."""
    name = schedule.get("class_name")
    config = schedule.get("config")
    if not isinstance(name, str) or not isinstance(config, Mapping):
        raise ValueError("learning_rate is a mapping but not a serialized Keras schedule "
                         "({'class_name': ..., 'config': {...}}); got keys "
                         f"{shown(sorted(map(str, schedule)))}")  # fmt: skip
    name = name[:60]
    if "initial_learning_rate" in config:
        return name, _real("learning_rate's initial_learning_rate",
                           config["initial_learning_rate"], NON_NEGATIVE)  # fmt: skip
    values = config.get("values")
    if isinstance(values, (list, tuple)) and values:  # PiecewiseConstantDecay
        return name, _real("learning_rate's values[0]", values[0], NON_NEGATIVE)
    raise ValueError(f"learning_rate is a {name} schedule whose first value cannot be read; "
                     "pass learning_rate as a number")  # fmt: skip


#: source format -> reader
READERS: dict[str, Callable[[Any], Source]] = {
    "torch": from_torch,
    "keras": from_keras,
    "tf1": from_tf1,
    "optax": from_optax,
    "timm": from_timm,
    "sb3": from_sb3,
}
