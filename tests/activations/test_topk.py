"""Top-k sparse softmax against a brute-force float64 NumPy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from jax.test_util import check_grads

from jaxtricks.activations import topk_softmax


def _ref(x, k, axis=-1):
    """Softmax over the k largest entries (ties to the lower index), zeros elsewhere."""
    x = np.moveaxis(np.asarray(x, np.float64), axis, -1)
    out = np.zeros_like(x)
    for idx in np.ndindex(x.shape[:-1]):
        row = x[idx]
        keep = sorted(range(row.size), key=lambda i: (-row[i], i))[:k]
        e = np.exp(row[keep] - row[keep].max())
        out[idx + (keep,)] = e / e.sum()
    return np.moveaxis(out, -1, axis)


# XLA on CPU flushes subnormals to zero in comparisons, making 0 and 5e-324 a tie there.
values = arrays(np.float64, (3, 7), elements=st.floats(-20.0, 20.0, allow_subnormal=False))


@pytest.mark.parametrize("axis,k", [(-1, 1), (-1, 3), (-1, 6), (-1, 7), (0, 2)])
@given(x=values)
def test_matches_brute_force(x64, axis, k, x):
    got = np.asarray(topk_softmax(jnp.asarray(x), k, axis=axis))
    np.testing.assert_allclose(got, _ref(x, k, axis), rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(got.sum(axis), 1.0, rtol=1e-12)


def test_exactly_k_nonzero_with_ties():
    x = jnp.array([[1.0, 3.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0, 2.0]])
    p = np.asarray(topk_softmax(x, 2))
    assert (np.count_nonzero(p, axis=-1) == 2).all()
    np.testing.assert_array_equal(p, [[0, 0.5, 0.5, 0, 0], [0.5, 0.5, 0, 0, 0]])


def test_full_k_is_softmax():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 9)), jnp.float32)
    np.testing.assert_allclose(topk_softmax(x, 9), jax.nn.softmax(x), rtol=1e-6)
    np.testing.assert_allclose(topk_softmax(x, 4, axis=0), jax.nn.softmax(x, axis=0), rtol=1e-6)


def test_zero_gradient_outside_top_k():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(5, 11)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(5, 11)), jnp.float32)
    grad = np.asarray(jax.grad(lambda v: jnp.sum(w * topk_softmax(v, 4)))(x))
    outside = np.asarray(topk_softmax(x, 4)) == 0
    assert (grad[outside] == 0).all()
    assert (grad[~outside] != 0).all()


def test_gradients(x64):
    # Distinct values, away from ties: the top-k set is locally constant.
    x = jnp.array([[0.3, -1.2, 2.5, 0.9, -0.4, 1.7], [5.0, 4.0, -3.0, 0.0, 1.0, 2.0]])
    check_grads(jax.jit(lambda v: topk_softmax(v, 3)), (x,), order=2, modes=("rev",))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_dtype_kept_and_large_inputs_finite(dtype):
    x = jnp.array([[1e4, -1e4, 3.0, 9999.0, 0.0]], dtype)
    p = topk_softmax(x, 3)
    assert p.dtype == dtype
    assert bool(jnp.isfinite(p).all())
    ref = _ref(np.asarray(x, np.float64), 3)
    tol = 1e-2 if dtype == jnp.bfloat16 else 1e-6
    np.testing.assert_allclose(np.asarray(p, np.float64), ref, atol=tol)


def test_jit_and_vmap_equal_eager():
    x = jnp.asarray(np.random.default_rng(2).normal(size=(4, 3, 8)), jnp.float32)
    eager = topk_softmax(x, 5)
    np.testing.assert_allclose(jax.jit(topk_softmax, static_argnums=1)(x, 5), eager, rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(lambda v: topk_softmax(v, 5))(x), eager, rtol=1e-6)


def test_bad_k_and_shapes():
    # The full set of bad inputs is in tests/bad_input/test_activations_bad_input.py.
    x = jnp.zeros((2, 5))
    for k in (0, -1):
        with pytest.raises(ValueError, match=rf"k must be a positive int, got {k}"):
            topk_softmax(x, k)
    with pytest.raises(ValueError, match=r"k must satisfy 1 <= k <= 5 .*got 6"):
        topk_softmax(x, 6)
    with pytest.raises(ValueError, match=r"k must satisfy 1 <= k <= 2 \(x.shape\[0\] .*got 3"):
        topk_softmax(x, 3, axis=0)
    for k in (2.0, True):
        with pytest.raises(TypeError, match="k must be a positive int"):
            topk_softmax(x, k)
    with pytest.raises(ValueError, match=r"axis must be in \[-2, 2\) .*got 2"):
        topk_softmax(x, 1, axis=2)
    with pytest.raises(ValueError, match="at least 1 axis"):
        topk_softmax(jnp.float32(1.0), 1)


def test_sharded_rows_keep_their_sharding(mesh8, mesh8_explicit):
    x = np.random.default_rng(3).normal(size=(16, 10)).astype(np.float32)
    ref = topk_softmax(x, 3)
    fn = jax.jit(topk_softmax, static_argnums=1)
    for mesh in (mesh8, mesh8_explicit):
        with jax.set_mesh(mesh):
            sharding = NamedSharding(mesh, P("data"))
            got = fn(jax.device_put(x, sharding), 3)
        np.testing.assert_allclose(got, ref, rtol=1e-6)
        assert got.sharding.is_equivalent_to(sharding, got.ndim)
