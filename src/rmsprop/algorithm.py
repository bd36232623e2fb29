"""The RMSprop algorithm box, written once.

Every implementation in this package (the NumPy reference, the torch single-tensor and
foreach paths, the fused kernels) carries the same step numbers ``(1)``-``(10)`` as
comments, so any two can be read side by side. Docstrings and ``rmsprop explain`` render
this text; :func:`explain` specialises it to one preset.
"""

from __future__ import annotations

from typing import Any

ALGORITHM = r"""
RMSprop with every switch
-------------------------
given   θ params, g = ∇f(θ), η_t the lr at step t (schedules see t-1 = 0, 1, ...),
        α decay (alpha / rho / decay), ε eps, μ momentum, λ weight_decay
state   t = 0, v = v0 (initial_accumulator_value), ḡ = 0 (centered), b = 0 (momentum)

 (1)  t ← t + 1;   g ← −g if maximize
 (2)  clip g:  clipvalue c: clamp(g, −c, c) | clipnorm c: g·c / max(‖g‖, c), per tensor
              | global_clipnorm c: g·c / max(‖G‖, c), G = all gradients together
 (3)  weight decay:  coupled   g ← g + λθ
                     decoupled θ ← θ − η_t λ θ        (decoupled_weight_decay=True)
 (4)  v ← α v + (1 − α) g²                            (ema_form: how it is written)
 (5)  centered:  ḡ ← α ḡ + (1 − α) g
 (6)  s ← v̂ − ḡ̂²   (ḡ̂ term only when centered; ŝ = s/(1 − αᵗ) when bias_correction;
                     max(s, 0) when centered_clamp)
 (7)  d ← √(s + ε)   if eps_in_sqrt   else   √s + ε
 (8)  u ← g / d
 (9)  momentum μ > 0:
        lr_in_momentum:  b ← μ b + η_t u;   Δ ← b        (nesterov: Δ ← μ b + η_t u)
        otherwise:       b ← μ b + u;       Δ ← η_t b    (nesterov: Δ ← η_t (μ b + u))
      μ = 0:  Δ ← η_t u
 (10) θ ← θ − Δ

Centered with bf16 or 8-bit state (the variance form): instead of v the state holds
      S = v − ḡ²/c   (c = 1 − αᵗ with bias_correction, else 1; S₀ = v0), updated as
 (4') S ← α S + α(1−α)(c_{t−1}/c_t)(g − μ)²,   μ = ḡ/c_{t−1} (the old mean; the term is
      0 at t = 1 with bias_correction), before (5); then s = S/c_t (S without bias
      correction). The same s as (6) in exact arithmetic, never negative, and its rounding
      error is relative to the variance itself, not to v (v − ḡ² of quantized v and ḡ can
      be all error when the variance is small next to ḡ²).

ema_form:  "torch"    v ← α·v + (1−α)·g²  (mul_, addcmul_);  ḡ ← lerp(ḡ, g, 1−α)
           "multiply" v ← α·v + (1−α)·g²;   ḡ ← α·ḡ + (1−α)·g      (Keras, optax)
           "delta"    v ← v + (1−α)(g² − v); ḡ ← ḡ + (1−α)(g − ḡ)    (TF1 kernels, timm)
The three are equal in exact arithmetic and differ in the last bits.
""".strip("\n")


def variance_weights(alpha: float, step: float, bias_correction: bool) -> tuple[float, ...]:
    """(c_t, 1/c_{t−1}, α(1−α)·c_{t−1}/c_t) at step ``step`` (already counted) for the
    variance form (4'): the bias correction, the factor that turns the stored mean into
    the old mean (0 at the first step, where c_0 = 0), and the weight of the new squared
    deviation. Without bias correction (1, 1, α(1−α)). Computed in double, as Python
    computes a torch scalar; every implementation uses these three numbers."""
    if not bias_correction:
        return 1.0, 1.0, alpha * (1 - alpha)
    now, before = 1 - alpha**step, 1 - alpha ** (step - 1)
    return now, (1 / before if before > 0 else 0.0), alpha * (1 - alpha) * before / now


