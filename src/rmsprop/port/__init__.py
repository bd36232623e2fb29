"""Port an RMSprop recipe between frameworks: ``rmsprop.port.translate``.

From a framework's optimizer description (torch ``RMSprop`` keyword arguments, a Keras
``get_config()``, TF1 ``RMSPropOptimizer`` arguments, ``optax.rmsprop`` arguments, timm
``create_optimizer_v2`` arguments or train.py flags, SB3 ``A2C``/``PPO`` arguments) to the
exact equivalent in PyTorch, JAX and Keras
through this library, the switch table, and what each framework's *native* RMSprop cannot
express, measured on a small problem. NumPy only (the measurement runs the NumPy
reference); the command line is ``rmsprop port``.

Examples:
  >>> from rmsprop.port import translate
  >>> t = translate("tf1", {"learning_rate": 0.016, "decay": 0.9, "momentum": 0.9, "epsilon": 1e-3})
  >>> print(t.exact["torch"])
  opt = rmsprop.RMSprop.from_preset(model.parameters(), 'tf1', lr=0.016, eps=0.001, momentum=0.9)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import reference
from .measure import Difference, compare, not_measured
from .sources import KERAS_EXTRAS, READERS, Source
from .targets import NATIVE, exact_targets, number, preset_and_overrides, switch_rows

__all__ = ["READERS", "Difference", "NativePort", "Translation", "native_ports", "translate"]


@dataclass(frozen=True)
class NativePort:
    """A framework's own RMSprop for this recipe: the closest call, each switch it cannot
    express (switch, wanted, what it runs, remedy), and the measured differences."""

    framework: str
    code: str
    differences: list[tuple[str, Any, Any, str]]
    measured: list[Difference]
    note: str | None = None  # why nothing was measured


@dataclass(frozen=True)
class Translation:
    """Everything ``rmsprop port`` prints."""

    source: Source
    preset: str
    overrides: dict[str, Any]
    exact: dict[str, str]  # target -> Python
    native: dict[str, NativePort]
    rows: list[tuple[str, Any, dict[str, Any]]]
    #: target -> what its exact line leaves out ((option, how to keep it), ...): the line is
    #: the same update except for these (a Keras option the target has no argument for, the
    #: recipe's training-loop clipping)
    caveats: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)


def translate(
    source: str, description: Mapping[str, Any] | str, *, steps: int = 200
) -> Translation:
    """Read ``description`` in the ``source`` format (``"torch"``, ``"keras"``, ``"tf1"``,
    ``"optax"``, ``"timm"``, ``"sb3"``) and translate it. ``description`` is a mapping of
    the framework's own argument names to values; a Keras config may be JSON text, and
    timm's may be train.py's flags as a list of words (``["--opt", "rmsproptf", ...]``).

    Raises:
      ValueError: an unknown source format, an unknown key (named), a missing learning
        rate where the framework has no default, a value of the wrong type or shape (named,
        shown at bounded length), or a value the switches do not allow.
    """
    if source not in READERS:
        raise ValueError(f"unknown source {source!r}; known: {', '.join(READERS)}")
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= MAX_STEPS:
        raise ValueError(f"steps must be an integer from 1 to {MAX_STEPS}, got {steps!r}")
    try:
        read = READERS[source](description)
        ref_check(read.hyperparameters)
    except TypeError as err:  # a value of the wrong type is bad input, said in one line
        raise ValueError(str(err)) from err
    hp = read.hyperparameters
    native = native_ports(hp, steps)
    exact = exact_targets(hp, read.preset, read.timm_decay_filter,
                          schedule=read.schedule is not None, keras_extras=read.extras)  # fmt: skip
    overrides = preset_and_overrides(hp, read.preset)
    return Translation(read, read.preset, overrides, exact, native, switch_rows(hp),
                       caveats(read))  # fmt: skip


def caveats(read: Source) -> dict[str, tuple[tuple[str, str], ...]]:
    """target -> (option, how to keep it) for each thing of the recipe its exact line does
    not carry: Keras's non-switch options in the PyTorch and JAX lines (the Keras line
    takes them), and the recipe's training-loop clipping in every line."""
    extras = read.extras
    lacking = []
    for name, value in extras.items():
        if name in ("ema_momentum", "ema_overwrite_frequency") and "use_ema" in extras:
            continue  # said with use_ema
        label = f"{name}={number(value) if isinstance(value, float) else value!r}"
        if name == "use_ema":
            label += f" (ema_momentum={number(float(extras.get('ema_momentum', 0.99)))}"
            if extras.get("ema_overwrite_frequency"):
                label += f", ema_overwrite_frequency={extras['ema_overwrite_frequency']}"
            label += ")"
        lacking.append((label, KERAS_EXTRAS[name]))
    loop = tuple(read.loop.items())
    return {"torch": (*lacking, *loop), "jax": (*lacking, *loop), "keras": loop}


def native_ports(hp: dict[str, Any], steps: int = 200) -> dict[str, NativePort]:
    """For the switches ``hp``: each framework's own RMSprop, what it cannot express, and
    the measured difference (or why nothing was measured)."""
    native = {}
    for name, framework in NATIVE.items():
        runs, differences = framework.expressible(hp), framework.differences(hp)
        note = not_measured(hp, runs) if differences else None
        measured = compare(hp, runs, steps) if differences and note is None else []
        native[name] = NativePort(name, framework.code(hp), differences, measured, note)
    return native


#: the comparison's length is capped: 20,000 steps take about 12 s
MAX_STEPS = 20_000


def ref_check(hp: dict[str, Any]) -> None:
    """Validate the switches as every front end does (names and allowed values)."""
    reference.rmsprop(**hp)
