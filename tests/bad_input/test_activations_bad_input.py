"""Bad and degenerate inputs of jaxtricks.activations: named errors, and limits instead of NaN.

References are the mathematical limits or float64 NumPy formulas written here.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from probes import probe, raises

from jaxtricks.activations import (
    gelu_erf,
    gelu_sigmoid,
    gelu_tanh,
    log_taylor_softmax,
    taylor_softmax,
    topk_softmax,
)

GELUS = [gelu_erf, gelu_tanh, gelu_sigmoid]
GELU_NAMES = ("activations.gelu_erf", "activations.gelu_tanh", "activations.gelu_sigmoid")
TAYLORS = [taylor_softmax, log_taylor_softmax]
TAYLOR_NAMES = ("activations.taylor_softmax", "activations.log_taylor_softmax")
INF = math.inf


def _name(fn):
    return fn.__name__


def _taylor_f64(x, n):
    """f_n(x) = sum_{k<=n} x^k / k! in float64."""
    return sum(np.asarray(x, np.float64) ** k / math.factorial(k) for k in range(n + 1))


# ----------------------------------------------------------------------------- GELU


@probe("error", *GELU_NAMES)
@pytest.mark.parametrize("fn", GELUS, ids=_name)
@pytest.mark.parametrize("dtype", [jnp.bool_, jnp.complex64])
def test_gelu_rejects_non_float_dtypes(fn, dtype):
    with raises(TypeError, "x", jnp.dtype(dtype).name, fn.__name__):
        fn(jnp.zeros(3, dtype))


@probe("value", *GELU_NAMES)
@pytest.mark.parametrize("fn", GELUS, ids=_name)
def test_gelu_promotes_integers_like_jax_nn(fn):
    got = fn(jnp.arange(-3, 4, dtype=jnp.int32))
    assert got.dtype == jnp.float32
    np.testing.assert_array_equal(got, fn(jnp.arange(-3.0, 4.0)))
    assert float(fn(3)) == float(fn(3.0))


@jax.jit
def _gelus_and_slopes(x):
    """Every GELU form and its derivative at ``x``: one compilation per dtype."""
    return [(fn(x), jax.vmap(jax.grad(fn))(x)) for fn in GELUS]


@probe("value", *GELU_NAMES)
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32, jnp.float64])
def test_gelu_limits_at_infinity_and_huge_inputs(x64, dtype):
    # x Phi(x) -> 0 as x -> -inf and x Phi(x) - x -> 0 as x -> +inf, the slopes -> 0 and 1; at
    # |x| >= 1e4 Phi(x) rounds to exactly 0 or 1 in these dtypes, so GELU(x) is 0 or x there.
    # (The tanh form's x^3 used to overflow and make the gradient NaN at 1e20.)
    big = [1e4, 1e20, 3e38]
    x = jnp.asarray([-INF, INF] + [-b for b in big] + big + [np.nan], dtype)
    host = np.asarray(x, np.float64)
    limit = np.where(host > 0, host, 0.0)
    slope = (host > 0).astype(np.float64)
    limit[-1] = slope[-1] = np.nan  # NaN is not a limit: it stays NaN
    for fn, (y, grad) in zip(GELUS, _gelus_and_slopes(x)):
        assert y.dtype == dtype, fn.__name__
        np.testing.assert_array_equal(np.asarray(y, np.float64), limit, err_msg=fn.__name__)
        np.testing.assert_array_equal(np.asarray(grad, np.float64), slope, err_msg=fn.__name__)


def _gelu_refs_f64(x):
    """float64 references: x Phi(x) (through erfc, exact in the tails) and the two forms."""
    x = np.asarray(x, np.float64)
    erf_form = np.array([0.5 * v * math.erfc(-v / math.sqrt(2.0)) for v in x])
    with np.errstate(over="ignore"):
        inner = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)
        tanh_form = 0.5 * x * (1.0 + np.tanh(inner))
        sigmoid_form = x / (1.0 + np.exp(-1.702 * x))
    return [erf_form, tanh_form, sigmoid_form]


@probe("value", *GELU_NAMES)
@given(
    x=arrays(np.float32, (8,), elements=st.floats(width=32, allow_nan=False, allow_infinity=False))
)
def test_gelu_property_finite_inputs_give_finite_correct_values(x):
    # Any finite float32 input: the value matches float64 (absolutely near 0, where the tanh
    # form's 1 + tanh cancels in float32 as in jax.nn.gelu) and the slope is finite, within
    # GELU's range of slopes [-0.17, 1.13] (the sigmoid form's: [-0.1, 1.1]).
    for (y, grad), ref in zip(_gelus_and_slopes(jnp.asarray(x)), _gelu_refs_f64(x)):
        np.testing.assert_allclose(np.asarray(y, np.float64), ref, rtol=1e-5, atol=1e-6)
        assert bool((jnp.abs(grad) < 1.2).all())


# ----------------------------------------------------------------------------- Taylor softmax


@probe("error", *TAYLOR_NAMES)
@pytest.mark.parametrize("fn", TAYLORS, ids=_name)
@pytest.mark.parametrize("order", [0, 1, 3, -2])
def test_taylor_order_must_be_even_and_at_least_2(fn, order):
    with raises(ValueError, "order", f"got {order}", "even"):
        fn(jnp.zeros(3), order=order)


@probe("error", *TAYLOR_NAMES)
@pytest.mark.parametrize("fn", TAYLORS, ids=_name)
@pytest.mark.parametrize("order", [2.0, True, "2", None, jnp.array(2)])
def test_taylor_order_must_be_a_python_int(fn, order):
    with raises(TypeError, "order"):
        fn(jnp.zeros(3), order=order)


@probe("error", *TAYLOR_NAMES)
@pytest.mark.parametrize("fn", TAYLORS, ids=_name)
@pytest.mark.parametrize(
    "x,axis,exc,fragments",
    [
        (np.zeros((2, 3)), 2, ValueError, ("axis", "[-2, 2)", "(2, 3)", "got 2")),
        (np.zeros((2, 3)), -3, ValueError, ("axis", "got -3")),
        (np.zeros((2, 3)), 1.0, TypeError, ("axis", "1.0")),
        (np.float32(1.0), -1, ValueError, ("x", "at least 1", "()")),
        (np.zeros(3, np.complex64), -1, TypeError, ("x", "complex64")),
        (np.zeros(3, bool), -1, TypeError, ("x", "bool")),
    ],
)
def test_taylor_bad_x_and_axis(fn, x, axis, exc, fragments):
    with raises(exc, *fragments):
        fn(x, axis=axis)


@jax.jit(static_argnames="order")
def _taylor_both(x, order=2):
    """Both Taylor maps and the gradients of their sums of finite entries: one compilation."""

    def finite_sum(fn, v):
        y = fn(v, order=order)
        return jnp.sum(jnp.where(jnp.isfinite(y), y, 0.0))

    p, logp = taylor_softmax(x, order=order), log_taylor_softmax(x, order=order)
    grads = [jax.grad(finite_sum, argnums=1)(fn, x) for fn in TAYLORS]
    return p, logp, grads


@probe("value", *TAYLOR_NAMES)
@pytest.mark.parametrize("order", [2, 4])
@pytest.mark.parametrize(
    "row,expected",
    [
        # f_n(+-inf) = +inf for even n: infinite entries of either sign share the mass.
        ([-INF, 0.0, 1.0, 2.0, 3.0], [1.0, 0.0, 0.0, 0.0, 0.0]),
        ([INF, -INF, 1.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0, 0.0]),
        ([INF] * 5, [0.2] * 5),
        ([-INF] * 5, [0.2] * 5),
    ],
)
def test_taylor_infinite_logits_take_the_mass(order, row, expected):
    p, logp, grads = _taylor_both(jnp.asarray(row, jnp.float32), order=order)
    np.testing.assert_allclose(p, expected, rtol=1e-6)
    with np.errstate(divide="ignore"):
        np.testing.assert_allclose(logp, np.log(expected), rtol=1e-6)
    for grad in grads:  # the limit is a constant: zero gradient, not NaN
        np.testing.assert_array_equal(grad, np.zeros(5))


@probe("value", *TAYLOR_NAMES)
@pytest.mark.parametrize("order", [2, 4])
@pytest.mark.parametrize("value", [-7.5, 0.0, 3.0, 1e30])
def test_taylor_row_of_equal_values_is_uniform(order, value):
    p, logp, grads = _taylor_both(jnp.full(5, value, jnp.float32), order=order)
    np.testing.assert_allclose(p, np.full(5, 0.2), rtol=1e-6)
    np.testing.assert_allclose(logp, np.full(5, -np.log(5)), rtol=1e-6)
    assert all(bool(jnp.isfinite(g).all()) for g in grads)


@probe("value", *TAYLOR_NAMES)
@pytest.mark.parametrize("row", [[1e30, -1e30, 0.0, 1.0, 2.0], [3e38, 1.0, -2.0, -3e38, 5.0]])
def test_taylor_huge_finite_logits_match_float64(row):
    # p_i = f_2(x_i) / sum_j f_2(x_j); f_2(1e30) ~ 5e59 overflows float32 but not float64.
    ref = _taylor_f64(row, 2)
    ref = ref / ref.sum()
    p, logp, _ = _taylor_both(jnp.asarray(row, jnp.float32), order=2)
    np.testing.assert_allclose(np.asarray(p, np.float64), ref, rtol=1e-5, atol=1e-30)
    assert bool(jnp.isfinite(logp).all())


@probe("value", *TAYLOR_NAMES)
@pytest.mark.parametrize("fn", TAYLORS, ids=_name)
def test_taylor_empty_batch(fn):
    out = fn(jnp.zeros((0, 3)))
    assert out.shape == (0, 3) and out.dtype == jnp.float32


_entries = st.one_of(st.floats(-30.0, 30.0), st.sampled_from([-INF, INF]))


@probe("value", "activations.taylor_softmax")
@given(x=arrays(np.float64, (5,), elements=_entries))
def test_taylor_with_random_infinities_property(x):
    # One compilation; the limit is 1/m at the m infinite entries, else the float64 formula.
    got = np.asarray(_taylor_both(jnp.asarray(x, jnp.float32), order=2)[0], np.float64)
    infinite = np.isinf(x)
    if infinite.any():
        ref = infinite / infinite.sum()
    else:
        ref = _taylor_f64(x, 2) / _taylor_f64(x, 2).sum()
    np.testing.assert_allclose(got, ref, rtol=2e-5, atol=1e-7)


# ----------------------------------------------------------------------------- top-k softmax


@probe("error", "activations.topk_softmax")
@pytest.mark.parametrize("k", [0, -1])
def test_topk_k_must_be_positive(k):
    with raises(ValueError, "k", f"got {k}"):
        topk_softmax(jnp.zeros((2, 5)), k)


@probe("error", "activations.topk_softmax")
@pytest.mark.parametrize("k", [2.5, True, np.float32(2.0), "2", jnp.array(2)])
def test_topk_k_must_be_a_python_int(k):
    with raises(TypeError, "k"):
        topk_softmax(jnp.zeros((2, 5)), k)


@probe("error", "activations.topk_softmax")
@pytest.mark.parametrize("k,axis,size", [(6, -1, 5), (3, 0, 2)])
def test_topk_k_at_most_the_axis_size(k, axis, size):
    with raises(ValueError, "k", f"got {k}", f"<= {size}", "(2, 5)"):
        topk_softmax(jnp.zeros((2, 5)), k, axis=axis)


@probe("error", "activations.topk_softmax")
@pytest.mark.parametrize(
    "x,axis,exc,fragments",
    [
        (np.zeros((2, 5)), 2, ValueError, ("axis", "[-2, 2)", "got 2")),
        (np.zeros((2, 5)), "0", TypeError, ("axis", "'0'")),
        (np.float32(1.0), -1, ValueError, ("x", "at least 1", "()")),
        (np.zeros(5, np.complex64), -1, TypeError, ("x", "complex64")),
        (np.zeros(5, bool), -1, TypeError, ("x", "bool")),
    ],
)
def test_topk_bad_x_and_axis(x, axis, exc, fragments):
    with raises(exc, *fragments):
        topk_softmax(x, 1, axis=axis)


def _masked_softmax_ref(row, k):
    """float64: softmax over the k largest finite entries; -inf entries get 0."""
    row = np.asarray(row, np.float64)
    order = sorted(range(row.size), key=lambda i: (-row[i], i))[:k]
    out = np.zeros(row.size)
    kept = [i for i in order if np.isfinite(row[i])]
    e = np.exp(row[kept] - row[kept].max())
    out[kept] = e / e.sum()
    return out


@jax.jit(static_argnums=1)
def _topk_and_grad(x, k):
    return topk_softmax(x, k), jax.grad(lambda v: jnp.sum(topk_softmax(v, k)[..., 0]))(x)


@probe("value", "activations.topk_softmax")
@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize(
    "row",
    [[-INF, 1.0, -INF, 2.0], [0.5, -INF, -INF, -INF], [-3e38, -INF, 3e38, 0.0]],
)
def test_topk_masked_entries_get_zero(k, row):
    p, grad = _topk_and_grad(jnp.asarray(row, jnp.float32), k)
    np.testing.assert_allclose(p, _masked_softmax_ref(row, k), atol=1e-7)
    assert bool(jnp.isfinite(grad).all())


@probe("value", "activations.topk_softmax")
@pytest.mark.parametrize("k", [1, 2, 4])
def test_topk_all_masked_row_is_uniform_over_k(k):
    # The limit of k-sparse softmax over equal logits -t, t -> inf: 1/k on the first k.
    p, grad = _topk_and_grad(jnp.full(4, -INF), k)
    np.testing.assert_allclose(p, np.where(np.arange(4) < k, 1.0 / k, 0.0), rtol=1e-6)
    np.testing.assert_array_equal(grad, np.zeros(4))


@probe("value", "activations.topk_softmax")
@pytest.mark.parametrize("k", [1, 3, 4])
def test_topk_positive_infinities_share_the_mass(k):
    # exp(+inf) dominates: equal shares among the +inf entries that are kept.
    p, grad = _topk_and_grad(jnp.array([INF, 1.0, INF, 2.0]), k)
    kept_inf = min(k, 2)
    expected = np.array([1.0, 0.0, 1.0 if k > 1 else 0.0, 0.0]) / kept_inf
    np.testing.assert_allclose(p, expected, rtol=1e-6)
    np.testing.assert_array_equal(grad, np.zeros(4))


@probe("value", "activations.topk_softmax")
def test_topk_empty_batch_and_integer_logits():
    fn = jax.jit(topk_softmax, static_argnums=1)
    assert fn(jnp.zeros((0, 4)), 2).shape == (0, 4)
    p = fn(jnp.array([1, 3, 0, 2]), 2)  # integer logits give float32
    assert p.dtype == jnp.float32
    np.testing.assert_allclose(p, _masked_softmax_ref([1, 3, 0, 2], 2), rtol=1e-6)
