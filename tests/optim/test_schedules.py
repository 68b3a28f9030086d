"""piecewise_linear_schedule against scale · np.interp with (0, 0) prepended."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxtricks.optim import piecewise_linear_schedule

STEPS = np.concatenate([np.arange(0, 3001, 7), [5000, 10**6]])


def _reference(points, scale, t):
    xs = sorted(points)
    ys = [points[x] for x in xs]
    if xs[0] != 0:
        xs, ys = [0, *xs], [0.0, *ys]
    return scale * np.interp(t, np.asarray(xs, np.float64), np.asarray(ys, np.float64))


values = st.floats(-2.0, 2.0, allow_nan=False)


@given(
    steps=st.sets(st.integers(1, 3000), min_size=1, max_size=4),
    ys=st.lists(values, min_size=5, max_size=5),
    with_zero=st.booleans(),
    scale=st.floats(1e-5, 1.0),
)
def test_equals_scaled_interp(x64, steps, ys, with_zero, scale):
    points = dict(zip(sorted(steps), ys))
    if with_zero:
        points[0] = ys[-1]
    schedule = piecewise_linear_schedule(points, scale)
    got = schedule(jnp.asarray(STEPS))
    np.testing.assert_allclose(got, _reference(points, scale, STEPS), rtol=1e-12, atol=1e-15)
    # Scalar int steps, as optax passes its count.
    for t in (0, 1, max(steps), max(steps) + 1):
        assert float(schedule(t)) == pytest.approx(_reference(points, scale, t), abs=1e-15)


def test_bert4keras_docstring_example():
    # bert4keras: {1000: 1, 2000: 0.1} rises 0 -> 1 over [0, 1000], falls to 0.1 at 2000, holds.
    schedule = piecewise_linear_schedule({1000: 1.0, 2000: 0.1})
    got = [float(schedule(t)) for t in (0, 250, 1000, 1500, 2000, 9999)]
    np.testing.assert_allclose(got, [0.0, 0.25, 1.0, 0.55, 0.1, 0.1], rtol=1e-6)


def test_optax_piecewise_interpolate_cannot_start_at_zero():
    # The documented reason for this function: optax's points multiply the previous value.
    theirs = optax.piecewise_interpolate_schedule("linear", 0.0, {1000: 1.0})
    ours = piecewise_linear_schedule({1000: 1.0})
    assert float(theirs(500)) == 0.0 and float(ours(500)) == pytest.approx(0.5)


def test_as_learning_rate_and_under_jit():
    schedule = piecewise_linear_schedule({2: 1.0, 4: 0.5}, scale=0.1)
    tx = optax.sgd(schedule)
    params, state = jnp.zeros(2), tx.init(jnp.zeros(2))
    step = jax.jit(tx.update)
    for t in range(6):
        updates, state = step(jnp.ones(2), state, params)
        np.testing.assert_allclose(updates, -_reference({2: 1.0, 4: 0.5}, 0.1, t), rtol=1e-6)
    np.testing.assert_array_equal(jax.jit(schedule)(jnp.arange(6)), schedule(jnp.arange(6)))


def test_default_dtype_float32():
    assert piecewise_linear_schedule({10: 1.0})(jnp.int32(3)).dtype == jnp.float32


def test_errors():
    with pytest.raises(ValueError, match="points must not be empty"):
        piecewise_linear_schedule({})
    with pytest.raises(ValueError, match=r"points: step must be an int >= 0, got -5"):
        piecewise_linear_schedule({-5: 1.0, 10: 0.0})
    with pytest.raises(TypeError, match=r"points: step must be an int >= 0, got 2.5"):
        piecewise_linear_schedule({2.5: 1.0})
    with pytest.raises(TypeError, match=r"points\[10\] must be a real number, got 'a'"):
        piecewise_linear_schedule({10: "a"})
    with pytest.raises(TypeError, match="points: step must be an int >= 0, got '10'"):
        piecewise_linear_schedule({"10": 1.0})
    with pytest.raises(ValueError, match=r"points\[10\] must not be NaN, got nan"):
        piecewise_linear_schedule({10: float("nan")})
    with pytest.raises(TypeError, match="points must be a mapping"):
        piecewise_linear_schedule([(10, 1.0)])
    with pytest.raises(TypeError, match="scale must be a real number, got '1e-3'"):
        piecewise_linear_schedule({10: 1.0}, scale="1e-3")
    with pytest.raises(ValueError, match="scale must be finite, got inf"):
        piecewise_linear_schedule({10: 1.0}, scale=float("inf"))
