"""integrated_gradients against float64 NumPy quadrature with analytic gradients."""

import functools

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxtricks.attribution import integrated_gradients

METHODS = ["riemann_right", "trapezoid", "gauss_legendre"]
SHAPE = (3, 4)
RNG = np.random.default_rng(0)
A = RNG.normal(size=(5, 12)) / 3.0  # f(v) = Σ tanh(A vec(v) + c): smooth, non-linear
C = RNG.normal(size=5)
X = RNG.normal(size=SHAPE)
BASE = 0.3 * RNG.normal(size=SHAPE)


# One compile per configuration: eager mode would compile every primitive per new shape.
ig_jit = jax.jit(
    integrated_gradients, static_argnums=0, static_argnames=("steps", "method", "microbatch_size")
)


def f_jax(v):
    z = jnp.asarray(A, v.dtype) @ v.reshape(-1) + jnp.asarray(C, v.dtype)
    return jnp.sum(jnp.tanh(z))


def f_np(v):
    return np.tanh(A @ v.reshape(-1) + C).sum()


def grad_np(v):
    return (A.T @ (1.0 - np.tanh(A @ v.reshape(-1) + C) ** 2)).reshape(v.shape)


def rule_np(steps, method):
    """Nodes and weights on [0, 1], written out from each rule's textbook definition."""
    if method == "riemann_right":
        return [k / steps for k in range(1, steps + 1)], [1.0 / steps] * steps
    if method == "trapezoid":
        w = [1.0 / steps] * (steps + 1)
        w[0] = w[-1] = 0.5 / steps
        return [k / steps for k in range(steps + 1)], w
    t, w = np.polynomial.legendre.leggauss(steps)
    return list(0.5 * (t + 1.0)), list(0.5 * w)


def ig_np(x, base, steps, method):
    nodes, weights = rule_np(steps, method)
    mean_grad = sum(w * grad_np(base + a * (x - base)) for a, w in zip(nodes, weights))
    attr = (x - base) * mean_grad
    return attr, attr.sum() - (f_np(x) - f_np(base))


