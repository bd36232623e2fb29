"""rmsprop.optax against optax.rmsprop under jax.jit: the same switches, one jitted step
(update + apply_updates, params and state donated), 16M float32 parameters.

    python benchmarks/optax_jit.py --size 16777216 --repeats 30 \
        --json benchmarks/results/cpu-2core-amd-epyc-optax-jit.json

Rounds interleave the two transforms (the machine's speed drifts; pairs taken close
together do not); each reports the median of its step times and the ratio ours/optax.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import optax

from rmsprop.optax import from_preset

CONFIGS = {
    "plain": {},
    "momentum": {"momentum": 0.9},
    "centered + momentum": {"centered": True, "momentum": 0.9},
    "bias correction + nesterov": {"bias_correction": True, "momentum": 0.9, "nesterov": True},
}
OURS = {"decay": "alpha", "initial_scale": "initial_accumulator_value"}


def step_fn(tx):
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return jax.jit(step, donate_argnums=(0, 1))


def time_steps(tx, size: int, repeats: int) -> list[float]:
    params = jnp.ones(size, jnp.float32)
    grads = jnp.full(size, 0.01, jnp.float32)
    state, step = tx.init(params), step_fn(tx)
    params, state = step(params, state, grads)  # compile
    jax.block_until_ready(params)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        params, state = step(params, state, grads)
        jax.block_until_ready(params)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16 * 2**20)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="", help="a substring of the configurations to run")
    parser.add_argument("--json")
    args = parser.parse_args()
    rows = []
    for name, switches in CONFIGS.items():
        if args.only not in name:
            continue
        ours_tx = from_preset("optax", 1e-3, **{OURS.get(k, k): v for k, v in switches.items()})
        theirs_tx = optax.rmsprop(1e-3, **switches)
        times = {"rmsprop.optax": [], "optax.rmsprop": []}
        for _ in range(args.rounds):
            times["optax.rmsprop"] += time_steps(theirs_tx, args.size, args.repeats)
            times["rmsprop.optax"] += time_steps(ours_tx, args.size, args.repeats)
        medians = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        rows.append({"config": name, **{f"{k} ms": round(v, 3) for k, v in medians.items()},
                     "ratio ours/optax": round(medians["rmsprop.optax"] / medians["optax.rmsprop"], 3)})  # fmt: skip
        print(rows[-1], flush=True)
    result = {"size": args.size, "repeats": args.repeats, "rounds": args.rounds,
              "jax": jax.__version__, "optax": optax.__version__,
              "machine": platform.processor() or platform.machine(), "rows": rows}  # fmt: skip
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()
