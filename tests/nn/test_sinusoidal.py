"""Tests of sinusoidal_embedding against the formula of Vaswani et al. in float64 NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax.test_util import check_grads

from jaxtricks.nn import sinusoidal_embedding

D = 16


def _reference(positions: np.ndarray, dim: int, base: float, layout: str) -> np.ndarray:
    """Element by element: p[k, 2i] = sin(k / base^(2i/d)), p[k, 2i+1] = cos(...)."""
    positions = np.asarray(positions, np.float64)
    out = np.empty(positions.shape + (dim,))
    for i in range(dim // 2):
        angle = positions / base ** (2.0 * i / dim)
        if layout == "interleaved":
            out[..., 2 * i], out[..., 2 * i + 1] = np.sin(angle), np.cos(angle)
        else:
            out[..., i], out[..., dim // 2 + i] = np.sin(angle), np.cos(angle)
    return out


@pytest.mark.parametrize("layout", ["interleaved", "concat"])
@pytest.mark.parametrize("base", [10000.0, 100.0])
def test_matches_formula(x64, layout, base):
    pos = np.array([[0, 1, 2, 50], [999, -7, 3, 123456]])
    got = sinusoidal_embedding(jnp.asarray(pos, jnp.float64), D, base=base, layout=layout)
    assert got.shape == (2, 4, D) and got.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(got), _reference(pos, D, base, layout), atol=1e-10)


def test_float32_default_and_accuracy():
    pos = jnp.arange(0, 4096, 64)
    got = sinusoidal_embedding(pos, D)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, _reference(np.asarray(pos), D, 1e4, "interleaved"), atol=1e-6)


_jit_embedding = jax.jit(sinusoidal_embedding, static_argnums=1, static_argnames="layout")


@pytest.mark.parametrize("start", [10**6 - 256, 2**24 - 256])
@pytest.mark.parametrize("pos_dtype", [jnp.int32, jnp.float32])
def test_long_context_float32_matches_float64(start, pos_dtype):
    # p * theta rounded to float32 is off by ~p 2^-24 rad (0.06 at 10^6, a turn near 2^24);
    # the angles are reduced exactly, so the embedding stays within ~1e-6 of float64.
    pos = np.arange(start, start + 256)
    got = _jit_embedding(jnp.asarray(pos, pos_dtype), 128, layout="concat")
    assert got.dtype == jnp.float32
    want = _reference(pos, 128, 1e4, "concat")
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=0, atol=1e-6)


def test_fractional_positions_keep_float32_accuracy():
    # Interpolated positions (e.g. position interpolation) exact as float32 values.
    pos = (2.0**20 + np.arange(64) / 8.0).astype(np.float32)

    @jax.jit
    def run(p):
        # The gradient in float32 is theta_0 cos(p theta_0) = cos(p) for the first feature.
        grad = jax.grad(lambda p: jnp.sum(sinusoidal_embedding(p, 64)[..., 0]))(p)
        return sinusoidal_embedding(p, 64), grad

    got, grad = run(jnp.asarray(pos))
    want = _reference(pos.astype(np.float64), 64, 1e4, "interleaved")
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=0, atol=1e-6)
    np.testing.assert_allclose(grad, np.cos(pos.astype(np.float64)), rtol=0, atol=1e-6)


@given(m=st.integers(-5000, 5000), n=st.integers(-5000, 5000))
def test_inner_product_is_sum_of_cosines(x64, m, n):
    p = sinusoidal_embedding(jnp.array([m, n], jnp.float64), D)
    theta = 10000.0 ** (-2.0 * np.arange(D // 2) / D)
    want = np.sum(np.cos((m - n) * theta))
    np.testing.assert_allclose(float(p[0] @ p[1]), want, atol=1e-10)


def test_layouts_are_a_permutation():
    pos = jnp.arange(7)
    inter = sinusoidal_embedding(pos, D, layout="interleaved")
    concat = sinusoidal_embedding(pos, D, layout="concat")
    perm = np.concatenate([np.arange(0, D, 2), np.arange(1, D, 2)])
    np.testing.assert_array_equal(inter[:, perm], concat)


def test_jit_vmap_and_gradient(x64):
    pos = jnp.array([0.0, 1.25, 30.0])
    np.testing.assert_allclose(
        jax.jit(sinusoidal_embedding, static_argnums=1)(pos, D), sinusoidal_embedding(pos, D)
    )
    np.testing.assert_allclose(
        jax.vmap(lambda p: sinusoidal_embedding(p, D))(pos), sinusoidal_embedding(pos, D)
    )
    check_grads(jax.jit(lambda p: sinusoidal_embedding(p, D, layout="concat")), (pos,), order=1)


def test_errors():
    with pytest.raises(ValueError, match="dim must be divisible by 2, got 7"):
        sinusoidal_embedding(jnp.arange(3), 7)
    with pytest.raises(ValueError, match="dim must be a positive int, got 0"):
        sinusoidal_embedding(jnp.arange(3), 0)
    with pytest.raises(ValueError, match="layout must be one of"):
        sinusoidal_embedding(jnp.arange(3), 4, layout="half")


def test_claims():
    from jaxtricks.reproduce.post_8231_sinusoidal import CLAIMS

    for c in CLAIMS:
        result = c.fn()
        assert result.ok, (c.name, result.measured)
