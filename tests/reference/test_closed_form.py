"""The reference against arithmetic done by hand, 1-3 steps per switch.

Gradients are fixed numbers (g1 = 2, g2 = -1, g3 = 0.5) unless weight decay makes them
depend on θ; θ0 = 1, α = 0.9. Each expected value is the algorithm box written out.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from rmsprop import reference as ref

G = (2.0, -1.0, 0.5)


def run(tx: ref.Transform, grads=G, theta0: float = 1.0) -> list[float]:
    params = np.array([theta0])
    state = tx.init(params)
    out = []
    for g in grads:
        updates, state = tx.update(np.array([g]), state, params)
        params = ref.apply_updates(params, updates)
        out.append(float(params[0]))
    return out


def test_keras_documented_example():
    # keras.optimizers.RMSprop docstring: lr=0.1, var=10, loss=var**2/2, one step -> 9.683772
    tx = ref.from_preset("keras", lr=0.1)
    params = np.array([10.0])
    updates, _ = tx.update(params, tx.init(params), params)  # grad of var**2/2 is var
    assert round(float(ref.apply_updates(params, updates)[0]), 6) == 9.683772


def test_plain_eps_outside_three_steps():
    # v1 = 0.1*4 = 0.4; v2 = 0.9*0.4 + 0.1*1 = 0.46; v3 = 0.9*0.46 + 0.1*0.25 = 0.439
    t1 = 1 - 0.1 * 2 / (math.sqrt(0.4) + 0.1)
    t2 = t1 + 0.1 * 1 / (math.sqrt(0.46) + 0.1)
    t3 = t2 - 0.1 * 0.5 / (math.sqrt(0.439) + 0.1)
    got = run(ref.rmsprop(lr=0.1, alpha=0.9, eps=0.1))
    np.testing.assert_allclose(got, [t1, t2, t3], rtol=1e-15)
    assert got[0] == pytest.approx(0.72694588, abs=1e-8)  # 1 - 0.2/0.73245553


def test_plain_eps_inside_two_steps():
    t1 = 1 - 0.1 * 2 / math.sqrt(0.4 + 0.1)
    t2 = t1 + 0.1 * 1 / math.sqrt(0.46 + 0.1)
    got = run(ref.rmsprop(lr=0.1, alpha=0.9, eps=0.1, eps_in_sqrt=True), G[:2])
    np.testing.assert_allclose(got, [t1, t2], rtol=1e-15)
    assert got[0] == pytest.approx(1 - 0.2 / 0.7071068, abs=1e-7)


@pytest.mark.parametrize("eps_in_sqrt", [True, False])
def test_centered_two_steps(eps_in_sqrt):
    # gbar1 = 0.2, s1 = 0.4 - 0.04 = 0.36; gbar2 = 0.18 - 0.1 = 0.08, s2 = 0.46 - 0.0064 = 0.4536
    def d(s):
        return math.sqrt(s + 0.1) if eps_in_sqrt else math.sqrt(s) + 0.1

    t1 = 1 - 0.1 * 2 / d(0.36)
    t2 = t1 + 0.1 * 1 / d(0.4536)
    tx = ref.rmsprop(lr=0.1, alpha=0.9, eps=0.1, eps_in_sqrt=eps_in_sqrt, centered=True)
    np.testing.assert_allclose(run(tx, G[:2]), [t1, t2], rtol=1e-14)


LRS = [0.1, 0.05]  # a changing lr separates "lr inside" from "lr outside" the buffer
U1, U2 = 2 / math.sqrt(0.5), -1 / math.sqrt(0.56)  # g/sqrt(v + 0.1), eps inside


def test_momentum_lr_outside_buffer():
    b1 = U1
    t1 = 1 - 0.1 * b1
    b2 = 0.5 * b1 + U2
    t2 = t1 - 0.05 * b2
    tx = ref.rmsprop(lr=lambda t: LRS[t], alpha=0.9, eps=0.1, eps_in_sqrt=True, momentum=0.5)
    np.testing.assert_allclose(run(tx, G[:2]), [t1, t2], rtol=1e-15)


def test_momentum_lr_inside_buffer():
    b1 = 0.1 * U1
    t1 = 1 - b1
    b2 = 0.5 * b1 + 0.05 * U2
    t2 = t1 - b2
    tx = ref.rmsprop(
        lr=lambda t: LRS[t], alpha=0.9, eps=0.1, eps_in_sqrt=True, momentum=0.5, lr_in_momentum=True
    )
    np.testing.assert_allclose(run(tx, G[:2]), [t1, t2], rtol=1e-15)


def test_nesterov_lr_outside_and_inside():
    # outside: b = 0.5b + u; θ -= lr (u + 0.5 b)
    b1 = U1
    t1 = 1 - 0.1 * (U1 + 0.5 * b1)
    b2 = 0.5 * b1 + U2
    t2 = t1 - 0.05 * (U2 + 0.5 * b2)
    tx = ref.rmsprop(
        lr=lambda t: LRS[t], alpha=0.9, eps=0.1, eps_in_sqrt=True, momentum=0.5, nesterov=True
    )
    np.testing.assert_allclose(run(tx, G[:2]), [t1, t2], rtol=1e-15)
    # inside (optax trace(nesterov=True) after the lr): b = 0.5b + lr u; θ -= lr u + 0.5 b
    b1 = 0.1 * U1
    t1 = 1 - (0.1 * U1 + 0.5 * b1)
    b2 = 0.5 * b1 + 0.05 * U2
    t2 = t1 - (0.05 * U2 + 0.5 * b2)
    tx = ref.rmsprop(
        lr=lambda t: LRS[t],
        alpha=0.9,
        eps=0.1,
        eps_in_sqrt=True,
        momentum=0.5,
        nesterov=True,
        lr_in_momentum=True,
    )
    np.testing.assert_allclose(run(tx, G[:2]), [t1, t2], rtol=1e-15)


def test_tf1_accumulator_starts_at_one():
    # v0 = 1, delta form: v1 = 1 + 0.1*(4 - 1) = 1.3; v2 = 1.3 + 0.1*(1 - 1.3) = 1.27
    t1 = 1 - 0.1 * 2 / math.sqrt(1.3 + 1e-10)
    t2 = t1 + 0.1 * 1 / math.sqrt(1.27 + 1e-10)
    np.testing.assert_allclose(run(ref.from_preset("tf1", lr=0.1), G[:2]), [t1, t2], rtol=1e-15)
    # the first step is small (≈ lr·g/√ρ... here 0.175), unlike torch's ≈ lr/√(1-ρ) = 0.316
    assert 1 - t1 == pytest.approx(0.17541160, abs=1e-8)


def test_coupled_weight_decay():
    # g' = g + 0.5θ: g1' = 2.5, v1 = 0.625; then g2' = -1 + 0.5 θ1
    t1 = 1 - 0.1 * 2.5 / (math.sqrt(0.625) + 0.1)
    g2 = -1 + 0.5 * t1
    v2 = 0.9 * 0.625 + 0.1 * g2 * g2
    t2 = t1 - 0.1 * g2 / (math.sqrt(v2) + 0.1)
    tx = ref.rmsprop(lr=0.1, alpha=0.9, eps=0.1, weight_decay=0.5)
    np.testing.assert_allclose(run(tx, G[:2]), [t1, t2], rtol=1e-15)


def test_decoupled_weight_decay():
    # θ ← θ − lr·0.5·θ − lr·g/d; the gradient sees the undecayed θ and v ignores λ
    t1 = 1 - 0.1 * 0.5 * 1 - 0.1 * 2 / (math.sqrt(0.4) + 0.1)
    t2 = t1 - 0.1 * 0.5 * t1 + 0.1 * 1 / (math.sqrt(0.46) + 0.1)
    tx = ref.rmsprop(lr=0.1, alpha=0.9, eps=0.1, weight_decay=0.5, decoupled_weight_decay=True)
    np.testing.assert_allclose(run(tx, G[:2]), [t1, t2], rtol=1e-15)


def test_bias_correction():
    # v̂1 = 0.4 / (1 - 0.9) = 4; v̂2 = 0.46 / (1 - 0.81) = 2.4210526...
    t1 = 1 - 0.1 * 2 / math.sqrt(4 + 1e-8)
    t2 = t1 + 0.1 / math.sqrt(0.46 / 0.19 + 1e-8)
    tx = ref.from_preset("optax", lr=0.1, bias_correction=True)
    np.testing.assert_allclose(run(tx, G[:2]), [t1, t2], rtol=1e-14)


def test_maximize_negates_the_gradient():
    t1 = 1 + 0.1 * 2 / (math.sqrt(0.4) + 0.1)
    np.testing.assert_allclose(
        run(ref.rmsprop(lr=0.1, alpha=0.9, eps=0.1, maximize=True), G[:1]), [t1], rtol=1e-15
    )


def test_clipping():
    # clipvalue 1.5: g1 = 2 -> 1.5; clipnorm 1: |g1| = 2 -> 1
    t_value = 1 - 0.1 * 1.5 / (math.sqrt(0.1 * 2.25) + 0.1)
    t_norm = 1 - 0.1 * 1.0 / (math.sqrt(0.1) + 0.1)
    assert run(ref.rmsprop(lr=0.1, alpha=0.9, eps=0.1, clipvalue=1.5), G[:1])[0] == pytest.approx(
        t_value, rel=1e-15
    )
    assert run(ref.rmsprop(lr=0.1, alpha=0.9, eps=0.1, clipnorm=1.0), G[:1])[0] == pytest.approx(
        t_norm, rel=1e-15
    )
    # global_clipnorm 1 over two leaves (3, 4): norm 5, both scaled by 1/5
    tx = ref.rmsprop(lr=0.1, alpha=0.9, eps=0.1, global_clipnorm=1.0)
    params = [np.array([1.0]), np.array([1.0])]
    grads = [np.array([3.0]), np.array([4.0])]
    updates, _ = tx.update(grads, tx.init(params), params)
    expected = [
        -0.1 * 0.6 / (math.sqrt(0.1 * 0.36) + 0.1),
        -0.1 * 0.8 / (math.sqrt(0.1 * 0.64) + 0.1),
    ]
    np.testing.assert_allclose([float(u[0]) for u in updates], expected, rtol=1e-15)


def test_hinton_form():
    # s = 0.9 s + 0.1 g²; w -= lr / sqrt(s + 1e-8) * g, lr = 1e-3
    t1 = 1 - 1e-3 / math.sqrt(0.4 + 1e-8) * 2
    assert run(ref.from_preset("hinton"), G[:1])[0] == pytest.approx(t1, rel=1e-15)


def test_sgd_momentum_nesterov_adagrad_by_hand():
    # SGD momentum 0.5: b1 = 2, θ1 = 0.8; b2 = 1 - 1 = 0, θ2 = 0.8
    np.testing.assert_allclose(run(ref.momentum(0.1, 0.5), G[:2]), [0.8, 0.8], rtol=1e-15)
    # Nesterov: θ1 = 1 - 0.1(2 + 0.5·2) = 0.7; b2 = 0, θ2 = 0.7 - 0.1(-1 + 0) = 0.8
    np.testing.assert_allclose(run(ref.nag(0.1, 0.5), G[:2]), [0.7, 0.8], rtol=1e-15)
    # Adagrad (torch): sum1 = 4, θ1 = 1 - 0.1·2/(2 + eps); sum2 = 5, lr2 = 0.1/(1 + 0.5)
    t1 = 1 - 0.1 * 2 / (2 + 1e-10)
    t2 = t1 + (0.1 / 1.5) * 1 / (math.sqrt(5) + 1e-10)
    np.testing.assert_allclose(run(ref.adagrad(0.1, lr_decay=0.5), G[:2]), [t1, t2], rtol=1e-15)
