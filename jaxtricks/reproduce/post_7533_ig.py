"""Claims of "积分梯度：一种新颖的神经网络可视化方法" (https://kexue.fm/archives/7533).

Integrated gradients (Sundararajan, Taly, Yan, arXiv:1703.01365) attribute
:math:`F(x) - F(\\bar x)` to the components of :math:`x` by integrating the gradient along
the straight path from the baseline :math:`\\bar x` to :math:`x`; the integral identity makes
the attributions sum exactly to :math:`F(x) - F(\\bar x)` (completeness), and the post
approximates the integral by an average of ``n`` gradients. The claims measure how the
completeness gap of the discretised integral shrinks with the number of steps for each
quadrature rule on a trained network, and that it vanishes for a linear function.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxtricks.attribution import integrated_gradients
from jaxtricks.reproduce._registry import Claim, Measurement, claim
from jaxtricks.reproduce._tasks import (
    accuracy,
    cross_entropy_sum,
    init_mlp,
    load_digits_split,
    mlp_logits,
)

CLAIMS: list[Claim] = []
POST = "7533"
METHODS = ("riemann_right", "trapezoid", "gauss_legendre")
STEPS = (10, 50, 300)
N_EXAMPLES = 16


@functools.cache
def _trained_mlp():
    """A 64-64-10 ReLU MLP trained on the digits (full batch, Adam, 300 steps)."""
    data = load_digits_split()
    params = init_mlp(jax.random.key(0), (64, 64, 10))
    tx = optax.adam(3e-3)
    n = data.x_train.shape[0]

    def step(carry, _):
        params, state = carry
        grads = jax.grad(lambda p: cross_entropy_sum(p, data.x_train, data.y_train) / n)(params)
        updates, state = tx.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), None

    (params, _), _ = jax.jit(lambda c: jax.lax.scan(step, c, length=300))((params, tx.init(params)))
    return params, data


def _relative_gaps(params, xs: jax.Array, ys: jax.Array, steps: int, method: str) -> np.ndarray:
    """|gap| / |F(x) - F(0)| of zero-baseline integrated gradients, F = log p(y | x)."""

    def one(x, y):
        f = lambda v: jax.nn.log_softmax(mlp_logits(params, v[None])[0])[y]  # noqa: E731
        _, gap = integrated_gradients(f, x, steps=steps, method=method)
        return jnp.abs(gap) / jnp.abs(f(x) - f(jnp.zeros_like(x)))

    return np.asarray(jax.jit(jax.vmap(one))(xs, ys))


@claim(
    CLAIMS,
    name="ig/completeness-gap-shrinks",
    post=POST,
    statement="Integrated gradients satisfy completeness: the attributions sum to "
    "F(x) - F(baseline), so the gap of the discretised path integral shrinks as the number "
    "of steps grows (shown for the right Riemann sum of the post, the trapezoid rule and "
    "Gauss-Legendre), on a trained network.",
    expected="for each rule, median |gap| / |F(x) - F(0)| over 16 test digits (64-64-10 ReLU "
    "MLP, F = log-probability of the true class, zero baseline) decreases from 10 to 50 to "
    "300 steps and is <= 2e-2 at 300 steps (the Riemann sum's error is O(1/steps)); the "
    "trapezoid and Gauss-Legendre gaps are below the Riemann gap at every step count",
)
def completeness_gap_shrinks() -> Measurement:
    params, data = _trained_mlp()
    xs, ys = data.x_test[:N_EXAMPLES], data.y_test[:N_EXAMPLES]
    acc = accuracy(params, data.x_test, data.y_test)
    parts, ok, table = [], True, {}
    for method in METHODS:
        medians = []
        for steps in STEPS:
            gaps = _relative_gaps(params, xs, ys, steps, method)
            medians.append(float(np.median(gaps)))
        ok &= medians[0] > medians[1] > medians[2] and medians[2] <= 2e-2
        table[method] = medians
        parts.append(f"{method}: " + " / ".join(f"{m:.1e}" for m in medians))
    riemann = table["riemann_right"]
    ok &= all(table[m][i] < riemann[i] for m in METHODS[1:] for i in range(len(STEPS)))
    return Measurement(
        f"median relative gap at {'/'.join(map(str, STEPS))} steps: "
        + "; ".join(parts)
        + f" (test accuracy {acc:.3f})",
        ok=bool(ok),
    )


@claim(
    CLAIMS,
    name="ig/exact-for-linear",
    post=POST,
    statement="For a linear F the integrand is constant along the path, so any quadrature "
    "rule, even with one step, gives attributions w * (x - baseline) that sum exactly to "
    "F(x) - F(baseline).",
    expected="max over rules, steps in {1, 50} and 16 test digits of |gap| / |F(x) - F(xbar)| "
    "<= 1e-5 (float32 rounding) and attributions equal w * (x - xbar) to 1e-5 relative",
)
def exact_for_linear() -> Measurement:
    data = load_digits_split()
    kw, kb = jax.random.split(jax.random.key(1))
    w = jax.random.normal(kw, (64,))
    xs = data.x_test[:N_EXAMPLES]
    xbar = jnp.mean(data.x_train, axis=0) + 0.1 * jax.random.normal(kb, (64,))
    f = lambda x: jnp.dot(w, x) + 0.5  # noqa: E731
    worst_gap = worst_attr = 0.0
    for method in METHODS:
        for steps in (1, 50):

            def one(x, steps=steps, method=method):
                attr, gap = integrated_gradients(f, x, xbar, steps=steps, method=method)
                scale = jnp.abs(f(x) - f(xbar))
                want = w * (x - xbar)
                return jnp.abs(gap) / scale, jnp.max(jnp.abs(attr - want)) / jnp.max(jnp.abs(want))

            gap, attr_err = jax.jit(jax.vmap(one))(xs)
            worst_gap = max(worst_gap, float(gap.max()))
            worst_attr = max(worst_attr, float(attr_err.max()))
    return Measurement(
        f"max relative gap {worst_gap:.1e}, max relative attribution error {worst_attr:.1e} "
        "(3 rules x steps 1, 50 x 16 digits)",
        ok=worst_gap <= 1e-5 and worst_attr <= 1e-5,
    )
