"""Learning-rate schedules: functions ``step -> lr``.

``step`` counts updates from 0: the first update uses ``schedule(0)``, as in optax and
Keras. Every factory validates its arguments and returns a plain Python function, so a
schedule can be passed as ``lr`` to :func:`rmsprop.reference.rmsprop` or called directly.
The formulas follow Keras 3 (``keras.optimizers.schedules``) where Keras has the schedule.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from .._validation import NON_NEGATIVE, POSITIVE, Interval, check_real

Schedule = Callable[[int], float]


def _steps(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name}={value!r} is invalid: it must be a positive integer")
    return value


def constant(value: float) -> Schedule:
    """``lr(step) = value``."""
    value = check_real("value", value, NON_NEGATIVE)
    return lambda step: value


def exponential_decay(
    init_value: float, decay_rate: float, decay_steps: int, *, staircase: bool = False
) -> Schedule:
    """``init_value * decay_rate ** (step / decay_steps)`` (floored exponent if ``staircase``).

    Keras ``ExponentialDecay``. Example: ``exponential_decay(0.1, 0.96, 1000)``.
    """
    init_value = check_real("init_value", init_value, NON_NEGATIVE)
    decay_rate = check_real("decay_rate", decay_rate, POSITIVE)
    decay_steps = _steps("decay_steps", decay_steps)

    def schedule(step: int) -> float:
        p = step / decay_steps
        return init_value * decay_rate ** (math.floor(p) if staircase else p)

    return schedule


def step_decay(init_value: float, factor: float, every: int) -> Schedule:
    """Multiply by ``factor`` every ``every`` steps: ``init_value * factor ** (step // every)``.

    "Multiply the lr by 0.95 every 500 steps" is ``step_decay(lr, 0.95, 500)``.
    """
    init_value = check_real("init_value", init_value, NON_NEGATIVE)
    factor = check_real("factor", factor, POSITIVE)
    every = _steps("every", every)
    return lambda step: init_value * factor ** (step // every)


def inverse_time_decay(
    init_value: float, decay_rate: float, decay_steps: int, *, staircase: bool = False
) -> Schedule:
    """``init_value / (1 + decay_rate * step / decay_steps)`` (Keras ``InverseTimeDecay``)."""
    init_value = check_real("init_value", init_value, NON_NEGATIVE)
    decay_rate = check_real("decay_rate", decay_rate, NON_NEGATIVE)
    decay_steps = _steps("decay_steps", decay_steps)

    def schedule(step: int) -> float:
        p = step / decay_steps
        return init_value / (1 + decay_rate * (math.floor(p) if staircase else p))

    return schedule


def polynomial_decay(
    init_value: float, end_value: float, decay_steps: int, *, power: float = 1.0
) -> Schedule:
    """From ``init_value`` to ``end_value`` over ``decay_steps`` as ``(1 - step/decay_steps)**power``,
    then ``end_value`` (Keras ``PolynomialDecay`` without cycling; IMPALA's linear decay)."""
    init_value = check_real("init_value", init_value, NON_NEGATIVE)
    end_value = check_real("end_value", end_value, NON_NEGATIVE)
    power = check_real("power", power, POSITIVE)
    decay_steps = _steps("decay_steps", decay_steps)

    def schedule(step: int) -> float:
        frac = 1 - min(step, decay_steps) / decay_steps
        return (init_value - end_value) * frac**power + end_value

    return schedule


def cosine_decay(init_value: float, decay_steps: int, *, final_fraction: float = 0.0) -> Schedule:
    """Cosine from ``init_value`` down to ``init_value * final_fraction`` over ``decay_steps``
    (Keras ``CosineDecay`` with ``alpha=final_fraction``), then constant."""
    init_value = check_real("init_value", init_value, NON_NEGATIVE)
    final_fraction = check_real(
        "final_fraction", final_fraction, Interval(0.0, 1.0, high_closed=True)
    )
    decay_steps = _steps("decay_steps", decay_steps)

    def schedule(step: int) -> float:
        cosine = 0.5 * (1 + math.cos(math.pi * min(step, decay_steps) / decay_steps))
        return init_value * ((1 - final_fraction) * cosine + final_fraction)

    return schedule


def linear_warmup(start_value: float, peak_value: float, warmup_steps: int) -> Schedule:
    """Linear from ``start_value`` (step 0) to ``peak_value`` (step ``warmup_steps``), then flat."""
    start_value = check_real("start_value", start_value, NON_NEGATIVE)
    peak_value = check_real("peak_value", peak_value, NON_NEGATIVE)
    warmup_steps = _steps("warmup_steps", warmup_steps)

    def schedule(step: int) -> float:
        return start_value + (peak_value - start_value) * min(step, warmup_steps) / warmup_steps

    return schedule


def piecewise_constant(boundaries: Sequence[int], values: Sequence[float]) -> Schedule:
    """``values[0]`` while ``step <= boundaries[0]``, ``values[i]`` while
    ``boundaries[i-1] < step <= boundaries[i]``, ``values[-1]`` after the last boundary
    (Keras ``PiecewiseConstantDecay``)."""
    bounds = [int(b) for b in boundaries]
    if len(values) != len(bounds) + 1:
        raise ValueError(
            f"values must have one more entry than boundaries (got {len(values)} values "
            f"for {len(bounds)} boundaries)"
        )
    if any(b2 <= b1 for b1, b2 in zip(bounds, bounds[1:])):
        raise ValueError(
            f"boundaries={list(boundaries)!r} is invalid: it must be strictly increasing"
        )
    vals = [check_real(f"values[{i}]", v, NON_NEGATIVE) for i, v in enumerate(values)]

    def schedule(step: int) -> float:
        for bound, value in zip(bounds, vals):
            if step <= bound:
                return value
        return vals[-1]

    return schedule


def join(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    """``schedules[i]`` from ``boundaries[i-1]`` on, each restarted at 0 (optax ``join_schedules``)."""
    bounds = [int(b) for b in boundaries]
    if len(schedules) != len(bounds) + 1:
        raise ValueError(
            f"join needs one more schedule than boundaries (got {len(schedules)} and {len(bounds)})"
        )
    if any(b2 <= b1 for b1, b2 in zip(bounds, bounds[1:])) or (bounds and bounds[0] <= 0):
        raise ValueError(
            f"boundaries={list(boundaries)!r} must be positive and strictly increasing"
        )

    def schedule(step: int) -> float:
        start = 0
        for fn, bound in zip(schedules, bounds):
            if step < bound:
                return fn(step - start)
            start = bound
        return schedules[-1](step - start)

    return schedule


def warmup(schedule: Schedule, warmup_steps: int, *, start_value: float = 0.0) -> Schedule:
    """Linear warmup from ``start_value`` to ``schedule(0)`` over ``warmup_steps``, then
    ``schedule(step - warmup_steps)``: joins a warmup to any schedule."""
    warmup_steps = _steps("warmup_steps", warmup_steps)
    ramp = linear_warmup(start_value, schedule(0), warmup_steps)
    return join([ramp, schedule], [warmup_steps])


def as_schedule(lr: float | Schedule) -> Schedule:
    """A float becomes :func:`constant`; a callable is returned as it is."""
    return lr if callable(lr) else constant(lr)


__all__ = [
    "Schedule",
    "as_schedule",
    "constant",
    "cosine_decay",
    "exponential_decay",
    "inverse_time_decay",
    "join",
    "linear_warmup",
    "piecewise_constant",
    "polynomial_decay",
    "step_decay",
    "warmup",
]
