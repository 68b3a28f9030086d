"""Cosine heads and cascading rejection against float64 NumPy references of the formulas."""

from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from jax.test_util import check_grads

from jaxtricks.nn import (
    CascadingRejection,
    CosineDense,
    cascade_residuals,
    cascade_scores,
    cosine_logits,
)

EPS = 1e-12

# One compilation per shape and dtype for the property tests (eager op-by-op is slower).
_cosine = jax.jit(cosine_logits)
_cascade = jax.jit(lambda v, ws: (cascade_scores(v, ws), cascade_residuals(v, ws)))


def _ref_cosine(x, kernel):
    """x / sqrt(max(|x|^2, eps)) @ columns / sqrt(max(|w|^2, eps)), float64."""
    x, kernel = np.asarray(x, np.float64), np.asarray(kernel, np.float64)
    xn = x / np.sqrt(np.maximum((x * x).sum(-1, keepdims=True), EPS))
    kn = kernel / np.sqrt(np.maximum((kernel * kernel).sum(0, keepdims=True), EPS))
    return xn @ kn


def _ref_cascade(v, ws):
    """The post's recursion for one vector in exact rational arithmetic: (scores, residuals)."""
    v = [Fraction(float(a)) for a in v]
    scores, residuals = [], [list(v)]
    for w in ws:
        w = [Fraction(float(a)) for a in w]
        d = sum(a * b for a, b in zip(v, w))
        sq = sum(b * b for b in w)
        scores.append(d)
        if sq:
            v = [a - d / sq * b for a, b in zip(v, w)]
        residuals.append(list(v))
    return np.array(scores, np.float64), np.array(residuals, np.float64)


def _norm(x):
    """Euclidean norm without underflow of the squares (hypothesis finds tiny vectors)."""
    big = np.abs(x).max()
    return big * np.linalg.norm(x / big) if big > 0 else 0.0


# cosine heads ----------------------------------------------------------------------------


@given(
    x=arrays(np.float64, (3, 5), elements=st.floats(-10.0, 10.0)),
    kernel=arrays(np.float64, (5, 4), elements=st.floats(-10.0, 10.0)),
)
def test_cosine_logits_match_reference(x64, x, kernel):
    got = np.asarray(_cosine(jnp.asarray(x), jnp.asarray(kernel)))
    np.testing.assert_allclose(got, _ref_cosine(x, kernel), rtol=1e-12, atol=1e-12)
    assert (np.abs(got) <= 1.0 + 1e-12).all()


def test_cosine_zero_input_and_column_safe():
    x = jnp.array([[0.0, 0.0, 0.0], [1.0, 2.0, 2.0]])
    kernel = jnp.array([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])  # second column is zero
    out = cosine_logits(x, kernel)
    np.testing.assert_allclose(out, [[0.0, 0.0], [1.0 / 3.0, 0.0]], atol=1e-7)
    gx, gk = jax.jit(jax.grad(lambda a, b: jnp.sum(jnp.sin(cosine_logits(a, b))), (0, 1)))(
        x, kernel
    )
    assert bool(jnp.isfinite(gx).all() and jnp.isfinite(gk).all())


def test_cosine_gradients(x64):
    rng = np.random.default_rng(0)
    x, kernel = rng.normal(size=(2, 4)), rng.normal(size=(4, 3))
    check_grads(_cosine, (jnp.asarray(x), jnp.asarray(kernel)), order=1, modes=("rev",))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_cosine_dense_matches_function_and_keeps_dtype(dtype):
    layer = CosineDense(6, 4, rngs=nnx.Rngs(0), param_dtype=dtype)
    assert layer.kernel[...].shape == (6, 4) and layer.kernel[...].dtype == dtype
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 3, 6)), dtype)
    y = layer(x)
    assert y.shape == (2, 3, 4) and y.dtype == dtype
    ref = _ref_cosine(np.asarray(x, np.float64), np.asarray(layer.kernel[...], np.float64))
    np.testing.assert_allclose(
        np.asarray(y, np.float64), ref, atol=1e-2 if dtype == jnp.bfloat16 else 1e-6
    )
    # jit fuses differently: compare at the scale of the cosines (|y| <= 1), not relatively.
    np.testing.assert_allclose(nnx.jit(lambda m, a: m(a))(layer, x), y, atol=1e-6)
    # Scale-free: rescaling inputs changes nothing.
    np.testing.assert_allclose(layer(x * 7), y, atol=1e-2 if dtype == jnp.bfloat16 else 1e-6)


