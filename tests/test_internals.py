"""The shared internals (jaxtricks._src): the validation checks and the one safe norm.

The safe norm is checked against a float64 NumPy norm across scales where the naive float32
formula overflows or underflows; the checks against the convention in DESIGN.md.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from jaxtricks._src import checks
from jaxtricks._src.numerics import compute_dtype, l2_normalize, safe_norm

_norm = jax.jit(safe_norm, static_argnames=("axis", "keepdims"))


# Magnitudes stay normal after scaling: XLA:CPU flushes subnormal float32 inputs to zero.
_entries = st.one_of(
    st.just(0.0), st.floats(2**-10, 1, width=32), st.floats(-1, -(2**-10), width=32)
)


@given(
    arrays(np.float32, (3, 5), elements=_entries),
    st.sampled_from([1e-33, 1e-20, 1.0, 1e20, 1e36, 1.2e38]),
)
def test_safe_norm_matches_float64_at_every_scale(x, scale):
    x = x * np.float32(scale)
    want = np.linalg.norm(x.astype(np.float64), axis=-1)
    got = np.asarray(_norm(jnp.asarray(x)), np.float64)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-45)


def test_safe_norm_zero_vector_value_and_gradient():
    assert float(safe_norm(jnp.zeros(4))) == 0.0
    g = jax.grad(lambda v: safe_norm(v))(jnp.zeros(4))
    np.testing.assert_array_equal(g, np.zeros(4))
    g = jax.grad(lambda v: jnp.sum(l2_normalize(v)))(jnp.zeros(4))
    np.testing.assert_array_equal(g, np.zeros(4))


def test_safe_norm_gradient_is_the_unit_vector():
    x = np.array([3.0, -4.0, 12.0])
    g = jax.grad(lambda v: safe_norm(v))(jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(g, x / 13.0, rtol=1e-6)
    g = jax.grad(lambda v: safe_norm(v))(jnp.asarray(x * 1e30, jnp.float32))
    np.testing.assert_allclose(g, x / 13.0, rtol=1e-6)


def test_safe_norm_axes_keepdims_and_complex():
    x = np.arange(24.0).reshape(2, 3, 4) - 10
    got = safe_norm(jnp.asarray(x), axis=(0, 2), keepdims=True)
    np.testing.assert_allclose(got, np.sqrt((x**2).sum(axis=(0, 2), keepdims=True)), rtol=1e-6)
    z = np.array([3 + 4j, 1 - 1j], np.complex64)
    np.testing.assert_allclose(safe_norm(jnp.asarray(z)), np.sqrt(27.0), rtol=1e-6)


def test_l2_normalize_unit_norm_and_floor():
    # 5e37: XLA:CPU's reciprocal of the norm would be subnormal (flushed) if x were divided.
    x = jnp.asarray([[3e37, 4e37], [3e-30, 4e-30], [0.0, 0.0]], jnp.float32)
    y = np.asarray(jax.jit(l2_normalize)(x), np.float64)
    np.testing.assert_allclose(y, [[0.6, 0.8], [0.6, 0.8], [0.0, 0.0]], rtol=1e-6)
    y = np.asarray(l2_normalize(x, min_norm=1e-12), np.float64)
    np.testing.assert_allclose(y[1], np.array([3e-30, 4e-30]) / 1e-12, rtol=1e-5)
    assert l2_normalize(jnp.ones(3, jnp.bfloat16)).dtype == jnp.bfloat16


def test_compute_dtype():
    assert compute_dtype(jnp.ones(2, jnp.bfloat16)) == jnp.float32
    assert compute_dtype(np.ones(2, np.int32)) == jnp.float32
    with jax.enable_x64(True):
        assert compute_dtype(np.ones(2, np.float64)) == jnp.float64


@pytest.mark.parametrize(
    "bad,exc",
    [
        (0, ValueError),
        (-3, ValueError),
        (2.5, TypeError),
        (True, TypeError),
        ("4", TypeError),
        (None, TypeError),
    ],
)
def test_positive_int(bad, exc):
    with pytest.raises(exc, match=r"^num_heads must be a positive int, got"):
        checks.positive_int("num_heads", bad)
    assert checks.positive_int("n", np.int64(3)) == 3


def test_nonnegative_int():
    assert checks.nonnegative_int("k", 0) == 0
    with pytest.raises(ValueError, match="k must be an int >= 0, got -1"):
        checks.nonnegative_int("k", -1)


@pytest.mark.parametrize(
    "value,fragment",
    [
        (float("nan"), "must not be NaN"),
        (jnp.array(float("nan")), "must not be NaN"),
        (float("inf"), "must be finite"),
        (np.float32("-inf"), "must be finite"),
        (0.0, "must be > 0"),
        (jnp.array(0.0), "must be > 0"),
        (jnp.array([1.0, -1.0]), "must be > 0"),
    ],
)
def test_number_rejects_concrete_values(value, fragment):
    with pytest.raises(ValueError, match=f"temperature {fragment}"):
        checks.number("temperature", value, low=0, low_open=True)


def test_number_types_ranges_and_traced_values():
    for bad in (True, "1", None, [1.0], 1j):
        with pytest.raises(TypeError, match="eps must be a real number"):
            checks.number("eps", bad)
    with pytest.raises(ValueError, match=r"b1 must be in \[0, 1\), got 1.0"):
        checks.number("b1", 1.0, low=0, high=1, high_open=True)
    with pytest.raises(TypeError, match="must be an integer"):
        checks.number("steps", 2.5, integer=True)
    assert checks.number("x", float("inf"), allow_inf=True) == float("inf")
    # Traced values cannot be read: they pass through unchanged.
    out = jax.jit(lambda t: checks.number("t", t, low=0, low_open=True))(-1.0)
    assert float(out) == -1.0
    assert checks.number_or_schedule("lr", lambda step: -1.0)(0) == -1.0


def test_choice_callable_transformation_dtype():
    with pytest.raises(ValueError, match=r"layout must be one of \('a', 'b'\), got 'c'"):
        checks.choice("layout", "c", ("a", "b"))
    with pytest.raises(ValueError, match="layout must be one of"):
        checks.choice("layout", jnp.ones(2), ("a", "b"))
    with pytest.raises(TypeError, match="fn must be callable, got 3"):
        checks.callable_arg("fn", 3)
    with pytest.raises(TypeError, match="inner must be an optax.GradientTransformation"):
        checks.gradient_transformation("inner", lambda g: g)
    with pytest.raises(TypeError, match="mu_dtype must be a floating or complex dtype, got int32"):
        checks.float_dtype("mu_dtype", jnp.int32)
    with pytest.raises(TypeError, match="must be a floating dtype, got complex64"):
        checks.float_dtype("dtype", jnp.complex64, complex_ok=False)
    assert checks.float_dtype("d", "bfloat16") == jnp.bfloat16
    assert checks.float_dtype("d", None) is None


def test_shapes_dtype_kinds_and_trees():
    with pytest.raises(ValueError, match=r"mask must have shape \(2, any\), got \(3, 4\)"):
        checks.shape("mask", np.zeros((3, 4)), (2, None))
    with pytest.raises(ValueError, match=r"x must have at least 3 axes \(T, N, H\), got shape"):
        checks.min_ndim("x", np.zeros((3, 4)), 3, "(T, N, H)")
    with pytest.raises(TypeError, match="mask must have a bool dtype, got int32"):
        checks.array_dtype_kind("mask", np.zeros(3, np.int32), ["bool"])
    with pytest.raises(ValueError, match="mask must have the tree structure of the params"):
        checks.tree_matches("mask", {"a": True}, {"a": 1.0, "b": 2.0})
    checks.tree_matches("mask", {"a": True, "b": False}, {"a": 1.0, "b": 2.0})
    with pytest.raises(ValueError, match="where: x"):
        checks.shape("x", np.zeros(2), (3,), where="where")


def test_safe_norm_nan_and_infinite_entries():
    assert np.isnan(safe_norm(jnp.array([1.0, jnp.nan])))
    assert np.all(np.isnan(l2_normalize(jnp.array([1.0, jnp.nan]))))
    assert float(safe_norm(jnp.array([1.0, -jnp.inf]))) == np.inf
    # The limit direction of a vector with infinite entries: the signs of those entries.
    got = l2_normalize(jnp.array([1.0, -jnp.inf, jnp.inf]))
    np.testing.assert_allclose(got, np.array([0.0, -1.0, 1.0]) / np.sqrt(2.0), rtol=1e-6)
    g = jax.grad(lambda v: safe_norm(v))(jnp.array([1.0, -jnp.inf]))
    assert np.all(np.isfinite(g))


@pytest.mark.parametrize("scale", [1e-37, 1e-25, 1.0, 1e20, 1e30])
def test_l2_normalize_jacobian_matches_float64(scale):
    x = np.array([3.0, -4.0, 12.0]) * scale
    jac = jax.jacobian(lambda v: l2_normalize(v))(jnp.asarray(x, jnp.float32))
    n = np.linalg.norm(x)
    u = x / n
    want = (np.eye(3) - np.outer(u, u)) / n
    # Compared in units of 1/||x||, the scale of the true Jacobian.
    np.testing.assert_allclose(np.asarray(jac, np.float64) * n, want * n, atol=1e-6)
