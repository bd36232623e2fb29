"""Write golden trajectories produced by the real TF1 and timm optimizers.

These frameworks are not installed in the default test run, so their parity is checked
against trajectories they produced, stored next to this script. Each ``.npz`` holds the
initial params, the gradient and lr sequences fed in, the params after every step, and
the hyperparameters in rmsprop's names (``hp_json``).

Usage (each in an environment that has the framework; see README "Golden files"):
  # TF1: tensorflow-cpu (tested with 2.21.0)
  python tests/golden/make_golden.py tf1
  # timm RMSpropTF: torch + timm installed with --no-deps (tested with timm 1.0.31);
  # rmsprop_tf.py is loaded by file, without importing the timm package (no torchvision).
  python tests/golden/make_golden.py timm_tf --timm-optim-dir /path/to/site-packages/timm/optim
  # Stable-Baselines3 RMSpropTFLike (tested with 2.9.2): the one file, from the wheel
  # (pip download --no-deps stable-baselines3; unzip it), needs only torch.
  python tests/golden/make_golden.py sb3_tf_like --sb3-file /path/to/sb2_compat/rmsprop_tf_like.py

The script only needs numpy and the framework; it does not import rmsprop.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np

STEPS = 100
SHAPES = ((3, 4), (5,))
HERE = Path(__file__).resolve().parent

# name -> (hyperparameters in rmsprop's names, base lr). lr changes every step.
TF1_CONFIGS = {
    "tf1_plain": dict(alpha=0.9, eps=1e-10, momentum=0.0, centered=False),
    "tf1_momentum": dict(alpha=0.9, eps=1e-10, momentum=0.9, centered=False),
    "tf1_centered": dict(alpha=0.9, eps=1e-10, momentum=0.0, centered=True),
    "tf1_centered_momentum": dict(alpha=0.8, eps=1e-6, momentum=0.5, centered=True),
    "tf1_dopamine": dict(alpha=0.95, eps=1e-5, momentum=0.0, centered=True),
    "tf1_impala": dict(alpha=0.99, eps=0.1, momentum=0.0, centered=False),
}
TF1_FIXED = dict(
    eps_in_sqrt=True, initial_accumulator_value=1.0, lr_in_momentum=True, ema_form="delta"
)

TIMM_CONFIGS = {
    "timm_tf_plain": dict(alpha=0.9, eps=1e-10),
    "timm_tf_momentum": dict(alpha=0.9, eps=1e-10, momentum=0.9),
    "timm_tf_momentum_lr_outside": dict(alpha=0.9, eps=1e-10, momentum=0.9, lr_in_momentum=False),
    "timm_tf_centered_momentum": dict(alpha=0.9, eps=1e-3, momentum=0.9, centered=True),
    "timm_tf_weight_decay": dict(alpha=0.9, eps=1e-10, weight_decay=0.01),
    "timm_tf_decoupled_momentum": dict(
        alpha=0.95, eps=1e-8, momentum=0.9, weight_decay=0.05, decoupled_weight_decay=True
    ),
}
TIMM_FIXED = dict(eps_in_sqrt=True, initial_accumulator_value=1.0, ema_form="delta")

SB3_CONFIGS = {
    "sb3_tf_like_plain": dict(alpha=0.99, eps=1e-8),
    "sb3_tf_like_momentum": dict(alpha=0.99, eps=1e-5, momentum=0.9),
    "sb3_tf_like_centered_momentum_wd": dict(
        alpha=0.9, eps=1e-4, momentum=0.5, centered=True, weight_decay=0.01
    ),
}
SB3_FIXED = dict(
    eps_in_sqrt=True, initial_accumulator_value=1.0, lr_in_momentum=False, ema_form="multiply"
)


def inputs(seed: int) -> tuple[list[np.ndarray], list[list[np.ndarray]], np.ndarray]:
    """Initial params, gradients over a range of magnitudes, and a changing lr."""
    rng = np.random.default_rng(seed)
    params = [rng.normal(size=s) for s in SHAPES]
    grads = [
        [rng.normal(size=s) * np.exp(rng.normal(size=s)) for s in SHAPES] for _ in range(STEPS)
    ]
    t = np.arange(STEPS)
    lrs = (0.01 * (0.55 + 0.45 * np.cos(t / 9.0))).astype(np.float32).astype(np.float64)
    return params, grads, lrs


def run_tf1(hp: dict, params0, grads, lrs) -> list[list[np.ndarray]]:
    import tensorflow as tf

    lr = tf.Variable(lrs[0], dtype=tf.float64)
    opt = tf.compat.v1.train.RMSPropOptimizer(
        learning_rate=lambda: lr,
        decay=hp["alpha"],
        momentum=hp["momentum"],
        epsilon=hp["eps"],
        centered=hp["centered"],
    )
    variables = [tf.Variable(p, dtype=tf.float64) for p in params0]
    out = []
    for g, rate in zip(grads, lrs):
        lr.assign(rate)
        opt.apply_gradients([(tf.constant(gi), v) for gi, v in zip(g, variables)])
        out.append([v.numpy().copy() for v in variables])
    return out


def load_timm(optim_dir: Path):
    package = types.ModuleType("timm_optim_by_file")
    package.__path__ = [str(optim_dir)]
    sys.modules[package.__name__] = package
    spec = importlib.util.spec_from_file_location(
        f"{package.__name__}.rmsprop_tf", optim_dir / "rmsprop_tf.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.RMSpropTF


def _torch_trajectory(opt, params, grads, lrs) -> list[list[np.ndarray]]:
    """Step a torch optimizer through ``grads`` with the lr schedule ``lrs``; the
    parameters after each step."""
    import torch

    out = []
    for g, rate in zip(grads, lrs):
        opt.param_groups[0]["lr"] = float(rate)
        for p, gi in zip(params, g):
            p.grad = torch.tensor(gi, dtype=torch.float64)
        opt.step()
        out.append([p.detach().numpy().copy() for p in params])
    return out


def run_timm(hp: dict, params0, grads, lrs, optim_dir: Path) -> list[list[np.ndarray]]:
    import torch

    rmsprop_tf = load_timm(optim_dir)
    params = [torch.tensor(p, dtype=torch.float64, requires_grad=True) for p in params0]
    opt = rmsprop_tf(
        params,
        lr=float(lrs[0]),
        alpha=hp["alpha"],
        eps=hp["eps"],
        weight_decay=hp.get("weight_decay", 0.0),
        momentum=hp.get("momentum", 0.0),
        centered=hp.get("centered", False),
        decoupled_decay=hp.get("decoupled_weight_decay", False),
        lr_in_momentum=hp.get("lr_in_momentum", True),
        foreach=False,
    )
    return _torch_trajectory(opt, params, grads, lrs)


def run_sb3(hp: dict, params0, grads, lrs, sb3_file: Path) -> list[list[np.ndarray]]:
    import torch

    spec = importlib.util.spec_from_file_location("sb3_rmsprop_tf_like", sb3_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    params = [torch.tensor(p, dtype=torch.float64, requires_grad=True) for p in params0]
    opt = module.RMSpropTFLike(
        params,
        lr=float(lrs[0]),
        alpha=hp["alpha"],
        eps=hp["eps"],
        weight_decay=hp.get("weight_decay", 0.0),
        momentum=hp.get("momentum", 0.0),
        centered=hp.get("centered", False),
    )
    return _torch_trajectory(opt, params, grads, lrs)


def save(name: str, hp: dict, framework: str, version: str, params0, grads, lrs, traj) -> None:
    arrays = {
        "lrs": lrs,
        "hp_json": np.array(json.dumps(hp)),
        "framework": np.array(framework),
        "version": np.array(version),
    }
    for i in range(len(SHAPES)):
        arrays[f"param{i}_init"] = params0[i]
        arrays[f"param{i}_grads"] = np.stack([g[i] for g in grads])
        arrays[f"param{i}_traj"] = np.stack([t[i] for t in traj])
    np.savez_compressed(HERE / f"{name}.npz", **arrays)
    print(f"wrote {name}.npz ({framework} {version})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("framework", choices=["tf1", "timm_tf", "sb3_tf_like"])
    parser.add_argument(
        "--sb3-file", type=Path, help="stable_baselines3/common/sb2_compat/rmsprop_tf_like.py"
    )
    parser.add_argument(
        "--timm-optim-dir", type=Path, help="the timm/optim folder of a timm install"
    )
    args = parser.parse_args()
    if args.framework == "tf1":
        import tensorflow as tf

        for seed, (name, cfg) in enumerate(TF1_CONFIGS.items()):
            params0, grads, lrs = inputs(seed)
            traj = run_tf1(cfg, params0, grads, lrs)
            hp = {**cfg, **TF1_FIXED}
            save(
                name,
                hp,
                "tensorflow.compat.v1.train.RMSPropOptimizer",
                tf.__version__,
                params0,
                grads,
                lrs,
                traj,
            )
    elif args.framework == "sb3_tf_like":
        if args.sb3_file is None:
            parser.error("sb3_tf_like needs --sb3-file")
        for seed, (name, cfg) in enumerate(SB3_CONFIGS.items(), start=200):
            params0, grads, lrs = inputs(seed)
            traj = run_sb3(cfg, params0, grads, lrs, args.sb3_file)
            hp = {"momentum": 0.0, "centered": False, "weight_decay": 0.0, **cfg, **SB3_FIXED}
            save(
                name,
                hp,
                "stable_baselines3.RMSpropTFLike",
                "2.9.2 (rmsprop_tf_like.py)",
                params0,
                grads,
                lrs,
                traj,
            )
    else:
        if args.timm_optim_dir is None:
            parser.error("timm_tf needs --timm-optim-dir")
        for seed, (name, cfg) in enumerate(TIMM_CONFIGS.items(), start=100):
            params0, grads, lrs = inputs(seed)
            traj = run_timm(cfg, params0, grads, lrs, args.timm_optim_dir)
            hp = {"momentum": 0.0, "lr_in_momentum": True, **cfg, **TIMM_FIXED}
            save(
                name,
                hp,
                "timm.optim.RMSpropTF",
                "1.0.31 (rmsprop_tf.py)",
                params0,
                grads,
                lrs,
                traj,
            )


if __name__ == "__main__":
    main()