def test_cosine_dense_bf16_compute_dtype():
    layer = CosineDense(5, 3, rngs=nnx.Rngs(0), dtype=jnp.bfloat16)
    assert layer.kernel[...].dtype == jnp.float32
    assert layer(jnp.ones((2, 5))).dtype == jnp.bfloat16


# cascading rejection ---------------------------------------------------------------------


@given(
    v=arrays(np.float64, (4, 6), elements=st.floats(-10.0, 10.0)),
    ws=arrays(np.float64, (3, 6), elements=st.floats(-3.0, 3.0)),
)
def test_cascade_matches_reference_and_is_orthogonal(x64, v, ws):
    scores, residuals = (np.asarray(a) for a in _cascade(jnp.asarray(v), jnp.asarray(ws)))
    assert scores.shape == (4, 3) and residuals.shape == (4, 4, 6)
    scale = 1.0 + np.abs(v).max() * max(np.abs(ws).max(), 1e-300)
    for i in range(4):
        ref_s, ref_r = _ref_cascade(v[i], ws)
        np.testing.assert_allclose(scores[i], ref_s, rtol=1e-9, atol=1e-9 * scale)
        np.testing.assert_allclose(
            residuals[i], ref_r, rtol=1e-9, atol=1e-9 * (1 + np.abs(v).max())
        )
        for k in range(3):  # <v_{k+1}, w_k> = 0 up to rounding
            w = ws[k]
            bound = 1e-12 * _norm(residuals[i, k]) * _norm(w)
            assert abs(residuals[i, k + 1] @ w) <= bound + 1e-300


def test_cascade_zero_stage_is_safe():
    v = jnp.array([[3.0, 4.0, 1.0]])
    ws = jnp.array([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    scores = cascade_scores(v, ws)
    np.testing.assert_allclose(scores, [[0.0, 4.0]])
    np.testing.assert_allclose(cascade_residuals(v, ws)[0, 1], v[0])
    gv, gw = jax.jit(jax.grad(lambda a, b: jnp.sum(cascade_scores(a, b) ** 2), (0, 1)))(v, ws)
    assert bool(jnp.isfinite(gv).all() and jnp.isfinite(gw).all())
    # d(D_1^2)/dw_1 = 2 D_1 v = 0, and a zero stage's projection is held constant (gradient 0).
    np.testing.assert_allclose(gw[0], 0.0)


def test_cascade_gradients(x64):
    rng = np.random.default_rng(2)
    v, ws = jnp.asarray(rng.normal(size=(2, 5))), jnp.asarray(rng.normal(size=(3, 5)))
    check_grads(jax.jit(cascade_scores), (v, ws), order=1, modes=("rev",))


def test_cascade_jit_vmap_and_batch_shapes():
    rng = np.random.default_rng(3)
    v = jnp.asarray(rng.normal(size=(2, 3, 8)), jnp.float32)
    ws = jnp.asarray(rng.normal(size=(4, 8)), jnp.float32)
    eager = cascade_scores(v, ws)
    assert eager.shape == (2, 3, 4)
    np.testing.assert_allclose(jax.jit(cascade_scores)(v, ws), eager, rtol=1e-5, atol=1e-5)
    mapped = jax.jit(jax.vmap(jax.vmap(cascade_scores, (0, None)), (0, None)))(v, ws)
    np.testing.assert_allclose(mapped, eager, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_cascading_rejection_module(dtype):
    head = CascadingRejection(8, 3, use_bias=True, rngs=nnx.Rngs(0), param_dtype=dtype)
    assert head.kernel[...].shape == (3, 8) and head.kernel[...].dtype == dtype
    head.bias[...] = jnp.array([0.5, -1.0, 2.0], dtype)
    v = jnp.asarray(np.random.default_rng(4).normal(size=(5, 8)), dtype)
    out = head(v)
    assert out.shape == (5, 3) and out.dtype == dtype
    kernel = np.asarray(head.kernel[...], np.float64)
    ref = np.stack([_ref_cascade(row, kernel)[0] for row in np.asarray(v, np.float64)])
    ref += np.array([0.5, -1.0, 2.0])
    tol = 5e-2 if dtype == jnp.bfloat16 else 1e-5
    np.testing.assert_allclose(np.asarray(out, np.float64), ref, rtol=tol, atol=tol)
    if dtype == jnp.float32:  # one jit comparison is enough
        np.testing.assert_allclose(nnx.jit(lambda m, a: m(a))(head, v), out, rtol=1e-5, atol=1e-5)
    assert CascadingRejection(4, 2, rngs=nnx.Rngs(0)).bias is None
