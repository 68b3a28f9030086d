"""Bad inputs of jaxtricks.numerics: named errors, and finite limits on degenerate values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from probes import probe, raises

from jaxtricks.numerics import mitchell_divide, mitchell_multiply, orthogonal_map, repetition_rate

MUL, DIV = "numerics.mitchell_multiply", "numerics.mitchell_divide"
ORTH, REP = "numerics.orthogonal_map", "numerics.repetition_rate"
MITCHELL = [mitchell_multiply, mitchell_divide]
KINDS = ["householder", "rotation", "symmetric"]


# ------------------------------------------------------------------------------- mitchell


@probe("error", MUL, DIV)
@pytest.mark.parametrize("fn", MITCHELL)
@pytest.mark.parametrize(
    "a,b,argument,fragment",
    [
        (jnp.arange(3), 1.0, "a", "int32"),
        (1.0, jnp.ones(2, bool), "b", "bool"),
        (jnp.ones(2, jnp.complex64), 1.0, "a", "complex64"),
        (2, 3.0, "a", "int32"),
    ],
)
def test_mitchell_needs_floating_inputs(fn, a, b, argument, fragment):
    with raises(TypeError, argument, fragment):
        fn(a, b)


@probe("error", MUL, DIV)
@pytest.mark.parametrize("fn", MITCHELL)
@pytest.mark.parametrize("shapes", [((3,), (2,)), ((2, 3), (3, 2)), ((4, 1, 2), (3, 3))])
def test_mitchell_shapes_must_broadcast(fn, shapes):
    a, b = (jnp.ones(s) for s in shapes)
    with raises(ValueError, "a", str(shapes[0]), str(shapes[1])):
        fn(a, b)


def _f32(v):
    return np.asarray(v, np.float32)


@probe("value", MUL, DIV)
@pytest.mark.parametrize(
    "fn,a,b,want",
    [
        # IEEE 754 special values, exactly: signs, zeros, infinities.
        (mitchell_multiply, [np.inf, -np.inf, 0.0, -0.0, 2.0], [2.0, 3.0, 5.0, 5.0, np.inf],
         [np.inf, -np.inf, 0.0, -0.0, np.inf]),
        (mitchell_divide, [1.0, -1.0, 0.0, np.inf, 3.0], [0.0, 0.0, 5.0, 2.0, np.inf],
         [np.inf, -np.inf, 0.0, np.inf, 0.0]),
        # Leaving the float32 range: overflow to inf, underflow (and subnormal inputs) to 0.
        (mitchell_multiply, [3e38, 1e-30, 1e-40], [3e38, 1e-30, 2.0], [np.inf, 0.0, 0.0]),
        (mitchell_divide, [3e38, 1e-30, 1e-40], [1e-30, 3e38, 2.0], [np.inf, 0.0, 0.0]),
    ],
)  # fmt: skip
def test_mitchell_special_values_follow_ieee(fn, a, b, want):
    np.testing.assert_array_equal(JIT[fn](_f32(a), _f32(b)), _f32(want))


_mul, _div = jax.jit(mitchell_multiply), jax.jit(mitchell_divide)
JIT = {mitchell_multiply: _mul, mitchell_divide: _div}


@probe("value", MUL, DIV)
@given(st.floats(-120, 120), st.floats(-120, 120), st.floats(1.0, 2.0), st.floats(1.0, 2.0))
def test_mitchell_relative_error_bounds_at_any_exponent(e1, e2, m1, m2):
    # Mitchell's bounds hold wherever the result is a normal float32: product in [0, 1/9] below
    # the exact value, quotient in [0, 1/8] above it (float64 reference).
    a, b = np.float32(m1 * 2.0 ** round(e1)), np.float32(m2 * 2.0 ** round(e2))
    exact_mul = np.float64(a) * np.float64(b)
    exact_div = np.float64(a) / np.float64(b)
    if 2.0**-125 < exact_mul < 2.0**127:
        err = (exact_mul - np.float64(_mul(a, b))) / exact_mul
        assert -1e-7 <= err <= 1 / 9 + 1e-7
    if 2.0**-125 < exact_div < 2.0**127:
        err = (np.float64(_div(a, b)) - exact_div) / exact_div
        assert -1e-7 <= err <= 1 / 8 + 1e-7


# ---------------------------------------------------------------------------- orthogonal_map

A, B = jnp.array([1.0, 2.0, 2.0]), jnp.array([0.0, 3.0, -4.0])


@probe("error", ORTH)
@pytest.mark.parametrize("kind", ["givens", "Householder", None, 1])
def test_orthogonal_kind_choice(kind):
    with raises(ValueError, "kind", repr(kind)):
        orthogonal_map(A, B, kind=kind)


@probe("error", ORTH)
@pytest.mark.parametrize(
    "a,b,exc,argument,fragments",
    [
        (A, jnp.ones(4), ValueError, "b", ("(3,)", "(4,)")),
        (jnp.ones((2, 3)), jnp.ones((2, 3)), ValueError, "a", ("(2, 3)",)),
        (jnp.ones(()), jnp.ones(()), ValueError, "a", ("()",)),
        (jnp.ones(1), jnp.ones(1), ValueError, "D", ("D = 1",)),
        (jnp.arange(3), B, TypeError, "a", ("int32",)),
        (A, B > 0, TypeError, "b", ("bool",)),
        (A.astype(jnp.complex64), B, TypeError, "a", ("complex64",)),
        (jnp.zeros(3), B, ValueError, "a", ("nonzero",)),
        (A, np.zeros(3, np.float32), ValueError, "b", ("nonzero",)),
    ],
)
def test_orthogonal_shapes_dtypes_and_zero_vectors(a, b, exc, argument, fragments):
    with raises(exc, argument, *fragments):
        orthogonal_map(a, b)


_orth = jax.jit(orthogonal_map, static_argnames="kind")


def _check_orthogonal_map(t, a, b):
    t, a, b = (np.asarray(v, np.float64) for v in (t, a, b))
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    np.testing.assert_allclose(t.T @ t, np.eye(len(a)), atol=1e-6)
    np.testing.assert_allclose(t @ a, b, atol=1e-3)  # sqrt(eps) near degenerate pairs


@probe("value", ORTH)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "b",
    [A, -A, A * (1 + 1e-7), -A + 1e-7, B * 1e-30, B * 1e30],
    ids=["a", "-a", "~a", "~-a", "tiny", "huge"],
)
def test_orthogonal_degenerate_pairs_and_scales(kind, b):
    # b = +-a: any u perpendicular to a works, one is picked; scales whose squares leave
    # float32 are normalised exactly (scaled safe norm).
    _check_orthogonal_map(_orth(A, b, kind=kind), A, b)


@probe("value", ORTH)
@pytest.mark.parametrize("kind", KINDS)
def test_orthogonal_infinite_entries_give_the_limit(kind):
    a = jnp.array([jnp.inf, 1.0, -jnp.inf])
    _check_orthogonal_map(_orth(a, B, kind=kind), [1.0, 0.0, -1.0], B)


@probe("value", ORTH)
@pytest.mark.parametrize("kind", KINDS)
def test_orthogonal_traced_zero_vector_is_still_orthogonal(kind):
    t = np.asarray(_orth(jnp.zeros(3), B, kind=kind), np.float64)
    np.testing.assert_allclose(t.T @ t, np.eye(3), atol=1e-6)


# --------------------------------------------------------------------------- repetition_rate


@probe("error", REP)
@pytest.mark.parametrize(
    "p,exc,fragment",
    [
        (jnp.ones((3, 4)), ValueError, "(3, 4)"),
        (jnp.ones(3), ValueError, "(3,)"),
        (jnp.ones((2, 0, 0)), ValueError, "(2, 0, 0)"),
        (jnp.eye(3, dtype=jnp.int32), TypeError, "int32"),
        (jnp.eye(3, dtype=bool), TypeError, "bool"),
        (jnp.eye(3, dtype=jnp.complex64), TypeError, "complex64"),
    ],
)
def test_repetition_p_must_be_square_floating(p, exc, fragment):
    with raises(exc, "P", fragment):
        repetition_rate(p)


_rate = jax.jit(repetition_rate)


def _np_series(p, terms=200):
    q = np.asarray(p, np.float64) ** 2
    power, total = np.eye(len(q)), 0.0
    for _ in range(terms):
        power = power @ q
        total += np.trace(power)
    return total


@probe("value", REP)
@pytest.mark.parametrize(
    "p",
    [
        np.eye(3),  # I - Q singular: every token repeats itself forever
        np.roll(np.eye(3), 1, axis=1),  # a deterministic 3-cycle
        np.array([[0.0, 1.0, 0.0], [0.5, 0.0, 0.5], [0.0, 0.0, 1.0]]),  # an absorbing loop
        np.diag([1.2, 0.1, 0.1]),  # rho(Q) > 1
        1.1 * np.full((3, 3), 1.0),
    ],
)
def test_repetition_divergent_series_is_inf(p):
    # Every term Tr Q^k >= 0, so rho(Q) >= 1 (float64 eigenvalues) means R = inf.
    assert np.abs(np.linalg.eigvals(p * p)).max() >= 1
    assert float(_rate(jnp.asarray(p, jnp.float32))) == np.inf


@probe("value", REP)
@pytest.mark.parametrize(
    "p", [np.zeros((3, 3)), np.full((3, 3), 1e-10), np.full((3, 3), 0.3), np.diag([0.9, 0.0, 0.5])]
)
def test_repetition_convergent_series_equals_the_sum(p):
    np.testing.assert_allclose(_rate(jnp.asarray(p, jnp.float32)), _np_series(p), rtol=1e-4)


@probe("value", REP)
def test_repetition_batch_mixes_finite_inf_and_nan():
    batch = np.stack([np.full((2, 2), 0.5), np.eye(2), np.array([[np.nan, 0.0], [0.0, 0.5]])])
    got = np.asarray(_rate(jnp.asarray(batch, jnp.float32)))
    np.testing.assert_allclose(got[0], 1.0, rtol=1e-6)
    assert got[1] == np.inf and np.isnan(got[2])
