"""repetition_rate."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from jax.test_util import check_grads

from jaxtricks.numerics import repetition_rate


def _np_transitions(logits):
    """Softmax rows over n + 1 tokens with the last (eos) row and column dropped."""
    logits = np.asarray(logits, np.float64)
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True))[..., :-1, :-1]


def _np_rate(p):
    q = np.asarray(p, np.float64) ** 2
    return np.trace(np.linalg.inv(np.eye(q.shape[-1]) - q) - np.eye(q.shape[-1]))


def _np_series(p, terms=200):
    q = np.asarray(p, np.float64) ** 2
    power, total = np.eye(q.shape[0]), 0.0
    for _ in range(terms):
        power = power @ q
        total += np.trace(power)
    return total


def test_equals_the_inverse_formula_the_series_and_the_eigenvalues(x64):
    p = _np_transitions(np.random.default_rng(0).standard_normal((9, 9)) * 2)
    r = float(repetition_rate(p))
    lam = np.linalg.eigvals(p * p)
    np.testing.assert_allclose(r, _np_rate(p), rtol=1e-12)
    np.testing.assert_allclose(r, _np_series(p), rtol=1e-12)
    np.testing.assert_allclose(r, np.real(np.sum(lam / (1 - lam))), rtol=1e-12)


@given(arrays(np.float32, (7, 7), elements=st.floats(-4, 4, width=32)))
def test_matches_numpy_over_values(logits):
    p = _np_transitions(logits).astype(np.float32)
    np.testing.assert_allclose(repetition_rate(p), _np_rate(p), rtol=1e-4)


def test_uniform_rows_have_the_closed_form():
    # P = J/n (uniform rows, no eos): Q = J/n^2 has eigenvalues 1/n and 0, so R = 1/(n - 1).
    for n in (2, 3, 10):
        np.testing.assert_allclose(repetition_rate(np.full((n, n), 1 / n)), 1 / (n - 1), rtol=1e-6)


def test_small_rates_keep_their_relative_precision():
    # Tr[(I-Q)^-1 Q] has no cancellation: R ~ 1e-9 is still right to float32 precision.
    p = np.full((4, 4), 2e-5, np.float32)
    np.testing.assert_allclose(repetition_rate(p), _np_series(p, terms=3), rtol=1e-5)


def test_batch_jit_vmap():
    logits = np.random.default_rng(1).standard_normal((3, 6, 6)).astype(np.float32)
    p = _np_transitions(logits).astype(np.float32)
    loop = [repetition_rate(p[i]) for i in range(3)]
    np.testing.assert_allclose(repetition_rate(p), loop, rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(repetition_rate)(p), loop, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(repetition_rate)(p), loop, rtol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_dtypes(dtype):
    p = _np_transitions(np.random.default_rng(2).standard_normal((6, 6)))
    got = repetition_rate(jnp.asarray(p, dtype))
    assert got.dtype == dtype
    np.testing.assert_allclose(np.float32(got), _np_rate(p), rtol=3e-2)


def test_differentiable(x64):
    p = _np_transitions(np.random.default_rng(3).standard_normal((5, 5)))
    check_grads(repetition_rate, (p,), order=1)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_divergent_series_give_inf_and_convergent_ones_do_not(dtype):
    # rho(P*P) >= 1 (float64 NumPy eigenvalues): the series of nonnegative traces diverges.
    rng = np.random.default_rng(4)
    cases = [
        np.eye(3),  # every token repeats itself: I - Q singular
        np.roll(np.eye(4), 1, axis=1),  # a deterministic 4-cycle
        np.diag([0.5, 1.2]),
        1.5 * _np_transitions(rng.standard_normal((5, 5))) ** 0.5,
        _np_transitions(rng.standard_normal((5, 5))),  # converges
        0.99 * np.diag([1.0, 0.5]),  # converges, R = 0.9801 / 0.0199 + 0.245025 / 0.754975
    ]
    with jax.enable_x64(dtype == jnp.float64):
        for p in cases:
            radius = np.abs(np.linalg.eigvals(p * p)).max()
            got = float(repetition_rate(jnp.asarray(p, dtype)))
            if radius >= 1:
                assert got == np.inf, (p, radius, got)
            else:
                np.testing.assert_allclose(got, _np_rate(p), rtol=1e-4)


def test_errors():
    with pytest.raises(ValueError, match=r"\(\.\.\., n, n\) square matrices .*got shape \(3, 4\)"):
        repetition_rate(jnp.ones((3, 4)))
    with pytest.raises(ValueError, match="square matrices"):
        repetition_rate(jnp.ones(3))
    with pytest.raises(TypeError, match="P must have a floating dtype"):
        repetition_rate(jnp.eye(3, dtype=jnp.int32))


def test_claims_hold():
    from jaxtricks.reproduce import post_8128_repetition as post

    for c in post.CLAIMS:
        m = c.fn()
        assert m.ok, (c.name, m.measured)
