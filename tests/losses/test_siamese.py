"""Tests of simsiam_loss, byol_loss and byol_tau_schedule against float64 NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from jax.test_util import check_grads

from jaxtricks.losses import byol_loss, byol_tau_schedule, simsiam_loss
from jaxtricks.reproduce.post_7980_simsiam import stop_gradient_toy

B, D = 5, 4
_rows = arrays(np.float64, (B, D), elements=st.floats(-5, 5, allow_nan=False, width=64))


def _cos(p, z):
    """Row-wise cosine in float64 NumPy (rows assumed non-zero)."""
    p, z = np.asarray(p, np.float64), np.asarray(z, np.float64)
    return (p * z).sum(-1) / (np.linalg.norm(p, axis=-1) * np.linalg.norm(z, axis=-1))


def _cos_jax(p, z):
    return jnp.sum(p * z, -1) / (jnp.linalg.norm(p, axis=-1) * jnp.linalg.norm(z, axis=-1))


def _away_from_zero(x):
    return x + np.where(np.abs(x).sum(-1, keepdims=True) < 1e-3, 1.0, 0.0)


@given(p1=_rows, p2=_rows, z1=_rows, z2=_rows)
def test_simsiam_matches_numpy(x64, p1, p2, z1, z2):
    p1, p2, z1, z2 = (_away_from_zero(x) for x in (p1, p2, z1, z2))
    expected = -0.5 * (_cos(p1, z2).mean() + _cos(p2, z1).mean())
    np.testing.assert_allclose(simsiam_loss(p1, p2, z1, z2), expected, rtol=1e-12, atol=1e-12)


@given(p=_rows, z=_rows)
def test_byol_matches_numpy(x64, p, z):
    p, z = _away_from_zero(p), _away_from_zero(z)
    pn = p / np.linalg.norm(p, axis=-1, keepdims=True)
    zn = z / np.linalg.norm(z, axis=-1, keepdims=True)
    expected = ((pn - zn) ** 2).sum(-1).mean()  # the normalised squared error itself
    np.testing.assert_allclose(byol_loss(p, z), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(byol_loss(p, z), 2 - 2 * _cos(p, z).mean(), rtol=1e-10, atol=1e-12)


def test_stop_gradient_blocks_targets_only(x64):
    rng = np.random.default_rng(0)
    p1, p2, z1, z2 = (rng.normal(size=(B, D)) for _ in range(4))
    grads = jax.grad(simsiam_loss, argnums=(0, 1, 2, 3))(p1, p2, z1, z2)
    np.testing.assert_array_equal(grads[2], 0.0)
    np.testing.assert_array_equal(grads[3], 0.0)
    assert np.abs(grads[0]).min() > 0 and np.abs(grads[1]).min() > 0
    # The prediction gradient is that of -cos(p1, z2)/2 with z2 held fixed, averaged over rows.
    expected = jax.grad(lambda p: -0.5 * jnp.mean(jnp.asarray(_cos_jax(p, z2))))(p1)
    np.testing.assert_allclose(grads[0], expected, rtol=1e-12)
    g_p, g_z = jax.grad(byol_loss, argnums=(0, 1))(p1, z1)
    np.testing.assert_array_equal(g_z, 0.0)
    assert np.abs(g_p).min() > 0


def test_shared_encoder_learns_only_through_predictions(x64):
    # z = x W, p = z V: with the stop-gradient, dL/dW flows through p alone.
    rng = np.random.default_rng(1)
    x1, x2 = rng.normal(size=(B, 3)), rng.normal(size=(B, 3))
    w, v = rng.normal(size=(3, D)), rng.normal(size=(D, D))

    def full(w):
        z1, z2 = x1 @ w, x2 @ w
        return simsiam_loss(z1 @ v, z2 @ v, z1, z2)

    def targets_frozen(w_online):
        # The targets are computed from a constant copy of the weights.
        z1, z2 = x1 @ w_online, x2 @ w_online
        t1, t2 = x1 @ w, x2 @ w
        return -0.5 * (jnp.mean(_cos_jax(z1 @ v, t2)) + jnp.mean(_cos_jax(z2 @ v, t1)))

    np.testing.assert_allclose(jax.grad(full)(w), jax.grad(targets_frozen)(w), rtol=1e-12)


def test_gradients(x64):
    rng = np.random.default_rng(2)
    p1, p2, z1, z2 = (rng.normal(size=(B, D)) for _ in range(4))
    check_grads(lambda p1, p2: simsiam_loss(p1, p2, z1, z2), (p1, p2), order=2, modes=["rev"])
    check_grads(lambda p: byol_loss(p, z1), (p1,), order=2, modes=["rev"])


def test_zero_vectors_finite():
    zeros = jnp.zeros((B, D))
    ones = jnp.ones((B, D))
    value_and_grad = jax.jit(jax.value_and_grad(simsiam_loss, argnums=(0, 1)))
    for args in ((zeros, zeros, zeros, zeros), (zeros, ones, ones, zeros)):
        value, grads = value_and_grad(*args)
        assert np.isfinite(value) and all(np.isfinite(g).all() for g in grads)
    value, grad = jax.value_and_grad(byol_loss)(zeros, ones)
    assert np.isfinite(value) and np.isfinite(grad).all()


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_dtype_kept(dtype):
    rng = np.random.default_rng(3)
    p1, p2, z1, z2 = (jnp.asarray(rng.normal(size=(B, D)), dtype) for _ in range(4))
    loss = simsiam_loss(p1, p2, z1, z2)
    assert loss.dtype == dtype
    assert jax.grad(simsiam_loss)(p1, p2, z1, z2).dtype == dtype
    assert byol_loss(p1, z1).dtype == dtype
    f64 = [np.asarray(x, np.float64) for x in (p1, p2, z1, z2)]
    expected = -0.5 * (_cos(f64[0], f64[3]).mean() + _cos(f64[1], f64[2]).mean())
    np.testing.assert_allclose(float(loss), expected, atol=1e-2 if dtype == jnp.bfloat16 else 1e-6)


def test_jit_equals_eager_and_leading_axes():
    rng = np.random.default_rng(4)
    p1, p2, z1, z2 = (jnp.asarray(rng.normal(size=(2, B, D)), jnp.float32) for _ in range(4))
    eager = simsiam_loss(p1, p2, z1, z2)
    np.testing.assert_allclose(jax.jit(simsiam_loss)(p1, p2, z1, z2), eager, rtol=1e-6)
    flat = [x.reshape(2 * B, D) for x in (p1, p2, z1, z2)]
    np.testing.assert_allclose(simsiam_loss(*flat), eager, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(byol_loss)(p1, z1), byol_loss(p1, z1), rtol=1e-6)


def test_tau_schedule_matches_formula_and_optax(x64):
    base, total = 0.99, 300
    tau = byol_tau_schedule(base, total)
    steps = np.arange(0, 2 * total)
    expected = 1 - (1 - base) * (np.cos(np.pi * np.minimum(steps, total) / total) + 1) / 2
    got = jax.vmap(tau)(jnp.asarray(steps))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-15)
    decay = optax.cosine_decay_schedule(1 - base, total)
    np.testing.assert_allclose(got, 1 - jax.vmap(decay)(jnp.asarray(steps)), atol=1e-15)
    assert float(tau(0)) == pytest.approx(base) and float(tau(total)) == 1.0


def test_tau_schedule_jit_and_dtype():
    tau = byol_tau_schedule(0.996, 100)
    np.testing.assert_allclose(jax.jit(tau)(50), tau(50), rtol=1e-7)
    assert tau(jnp.int32(10)).dtype == jnp.float32
    # BYOL target update with the schedule: tau = base at step 0 keeps 99.6% of the target.
    target, online = jnp.ones(3), jnp.zeros(3)
    new = optax.incremental_update(online, target, 1 - tau(0))
    np.testing.assert_allclose(new, 0.996 * target, rtol=1e-6)


@pytest.mark.parametrize(
    "fn,args,match",
    [
        (simsiam_loss, ((B, D), (B, D), (B, D), (B, D + 1)), "z2 must have p1's shape"),
        (simsiam_loss, ((), (), (), ()), "feature axis"),
        (byol_loss, ((B, D), (B + 1, D)), "z must have p's shape"),
    ],
)
def test_shape_errors(fn, args, match):
    with pytest.raises(ValueError, match=match):
        fn(*(jnp.ones(s) for s in args))


@pytest.mark.parametrize(
    "base,total,match",
    [
        (1.5, 10, "base_tau"),
        (-0.1, 10, "base_tau"),
        (float("nan"), 10, "base_tau"),
        (0.99, 0, "total_steps"),
        (0.99, 10.0, "total_steps"),
        (0.99, True, "total_steps"),
    ],
)
def test_tau_schedule_errors(base, total, match):
    exc = TypeError if isinstance(total, (bool, float)) else ValueError
    with pytest.raises(exc, match=match):
        byol_tau_schedule(base, total)


def test_claim_stop_gradient_toy():
    result = stop_gradient_toy()
    assert result.ok, result.measured
