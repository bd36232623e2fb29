"""Shared data for parity tests: golden trajectories and the tolerance rule.

Tolerance in float64: every element within ``1e-12 * max|expected|`` of the expected
value (relative to the scale of the trajectory, so elements that pass near zero are not
held to an impossible relative bound).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Switch combinations every implementation is checked on (lr 0.01, alpha 0.9 added).
SWITCH_MATRIX = {
    "torch": {},
    "eps_inside": {"eps_in_sqrt": True, "eps": 1e-3},
    "v0_one_delta": {"initial_accumulator_value": 1.0, "ema_form": "delta"},
    "momentum_lr_inside": {"momentum": 0.9, "lr_in_momentum": True},
    "nesterov_outside": {"momentum": 0.9, "nesterov": True},
    "nesterov_inside": {"momentum": 0.8, "nesterov": True, "lr_in_momentum": True},
    "centered_clamp_multiply": {"centered": True, "centered_clamp": True, "ema_form": "multiply"},
    # At step 1 a bias-corrected variance is exactly 0, so s is pure rounding noise (torch's
    # CPU kernels use FMA in addcmul_, NumPy does not): eps must dominate that noise.
    "bias_correction_centered": {"bias_correction": True, "centered": True, "eps_in_sqrt": True,
                                 "eps": 1e-2, "centered_clamp": True},
    "decoupled_wd_momentum": {"weight_decay": 0.05, "decoupled_weight_decay": True, "momentum": 0.5},
    "coupled_wd_maximize": {"weight_decay": 0.05, "maximize": True, "centered": True},
    "clipvalue": {"clipvalue": 0.5, "momentum": 0.3},
    "clipnorm": {"clipnorm": 1.0},
    "global_clipnorm": {"global_clipnorm": 2.0, "centered": True},
    "tf1_everything": {"initial_accumulator_value": 1.0, "eps_in_sqrt": True, "ema_form": "delta",
                       "centered": True, "momentum": 0.9, "lr_in_momentum": True},
}  # fmt: skip

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
F64_RTOL = 1e-12


def assert_close_f64(actual, expected, *, rtol: float = F64_RTOL, what: str = "") -> None:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    scale = max(float(np.max(np.abs(expected))), 1e-300)
    err = float(np.max(np.abs(actual - expected))) / scale
    assert err <= rtol, f"{what}: max error {err:.3g} (relative to the scale) > {rtol:g}"


@dataclass(frozen=True)
class Golden:
    name: str
    framework: str
    version: str
    hp: dict
    lrs: np.ndarray
    params0: list[np.ndarray]
    grads: list[list[np.ndarray]]  # [step][tensor]
    traj: list[list[np.ndarray]]  # params after each step


def effective_hyperparameters(golden: Golden) -> dict:
    """The values the framework really computed with.

    TF1's RMSPropOptimizer turns Python-float ``decay``, ``momentum`` and ``epsilon`` into
    float32 tensors (``ops.convert_to_tensor`` in ``_prepare``) and casts them to the
    variable's dtype afterwards, so a float64 variable sees ``float32(0.9)``. The golden
    files store the values as passed; this applies TF1's rounding.
    """
    hp = dict(golden.hp)
    if golden.framework.startswith("tensorflow"):
        for name in ("alpha", "eps", "momentum"):
            hp[name] = float(np.float32(hp[name]))
    return hp


def golden_files(prefix: str = "") -> list[Path]:
    return sorted(GOLDEN_DIR.glob(f"{prefix}*.npz"))


def load_golden(path: Path) -> Golden:
    data = np.load(path)
    n = len([k for k in data.files if k.endswith("_init")])
    steps = len(data["lrs"])
    return Golden(
        name=path.stem,
        framework=str(data["framework"]),
        version=str(data["version"]),
        hp=json.loads(str(data["hp_json"])),
        lrs=data["lrs"],
        params0=[data[f"param{i}_init"] for i in range(n)],
        grads=[[data[f"param{i}_grads"][t] for i in range(n)] for t in range(steps)],
        traj=[[data[f"param{i}_traj"][t] for i in range(n)] for t in range(steps)],
    )


def random_problem(seed: int, steps: int = 100, shapes=((3, 4), (5,))):
    """Params, gradients over several magnitudes, and an lr that changes every step
    (values exactly representable in float32, because Keras stores lr in float32)."""
    rng = np.random.default_rng(seed)
    params = [rng.normal(size=s) for s in shapes]
    grads = [
        [rng.normal(size=s) * np.exp(rng.normal(size=s)) for s in shapes] for _ in range(steps)
    ]
    t = np.arange(steps)
    lrs = (0.01 * (0.55 + 0.45 * np.cos(t / 9.0))).astype(np.float32).astype(np.float64)
    return params, grads, lrs


def reference_trajectory(hp: dict, params0, grads, lrs) -> list[list[np.ndarray]]:
    from rmsprop import reference as ref

    tx = ref.rmsprop(**{**hp, "lr": lambda step: float(lrs[step])})
    params = [p.copy() for p in params0]
    state = tx.init(params)
    out = []
    for g in grads:
        updates, state = tx.update(g, state, params)
        params = ref.apply_updates(params, updates)
        out.append(params)
    return out


def dyadic_clip_problem(seed: int, kind: str, steps: int = 100):
    """Gradients whose norms are powers of two, for clipping parity with Keras.

    Keras computes the clipping scale in float32 even for float64 variables
    (``ops.minimum(x, python_float)`` promotes to float32). With norms that are powers of
    two, ``clip / norm`` is exact in float32, so the comparison stays exact in float64.
    ``kind="clipnorm"``: each tensor's norm is ``4 * 2**k`` (k per tensor and step);
    ``kind="global_clipnorm"``: the global norm is ``8 * 2**k``.
    """
    rng = np.random.default_rng(seed)
    shapes = ((4, 4), (3, 4))
    params = [rng.normal(size=s) for s in shapes]
    if kind == "clipnorm":
        magnitudes = [np.ones(16), np.array([2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0, 0], float)]
    else:
        magnitudes = [np.ones(16), np.full(12, 2.0)]
    grads = []
    for _ in range(steps):
        k_shared = rng.integers(-4, 2)
        step = []
        for shape, mags in zip(shapes, magnitudes):
            k = rng.integers(-4, 2) if kind == "clipnorm" else k_shared
            values = rng.permutation(mags) * rng.choice([-1.0, 1.0], size=mags.size) * 2.0**k
            step.append(values.reshape(shape))
        grads.append(step)
    t = np.arange(steps)
    lrs = (0.01 * (0.55 + 0.45 * np.cos(t / 9.0))).astype(np.float32).astype(np.float64)
    return params, grads, lrs


def optimizer_trajectory(make_opt, params0, grads, lrs, dtype=None):
    """Run a torch optimizer (``make_opt(params) -> opt``) with lr set before each step."""
    import torch

    params = [torch.tensor(p, dtype=dtype, requires_grad=True) for p in params0]
    opt = make_opt(params)
    out = []
    for g, rate in zip(grads, lrs):
        for group in opt.param_groups:
            group["lr"] = float(rate)
        for p, gi in zip(params, g):
            p.grad = torch.tensor(gi, dtype=p.dtype)
        opt.step()
        out.append([p.detach().clone() for p in params])
    return out, opt
