"""Taylor softmax cross-entropy against a float64 NumPy reference."""

import math

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

from jaxtricks.activations import log_taylor_softmax
from jaxtricks.losses import taylor_softmax_cross_entropy

B, K = 4, 6
LABELS = np.array([0, 5, 2, 3])


def _ref(logits, labels, n):
    """-log(f_n(s_t) / sum_j f_n(s_j)) in float64, f_n summed term by term."""
    s = np.asarray(logits, np.float64)
    f = sum(s**k / math.factorial(k) for k in range(n + 1))
    return -np.log(np.take_along_axis(f, labels[..., None], -1)[..., 0] / f.sum(-1))


@pytest.mark.parametrize("order", [2, 4, 8])
@given(logits=arrays(np.float64, (B, K), elements=st.floats(-20.0, 20.0)))
def test_matches_float64_reference(x64, order, logits):
    got = np.asarray(taylor_softmax_cross_entropy(jnp.asarray(logits), LABELS, order=order))
    np.testing.assert_allclose(got, _ref(logits, LABELS, order), rtol=1e-9, atol=1e-12)
    assert (got >= 0).all()


def test_is_negative_log_taylor_softmax_at_label():
    logits = jnp.asarray(np.random.default_rng(0).normal(size=(B, K)) * 4, jnp.float32)
    got = taylor_softmax_cross_entropy(logits, LABELS, order=4)
    ref = -log_taylor_softmax(logits, order=4)[np.arange(B), LABELS]
    np.testing.assert_allclose(got, ref, rtol=1e-6)


def test_gradients(x64):
    logits = jnp.array([[-30.0, -1.5, 0.0, 0.4, 2.2, 9.0], [1.0, -2.0, 3.0, -4.0, 5.0, 0.5]])
    labels = jnp.array([3, 1])
    fn = jax.jit(lambda s: taylor_softmax_cross_entropy(s, labels, order=4))
    check_grads(fn, (logits,), order=2, modes=("rev",))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_dtype_kept_and_large_logits_finite(dtype):
    logits = jnp.array([[1e4, -1e4, 3.0, 0.0], [-1e4, 0.0, 1.0, 2.0]], dtype)
    labels = jnp.array([1, 0])
    loss = taylor_softmax_cross_entropy(logits, labels, order=2)
    assert loss.dtype == dtype
    assert bool(jnp.isfinite(loss).all())
    ref = _ref(np.asarray(logits, np.float64), np.asarray(labels), 2)
    # atol: the second loss is 1.7e-7, below float32's resolution of log p near 0
    np.testing.assert_allclose(np.asarray(loss, np.float64), ref, rtol=1e-2, atol=1e-6)


def test_jit_and_vmap_equal_eager():
    rng = np.random.default_rng(1)
    logits = jnp.asarray(rng.normal(size=(3, 5, 7)) * 3, jnp.float32)
    labels = jnp.asarray(rng.integers(0, 7, (3, 5)))
    eager = taylor_softmax_cross_entropy(logits, labels, order=6)
    jitted = jax.jit(taylor_softmax_cross_entropy, static_argnames="order")(logits, labels, order=6)
    np.testing.assert_allclose(jitted, eager, rtol=1e-6)
    mapped = jax.vmap(lambda s, t: taylor_softmax_cross_entropy(s, t, order=6))(logits, labels)
    np.testing.assert_allclose(mapped, eager, rtol=1e-6)


def test_sharded_batch(mesh8, mesh8_explicit):
    rng = np.random.default_rng(2)
    logits = jnp.asarray(rng.normal(size=(16, 10)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 10, 16))
    ref = taylor_softmax_cross_entropy(logits, labels, order=4)
    fn = jax.jit(taylor_softmax_cross_entropy, static_argnames="order")
    for mesh in (mesh8, mesh8_explicit):
        with jax.set_mesh(mesh):
            sharding = NamedSharding(mesh, P("data"))
            got = fn(jax.device_put(logits, sharding), jax.device_put(labels, sharding), order=4)
        np.testing.assert_allclose(got, ref, rtol=1e-6)
        assert got.sharding.is_equivalent_to(sharding, got.ndim)


def test_bad_arguments():
    logits = jnp.zeros((2, 4))
    labels = jnp.array([0, 1])
    for order in (3, 0):
        with pytest.raises(ValueError, match=f"order must be an even integer >= 2.*got {order}"):
            taylor_softmax_cross_entropy(logits, labels, order=order)
    with pytest.raises(TypeError, match="order must be a static Python int"):
        taylor_softmax_cross_entropy(logits, labels, order=2.0)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
        taylor_softmax_cross_entropy(logits, jnp.array([0, 4]), order=2)
    with pytest.raises(TypeError, match="labels must have a.? integer dtype"):
        taylor_softmax_cross_entropy(logits, jnp.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"labels must have shape logits.shape\[:-1\]"):
        taylor_softmax_cross_entropy(logits, jnp.array([[0, 1]]))
    # Under jit the labels cannot be inspected: the bad example's loss is NaN.
    loss = jax.jit(taylor_softmax_cross_entropy)(logits, jnp.array([-1, 2]))
    assert np.isnan(np.asarray(loss)).tolist() == [True, False]