@pytest.mark.parametrize("method", METHODS)
def test_matches_float64_numpy_reference_and_gap_shrinks(x64, method):
    gaps = []
    for steps in (4, 16):
        attr, gap = ig_jit(f_jax, jnp.asarray(X), jnp.asarray(BASE), steps=steps, method=method)
        want_attr, want_gap = ig_np(X, BASE, steps, method)
        assert attr.dtype == jnp.float64
        np.testing.assert_allclose(attr, want_attr, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(gap, want_gap, rtol=1e-10, atol=1e-13)
        gaps.append(abs(float(gap)))
    assert gaps[0] > gaps[1], gaps
    # O(1/n), O(1/n²), spectral: a 4× finer grid cuts the gap ~4×, ~16×, to rounding level.
    if method == "riemann_right":
        assert 3.0 < gaps[0] / gaps[1] < 5.0, gaps
    elif method == "trapezoid":
        assert 12.0 < gaps[0] / gaps[1] < 20.0, gaps
    else:
        # 4 Gauss-Legendre nodes beat 17 trapezoid nodes (NumPy reference) tenfold.
        assert gaps[0] < abs(ig_np(X, BASE, 16, "trapezoid")[1]) / 10, gaps
        assert gaps[1] < 1e-12, gaps


@functools.cache
def _linear_ig(method):
    return jax.jit(
        lambda w, x, b: integrated_gradients(
            lambda v: jnp.sum(w * v) + 2.0, x, b, steps=3, method=method
        )
    )


@pytest.mark.parametrize("method", METHODS)
@given(
    w=hnp.arrays(np.float32, SHAPE, elements=st.floats(-4, 4, width=32)),
    x=hnp.arrays(np.float32, SHAPE, elements=st.floats(-4, 4, width=32)),
    b=hnp.arrays(np.float32, SHAPE, elements=st.floats(-4, 4, width=32)),
)
def test_exact_for_linear_f(method, w, x, b):
    attr, gap = _linear_ig(method)(w, x, b)
    want = w.astype(np.float64) * (x.astype(np.float64) - b)
    np.testing.assert_allclose(attr, want, rtol=1e-5, atol=1e-5)
    assert abs(float(gap)) <= 1e-5 * (1.0 + np.abs(want).sum())


def test_microbatched_equals_all_at_once():
    x, b = jnp.asarray(X, jnp.float32), jnp.asarray(BASE, jnp.float32)
    # riemann_right has 10 nodes, trapezoid 11: a scan over 2 slices of 5; one slice of 6 and
    # a remainder of 4; more than all nodes; a scan over 2 slices of 4 and a remainder of 3.
    for method, mbs in (("riemann_right", (5, 6, 32)), ("trapezoid", (4,))):
        want, want_gap = ig_jit(f_jax, x, b, steps=10, method=method)
        for mb in mbs:
            attr, gap = ig_jit(f_jax, x, b, steps=10, method=method, microbatch_size=mb)
            np.testing.assert_allclose(attr, want, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(gap, want_gap, atol=1e-5)


def test_vmap_over_examples_equals_loop():
    xs = jnp.asarray(RNG.normal(size=(3, *SHAPE)), jnp.float32)
    ig = functools.partial(ig_jit, f_jax, steps=7, method="trapezoid", microbatch_size=3)
    attr, gap = jax.jit(jax.vmap(ig))(xs)
    for i in range(xs.shape[0]):
        a, g = ig(xs[i])
        np.testing.assert_allclose(attr[i], a, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(gap[i], g, atol=1e-5)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_keeps_dtype_and_accumulates_in_float32(dtype):
    x = jnp.asarray(X, dtype)
    attr, gap = ig_jit(f_jax, x, steps=8, method="gauss_legendre", microbatch_size=3)
    assert attr.dtype == dtype and attr.shape == SHAPE
    assert gap.dtype == jnp.float32
    # Reference at the inputs as rounded to dtype; bf16 only rounds the path points and f.
    want, _ = ig_np(np.asarray(x, np.float64), np.zeros(SHAPE), 8, "gauss_legendre")
    tol = 1e-5 if dtype == jnp.float32 else 4e-2
    np.testing.assert_allclose(np.asarray(attr, np.float64), want, rtol=tol, atol=tol)


def test_pytree_input_and_jit_equals_eager():
    x = {"a": jnp.asarray(X, jnp.float32), "b": jnp.arange(3.0)}
    f = lambda t: f_jax(t["a"]) + jnp.sum(t["b"] ** 2)  # noqa: E731
    attr, gap = ig_jit(f, x, steps=6, method="gauss_legendre")
    eager_attr, eager_gap = integrated_gradients(f, x, steps=6, method="gauss_legendre")
    jax.tree.map(
        lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-7), attr, eager_attr
    )
    np.testing.assert_allclose(gap, eager_gap, atol=1e-6)
    want, _ = ig_np(X, np.zeros(SHAPE), 6, "gauss_legendre")
    np.testing.assert_allclose(attr["a"], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(attr["b"], np.arange(3.0) ** 2, rtol=1e-6)  # exact for x²
    assert abs(float(gap)) < 1e-5


def test_x_equal_to_the_baseline_gives_zero_even_where_the_gradient_is_not_finite():
    # The gradient of ||v|| at 0 is NaN; the path from 0 to 0 does not move.
    x = jnp.array([0.0, 2.0, -1.0])
    base = jnp.array([0.0, 1.0, -1.0])
    f = lambda v: jnp.linalg.norm(v[:1]) + v[1] ** 2  # noqa: E731
    attr, gap = integrated_gradients(f, x, base, steps=2, method="gauss_legendre")
    np.testing.assert_allclose(attr, [0.0, 3.0, 0.0], rtol=1e-6)  # 2^2 - 1^2 on the moving entry
    assert abs(float(gap)) < 1e-5
    attr, gap = integrated_gradients(jnp.linalg.norm, jnp.zeros(3), steps=3)
    np.testing.assert_array_equal(attr, 0.0)
    assert float(gap) == 0.0


def test_bad_input():
    x = jnp.ones(3)
    f = jnp.sum
    with pytest.raises(ValueError, match="steps must be a positive int, got 0"):
        integrated_gradients(f, x, steps=0)
    with pytest.raises(TypeError, match="steps must be a positive int, got 2.5"):
        integrated_gradients(f, x, steps=2.5)
    with pytest.raises(ValueError, match="microbatch_size must be a positive int, got 0"):
        integrated_gradients(f, x, microbatch_size=0)
    with pytest.raises(TypeError, match="microbatch_size must be a positive int"):
        integrated_gradients(f, x, microbatch_size=jnp.array(4))
    with pytest.raises(ValueError, match="method must be one of .* got 'simpson'"):
        integrated_gradients(f, x, method="simpson")
    with pytest.raises(ValueError, match=r"baseline must match x's shape .*\(3,\).* got \(4,\)"):
        integrated_gradients(f, x, jnp.zeros(4))
    with pytest.raises(ValueError, match="baseline must have x's structure"):
        integrated_gradients(f, x, (jnp.zeros(3),))
    with pytest.raises(TypeError, match="floating-point leaves, got dtype int32"):
        integrated_gradients(f, jnp.ones(3, jnp.int32))
    with pytest.raises(ValueError, match=r"f must return a scalar, got shape \(3,\)"):
        integrated_gradients(lambda v: v * 2.0, x)
