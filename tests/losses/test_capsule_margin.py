"""capsule_margin_loss against a float64 NumPy implementation of eq. (4) of the paper."""

import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from jaxtricks.losses import capsule_margin_loss

B, K = 4, 5


def margin_ref(lengths, targets, m_plus, m_minus, lam):
    """Sum over classes of T max(0, m+ - l)^2 + lam (1 - T) max(0, l - m-)^2, by loops."""
    out = np.zeros(len(lengths))
    for b in range(len(lengths)):
        for k in range(lengths.shape[1]):
            t, x = float(targets[b, k]), float(lengths[b, k])
            out[b] += t * max(0.0, m_plus - x) ** 2 + lam * (1 - t) * max(0.0, x - m_minus) ** 2
    return out


lengths_st = hnp.arrays(np.float64, (B, K), elements=st.floats(0, 1, width=64))
labels_st = hnp.arrays(np.int32, (B,), elements=st.integers(0, K - 1))
multi_st = hnp.arrays(np.int32, (B, K), elements=st.integers(0, 1))
_loss = jax.jit(capsule_margin_loss, static_argnames=("m_plus", "m_minus", "lam"))


@pytest.mark.usefixtures("x64")
@given(lengths=lengths_st, labels=labels_st, multi=multi_st)
def test_matches_reference(lengths, labels, multi):
    onehot = np.eye(K)[labels]
    for kw in ({}, {"m_plus": 0.8, "m_minus": 0.2, "lam": 0.25}):
        ref_kw = {"m_plus": 0.9, "m_minus": 0.1, "lam": 0.5} | kw
        np.testing.assert_allclose(
            _loss(lengths, labels, **kw), margin_ref(lengths, onehot, **ref_kw), atol=1e-12
        )
        np.testing.assert_allclose(
            _loss(lengths, multi, **kw), margin_ref(lengths, multi, **ref_kw), atol=1e-12
        )


def test_integer_labels_equal_one_hot_and_jit_equals_eager():
    lengths = jax.random.uniform(jax.random.key(0), (B, K))
    labels = jnp.array([0, 4, 2, 2])
    eager = capsule_margin_loss(lengths, labels)
    np.testing.assert_allclose(_loss(lengths, labels), eager, rtol=1e-6)
    np.testing.assert_allclose(capsule_margin_loss(lengths, jax.nn.one_hot(labels, K)), eager)
    bools = np.eye(K, dtype=bool)[np.asarray(labels)]
    np.testing.assert_allclose(capsule_margin_loss(lengths, bools), eager)


@pytest.mark.usefixtures("x64")
def test_gradient_checks():
    # Away from the kinks at m- and m+ (the loss is C^1, piecewise quadratic).
    lengths = jnp.array([[0.05, 0.5, 0.95], [0.3, 0.7, 0.02]], jnp.float64)
    labels = jnp.array([1, 0])
    loss = jax.jit(lambda x: capsule_margin_loss(x, labels))
    jax.test_util.check_grads(loss, (lengths,), order=2, modes=["rev"])


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_dtype_is_kept(dtype):
    lengths = jax.random.uniform(jax.random.key(1), (B, K)).astype(dtype)
    out = capsule_margin_loss(lengths, jnp.array([0, 1, 2, 3]))
    assert out.dtype == dtype and out.shape == (B,)
    ref = margin_ref(np.asarray(lengths, np.float64), np.eye(K)[[0, 1, 2, 3]], 0.9, 0.1, 0.5)
    np.testing.assert_allclose(
        np.asarray(out, np.float64), ref, rtol=1e-2 if dtype == jnp.bfloat16 else 1e-6
    )


def test_bad_inputs_raise():
    lengths = jnp.full((B, K), 0.5)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\).*\[0, 5\]"):
        capsule_margin_loss(lengths, jnp.array([0, 1, 2, 5]))
    with pytest.raises(TypeError, match="must be integer class indices, got dtype float32"):
        capsule_margin_loss(lengths, jnp.zeros(B))
    with pytest.raises(ValueError, match=r"labels must be integer classes of shape .*\(3,\)"):
        capsule_margin_loss(lengths, jnp.zeros(3, jnp.int32))
    with pytest.raises(ValueError, match=r"multi-hot labels .* must lie in \[0, 1\]"):
        capsule_margin_loss(lengths, 2 * jnp.ones((B, K)))
    with pytest.raises(ValueError, match="lam must be >= 0.0, got -0.5"):
        capsule_margin_loss(lengths, jnp.zeros(B, jnp.int32), lam=-0.5)
    with pytest.raises(TypeError, match="m_plus must be a real number"):
        capsule_margin_loss(lengths, jnp.zeros(B, jnp.int32), m_plus=None)
    with pytest.raises(ValueError, match="lengths must have at least 1 axis .a class axis"):
        capsule_margin_loss(jnp.array(0.5), jnp.array(0))
