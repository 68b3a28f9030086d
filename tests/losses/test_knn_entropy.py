"""Tests of knn_entropy against a brute-force float64 NumPy/SciPy Kozachenko–Leonenko estimate."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from jax.test_util import check_grads
from scipy.special import digamma, gamma

from jaxtricks.losses import knn_entropy

N, D = 12, 3


def _reference(z, k):
    """Brute force: sort each point's distances to the others, take the k-th."""
    z = np.asarray(z, np.float64)
    n, d = z.shape
    eps = []
    for i in range(n):
        dist = sorted(np.sqrt(((z[i] - z[j]) ** 2).sum()) for j in range(n) if j != i)
        eps.append(dist[k - 1])
    unit_ball = np.pi ** (d / 2) / gamma(d / 2 + 1)
    return d * np.mean(np.log(eps)) + np.log(unit_ball) + digamma(n) - digamma(k)


# Distinct values on a grid of 1/8: no coincident rows, no distances below float64 range.
_grid = st.integers(-80, 80).map(lambda v: v / 8)


@given(
    z=arrays(np.float64, (N, D), elements=_grid, unique=True), k=st.sampled_from([1, 2, 5, N - 1])
)
def test_matches_bruteforce(x64, z, k):
    np.testing.assert_allclose(knn_entropy(z, k=k), _reference(z, k), rtol=1e-10, atol=1e-10)


def test_scale_translation_permutation(x64):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(50, 4))
    h = knn_entropy(z, k=3)
    np.testing.assert_allclose(knn_entropy(2.5 * z + 7.0, k=3), h + 4 * math.log(2.5), rtol=1e-12)
    np.testing.assert_allclose(knn_entropy(z[rng.permutation(50)], k=3), h, rtol=1e-12)


def test_gaussian_and_uniform_entropy():
    # One cheap sample each (the claims in post_7343_knn_entropy use n = 2000 and 10 repeats).
    z = jax.random.normal(jax.random.key(0), (800, 2))
    assert abs(float(knn_entropy(z)) - math.log(2 * math.pi * math.e)) < 0.2
    u = jax.random.uniform(jax.random.key(1), (800, 1))
    assert abs(float(knn_entropy(u, k=3))) < 0.2


def test_duplicates_finite_value_and_gradient():
    z = jnp.array([[0.0, 0.0], [0.0, 0.0], [1.0, 0.5], [2.0, -1.0], [0.3, 0.3]])
    value_and_grad = jax.jit(jax.value_and_grad(knn_entropy))
    value, grad = value_and_grad(z)
    assert np.isfinite(value) and np.isfinite(grad).all()
    # A duplicate drags the estimate down, as a point mass should.
    assert value < knn_entropy(z.at[1].set(jnp.array([0.1, -0.2])))
    everything_equal = jnp.ones((6, 3))
    value, grad = value_and_grad(everything_equal)
    assert np.isfinite(value) and np.isfinite(grad).all()


def test_gradients(x64):
    rng = np.random.default_rng(1)
    z = rng.normal(size=(10, 2))
    check_grads(jax.jit(lambda z: knn_entropy(z, k=2)), (z,), order=1, modes=["rev"], eps=1e-6)


def test_gradient_spreads_points():
    # Maximising the entropy pushes nearest neighbours apart.
    z = jnp.array([[0.0, 0.0], [0.1, 0.0], [3.0, 3.0], [-3.0, 2.0]])
    z_new = z + 1e-2 * jax.jit(jax.grad(knn_entropy))(z)
    assert jnp.linalg.norm(z_new[0] - z_new[1]) > jnp.linalg.norm(z[0] - z[1])


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_dtype_kept(dtype):
    z = jax.random.normal(jax.random.key(2), (40, 3)).astype(dtype)
    out = knn_entropy(z, k=2)
    assert out.dtype == dtype
    assert jax.jit(jax.grad(knn_entropy))(z).dtype == dtype
    ref = _reference(np.asarray(z, np.float64), 2)
    np.testing.assert_allclose(float(out), ref, rtol=2e-2 if dtype == jnp.bfloat16 else 1e-5)


def test_integer_input_gives_float():
    z = jnp.array([[0, 0], [1, 0], [0, 2], [3, 3]])
    out = knn_entropy(z)
    assert jnp.issubdtype(out.dtype, jnp.floating)
    np.testing.assert_allclose(out, _reference(np.asarray(z), 1), rtol=1e-5)


def test_jit_equals_eager_and_vmap_equals_loop():
    zs = jax.random.normal(jax.random.key(3), (3, 20, 2))
    eager = [knn_entropy(z, k=2) for z in zs]
    jitted = jax.jit(lambda z: knn_entropy(z, k=2))
    np.testing.assert_allclose([jitted(z) for z in zs], eager, rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(jitted)(zs), eager, rtol=1e-6)


@pytest.mark.parametrize(
    "shape,k,match",
    [
        ((N,), 1, r"z must have shape \(any, any\)"),
        ((2, N, D), 1, r"z must have shape \(any, any\)"),
        ((N, D), 0, "k must be a positive int, got 0"),
        ((N, D), N, "1 <= k < n"),
        ((N, D), 1.0, "k must be a positive int"),
        ((N, D), True, "k must be a positive int"),
    ],
)
def test_errors(shape, k, match):
    exc = TypeError if isinstance(k, (bool, float)) else ValueError
    with pytest.raises(exc, match=match):
        knn_entropy(jnp.ones(shape), k=k)