def explain(hp: dict[str, Any]) -> list[str]:
    """The update equations that these hyperparameters run, in order, one line per step,
    with their remarks aligned in one column."""
    rows = [("(1)", "t ← t + 1;  g ← −∇f(θ)" if hp.get("maximize") else "t ← t + 1;  g ← ∇f(θ)",
             "maximize" if hp.get("maximize") else "")]  # fmt: skip
    if _clip_line(hp):
        rows.append(("(2)", _clip_line(hp), ""))
    rows += _decay_rows(hp)
    a, v0 = hp["alpha"], hp["initial_accumulator_value"]
    if hp.get("ema_form", "multiply") == "delta":
        rows.append(("(4)", f"v ← v + {1 - a:g}·(g² − v)", f"v₀ = {v0:g}"))
    else:
        rows.append(("(4)", f"v ← {a:g}·v + {1 - a:g}·g²", f"v₀ = {v0:g}"))
    s = "v"
    if hp.get("centered"):
        rows.append(("(5)", f"ḡ ← {a:g}·ḡ + {1 - a:g}·g", "ḡ₀ = 0"))
        s = "v − ḡ²"
    if hp.get("bias_correction"):
        s = f"v/(1 − {a:g}^t)" + (f" − (ḡ/(1 − {a:g}^t))²" if hp.get("centered") else "")
    if hp.get("centered") and hp.get("centered_clamp"):
        s = f"max({s}, 0)"
    eps = hp["eps"]
    if hp.get("eps_in_sqrt"):
        rows.append(("(7)", f"d ← √({s} + {eps:g})", "eps inside the sqrt"))
    else:
        rows.append(("(7)", f"d ← √({s}) + {eps:g}", "eps outside the sqrt"))
    rows.append(("(8)", "u ← g / d", ""))
    rows += _momentum_rows(hp)
    width = max(len(equation) for _, equation, _ in rows)
    return [f"{step:<4} {equation:<{width}}   {note}".rstrip() for step, equation, note in rows]


def _decay_rows(hp: dict[str, Any]) -> list[tuple[str, str, str]]:
    lam = hp.get("weight_decay", 0.0)
    if not lam:
        return []
    if hp.get("decoupled_weight_decay"):
        return [("(3)", f"θ ← θ − η_t·{lam:g}·θ", "decoupled, before the step")]
    return [("(3)", f"g ← g + {lam:g}·θ", "coupled L2")]


def _momentum_rows(hp: dict[str, Any]) -> list[tuple[str, str, str]]:
    mu = hp.get("momentum", 0.0)
    if not mu:
        return [("(10)", "θ ← θ − η_t·u", "")]
    nesterov = "Nesterov" if hp.get("nesterov") else ""
    if hp.get("lr_in_momentum"):
        step = f"{mu:g}·b + η_t·u" if nesterov else "b"
        return [("(9)", f"b ← {mu:g}·b + η_t·u", "lr inside the buffer"),
                ("(10)", f"θ ← θ − {step}", nesterov)]  # fmt: skip
    step = f"η_t·({mu:g}·b + u)" if nesterov else "η_t·b"
    return [("(9)", f"b ← {mu:g}·b + u", "lr outside the buffer"),
            ("(10)", f"θ ← θ − {step}", nesterov)]  # fmt: skip


def _clip_line(hp: dict[str, Any]) -> str:
    if hp.get("clipvalue") is not None:
        return f"g ← clamp(g, −{hp['clipvalue']:g}, {hp['clipvalue']:g})"
    if hp.get("clipnorm") is not None:
        return f"g ← g·{hp['clipnorm']:g} / max(‖g‖, {hp['clipnorm']:g})   per tensor"
    if hp.get("global_clipnorm") is not None:
        c = hp["global_clipnorm"]
        return f"g ← g·{c:g} / max(‖G‖, {c:g})   G: all gradients"
    return ""
