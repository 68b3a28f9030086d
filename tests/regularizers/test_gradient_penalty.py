"""gradient_penalty (Rademacher estimate) and zero_centered_gradient_penalty."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from jax.test_util import check_grads

from jaxtricks.regularizers import gradient_penalty, zero_centered_gradient_penalty

floats = st.floats(-2.0, 2.0, allow_nan=False, width=32)


def _tanh_layer(w, c):
    return lambda x: jnp.tanh(w @ x + c)


def _np_jacobian_tanh_layer(w, c, x):
    """J_ij = d tanh(w x + c)_i / dx_j in float64 NumPy."""
    w, c, x = (np.asarray(a, np.float64) for a in (w, c, x))
    return (1 - np.tanh(w @ x + c) ** 2)[:, None] * w


def _problem(seed=0, n_out=5, n_in=4):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n_out, n_in)).astype(np.float32)
    c = rng.standard_normal(n_out).astype(np.float32)
    x = rng.standard_normal(n_in).astype(np.float32)
    return w, c, x


# ---------------------------------------------------------------- gradient_penalty


def test_each_sample_is_the_squared_norm_of_the_signed_gradient_sum():
    # One call is ||J^T eta||^2 with eta the documented Rademacher draw of the key.
    w, c, x = _problem()
    jac = _np_jacobian_tanh_layer(w, c, x)
    for seed in range(5):
        key = jax.random.key(seed)
        eta = np.asarray(jax.random.rademacher(key, (5,), dtype=jnp.float32), np.float64)
        want = np.sum((jac.T @ eta) ** 2)
        got = gradient_penalty(_tanh_layer(w, c), x, key)
        np.testing.assert_allclose(got, want, rtol=2e-5)


def test_mean_over_keys_is_the_exact_sum_with_the_predicted_variance():
    w, c, x = _problem(seed=1)
    f = _tanh_layer(w, c)
    exact = float(jnp.sum(jax.jacfwd(f)(x) ** 2))
    jac = _np_jacobian_tanh_layer(w, c, x)
    np.testing.assert_allclose(exact, np.sum(jac**2), rtol=1e-5)
    a = jac @ jac.T
    variance = 2 * (np.sum(a**2) - np.sum(np.diag(a) ** 2))
    n = 4000
    keys = jax.random.split(jax.random.key(0), n)
    samples = np.asarray(jax.vmap(gradient_penalty, (None, None, 0))(f, x, keys), np.float64)
    standard_error = np.sqrt(variance / n)
    # Deterministic keys; a wrong estimator would be off by many standard errors, a right one
    # exceeds 4 SE with probability 6e-5.
    assert abs(samples.mean() - exact) < 4 * standard_error
    # The sample variance of a quadratic form in 5 signs is within 15% of the exact one at
    # n = 4000 (its relative standard error here is below 4%).
    np.testing.assert_allclose(samples.var(), variance, rtol=0.15)


def test_orthogonal_output_gradients_make_every_sample_exact():
    scale = jnp.array([1.0, -2.0, 3.0])
    keys = jax.random.split(jax.random.key(3), 16)
    got = jax.vmap(gradient_penalty, (None, None, 0))(lambda x: scale * x, jnp.ones(3), keys)
    np.testing.assert_allclose(got, np.full(16, 14.0))


def test_any_input_and_output_shape():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((2, 2, 2, 3)).astype(np.float32)  # outputs (2, 2), inputs (2, 3)
    x = rng.standard_normal((2, 3)).astype(np.float32)
    f = lambda x: jnp.sin(jnp.einsum("abij,ij->ab", w, x))  # noqa: E731
    key = jax.random.key(5)
    eta = np.asarray(jax.random.rademacher(key, (2, 2), dtype=jnp.float32), np.float64)
    inner = np.einsum("abij,ij->ab", w.astype(np.float64), x)
    grad = np.einsum("ab,ab,abij->ij", eta, np.cos(inner), w)
    np.testing.assert_allclose(gradient_penalty(f, x, key), np.sum(grad**2), rtol=1e-5)


@given(arrays(np.float32, (3, 4), elements=floats), arrays(np.float32, (4,), elements=floats))
def test_matches_numpy_over_values(w, x):
    c = np.zeros(3, np.float32)
    key = jax.random.key(6)
    eta = np.asarray(jax.random.rademacher(key, (3,), dtype=jnp.float32), np.float64)
    want = np.sum((_np_jacobian_tanh_layer(w, c, x).T @ eta) ** 2)
    got = gradient_penalty(_tanh_layer(w, c), x, key)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_vmap_over_a_batch_equals_a_loop_and_jit_equals_eager():
    w, c, _ = _problem(seed=7)
    xs = np.random.default_rng(8).standard_normal((6, 4)).astype(np.float32)
    keys = jax.random.split(jax.random.key(9), 6)
    f = _tanh_layer(w, c)
    batched = jax.vmap(gradient_penalty, (None, 0, 0))(f, xs, keys)
    looped = [gradient_penalty(f, xs[i], keys[i]) for i in range(6)]
    np.testing.assert_allclose(batched, looped, rtol=1e-6)
    jitted = jax.jit(gradient_penalty, static_argnums=0)(f, xs[0], keys[0])
    np.testing.assert_allclose(jitted, looped[0], rtol=1e-6)


def test_differentiable_in_the_parameters(x64):
    # Double backpropagation: compare with central differences in float64.
    w, c, x = (np.asarray(a, np.float64) for a in _problem(seed=10))
    key = jax.random.key(11)
    check_grads(lambda w: gradient_penalty(_tanh_layer(w, c), x, key), (w,), order=1, modes=["rev"])


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_keeps_the_input_dtype(dtype):
    w, c, x = _problem(seed=12)
    f = lambda x: jnp.tanh(w.astype(dtype) @ x + c.astype(dtype))  # noqa: E731
    got = gradient_penalty(f, jnp.asarray(x, dtype), jax.random.key(0))
    assert got.dtype == dtype
    want = gradient_penalty(_tanh_layer(w, c), x, jax.random.key(0))
    np.testing.assert_allclose(np.float32(got), want, rtol=5e-2)


def test_sharded_batch_gives_the_unsharded_values(mesh8):
    w, c, _ = _problem(seed=13)
    xs = np.random.default_rng(14).standard_normal((8, 4)).astype(np.float32)
    keys = jax.random.split(jax.random.key(15), 8)
    fn = jax.jit(jax.vmap(lambda x, k: gradient_penalty(_tanh_layer(w, c), x, k)))
    sharded = fn(jax.device_put(xs, NamedSharding(mesh8, P("data"))), keys)
    np.testing.assert_allclose(sharded, fn(xs, keys), rtol=1e-5)


def test_gradient_penalty_errors():
    key = jax.random.key(0)
    with pytest.raises(TypeError, match="x must have a floating dtype"):
        gradient_penalty(lambda x: x * 1.0, jnp.arange(3), key)
    with pytest.raises(TypeError, match="f must return a single array"):
        gradient_penalty(lambda x: (x, x), jnp.ones(3), key)


# ------------------------------------------------- zero_centered_gradient_penalty


def _mlp_critic(w1, w2):
    return lambda x: jnp.tanh(x.reshape(x.shape[0], -1) @ w1) @ w2


def _np_mlp_critic_penalty(w1, w2, x):
    """Mean over rows of ||d/dx tanh(x w1) w2||^2, float64 NumPy."""
    w1, w2 = np.asarray(w1, np.float64), np.asarray(w2, np.float64)
    flat = np.asarray(x, np.float64).reshape(x.shape[0], -1)
    grads = ((1 - np.tanh(flat @ w1) ** 2) * w2) @ w1.T
    return np.mean(np.sum(grads**2, axis=1))


def _critic_problem(seed, shape=(5, 3)):
    rng = np.random.default_rng(seed)
    d = int(np.prod(shape[1:]))
    w1 = rng.standard_normal((d, 4)).astype(np.float32)
    w2 = rng.standard_normal(4).astype(np.float32)
    return w1, w2, rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("shape", [(5, 3), (4, 2, 3)])
def test_zero_centered_matches_numpy(shape):
    w1, w2, x = _critic_problem(20, shape)
    got = zero_centered_gradient_penalty(_mlp_critic(w1, w2), x)
    np.testing.assert_allclose(got, _np_mlp_critic_penalty(w1, w2, x), rtol=1e-5)


@given(arrays(np.float32, (3, 2), elements=floats))
def test_zero_centered_matches_numpy_over_values(x):
    w1, w2, _ = _critic_problem(21, (3, 2))
    got = zero_centered_gradient_penalty(_mlp_critic(w1, w2), x)
    np.testing.assert_allclose(got, _np_mlp_critic_penalty(w1, w2, x), rtol=1e-4, atol=1e-6)


def test_zero_centered_dirac_gan_gradient_is_gamma_psi():
    # D(x) = psi x, data at 0: (gamma/2) E|dD/dx|^2 = (gamma/2) psi^2, derivative gamma psi.
    gamma, psi = 0.7, 1.3

    def penalty(p):
        return (
            0.5 * gamma * zero_centered_gradient_penalty(lambda x: p * x[:, 0], jnp.zeros((1, 1)))
        )

    np.testing.assert_allclose(penalty(psi), 0.5 * gamma * psi**2, rtol=1e-6)
    np.testing.assert_allclose(jax.grad(penalty)(psi), gamma * psi, rtol=1e-6)


def test_zero_centered_differentiable_in_the_parameters(x64):
    w1, w2, x = (np.asarray(a, np.float64) for a in _critic_problem(22))
    check_grads(
        lambda w1, w2: zero_centered_gradient_penalty(_mlp_critic(w1, w2), x),
        (w1, w2),
        order=1,
        modes=["rev"],
    )


def test_zero_centered_jit_equals_eager_and_sharding(mesh8):
    w1, w2, x = _critic_problem(23, (8, 3))
    eager = zero_centered_gradient_penalty(_mlp_critic(w1, w2), x)
    fn = jax.jit(lambda x: zero_centered_gradient_penalty(_mlp_critic(w1, w2), x))
    np.testing.assert_allclose(fn(x), eager, rtol=1e-6)
    sharded = fn(jax.device_put(x, NamedSharding(mesh8, P("data"))))
    np.testing.assert_allclose(sharded, eager, rtol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_zero_centered_keeps_the_input_dtype(dtype):
    w1, w2, x = _critic_problem(24)
    d_fn = lambda x: jnp.tanh(x @ w1.astype(dtype)) @ w2.astype(dtype)  # noqa: E731
    got = zero_centered_gradient_penalty(d_fn, jnp.asarray(x, dtype))
    assert got.dtype == dtype
    np.testing.assert_allclose(np.float32(got), _np_mlp_critic_penalty(w1, w2, x), rtol=5e-2)


def test_zero_centered_empty_batch_is_zero():
    w1, w2, _ = _critic_problem(25)
    critic = lambda x: jnp.tanh(x @ w1) @ w2  # noqa: E731
    assert float(zero_centered_gradient_penalty(critic, np.zeros((0, 3), np.float32))) == 0.0


def test_zero_centered_errors():
    with pytest.raises(ValueError, match=r"d_fn\(x\) must have shape \(B,\)"):
        zero_centered_gradient_penalty(lambda x: x, jnp.ones((3, 2)))
    with pytest.raises(ValueError, match="x must be a batch"):
        zero_centered_gradient_penalty(lambda x: x, jnp.ones(()))
    with pytest.raises(TypeError, match="x must have a floating dtype"):
        zero_centered_gradient_penalty(lambda x: x[:, 0] * 1.0, jnp.ones((3, 2), jnp.int32))


def test_dirac_gan_claims_hold():
    from jaxtricks.reproduce import post_6583_dirac_gan as post

    for c in post.CLAIMS:
        m = c.fn()
        assert m.ok, (c.name, m.measured)
