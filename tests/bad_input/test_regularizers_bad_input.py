"""Bad inputs of jaxtricks.regularizers: named errors, and finite limits on degenerate values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from probes import probe, raises

from jaxtricks.regularizers import (
    fgm_perturbation,
    gradient_penalty,
    vat_direction,
    vat_loss,
    zero_centered_gradient_penalty,
)

KEY = jax.random.key(0)
X = jnp.ones(3)
LINEAR = jnp.array([[1.0, 0.0, 2.0], [0.0, -1.0, 1.0]])


def _logits(v):
    return LINEAR @ v


BAD_NONNEGATIVE = [-1.0, np.nan, np.inf, jnp.array(-0.5), jnp.array(jnp.nan), jnp.array(jnp.inf)]
BAD_KEYS = [
    (0, TypeError, "got 0"),
    (jnp.ones(2), TypeError, "float32"),
    (jax.random.split(KEY, 3), ValueError, "(3,)"),
]
BAD_SIZES = [(-1, ValueError), (2.5, TypeError), (True, TypeError), ("1", TypeError)]


# ------------------------------------------------------------------------- gradient_penalty


@probe("error", "regularizers.gradient_penalty", "regularizers.zero_centered_gradient_penalty")
@pytest.mark.parametrize("fn", [3, None, "f"])
def test_penalty_functions_must_be_callable(fn):
    with raises(TypeError, "f", "callable"):
        gradient_penalty(fn, X, KEY)
    with raises(TypeError, "d_fn", "callable"):
        zero_centered_gradient_penalty(fn, X[None])


@probe("error", "regularizers.gradient_penalty")
@pytest.mark.parametrize("key,exc,fragment", BAD_KEYS)
def test_gradient_penalty_key_must_be_one_prng_key(key, exc, fragment):
    with raises(exc, "key", fragment):
        gradient_penalty(jnp.sin, X, key)


@probe("error", "regularizers.gradient_penalty")
@pytest.mark.parametrize(
    "f,x,exc,argument,fragment",
    [
        (jnp.sin, jnp.arange(3), TypeError, "x", "int32"),
        (jnp.sin, jnp.ones(3, jnp.complex64), TypeError, "x", "complex64"),
        (lambda v: (v, v), X, TypeError, "f", "tuple"),
        (lambda v: jnp.round(v).astype(jnp.int32), X, TypeError, "f(x)", "int32"),
    ],
)
def test_gradient_penalty_needs_floating_arrays(f, x, exc, argument, fragment):
    with raises(exc, argument, fragment):
        gradient_penalty(f, x, KEY)


@probe("value", "regularizers.gradient_penalty")
@pytest.mark.parametrize(
    "f", [lambda v: jnp.zeros(4), lambda v: 0.0 * v, lambda v: jnp.full(2, 3.0)]
)
def test_gradient_penalty_of_a_constant_function_is_zero(f):
    @jax.jit
    def run(x):
        grad = jax.grad(lambda v: gradient_penalty(lambda u: f(u * v), x, KEY))(x)
        return gradient_penalty(f, x, KEY), grad

    penalty, grad = run(X)
    assert float(penalty) == 0.0
    np.testing.assert_array_equal(grad, 0.0)


# ------------------------------------------------------------ zero_centered_gradient_penalty


@probe("error", "regularizers.zero_centered_gradient_penalty")
@pytest.mark.parametrize(
    "d_fn,x,exc,argument,fragment",
    [
        (lambda v: v[:, 0], jnp.ones((3, 2), jnp.int32), TypeError, "x", "int32"),
        (lambda v: v, jnp.ones(()), ValueError, "x", "()"),
        (lambda v: v, jnp.ones((3, 2)), ValueError, "d_fn(x)", "(3, 2)"),
        (lambda v: v[:, 0].astype(jnp.int32), jnp.ones((3, 2)), TypeError, "d_fn(x)", "int32"),
    ],
)
def test_zero_centered_shapes_and_dtypes(d_fn, x, exc, argument, fragment):
    with raises(exc, argument, fragment):
        zero_centered_gradient_penalty(d_fn, x)


@probe("value", "regularizers.zero_centered_gradient_penalty")
@pytest.mark.parametrize("shape", [(0, 3), (0, 2, 2)])
def test_zero_centered_empty_batch_is_zero(shape):
    w = jnp.arange(1.0, 1.0 + np.prod(shape[1:]))

    def d_fn(v):
        return v.reshape(v.shape[0], w.shape[0]) @ w

    assert float(zero_centered_gradient_penalty(d_fn, jnp.ones(shape))) == 0.0
    assert (
        float(
            jax.grad(
                lambda s: zero_centered_gradient_penalty(lambda v: s * d_fn(v), jnp.ones(shape))
            )(1.0)
        )
        == 0.0
    )


@probe("value", "regularizers.zero_centered_gradient_penalty")
def test_zero_centered_constant_critic_is_zero():
    assert (
        float(zero_centered_gradient_penalty(lambda v: jnp.zeros(v.shape[0]), jnp.ones((4, 2))))
        == 0.0
    )


# ------------------------------------------------------------------------- fgm_perturbation


@probe("error", "regularizers.fgm_perturbation")
@pytest.mark.parametrize("epsilon", BAD_NONNEGATIVE)
def test_fgm_epsilon_finite_and_nonnegative(epsilon):
    with raises(ValueError, "epsilon"):
        fgm_perturbation(X, epsilon)


@probe("error", "regularizers.fgm_perturbation")
@pytest.mark.parametrize(
    "grad,epsilon,exc,argument,fragment",
    [
        (X, True, TypeError, "epsilon", "True"),
        (X, "1", TypeError, "epsilon", "'1'"),
        (X, jnp.ones(2), ValueError, "epsilon", "(2,)"),
        (jnp.ones(3, jnp.int32), 1.0, TypeError, "grad", "int32"),
        ({"a": X, "b": jnp.ones(2, bool)}, 1.0, TypeError, "grad", "bool"),
    ],
)
def test_fgm_types_and_shapes(grad, epsilon, exc, argument, fragment):
    with raises(exc, argument, fragment):
        fgm_perturbation(grad, epsilon)


_jit_fgm = jax.jit(fgm_perturbation)


def _np_unit(g):
    g = np.asarray(g, np.float64)
    return g / np.sqrt(np.sum(g**2))


@probe("value", "regularizers.fgm_perturbation")
@pytest.mark.parametrize("scale", [1e-30, 1e-10, 1e20, 1e37, 3e38])
def test_fgm_any_finite_scale_has_norm_epsilon(scale):
    # The squared norm of 1e20 overflows float32; the result must not depend on the scale.
    base = np.array([0.3, -0.4, 0.1, 0.0, 0.9], np.float32) / np.float32(0.9)
    grad = jnp.asarray(base * np.float32(scale))
    got = _jit_fgm(grad, 2.0)
    np.testing.assert_allclose(got, 2.0 * _np_unit(base), rtol=2e-6, atol=1e-7)
    tree = _jit_fgm({"a": grad[:2], "b": [grad[2:]]}, 2.0)
    np.testing.assert_allclose(np.concatenate([tree["a"], tree["b"][0]]), got, rtol=1e-6)


@given(st.integers(-35, 37), st.floats(0.0, 10.0))
def test_fgm_norm_is_epsilon_over_scales(exponent, epsilon):
    grad = jnp.asarray(np.array([1.0, -2.0, 3.0], np.float32) * np.float32(10.0**exponent))
    got = np.asarray(_jit_fgm(grad, epsilon), np.float64)
    np.testing.assert_allclose(np.linalg.norm(got), epsilon, rtol=1e-6, atol=1e-30)


test_fgm_norm_is_epsilon_over_scales = probe("value", "regularizers.fgm_perturbation")(
    test_fgm_norm_is_epsilon_over_scales
)


@probe("value", "regularizers.fgm_perturbation")
@pytest.mark.parametrize(
    "grad,want",
    [
        (jnp.zeros(3), [0.0, 0.0, 0.0]),
        (jnp.array([jnp.inf, 1.0, -jnp.inf]), [2**-0.5, 0.0, -(2**-0.5)]),
        (jnp.array([0.0, -jnp.inf, 5.0]), [0.0, -1.0, 0.0]),
    ],
)
def test_fgm_zero_and_infinite_gradients_give_the_limit(grad, want):
    value, jac = _fgm_and_jacobian(grad)
    np.testing.assert_allclose(value, want, rtol=1e-6)
    assert np.all(np.isfinite(jac))


@jax.jit
def _fgm_and_jacobian(grad):
    return fgm_perturbation(grad, 1.0), jax.jacobian(lambda g: fgm_perturbation(g, 1.0))(grad)


# --------------------------------------------------------------------- vat_direction/vat_loss

VAT = [vat_direction, vat_loss]


@probe("error", "regularizers.vat_direction", "regularizers.vat_loss")
@pytest.mark.parametrize("fn", VAT)
@pytest.mark.parametrize("apply_fn", [3, None, LINEAR])
def test_vat_apply_fn_must_be_callable(fn, apply_fn):
    with raises(TypeError, "apply_fn", "callable"):
        fn(apply_fn, X, KEY)


@probe("error", "regularizers.vat_direction", "regularizers.vat_loss")
@pytest.mark.parametrize("fn", VAT)
@pytest.mark.parametrize("num_iters,exc", BAD_SIZES)
def test_vat_num_iters_is_an_int_at_least_zero(fn, num_iters, exc):
    with raises(exc, "num_iters", repr(num_iters)):
        fn(_logits, X, KEY, num_iters=num_iters)


@probe("error", "regularizers.vat_direction", "regularizers.vat_loss")
@pytest.mark.parametrize("fn", VAT)
@pytest.mark.parametrize("key,exc,fragment", BAD_KEYS)
def test_vat_key_must_be_one_prng_key(fn, key, exc, fragment):
    with raises(exc, "key", fragment):
        fn(_logits, X, key)


@probe("error", "regularizers.vat_direction", "regularizers.vat_loss")
@pytest.mark.parametrize("fn", VAT)
@pytest.mark.parametrize(
    "apply_fn,x,exc,argument,fragment",
    [
        (_logits, jnp.ones(3, jnp.int32), TypeError, "x", "int32"),
        (_logits, jnp.ones(3, jnp.complex64), TypeError, "x", "complex64"),
        (jnp.sum, X, ValueError, "apply_fn(x)", "()"),
        (lambda v: (v > 0).astype(jnp.int32), X, TypeError, "apply_fn(x)", "int32"),
    ],
)
def test_vat_inputs_and_logits(fn, apply_fn, x, exc, argument, fragment):
    with raises(exc, argument, fragment):
        fn(apply_fn, x, KEY)


@probe("error", "regularizers.vat_loss")
@pytest.mark.parametrize("name", ["epsilon", "xi"])
@pytest.mark.parametrize("value", BAD_NONNEGATIVE + [True])
def test_vat_loss_epsilon_and_xi(name, value):
    exc = TypeError if value is True else ValueError
    with raises(exc, name):
        vat_loss(_logits, X, KEY, **{name: value})


@probe("error", "regularizers.vat_loss")
@pytest.mark.parametrize("xi", [0.0, jnp.array(0.0)])
def test_vat_loss_xi_must_be_positive(xi):
    with raises(ValueError, "xi", "> 0"):
        vat_loss(_logits, X, KEY, xi=xi)


@probe("value", "regularizers.vat_direction", "regularizers.vat_loss")
@pytest.mark.parametrize(
    "apply_fn", [lambda v: jnp.array([1.0, 2.0]) + 0.0 * v[0], lambda v: jnp.zeros(4)]
)
def test_vat_zero_hessian_product_gives_zero_direction_and_loss(apply_fn):
    @jax.jit
    def run(x):
        loss, grad = jax.value_and_grad(lambda v: vat_loss(apply_fn, v, KEY))(x)
        return vat_direction(apply_fn, x, KEY, num_iters=2), loss, grad

    d, loss, grad = run(X)
    np.testing.assert_array_equal(d, 0.0)
    assert float(loss) == 0.0
    assert np.all(np.isfinite(grad))


@probe("value", "regularizers.vat_direction")
@pytest.mark.parametrize("scale", [1e-15, 1e15])
def test_vat_direction_of_a_tiny_or_huge_hessian_is_the_power_step(scale):
    # H = s^2 L^T (diag p - p p^T) L with p uniform at x = 0: 1e-30 (its squares underflow)
    # or 1e30 (they overflow); the direction is H d0 / |H d0| whatever s.
    d0 = np.asarray(jax.random.normal(KEY, (3,), jnp.float32), np.float64)
    lin = np.asarray(LINEAR, np.float64)
    h = lin.T @ (np.diag([0.5, 0.5]) - 0.25) @ lin
    want = h @ (d0 / np.linalg.norm(d0))
    got = jax.jit(lambda x: vat_direction(lambda v: scale * (LINEAR @ v), x, KEY))(jnp.zeros(3))
    np.testing.assert_allclose(got, want / np.linalg.norm(want), rtol=1e-5, atol=1e-6)


@probe("value", "regularizers.vat_loss")
def test_vat_loss_epsilon_zero_is_zero():
    # epsilon 0, traced under jit (so unchecked): no perturbation, no divergence.
    loss = jax.jit(lambda x, eps: vat_loss(_logits, x, KEY, epsilon=eps))
    assert float(loss(X, 0.0)) == 0.0
    assert float(loss(X, jnp.array(0.0))) == 0.0
