"""Bad inputs of jaxtricks.attribution: named errors, and finite limits on degenerate values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from probes import probe, raises

from jaxtricks.attribution import integrated_gradients

IG = "attribution.integrated_gradients"
X = jnp.array([1.0, -2.0, 0.5])


def _f(v):
    return jnp.sum(v**2)


@probe("error", IG)
@pytest.mark.parametrize("f", [3, None, "f", X])
def test_f_must_be_callable(f):
    with raises(TypeError, "f", "callable"):
        integrated_gradients(f, X)


@probe("error", IG)
@pytest.mark.parametrize(
    "kwargs,exc,argument",
    [
        ({"steps": 0}, ValueError, "steps"),
        ({"steps": -1}, ValueError, "steps"),
        ({"steps": 2.5}, TypeError, "steps"),
        ({"steps": True}, TypeError, "steps"),
        ({"steps": "50"}, TypeError, "steps"),
        ({"microbatch_size": 0}, ValueError, "microbatch_size"),
        ({"microbatch_size": -3}, ValueError, "microbatch_size"),
        ({"microbatch_size": 1.5}, TypeError, "microbatch_size"),
        ({"microbatch_size": False}, TypeError, "microbatch_size"),
        ({"microbatch_size": jnp.array(4)}, TypeError, "microbatch_size"),
        ({"method": "simpson"}, ValueError, "method"),
        ({"method": "Riemann_Right"}, ValueError, "method"),
        ({"method": None}, ValueError, "method"),
    ],
)
def test_static_arguments(kwargs, exc, argument):
    (value,) = kwargs.values()
    with raises(exc, argument, repr(value)):
        integrated_gradients(_f, X, **kwargs)


@probe("error", IG)
@pytest.mark.parametrize(
    "x,baseline,exc,argument,fragments",
    [
        (X, jnp.zeros(4), ValueError, "baseline", ("(3,)", "(4,)")),
        (X, jnp.zeros((3, 1)), ValueError, "baseline", ("(3,)", "(3, 1)")),
        (X, jnp.zeros(3, jnp.int32), ValueError, "baseline", ("float32", "int32")),
        (X, (jnp.zeros(3),), ValueError, "baseline", ("structure",)),
        ({"a": X}, {"b": X}, ValueError, "baseline", ("structure",)),
        (jnp.ones(3, jnp.int32), None, TypeError, "x", ("int32",)),
        (jnp.ones(3, bool), None, TypeError, "x", ("bool",)),
        ({"a": X, "b": jnp.ones(2, jnp.complex64)}, None, TypeError, "x", ("complex64",)),
        ({}, None, ValueError, "x", ("empty",)),
    ],
)
def test_inputs_and_baseline(x, baseline, exc, argument, fragments):
    with raises(exc, argument, *fragments):
        integrated_gradients(jnp.sin if not isinstance(x, dict) else lambda t: 0.0, x, baseline)


@probe("error", IG)
@pytest.mark.parametrize(
    "f,exc,argument,fragment",
    [
        (lambda v: v * 2.0, ValueError, "f", "(3,)"),
        (lambda v: (jnp.sum(v), jnp.sum(v)), TypeError, "f", "tuple"),
        (lambda v: jnp.sum(v).astype(jnp.int32), TypeError, "f(x)", "int32"),
        (lambda v: jnp.sum(v).astype(jnp.complex64), TypeError, "f(x)", "complex64"),
    ],
)
def test_f_must_return_a_floating_scalar(f, exc, argument, fragment):
    with raises(exc, argument, fragment):
        integrated_gradients(f, X, steps=2)


_ig = jax.jit(integrated_gradients, static_argnames=("f", "steps", "method", "microbatch_size"))


@probe("value", IG)
@pytest.mark.parametrize("method", ["riemann_right", "trapezoid", "gauss_legendre"])
@pytest.mark.parametrize("f", [jnp.linalg.norm, _f, lambda v: jnp.sum(jnp.sqrt(jnp.abs(v)))])
def test_x_equal_to_the_baseline_gives_zero(method, f):
    # Nothing moves: zero attributions and gap, even where the gradient is NaN (norm, sqrt at 0).
    for point in (jnp.zeros(3), X):
        attr, gap = _ig(f, point, point, steps=3, method=method)
        np.testing.assert_array_equal(attr, 0.0)
        assert float(gap) == 0.0


@probe("value", IG)
def test_entries_equal_to_the_baseline_get_zero_and_the_others_their_share():
    # f = |v_0| + v_1^2 + v_2: the first entry stays at the kink 0, where the gradient of
    # |.| is a subgradient; the others get (x_i^2 - b_i^2) and (x_2 - b_2) exactly.
    f = lambda v: jnp.sqrt(v[0] ** 2) + v[1] ** 2 + v[2]  # noqa: E731
    x, base = jnp.array([0.0, 2.0, 3.0]), jnp.array([0.0, -1.0, 1.0])
    attr, gap = _ig(f, x, base, steps=2, method="gauss_legendre")
    np.testing.assert_allclose(attr, [0.0, 4.0 - 1.0, 3.0 - 1.0], rtol=1e-6)
    assert abs(float(gap)) < 1e-5


@probe("value", IG)
@pytest.mark.parametrize("microbatch_size", [1, 3, 4, 1000])
def test_microbatch_size_above_the_nodes_is_all_at_once(microbatch_size):
    # Any slicing gives the same sum; above the number of nodes it is one batch.
    want, want_gap = _ig(_f, X, steps=4, method="trapezoid")
    attr, gap = _ig(_f, X, steps=4, method="trapezoid", microbatch_size=microbatch_size)
    np.testing.assert_allclose(attr, want, rtol=1e-6)
    np.testing.assert_allclose(gap, want_gap, atol=1e-6)
