"""mitchell_multiply and mitchell_divide."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from jaxtricks.numerics import mitchell_divide, mitchell_multiply

positive = st.floats(2.0**-50, 2.0**50, width=32)


def _np_mitchell(a, b, divide=False):
    """Mitchell's formula in float64 from the binary exponent and fraction of |a|, |b|.

    ``p = 2^n (1 + x)``: products add n and x (carrying into n when x1 + x2 >= 1), quotients
    subtract them (borrowing when x1 < x2). Signs by product of signs; normal inputs only.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ma, ea = np.frexp(np.abs(a))  # |a| = ma 2^ea, ma in [0.5, 1): n = ea - 1, x = 2 ma - 1
    mb, eb = np.frexp(np.abs(b))
    xa, xb, na, nb = 2 * ma - 1, 2 * mb - 1, ea - 1, eb - 1
    if divide:
        approx = np.where(
            xa >= xb, np.ldexp(1 + xa - xb, na - nb), np.ldexp(2 + xa - xb, na - nb - 1)
        )
    else:
        s = xa + xb
        approx = np.where(s < 1, np.ldexp(1 + s, na + nb), np.ldexp(s, na + nb + 1))
    return np.sign(a) * np.sign(b) * approx


@given(
    arrays(np.float32, (32,), elements=positive),
    arrays(np.float32, (32,), elements=positive),
    arrays(np.bool_, (32,)),
    arrays(np.bool_, (32,)),
)
def test_equals_the_formula_and_respects_the_bounds(a, b, neg_a, neg_b):
    a, b = np.where(neg_a, -a, a), np.where(neg_b, -b, b)
    exact = a.astype(np.float64) * b
    product = np.asarray(mitchell_multiply(a, b), np.float64)
    np.testing.assert_array_equal(product, _np_mitchell(a, b))
    error = (exact - product) / exact  # Mitchell never overestimates a product
    assert np.all(error >= 0) and np.all(error <= 1 / 9)

    exact = a.astype(np.float64) / b
    quotient = np.asarray(mitchell_divide(a, b), np.float64)
    np.testing.assert_array_equal(quotient, _np_mitchell(a, b, divide=True))
    error = (quotient - exact) / exact  # ... and never underestimates a quotient
    assert np.all(error >= 0) and np.all(error <= 1 / 8)


def test_worst_cases_and_exact_cases():
    # x1 = x2 = 1/2 is the worst product (8/9 of it); x1 = 0, x2 = 1/2 the worst quotient.
    assert float(mitchell_multiply(1.5, 1.5)) == 2.0  # exact 2.25: error 1/9
    assert float(mitchell_multiply(3.0, 6.0)) == 16.0  # exact 18: error 1/9
    assert float(mitchell_divide(1.0, 1.5)) == 0.75  # exact 2/3: error 1/8
    # Zero fractions are exact: powers of two multiply and divide exactly.
    powers = 2.0 ** np.arange(-20, 21, dtype=np.float32)
    np.testing.assert_array_equal(mitchell_multiply(powers, powers[::-1]), np.ones(41))
    np.testing.assert_array_equal(mitchell_divide(powers, powers), np.ones(41))
    # The post's example: 12.3 x 4.56 = 56.088, approximated by 53.68.
    assert round(float(mitchell_multiply(12.3, 4.56)), 2) == 53.68


def _daz(v):
    """Subnormals replaced by zeros of their sign (the documented input handling)."""
    v = np.asarray(v, np.float32)
    tiny = np.finfo(np.float32).tiny
    return np.where(np.abs(v) < tiny, np.copysign(np.float32(0), v), v)


SPECIALS = np.array(
    [0.0, -0.0, np.inf, -np.inf, np.nan, 1.5, -2.0, 1e-40, -1e-40, 3e38], np.float32
)


