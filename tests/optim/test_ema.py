"""ema_params / ema_weights against the closed-form weighted sum, in float64."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxtricks.optim import EmaParamsState, accumulate, ema_params, ema_weights, lookahead

T = 7


def _reference(thetas: np.ndarray, decay: float, debias: bool) -> np.ndarray:
    """thetas[0] is θ₀ (init), thetas[1:] the params after each update."""
    steps = len(thetas) - 1
    weights = np.array([(1 - decay) * decay ** (steps - t) for t in range(1, steps + 1)])
    total = np.tensordot(weights, thetas[1:], axes=1)
    if debias:
        return total / (1 - decay**steps)
    return decay**steps * thetas[0] + total


def _feed(tx, thetas):
    """Runs ``tx`` on the updates that move the params along ``thetas``."""
    params = jnp.asarray(thetas[0])
    state = tx.init(params)
    for theta in thetas[1:]:
        updates = jnp.asarray(theta) - params
        out, state = tx.update(updates, state, params)
        np.testing.assert_array_equal(out, updates)  # passed through unchanged
        params = optax.apply_updates(params, out)
    return out, state


@given(
    decay=st.floats(0.0, 0.999),
    seed=st.integers(0, 2**16),
    debias=st.booleans(),
)
def test_equals_weighted_sum(x64, decay, seed, debias):
    thetas = np.random.default_rng(seed).normal(size=(T + 1, 3, 2))
    _, state = _feed(ema_params(decay, debias=debias), thetas)
    np.testing.assert_allclose(
        ema_weights(state), _reference(thetas, decay, debias), rtol=1e-10, atol=1e-12
    )
    assert int(state.count) == T


@pytest.mark.parametrize("debias", [True, False])
def test_before_any_update_is_initial_params(debias):
    params = {"w": jnp.arange(3.0)}
    chex.assert_trees_all_equal(ema_weights(ema_params(0.9, debias=debias).init(params)), params)


def test_decay_close_to_one_is_the_mean(x64):
    thetas = np.random.default_rng(1).normal(size=(T + 1, 4))
    _, state = _feed(ema_params(1 - 1e-9), thetas)
    # d → 1 with bias correction is the plain mean of θ_1..θ_T.
    np.testing.assert_allclose(ema_weights(state), thetas[1:].mean(0), rtol=1e-6)


def _chain_state(tx, params, steps=3):
    state = tx.init(params)
    for _ in range(steps):
        updates, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
        params = optax.apply_updates(params, updates)
    return params, state


@pytest.mark.parametrize(
    "make",
    [
        lambda: optax.chain(optax.sgd(0.1), ema_params(0.0)),
        lambda: optax.inject_hyperparams(
            lambda decay: optax.chain(optax.sgd(0.1), ema_params(decay))
        )(decay=0.0),
        lambda: optax.chain(lookahead(optax.sgd(0.1), 2, 0.5), ema_params(0.0)),
        lambda: optax.MultiSteps(optax.chain(optax.sgd(0.1), ema_params(0.0)), 1),
        lambda: accumulate(optax.chain(optax.sgd(0.1), ema_params(0.0)), every_k=1),
        lambda: optax.chain(
            optax.masked(optax.chain(optax.sgd(0.1), ema_params(0.0)), {"a": True})
        ),
    ],
    ids=["chain", "inject_hyperparams", "after_lookahead", "multisteps", "accumulate", "masked"],
)
def test_found_in_nested_states(make):
    # decay 0 keeps exactly the latest params, wherever the state sits.
    params, state = _chain_state(make(), {"a": jnp.zeros(2)})
    chex.assert_trees_all_close(ema_weights(state), params)


def test_inject_hyperparams_decay_equals_plain(x64):
    thetas = np.random.default_rng(2).normal(size=(T + 1, 3))
    _, plain = _feed(ema_params(0.7), thetas)
    _, injected = _feed(optax.inject_hyperparams(ema_params)(0.7), thetas)
    np.testing.assert_allclose(ema_weights(injected), ema_weights(plain), rtol=1e-12)


def test_nnx_optimizer():
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.chain(optax.sgd(0.1), ema_params(0.0)), wrt=nnx.Param)
    grads = nnx.grad(lambda m: jnp.sum(m(jnp.ones((1, 3))) ** 2))(model)
    optimizer.update(model, grads)
    averaged = ema_weights(nnx.as_pure(optimizer.opt_state))
    chex.assert_trees_all_close(averaged, nnx.as_pure(nnx.state(model, nnx.Param)))


def test_jit_equals_eager():
    tx = optax.chain(optax.adam(0.1), ema_params(0.9))
    params = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3)}
    grads = {"w": jnp.cos(jnp.arange(6.0)).reshape(2, 3)}

    def run(update):
        state, p = tx.init(params), params
        for _ in range(3):
            u, state = update(grads, state, p)
            p = optax.apply_updates(p, u)
        return ema_weights(state)

    chex.assert_trees_all_close(run(jax.jit(tx.update)), run(tx.update), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "param_dtype,ema_dtype,want",
    [
        (jnp.float32, None, jnp.float32),
        (jnp.bfloat16, None, jnp.bfloat16),
        (jnp.bfloat16, jnp.float32, jnp.float32),
    ],
)
def test_dtypes(param_dtype, ema_dtype, want):
    tx = ema_params(0.9, ema_dtype=ema_dtype)
    params = jnp.ones(4, param_dtype)
    state = tx.init(params)
    updates, state = jax.jit(tx.update)(jnp.full(4, 0.5, param_dtype), state, params)
    assert updates.dtype == param_dtype and state.ema.dtype == want
    assert state.count.dtype == jnp.int32


def test_float32_average_keeps_small_steps_for_bf16_params():
    # Each step changes the bf16 param by 2**-7; a bf16 average with d = 0.999 cannot move.
    tx = ema_params(0.999, ema_dtype=jnp.float32)
    bf16 = ema_params(0.999, debias=False)
    params = jnp.ones(1, jnp.bfloat16)
    s32, s16 = tx.init(params), bf16.init(params)
    step = jnp.full(1, 2.0**-7, jnp.bfloat16)
    for _ in range(20):
        _, s32 = tx.update(step, s32, params)
        _, s16 = bf16.update(step, s16, params)
        params = optax.apply_updates(params, step)
    assert float(s16.ema[0]) == 1.0  # stalled
    assert float(s32.ema[0]) > 1.0


def test_state_sharding(mesh8):
    sharding = NamedSharding(mesh8, P("data"))
    params = jax.device_put(jnp.arange(16.0).reshape(8, 2), sharding)
    tx = optax.chain(optax.sgd(0.1), ema_params(0.9))
    state = tx.init(params)
    _, state = jax.jit(tx.update)(params, state, params)
    assert ema_weights(state).sharding.is_equivalent_to(sharding, 2)


@pytest.mark.parametrize("decay", [-0.1, 1.5, jnp.asarray(1.5)])
def test_bad_decay(decay):
    with pytest.raises(ValueError, match=r"decay must be in \[0, 1\]"):
        ema_params(decay)


def test_bad_ema_dtype():
    with pytest.raises(TypeError, match="ema_dtype must be a floating or complex dtype, got int32"):
        ema_params(0.9, ema_dtype=jnp.int32)


def test_needs_params():
    tx = ema_params(0.9)
    with pytest.raises(ValueError, match="params must be given"):
        tx.update(jnp.ones(2), tx.init(jnp.ones(2)))


def test_decay_one_is_the_running_mean_or_the_start(x64):
    # The d -> 1 limit of c_t = (1 - d) / (1 - d^t) is 1/t: Polyak's uniform average.
    thetas = np.cumsum(np.random.default_rng(0).standard_normal((6, 3)), axis=0)
    for debias, want in ((True, thetas.mean(axis=0)), (False, np.zeros(3))):
        tx = ema_params(1.0, debias=debias)
        params = jnp.zeros(3)
        state = tx.init(params)
        for theta in thetas:
            _, state = tx.update(jnp.asarray(theta) - params, state, params)
            params = jnp.asarray(theta)
        np.testing.assert_allclose(np.asarray(ema_weights(state)), want, rtol=1e-14, atol=1e-15)


def test_none_or_several_found():
    with pytest.raises(ValueError, match="found 0"):
        ema_weights(optax.adam(0.1).init(jnp.ones(2)))
    two = optax.chain(ema_params(0.9), ema_params(0.5))
    with pytest.raises(ValueError, match="found 2"):
        ema_weights(two.init(jnp.ones(2)))
    assert isinstance(ema_params(0.9).init(jnp.ones(2)), EmaParamsState)
