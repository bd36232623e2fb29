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
    """The update equations that these hyperparameters run, in order, one line per step."""
    lines = []
    sign = "g ← −∇f(θ)  (maximize)" if hp.get("maximize") else "g ← ∇f(θ)"
    lines.append(f"(1)  t ← t + 1;  {sign}")
    clip = _clip_line(hp)
    if clip:
        lines.append(f"(2)  {clip}")
    lam = hp.get("weight_decay", 0.0)
    if lam:
        if hp.get("decoupled_weight_decay"):
            lines.append(f"(3)  θ ← θ − η_t·{lam:g}·θ   (decoupled, before the step)")
        else:
            lines.append(f"(3)  g ← g + {lam:g}·θ   (coupled L2)")
    a = hp["alpha"]
    form = hp.get("ema_form", "multiply")
    if form == "delta":
        lines.append(
            f"(4)  v ← v + {1 - a:g}·(g² − v)      v₀ = {hp['initial_accumulator_value']:g}"
        )
    else:
        lines.append(
            f"(4)  v ← {a:g}·v + {1 - a:g}·g²      v₀ = {hp['initial_accumulator_value']:g}"
        )
    s = "v"
    if hp.get("centered"):
        lines.append(f"(5)  ḡ ← {a:g}·ḡ + {1 - a:g}·g       ḡ₀ = 0")
        s = "v − ḡ²"
    if hp.get("bias_correction"):
        s = f"v/(1 − {a:g}^t)" + (f" − (ḡ/(1 − {a:g}^t))²" if hp.get("centered") else "")
    if hp.get("centered") and hp.get("centered_clamp"):
        s = f"max({s}, 0)"
    eps = hp["eps"]
    if hp.get("eps_in_sqrt"):
        lines.append(f"(7)  d ← √({s} + {eps:g})          eps inside the sqrt")
    else:
        lines.append(f"(7)  d ← √({s}) + {eps:g}          eps outside the sqrt")
    lines.append("(8)  u ← g / d")
    mu = hp.get("momentum", 0.0)
    if mu:
        if hp.get("lr_in_momentum"):
            lines.append(f"(9)  b ← {mu:g}·b + η_t·u           lr inside the buffer")
            step = f"{mu:g}·b + η_t·u" if hp.get("nesterov") else "b"
        else:
            lines.append(f"(9)  b ← {mu:g}·b + u               lr outside the buffer")
            step = f"η_t·({mu:g}·b + u)" if hp.get("nesterov") else "η_t·b"
        lines.append(f"(10) θ ← θ − {step}" + ("   (Nesterov)" if hp.get("nesterov") else ""))
    else:
        lines.append("(10) θ ← θ − η_t·u")
    return lines


def _clip_line(hp: dict[str, Any]) -> str:
    if hp.get("clipvalue") is not None:
        return f"g ← clamp(g, −{hp['clipvalue']:g}, {hp['clipvalue']:g})"
    if hp.get("clipnorm") is not None:
        return f"g ← g·{hp['clipnorm']:g} / max(‖g‖, {hp['clipnorm']:g})   per tensor"
    if hp.get("global_clipnorm") is not None:
        c = hp["global_clipnorm"]
        return f"g ← g·{c:g} / max(‖G‖, {c:g})   G: all gradients"
    return ""
