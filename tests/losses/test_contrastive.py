"""Tests of info_nce against a float64 NumPy reference and optax's cross-entropy."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from jax.test_util import check_grads

from jaxtricks.losses import info_nce

B, M, D = 4, 6, 3
_values = st.floats(-5, 5, allow_nan=False, width=64)


def _reference(a, b, tau, symmetric=False):
    """Float64 NumPy InfoNCE: row softmax over cosine / tau, diagonal targets."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    s = a @ b.T / tau
    n = a.shape[0]

    def ce(logits):
        out = []
        for i in range(n):
            row = logits[i]
            top = row.max()
            out.append(top + np.log(np.exp(row - top).sum()) - logits[i, i])
        return np.mean(out)

    forward = ce(s)
    return 0.5 * (forward + ce(s.T)) if symmetric else forward


def _nonzero_rows(x):
    # The reference and the library agree on zero rows too, but a row of tiny values makes
    # the comparison depend on the floor; keep generated rows away from zero.
    return x + np.where(np.abs(x).sum(1, keepdims=True) < 1e-3, 1.0, 0.0)


@given(
    a=arrays(np.float64, (B, D), elements=_values),
    b=arrays(np.float64, (M, D), elements=_values),
    tau=st.floats(0.02, 2.0),
)
def test_matches_numpy_reference(x64, a, b, tau):
    a, b = _nonzero_rows(a), _nonzero_rows(b)
    got = info_nce(jnp.asarray(a), jnp.asarray(b), temperature=tau)
    np.testing.assert_allclose(got, _reference(a, b, tau), rtol=1e-10, atol=1e-10)
    got_sym = info_nce(jnp.asarray(a), jnp.asarray(b[:B]), temperature=tau, symmetric=True)
    np.testing.assert_allclose(got_sym, _reference(a, b[:B], tau, True), rtol=1e-10, atol=1e-10)


def test_matches_optax_cross_entropy(x64):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(B, D)), rng.normal(size=(M, D))
    an = a / np.linalg.norm(a, axis=1, keepdims=True)
    bn = b / np.linalg.norm(b, axis=1, keepdims=True)
    logits = jnp.asarray(an @ bn.T / 0.1)
    labels = jnp.arange(B)
    expected = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    np.testing.assert_allclose(info_nce(a, b, temperature=0.1), expected, rtol=1e-12)
    ce = optax.softmax_cross_entropy_with_integer_labels
    square = logits[:, :B]
    symmetric = 0.5 * (ce(square, labels).mean() + ce(square.T, labels).mean())
    np.testing.assert_allclose(
        info_nce(a, b[:B], temperature=0.1, symmetric=True), symmetric, rtol=1e-12
    )


def test_scale_invariant_and_chance_level():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(B, D)), rng.normal(size=(B, D))
    scales = rng.uniform(0.1, 10, size=(B, 1))
    np.testing.assert_allclose(info_nce(a * scales, b), info_nce(a, b), rtol=1e-5)
    # Identical logits in each row (all rows of b equal): the loss is log M.
    same = np.tile(rng.normal(size=(1, D)), (M, 1))
    np.testing.assert_allclose(info_nce(a, same), np.log(M), rtol=1e-5)


def test_zero_rows_are_finite_with_finite_gradient():
    a = jnp.zeros((B, D)).at[0].set(1.0)
    b = jnp.zeros((B, D))
    value, grads = jax.jit(jax.value_and_grad(info_nce, argnums=(0, 1)))(a, b)
    assert np.isfinite(value)
    assert all(np.isfinite(g).all() for g in grads)


def test_gradients(x64):
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(B, D)), rng.normal(size=(M, D))
    loss = jax.jit(lambda a, b: info_nce(a, b, temperature=0.3))
    check_grads(loss, (a, b), order=2, modes=["rev"])


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_dtype_kept(dtype):
    rng = np.random.default_rng(3)
    a = jnp.asarray(rng.normal(size=(B, D)), dtype)
    b = jnp.asarray(rng.normal(size=(M, D)), dtype)
    out = info_nce(a, b)
    assert out.dtype == dtype
    ref = _reference(np.asarray(a, np.float64), np.asarray(b, np.float64), 0.05)
    np.testing.assert_allclose(float(out), ref, rtol=1e-2 if dtype == jnp.bfloat16 else 1e-5)
    grad = jax.jit(jax.grad(info_nce))(a, b)
    assert grad.dtype == dtype


def test_jit_equals_eager_and_traced_temperature():
    rng = np.random.default_rng(4)
    a, b = jnp.asarray(rng.normal(size=(B, D))), jnp.asarray(rng.normal(size=(M, D)))
    eager = info_nce(a, b, temperature=0.2, symmetric=False)
    jitted = jax.jit(lambda a, b, t: info_nce(a, b, temperature=t))(a, b, 0.2)
    np.testing.assert_allclose(jitted, eager, rtol=1e-6)


def test_sharded_batch_uses_global_negatives(mesh8):
    rng = np.random.default_rng(5)
    a = jnp.asarray(rng.normal(size=(16, D)), jnp.float32)
    b = jnp.asarray(rng.normal(size=(16, D)), jnp.float32)
    sharding = NamedSharding(mesh8, P("data"))
    a_s, b_s = jax.device_put(a, sharding), jax.device_put(b, sharding)
    got = jax.jit(info_nce)(a_s, b_s)
    np.testing.assert_allclose(got, _reference(a, b, 0.05), rtol=1e-5)


@pytest.mark.parametrize(
    "a_shape,b_shape,kwargs,match",
    [
        ((B,), (B, D), {}, r"a must have shape \(any, any\), got \(4,\)"),
        ((B, D), (B, D + 1), {}, r"b must have shape \(any, 3\), got \(4, 4\)"),
        ((B, D), (B - 1, D), {}, "at least as many rows"),
        ((B, D), (M, D), {"symmetric": True}, "symmetric=True"),
        ((B, D), (B, D), {"temperature": 0.0}, "temperature must be > 0"),
        ((B, D), (B, D), {"temperature": -1.0}, "temperature must be > 0"),
        ((B, D), (B, D), {"temperature": float("nan")}, "temperature must not be NaN"),
    ],
)
def test_errors(a_shape, b_shape, kwargs, match):
    with pytest.raises(ValueError, match=match):
        info_nce(jnp.ones(a_shape), jnp.ones(b_shape), **kwargs)
