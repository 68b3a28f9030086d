"""Bad inputs of jaxtricks.embeddings: named errors, and finite limits on degenerate values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from probes import probe, raises

from jaxtricks.embeddings import Whitening, WhiteningStats, whitening_apply, whitening_fit

FIT, APPLY = "embeddings.whitening_fit", "embeddings.whitening_apply"
STATS, W = "embeddings.WhiteningStats", "embeddings.Whitening"
X = jnp.asarray(np.random.default_rng(0).standard_normal((8, 3)), jnp.float32)
WH = Whitening(jnp.zeros(3), jnp.eye(3)[:, :2])
BAD_SIZES = [(0, ValueError), (-1, ValueError), (2.5, TypeError), (True, TypeError)]


# ---------------------------------------------------------------------------- whitening_fit


@probe("error", FIT, STATS)
@pytest.mark.parametrize(
    "x,exc,fragment",
    [
        (jnp.ones(3), ValueError, "(3,)"),
        (jnp.ones((2, 3, 4)), ValueError, "(2, 3, 4)"),
        (jnp.ones((4, 0)), ValueError, "(4, 0)"),
        (jnp.ones((1, 3)), ValueError, "N = 1"),
        (jnp.ones((4, 3), jnp.int32), TypeError, "int32"),
        (jnp.ones((4, 3), bool), TypeError, "bool"),
        (jnp.ones((4, 3), jnp.complex64), TypeError, "complex64"),
    ],
)
def test_fit_x_must_be_2d_float_with_two_rows(x, exc, fragment):
    with raises(exc, "x", fragment):
        whitening_fit(x)
    if exc is TypeError:
        with raises(exc, "x", fragment):
            WhiteningStats.from_batch(x)


@probe("error", FIT, STATS)
@pytest.mark.parametrize("dim,exc", BAD_SIZES + [(4, ValueError), ("2", TypeError)])
def test_dim_is_a_positive_int_at_most_the_features(dim, exc):
    with raises(exc, "dim", repr(dim)):
        whitening_fit(X, dim=dim)
    with raises(exc, "dim", repr(dim)):
        WhiteningStats.from_batch(X).to_whitening(dim)


@probe("error", FIT, STATS)
@pytest.mark.parametrize(
    "rtol,exc",
    [
        (-0.1, ValueError),
        (1.0, ValueError),
        (np.nan, ValueError),
        (np.inf, ValueError),
        (jnp.array(jnp.nan), ValueError),
        (jnp.array(2.0), ValueError),
        (True, TypeError),
        ("small", TypeError),
    ],
)
def test_rtol_in_zero_one(rtol, exc):
    with raises(exc, "rtol"):
        whitening_fit(X, rtol=rtol)
    with raises(exc, "rtol"):
        WhiteningStats.from_batch(X).to_whitening(rtol=rtol)


_fit = jax.jit(whitening_fit)


@probe("value", FIT)
@pytest.mark.parametrize("offset", [0.0, 1e4, 1e6])
def test_fit_under_a_large_offset_whitens(offset):
    # The two-pass centred statistics keep float32 accurate under BERT-like offsets, where
    # E[xx^T] - mu mu^T cancels; reference: float64 NumPy covariance of the whitened data.
    x = (np.asarray(X, np.float64) * np.array([3.0, 1.0, 0.2]) + offset).astype(np.float32)
    w = _fit(jnp.asarray(x))
    x = x.astype(np.float64)  # the float32 data the fit saw, in float64
    y = (x - np.asarray(w.mean, np.float64)) @ np.asarray(w.kernel, np.float64)
    np.testing.assert_allclose(y.T @ y / len(x), np.eye(3), atol=2e-3)


@probe("value", FIT, STATS)
@pytest.mark.parametrize(
    "x", [jnp.full((5, 3), 7.0), jnp.zeros((5, 3)), X[:2], jnp.stack([X[:, 0]] * 3, axis=1)]
)
def test_rank_deficient_data_gives_a_finite_kernel(x):
    # Constant, zero, N <= D and collinear data: eigenvalues are floored, the kernel is finite.
    w = _fit(x)
    assert bool(jnp.all(jnp.isfinite(w.kernel))) and bool(jnp.all(jnp.isfinite(w.mean)))
    np.testing.assert_allclose(w.mean, np.asarray(x, np.float64).mean(0), rtol=1e-6, atol=1e-6)


# -------------------------------------------------------------------------- whitening_apply


@probe("error", APPLY, W)
@pytest.mark.parametrize(
    "w,fragment",
    [
        ({"mean": jnp.zeros(3), "kernel": jnp.eye(3)}, "dict"),
        ([jnp.zeros(3), jnp.eye(3)], "list"),
        ((jnp.zeros(3),), "tuple"),
        (jnp.eye(3), "ArrayImpl"),
        (None, "NoneType"),
    ],
)
def test_apply_w_must_be_a_whitening(w, fragment):
    with raises(TypeError, "w", "Whitening", fragment):
        whitening_apply(X, w)


@probe("error", APPLY, W)
@pytest.mark.parametrize(
    "x,w,exc,argument,fragment",
    [
        (jnp.ones((2, 4)), WH, ValueError, "x", "(2, 4)"),
        (jnp.ones(()), WH, ValueError, "x", "()"),
        (X, Whitening(jnp.zeros(3), jnp.zeros((4, 2))), ValueError, "w", "(4, 2)"),
        (X, Whitening(jnp.zeros((1, 3)), jnp.eye(3)), ValueError, "w", "(1, 3)"),
        (X, Whitening(jnp.zeros(3), jnp.eye(3, dtype=jnp.int32)), TypeError, "w.kernel", "int32"),
        (X, Whitening(jnp.zeros(3, bool), jnp.eye(3)), TypeError, "w.mean", "bool"),
        (X > 0, WH, TypeError, "x", "bool"),
        (X.astype(jnp.complex64), WH, TypeError, "x", "complex64"),
    ],
)
def test_apply_shapes_and_dtypes(x, w, exc, argument, fragment):
    with raises(exc, argument, fragment):
        whitening_apply(x, w)


@probe("error", APPLY)
@pytest.mark.parametrize("precision", ["bogus", 3, ("highest", "fast")])
def test_apply_precision_must_be_a_precision(precision):
    with raises(ValueError, "precision", repr(precision)):
        whitening_apply(X, WH, precision=precision)


@jax.jit
def _apply_and_grad(x):
    return whitening_apply(x, WH), jax.jacobian(lambda v: whitening_apply(v, WH))(x)


@probe("value", APPLY)
@pytest.mark.parametrize("scale", [0.0, 1e-30, 1e-20, 1.0, 1e20, 1e36])
def test_apply_normalises_at_any_scale_and_zero_stays_zero(scale):
    x = jnp.asarray(np.array([3.0, -4.0, 1.0], np.float32) * np.float32(scale))
    y, jac = _apply_and_grad(x)
    want = np.zeros(2) if scale == 0 else np.array([0.6, -0.8])
    np.testing.assert_allclose(y, want, rtol=1e-6)
    if scale in (0.0, 1.0):  # the gradient at the zero vector (0) and at unit scale
        assert bool(jnp.all(jnp.isfinite(jac)))


@probe("value", APPLY)
def test_apply_integer_inputs_equal_their_float_values():
    got = whitening_apply(jnp.array([[3, -4, 1]]), WH, normalize=False)
    assert got.dtype == jnp.float32
    np.testing.assert_array_equal(got, [[3.0, -4.0]])


# ---------------------------------------------------------------------------- WhiteningStats


@probe("error", STATS)
@pytest.mark.parametrize("features,exc", BAD_SIZES + [("3", TypeError)])
def test_create_features_is_a_positive_int(features, exc):
    with raises(exc, "features", repr(features)):
        WhiteningStats.create(features)


@probe("error", STATS)
@pytest.mark.parametrize("dtype", [jnp.int32, bool, jnp.complex64, None, "int8"])
def test_statistics_dtype_must_be_real_floating(dtype):
    with raises(TypeError, "dtype"):
        WhiteningStats.create(3, dtype)
    if dtype is not None:
        with raises(TypeError, "dtype"):
            WhiteningStats.from_batch(X, dtype=dtype)


@probe("error", STATS)
@pytest.mark.parametrize(
    "mask,exc,fragment",
    [
        (jnp.ones(8, jnp.int32), TypeError, "int32"),
        (jnp.ones(8), TypeError, "float32"),
        (jnp.ones(7, bool), ValueError, "(7,)"),
        (jnp.ones((8, 3), bool), ValueError, "(8, 3)"),
    ],
)
def test_masks_are_boolean_rows(mask, exc, fragment):
    with raises(exc, "mask", fragment):
        WhiteningStats.from_batch(X, mask=mask)
    with raises(exc, "mask", fragment):
        WhiteningStats.create(3).update(X, mask=mask)


@probe("error", STATS)
@pytest.mark.parametrize(
    "call,exc,argument,fragment",
    [
        (lambda s: s.update(jnp.ones((2, 4))), ValueError, "x", "(2, 4)"),
        (lambda s: s.update(jnp.ones((2, 3), jnp.int32)), TypeError, "x", "int32"),
        (lambda s: s.merge(WhiteningStats.create(4)), ValueError, "other", "(4,)"),
        (lambda s: s.merge({"count": 0}), TypeError, "other", "dict"),
        (lambda s: s.merge(Whitening(jnp.zeros(3), jnp.eye(3))), TypeError, "other", "Whitening"),
        (lambda s: s.merge_over(3), TypeError, "axis_name", "3"),
        (lambda s: s.merge_over(("data", 1)), TypeError, "axis_name", "1"),
        (lambda s: WhiteningStats.from_batch(jnp.ones(())), ValueError, "x", "()"),
    ],
)
def test_stats_methods(call, exc, argument, fragment):
    with raises(exc, argument, fragment):
        call(WhiteningStats.create(3))


@probe("value", STATS)
def test_empty_batches_are_the_identity_of_merge():
    empty = WhiteningStats.from_batch(jnp.zeros((0, 3)))
    masked = WhiteningStats.from_batch(X, mask=jnp.zeros(8, bool))
    full = WhiteningStats.from_batch(X)
    for stats in (empty, masked):
        assert float(stats.count) == 0.0
        np.testing.assert_array_equal(stats.mean, 0.0)
        np.testing.assert_array_equal(stats.covariance(), 0.0)
        for merged in (stats.merge(full), full.merge(stats)):
            for a, b in zip(merged, full):
                np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert bool(jnp.all(jnp.isfinite(empty.to_whitening().kernel)))


@probe("value", STATS)
def test_partial_mask_equals_dropping_rows():
    # float64 NumPy mean and 1/N covariance of the kept rows.
    keep = np.array([1, 0, 1, 1, 0, 1, 1, 0], bool)
    stats = WhiteningStats.from_batch(X, mask=jnp.asarray(keep))
    rows = np.asarray(X, np.float64)[keep]
    np.testing.assert_allclose(stats.mean, rows.mean(0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(stats.covariance(), np.cov(rows.T, bias=True), atol=1e-6)
