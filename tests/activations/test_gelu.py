"""GELU and its tanh / sigmoid approximations against float64 NumPy references."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from jax.test_util import check_grads

from jaxtricks.activations import gelu_erf, gelu_sigmoid, gelu_tanh
from jaxtricks.reproduce import post_7309_gelu

FUNCS = [gelu_erf, gelu_tanh, gelu_sigmoid]


def _ref_erf(x):
    phi = np.array([0.5 * (1.0 + math.erf(v / math.sqrt(2.0))) for v in np.ravel(x)])
    return x * phi.reshape(np.shape(x))


def _ref_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def _ref_sigmoid(x):
    return x / (1.0 + np.exp(-1.702 * x))


REFS = {gelu_erf: _ref_erf, gelu_tanh: _ref_tanh, gelu_sigmoid: _ref_sigmoid}
values = arrays(np.float64, (16,), elements=st.floats(-30.0, 30.0))


@pytest.mark.parametrize("fn", FUNCS, ids=lambda f: f.__name__)
@given(x=values)
def test_matches_float64_reference(x64, fn, x):
    got = np.asarray(fn(jnp.asarray(x)))
    np.testing.assert_allclose(got, REFS[fn](x), rtol=1e-12, atol=1e-14)


def test_erf_and_tanh_forms_are_jax_nn_gelu():
    # Bit for bit at every finite input, around the tanh form's clip at |x| = 10 included.
    edges = [9.99, 10.0, 10.01, 50.0, 1e4, 1e30, 3e38]
    x = jnp.concatenate([jnp.linspace(-6.0, 6.0, 101), jnp.array(edges + [-e for e in edges])])
    np.testing.assert_array_equal(gelu_erf(x), jax.nn.gelu(x, approximate=False))
    np.testing.assert_array_equal(gelu_tanh(x), jax.nn.gelu(x, approximate=True))
    # jax.nn.gelu's default is the tanh form (PyTorch's default is erf).
    np.testing.assert_array_equal(gelu_tanh(x), jax.nn.gelu(x))


def test_approximation_errors_have_the_documented_size(x64):
    x = np.linspace(-8.0, 8.0, 16001)
    exact = _ref_erf(x)
    tanh_err = np.max(np.abs(np.asarray(gelu_tanh(jnp.asarray(x))) - exact))
    sigmoid_err = np.max(np.abs(np.asarray(gelu_sigmoid(jnp.asarray(x))) - exact))
    assert 4.6e-4 < tanh_err < 4.8e-4
    assert 0.0198 < sigmoid_err < 0.0208


@pytest.mark.parametrize("fn", FUNCS, ids=lambda f: f.__name__)
def test_gradients(x64, fn):
    x = jnp.array([-4.0, -1.3, -0.2, 0.0, 0.7, 2.5, 5.0])
    check_grads(jax.jit(fn), (x,), order=2, modes=("fwd", "rev"))


@pytest.mark.parametrize("fn", FUNCS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_dtype_kept_and_close_to_float32(fn, dtype):
    x = jnp.linspace(-5.0, 5.0, 41)
    y = fn(x.astype(dtype))
    assert y.dtype == dtype
    tol = 2e-2 if dtype == jnp.bfloat16 else 1e-6
    np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(fn(x)), atol=tol, rtol=tol)


@pytest.mark.parametrize("fn", FUNCS, ids=lambda f: f.__name__)
def test_jit_equals_eager_and_large_inputs_finite(fn):
    x = jnp.array([[-1e4, -3.0, 0.0], [0.5, 3.0, 1e4]])
    np.testing.assert_allclose(jax.jit(fn)(x), fn(x), rtol=1e-6)
    y = fn(x)
    assert bool(jnp.isfinite(y).all())
    assert float(y[0, 0]) == 0.0 and float(y[1, 2]) == 1e4  # GELU -> 0 and -> x at the ends


@pytest.mark.parametrize("c", post_7309_gelu.CLAIMS, ids=lambda c: c.name)
def test_claims_hold(c):
    assert c.fn().ok
