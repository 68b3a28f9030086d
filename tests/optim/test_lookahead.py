"""lookahead against the paper's two nested loops written in NumPy (float64)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxtricks.optim import LookaheadState, ema_params, ema_weights, lookahead

A = np.array([[3.0, 0.5], [0.5, 1.0]])  # quadratic ½θᵀAθ − bᵀθ
B = np.array([1.0, -2.0])


def _grad(theta):
    return theta @ A - B


def _numpy_lookahead(theta0, lr, momentum, k, alpha, periods):
    """Zhang et al., Algorithm 1: slow φ₀ = θ₀; k heavy-ball steps from φ; φ += α(θ − φ).

    The momentum buffer is carried across periods (not reset), as our wrapper keeps the
    inner state."""
    slow = theta0.copy()
    theta, velocity = theta0.copy(), np.zeros_like(theta0)
    trajectory = []
    for _ in range(periods):
        for _ in range(k):
            velocity = momentum * velocity + _grad(theta)
            theta = theta - lr * velocity
            trajectory.append(theta.copy())
        slow = slow + alpha * (theta - slow)
        theta = slow.copy()
        trajectory[-1] = theta.copy()
    return np.stack(trajectory), slow


def _run(tx, theta0, steps):
    params = jnp.asarray(theta0)
    state = tx.init(params)
    trajectory = []
    for _ in range(steps):
        updates, state = tx.update(_grad(params), state, params)
        params = optax.apply_updates(params, updates)
        trajectory.append(params)
    return jnp.stack(trajectory), state


@pytest.mark.parametrize("k", [1, 3])
@given(
    alpha=st.one_of(st.just(0.0), st.floats(0.05, 1.0)),  # 0 is allowed: slow stays at start
    lr=st.floats(0.01, 0.2),
    momentum=st.floats(0.0, 0.9),
    start=st.tuples(st.floats(-2, 2), st.floats(-2, 2)),
)
def test_equals_numpy_nested_loops(x64, k, alpha, lr, momentum, start):
    theta0 = np.array(start)
    periods = 4
    want, slow = _numpy_lookahead(theta0, lr, momentum, k, alpha, periods)
    tx = lookahead(optax.sgd(lr, momentum=momentum), sync_period=k, slow_step_size=alpha)
    got, state = _run(tx, theta0, k * periods)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(state.slow, slow, rtol=1e-12, atol=1e-12)
    assert int(state.steps_since_sync) == 0


def test_alpha_one_equals_fast_optimizer(x64):
    theta0 = np.array([0.3, -1.2])
    got, _ = _run(lookahead(optax.adam(0.05), 4, 1.0), theta0, 20)
    want, _ = _run(optax.adam(0.05), theta0, 20)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)


def test_slow_starts_at_initial_params(x64):
    theta0 = np.array([0.5, -0.25])
    tx = lookahead(optax.sgd(0.1), sync_period=2, slow_step_size=0.5)
    state = tx.init(jnp.asarray(theta0))
    assert isinstance(state, LookaheadState)
    np.testing.assert_array_equal(state.slow, theta0)
    traj, state = _run(tx, theta0, 2)
    fast = theta0 - 0.1 * _grad(theta0)
    fast = fast - 0.1 * _grad(fast)
    # Starting the slow weights at zero (bert4keras) would give 0.5 * fast instead.
    np.testing.assert_allclose(traj[-1], theta0 + 0.5 * (fast - theta0), rtol=1e-14)


def test_inject_hyperparams_equals_plain(x64):
    theta0 = np.array([1.0, 1.0])
    plain, _ = _run(lookahead(optax.sgd(0.1), 3, 0.4), theta0, 7)
    make = optax.inject_hyperparams(lookahead, static_args=("inner",))
    injected, state = _run(make(optax.sgd(0.1), sync_period=3, slow_step_size=0.4), theta0, 7)
    np.testing.assert_allclose(injected, plain, rtol=1e-14)
    assert float(state.hyperparams["slow_step_size"]) == 0.4


def test_ema_after_lookahead_sees_the_synced_params():
    tx = optax.chain(lookahead(optax.sgd(0.1), 2, 0.5), ema_params(0.0))
    traj, state = _run(tx, np.array([1.0, 2.0], np.float32), 4)
    np.testing.assert_array_equal(ema_weights(state), traj[-1])


def test_extra_args_reach_inner():
    seen = {}

    def update(updates, state, params=None, **extra):
        seen.update(extra)
        return updates, state

    tx = lookahead(optax.GradientTransformationExtraArgs(optax.init_empty_state, update))
    tx.update(jnp.ones(2), tx.init(jnp.ones(2)), jnp.ones(2), value=1.0)
    assert seen == {"value": 1.0}


def test_jit_equals_eager():
    tx = lookahead(optax.adam(0.05), 2, 0.5)
    eager, _ = _run(tx, np.array([0.3, -1.2], np.float32), 5)
    params, state = jnp.array([0.3, -1.2]), tx.init(jnp.array([0.3, -1.2]))
    step = jax.jit(tx.update)
    for i in range(5):
        updates, state = step(jnp.asarray(_grad(params), jnp.float32), state, params)
        params = optax.apply_updates(params, updates)
        chex.assert_trees_all_close(params, eager[i], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_dtypes(dtype):
    tx = lookahead(optax.adam(0.1), 2, 0.5)
    params = jnp.ones(3, dtype)
    state = tx.init(params)
    dtypes = jax.tree.map(lambda x: x.dtype, state)
    step = jax.jit(tx.update)
    for _ in range(2):  # the second step synchronises
        updates, state = step(jnp.ones(3, dtype), state, params)
        params = optax.apply_updates(params, updates)
        assert updates.dtype == dtype
        assert jax.tree.map(lambda x: x.dtype, state) == dtypes


def test_state_sharding(mesh8):
    sharding = NamedSharding(mesh8, P("data"))
    params = jax.device_put(jnp.arange(16.0).reshape(8, 2), sharding)
    tx = lookahead(optax.sgd(0.1, momentum=0.9), 2, 0.5)
    state = tx.init(params)
    step = jax.jit(tx.update)
    for _ in range(2):
        updates, state = step(params, state, params)
        params = optax.apply_updates(params, updates)
    for leaf in (state.slow, state.inner_state[0].trace, params):
        assert leaf.sharding.is_equivalent_to(sharding, 2)


def test_errors():
    with pytest.raises(ValueError, match="sync_period must be a positive int, got 0"):
        lookahead(optax.sgd(0.1), 0)
    with pytest.raises(TypeError, match="sync_period must be a positive int, got 2.5"):
        lookahead(optax.sgd(0.1), 2.5)
    with pytest.raises(TypeError, match="sync_period must be a positive int, got True"):
        lookahead(optax.sgd(0.1), True)
    for alpha in (-0.5, 1.5):
        with pytest.raises(ValueError, match=r"slow_step_size must be in \[0, 1\]"):
            lookahead(optax.sgd(0.1), 5, alpha)
    tx = lookahead(optax.sgd(0.1))
    with pytest.raises(ValueError, match="params .* must be given"):
        tx.update(jnp.ones(2), tx.init(jnp.ones(2)))