@pytest.mark.parametrize("divide", [False, True])
def test_special_values_follow_ieee(divide):
    a, b = np.meshgrid(SPECIALS, SPECIALS, indexing="ij")
    fn = mitchell_divide if divide else mitchell_multiply
    got = np.asarray(fn(a, b))
    with np.errstate(all="ignore"):
        ieee = (np.divide if divide else np.multiply)(_daz(a), _daz(b))
    special = ~np.isfinite(ieee) | (ieee == 0)
    assert special.sum() > 40  # the grid is mostly special combinations
    np.testing.assert_array_equal(np.isnan(got[special]), np.isnan(ieee[special]))
    finite_or_inf = special & ~np.isnan(ieee)
    np.testing.assert_array_equal(got[finite_or_inf], ieee[finite_or_inf])
    np.testing.assert_array_equal(np.signbit(got[finite_or_inf]), np.signbit(ieee[finite_or_inf]))


def test_overflow_and_underflow():
    big, small = np.float32(1e30), np.float32(1e-30)
    assert float(mitchell_multiply(big, -big)) == -np.inf
    assert float(mitchell_divide(big, small)) == np.inf
    # 1e-40 is subnormal in float32: flushed to a zero of the right sign.
    flushed = np.asarray(mitchell_multiply(np.float32(-1e-20), np.float32(1e-20)))
    assert flushed == 0 and np.signbit(flushed)
    assert float(mitchell_divide(small, big)) == 0.0
    # The largest and smallest normal results are reached, not flushed.
    assert float(mitchell_multiply(np.float32(2.0**-63), np.float32(2.0**-63))) == 2.0**-126
    assert float(mitchell_multiply(np.float32(2.0**64), np.float32(1.5 * 2.0**63))) == 1.5 * 2**127


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_narrow_dtypes_are_mitchell_on_their_own_bits(dtype):
    rng = np.random.default_rng(0)
    a = rng.uniform(0.01, 100, 64).astype(dtype)
    b = rng.uniform(0.01, 100, 64).astype(dtype)
    got = mitchell_multiply(a, b)
    assert got.dtype == dtype
    np.testing.assert_array_equal(np.asarray(got, np.float64), _np_mitchell(a, b))
    quotient = mitchell_divide(a, b)
    assert quotient.dtype == dtype
    np.testing.assert_array_equal(np.asarray(quotient, np.float64), _np_mitchell(a, b, True))


def test_float64_inputs_give_float64(x64):
    got = mitchell_multiply(np.float64(1.5), np.float64(1.5))
    assert got.dtype == jnp.float64 and float(got) == 2.0


def test_broadcasting_jit_vmap():
    a = np.linspace(0.5, 8, 6, dtype=np.float32).reshape(3, 2)
    b = np.linspace(1.1, 3, 4, dtype=np.float32).reshape(1, 4)
    a3 = np.repeat(a[:, :1], 4, axis=1)
    got = mitchell_multiply(a[:, :1], b)
    np.testing.assert_array_equal(got, _np_mitchell(a3, np.repeat(b, 3, axis=0)))
    np.testing.assert_array_equal(jax.jit(mitchell_multiply)(a[:, :1], b), got)
    np.testing.assert_array_equal(
        jax.vmap(mitchell_divide)(a3, np.repeat(b, 3, 0)), mitchell_divide(a3, np.repeat(b, 3, 0))
    )


def test_gradient_is_zero_as_documented():
    # Bit manipulations are constants for autodiff: the documented behaviour.
    assert float(jax.grad(lambda a: mitchell_multiply(a, 3.0))(1.5)) == 0.0


def test_errors():
    with pytest.raises(TypeError, match="a must have a floating dtype"):
        mitchell_multiply(jnp.arange(3), 1.0)
    with pytest.raises(TypeError, match="b must have a floating dtype"):
        mitchell_divide(1.0, jnp.arange(3))
    with pytest.raises(ValueError, match=r"a of shape \(3,\) and b of shape \(2,\)"):
        mitchell_multiply(jnp.ones(3), jnp.ones(2))


def test_claims_hold():
    from jaxtricks.reproduce import post_7991_mitchell as post

    for c in post.CLAIMS:
        m = c.fn()
        assert m.ok, (c.name, m.measured)
