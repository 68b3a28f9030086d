"""AM-Softmax cross-entropy against a float64 NumPy reference of the paper's formula and optax."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from jax.test_util import check_grads

from jaxtricks.losses import am_softmax_cross_entropy
from jaxtricks.reproduce import post_5743_am_softmax

B, K = 4, 7
LABELS = np.array([0, 3, 6, 3])


def _ref(cos, labels, scale, margin):
    """-log(e^{s(c_t - m)} / (e^{s(c_t - m)} + sum_{i != t} e^{s c_i})), float64, per example."""
    cos = np.asarray(cos, np.float64)
    out = np.empty(cos.shape[:-1])
    for idx in np.ndindex(cos.shape[:-1]):
        c, t = cos[idx], int(labels[idx])
        target = scale * (c[t] - margin)
        others = scale * np.delete(c, t)
        top = max(target, others.max())
        denom = np.exp(target - top) + np.exp(others - top).sum()
        out[idx] = -(target - top - np.log(denom))
    return out


_am = jax.jit(
    lambda c, t, scale, margin: am_softmax_cross_entropy(c, t, scale=scale, margin=margin)
)
cosines = arrays(np.float64, (B, K), elements=st.floats(-1.0, 1.0))


@given(
    cos=cosines,
    scale=st.floats(0.5, 64.0),
    margin=st.floats(0.0, 0.6),
)
def test_matches_reference(x64, cos, scale, margin):
    got = _am(jnp.asarray(cos), LABELS, scale, margin)
    np.testing.assert_allclose(got, _ref(cos, LABELS, scale, margin), rtol=1e-10, atol=1e-12)


@given(cos=arrays(np.float32, (B, K), elements=st.floats(-1.0, 1.0, width=32)))
def test_no_margin_unit_scale_is_cosine_softmax_ce(cos):
    got = _am(cos, LABELS, 1.0, 0.0)
    ref = optax.softmax_cross_entropy_with_integer_labels(cos, LABELS)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)


def test_margin_raises_loss_and_needs_a_gap():
    cos = jnp.array([[0.8, 0.6, 0.0]])
    labels = jnp.array([0])
    base = am_softmax_cross_entropy(cos, labels, margin=0.0)
    with_margin = am_softmax_cross_entropy(cos, labels, margin=0.35)
    assert float(with_margin[0]) > float(base[0])
    # s(c_t - m) < s c_1: the target no longer wins although its cosine is the largest.
    assert float(with_margin[0]) > np.log(2.0)


def test_gradients(x64):
    cos = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (3, 5)))
    labels = jnp.array([0, 4, 2])

    def f(c, margin):
        return am_softmax_cross_entropy(c, labels, scale=8.0, margin=margin)

    check_grads(jax.jit(f), (cos, 0.3), order=1, modes=("rev",))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_dtype_kept_and_large_scale_finite(dtype):
    cos = jnp.array([[0.99, -0.99, 0.5], [-0.99, 0.99, 0.0]], dtype)
    labels = jnp.array([1, 1])
    loss = am_softmax_cross_entropy(cos, labels, scale=1e4, margin=0.35)
    assert loss.dtype == dtype
    assert bool(jnp.isfinite(loss).all())
    ref = _ref(np.asarray(cos, np.float64), np.asarray(labels), 1e4, 0.35)
    np.testing.assert_allclose(np.asarray(loss, np.float64), ref, rtol=1e-2)


def test_jit_vmap_and_traced_hyperparameters():
    rng = np.random.default_rng(1)
    cos = jnp.asarray(rng.uniform(-1, 1, (3, 5, 6)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 6, (3, 5)))
    eager = am_softmax_cross_entropy(cos, labels, scale=20.0, margin=0.2)
    assert eager.shape == (3, 5)

    @jax.jit
    def traced(c, t, scale, margin):  # scale and margin traced, as inject_hyperparams does
        return am_softmax_cross_entropy(c, t, scale=scale, margin=margin)

    np.testing.assert_allclose(traced(cos, labels, 20.0, 0.2), eager, rtol=1e-6)
    mapped = jax.jit(jax.vmap(traced, (0, 0, None, None)))(cos, labels, 20.0, 0.2)
    np.testing.assert_allclose(mapped, eager, rtol=1e-6)


def test_errors():
    cos = jnp.zeros((2, 4))
    labels = jnp.array([0, 1])
    for bad in ([0, 4], [-1, 0]):
        with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
            am_softmax_cross_entropy(cos, np.array(bad))
    loss = jax.jit(am_softmax_cross_entropy)(cos, jnp.array([0, 4]))
    assert np.isfinite(loss[0]) and np.isnan(loss[1])  # traced labels cannot be checked
    with pytest.raises(TypeError, match="labels must have a.? integer dtype"):
        am_softmax_cross_entropy(cos, jnp.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"labels must have shape"):
        am_softmax_cross_entropy(cos, jnp.array([0, 1, 2]))
    for scale in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match=r"scale must (be > 0|not be NaN)"):
            am_softmax_cross_entropy(cos, labels, scale=scale)
    with pytest.raises(ValueError, match=r"margin must be >= 0.0, got -0.1"):
        am_softmax_cross_entropy(cos, labels, margin=-0.1)
    with pytest.raises(ValueError, match=r"scale must be a scalar, got shape \(2,\)"):
        am_softmax_cross_entropy(cos, labels, scale=jnp.ones(2))


def test_claim_no_margin_equals_ce():
    assert post_5743_am_softmax.no_margin_equals_cosine_ce().ok
