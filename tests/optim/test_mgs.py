"""Tests of mle_guided_update against a float64 NumPy reimplementation of the estimator.

The reference redraws the documented samples with the same keys (the component choice from
one key, each leaf's Gaussian noise from ``optax.tree.split_key_like``) and computes the
mixture density, the importance weights and the weighted mean itself in float64.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxtricks.optim import mle_guided_update

X = np.random.default_rng(0).standard_normal((5, 3))

# Hyperparameters traced, so one compilation per (num_samples, dtype) serves many values.
_mgs = jax.jit(mle_guided_update, static_argnames=("loss_fn", "num_samples"))


def _params(dtype=jnp.float32):
    rng = np.random.default_rng(1)
    return {
        "w": jnp.asarray(rng.standard_normal((3, 2)), dtype),
        "b": jnp.asarray(rng.standard_normal(2), dtype),
    }


def _loss(p):
    h = jnp.tanh(jnp.asarray(X, p["w"].dtype) @ p["w"] + p["b"][None, :])
    return jnp.sum(h**2) + jnp.sum(p["b"]) ** 2


def _loss_np(p):
    return np.sum(np.tanh(X @ p["w"] + p["b"]) ** 2) + np.sum(p["b"]) ** 2


def _grad(params):
    return jax.grad(_loss)(params)


def _reference(key, params, grad, loss_np, n, sigma, alpha, mix):
    """-Σ w̃ᵢ εᵢ in float64 NumPy, from the documented draws of ``key``."""
    choice_key, noise_key = jax.random.split(key)
    from_zero = np.asarray(jax.random.bernoulli(choice_key, mix, (n,)))
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.tree.leaves(optax.tree.split_key_like(noise_key, params))
    g_leaves = [np.asarray(g, np.float64) for g in jax.tree.leaves(grad)]
    eps = []
    for k, p, g in zip(keys, leaves, g_leaves):
        dtype = jnp.promote_types(p.dtype, jnp.float32)
        z = np.asarray(jax.random.normal(k, (n,) + p.shape, dtype), np.float64)
        eps.append(sigma * z - np.where(from_zero.reshape((n,) + (1,) * p.ndim), 0.0, g))
    flat_eps = np.concatenate([e.reshape(n, -1) for e in eps], axis=1)
    flat_g = np.concatenate([g.ravel() for g in g_leaves])
    theta = [np.asarray(p, np.float64) for p in leaves]
    losses = np.array(
        [
            loss_np(jax.tree.unflatten(treedef, [t + e[i] for t, e in zip(theta, eps)]))
            for i in range(n)
        ]
    )
    # Mixture density up to the shared Gaussian constant; log(0) = -inf for mix in {0, 1}.
    with np.errstate(divide="ignore"):
        comps = np.stack(
            [
                np.log(mix) - np.sum(flat_eps**2, 1) / (2 * sigma**2),
                np.log(1 - mix) - np.sum((flat_eps + flat_g) ** 2, 1) / (2 * sigma**2),
            ]
        )
    top = comps.max(0)
    log_q = top + np.log(np.exp(comps - top).sum(0))
    log_w = -losses / alpha - log_q
    w = np.exp(log_w - log_w.max())
    w /= w.sum()
    return jax.tree.unflatten(treedef, [-np.tensordot(w, e, axes=1) for e in eps])


def _assert_tree_close(actual, expected, rtol, atol):
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        np.testing.assert_allclose(np.asarray(a, np.float64), e, rtol=rtol, atol=atol)


@given(
    seed=st.integers(0, 2**31 - 1),
    sigma=st.floats(0.05, 2.0),
    alpha=st.floats(0.05, 5.0),
    mix=st.floats(0.0, 1.0),
    n=st.sampled_from([1, 8]),
)
def test_equals_float64_reference(x64, seed, sigma, alpha, mix, n):
    params = _params(jnp.float64)
    grad = _grad(params)
    key = jax.random.key(seed)
    out = _mgs(
        key, params, grad, _loss, num_samples=n, noise_scale=sigma, temperature=alpha, mix=mix
    )
    ref = _reference(key, params, grad, _loss_np, n, sigma, alpha, mix)
    _assert_tree_close(out, ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("mix", [0.0, 0.3, 1.0])
def test_float32_equals_float64_reference_on_same_draws(mix):
    params = _params(jnp.float32)
    grad = _grad(params)
    key = jax.random.key(3)
    kw = dict(num_samples=6, noise_scale=0.5, temperature=1.0, mix=mix)
    out = _mgs(key, params, grad, _loss, **kw)
    ref = _reference(key, params, grad, _loss_np, 6, 0.5, 1.0, mix)
    _assert_tree_close(out, ref, rtol=1e-4, atol=1e-5)


def test_mix_one_ignores_the_gradient(x64):
    # Pure random search: samples and q come from N(0, σ²I) alone.
    params = _params(jnp.float64)
    grad = _grad(params)
    other = jax.tree.map(lambda g: 10.0 * g + 1.0, grad)
    kw = dict(num_samples=8, noise_scale=0.3, temperature=1.0, mix=1.0)
    a = _mgs(jax.random.key(0), params, grad, _loss, **kw)
    b = _mgs(jax.random.key(0), params, other, _loss, **kw)
    _assert_tree_close(a, jax.tree.map(np.asarray, b), rtol=0, atol=0)


def test_mix_zero_with_tiny_noise_is_the_gradient(x64):
    # All samples sit at -g (up to σ), so Δ ≈ -g and the returned "gradient" ≈ g.
    params = _params(jnp.float64)
    grad = _grad(params)
    out = _mgs(
        jax.random.key(0),
        params,
        grad,
        _loss,
        num_samples=8,
        noise_scale=1e-8,
        temperature=1.0,
        mix=0.0,
    )
    _assert_tree_close(out, jax.tree.map(np.asarray, grad), rtol=0, atol=1e-7)


def _quadratic(dim=4, cond=10.0):
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    a = (q * np.geomspace(1.0, cond, dim)) @ q.T
    b = rng.standard_normal(dim)
    x_star = -np.linalg.solve(a, b)
    d = rng.standard_normal(dim)
    theta = x_star + d / np.linalg.norm(d)  # the Newton step has norm 1
    return a, b, theta


def test_approaches_newton_step_on_quadratic(x64):
    # L(θ+ε) - L(θ) = gᵀε + ½εᵀAε, so p(ε) ∝ exp(-(gᵀε + ½εᵀAε)/α) is N(-A⁻¹g, αA⁻¹):
    # its mean, which the self-normalised estimate converges to, is the Newton step.
    a, b, theta = _quadratic()
    a, b, theta = jnp.asarray(a), jnp.asarray(b), jnp.asarray(theta)
    loss = lambda p: 0.5 * p @ a @ p + b @ p  # noqa: E731
    g = jax.grad(loss)(theta)
    newton = -jnp.linalg.solve(a, g)
    keys = jax.random.split(jax.random.key(1), 6)

    @jax.jit  # one compilation for the three sample sizes
    def errors_of(keys):
        out = []
        for n in (16, 256, 4096):
            f = lambda k, n=n: mle_guided_update(  # noqa: E731
                k, theta, g, loss, num_samples=n, noise_scale=1.0, temperature=0.5
            )
            delta = -jax.vmap(f)(keys)
            out.append(jnp.mean(jnp.linalg.norm(delta - newton[None], axis=1)))
        return jnp.stack(out)

    errors = [float(e) for e in errors_of(keys)]
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.15, errors


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_structure_shape_and_dtype_follow_params(dtype):
    params = {"w": jnp.ones((3, 2), dtype), "b": (jnp.zeros(2, jnp.float32),)}
    grad = jax.tree.map(lambda p: jnp.full_like(p, 0.1), params)

    def loss(p):
        return jnp.sum(p["w"].astype(jnp.float32) ** 2) + jnp.sum(p["b"][0] ** 2)

    out = mle_guided_update(jax.random.key(0), params, grad, loss)
    assert jax.tree.structure(out) == jax.tree.structure(params)
    for o, p in zip(jax.tree.leaves(out), jax.tree.leaves(params)):
        assert o.shape == p.shape and o.dtype == p.dtype
        assert bool(jnp.all(jnp.isfinite(o.astype(jnp.float32))))


def test_jit_with_traced_hyperparameters_equals_eager():
    params = _params()
    grad = _grad(params)
    key = jax.random.key(7)

    def f(key, params, grad, sigma, alpha, mix):
        return mle_guided_update(
            key, params, grad, _loss, num_samples=5, noise_scale=sigma, temperature=alpha, mix=mix
        )

    eager = f(key, params, grad, 0.4, 0.7, 0.6)
    jitted = jax.jit(f)(key, params, grad, 0.4, 0.7, 0.6)
    _assert_tree_close(jitted, jax.tree.map(np.asarray, eager), rtol=1e-5, atol=1e-6)


def test_vmap_over_keys_equals_loop():
    params = _params()
    grad = _grad(params)
    keys = jax.random.split(jax.random.key(2), 3)
    kw = dict(num_samples=6, noise_scale=0.5, temperature=1.0, mix=0.3)
    batched = jax.jit(jax.vmap(lambda k: mle_guided_update(k, params, grad, _loss, **kw)))(keys)
    for i in range(3):
        _assert_tree_close(
            jax.tree.map(lambda x, i=i: x[i], batched),
            jax.tree.map(np.asarray, _mgs(keys[i], params, grad, _loss, **kw)),
            rtol=1e-5,
            atol=1e-6,
        )


def test_sharded_params_keep_their_sharding(mesh8):
    sharding = NamedSharding(mesh8, P("data"))
    params = {"w": jax.device_put(jnp.linspace(-1.0, 1.0, 32).reshape(16, 2), sharding)}
    grad = {"w": jax.device_put(jnp.full((16, 2), 0.1), sharding)}

    def loss(p):
        return jnp.sum(p["w"] ** 2)

    f = jax.jit(lambda k, p, g: mle_guided_update(k, p, g, loss, num_samples=4))
    out = f(jax.random.key(0), params, grad)
    assert out["w"].sharding.is_equivalent_to(sharding, 2)
    unsharded = mle_guided_update(
        jax.random.key(0), jax.device_get(params), jax.device_get(grad), loss, num_samples=4
    )
    np.testing.assert_allclose(out["w"], unsharded["w"], rtol=1e-5, atol=1e-6)


def test_optimises_a_zero_one_loss():
    # A separable 2-D toy; the classifier starts pointing the wrong way (~90% error).
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 2))
    margin = x @ np.array([1.0, -2.0]) + 0.3
    keep = np.abs(margin) > 0.3
    x, y = jnp.asarray(x[keep], jnp.float32), jnp.asarray(margin[keep] > 0)

    def zero_one(p):  # piecewise constant: its gradient is zero almost everywhere
        return jnp.mean((x @ p["w"] + p["b"] > 0) != y)

    def logistic(p):
        return jnp.mean(optax.sigmoid_binary_cross_entropy(x @ p["w"] + p["b"], y))

    opt = optax.sgd(1.0)

    def step(carry, key):
        p, s = carry
        u = mle_guided_update(
            key, p, jax.grad(logistic)(p), zero_one, noise_scale=0.5, temperature=0.02
        )
        updates, s = opt.update(u, s, p)
        return (optax.apply_updates(p, updates), s), None

    p0 = {"w": jnp.array([-1.0, 1.0]), "b": jnp.array(0.0)}
    (p, _), _ = jax.lax.scan(step, (p0, opt.init(p0)), jax.random.split(jax.random.key(0), 30))
    start, end = float(zero_one(p0)), float(zero_one(p))
    assert start > 0.8 and end < 0.05, (start, end)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(num_samples=0), ValueError, "num_samples"),
        (dict(num_samples=2.0), TypeError, "num_samples"),
        (dict(num_samples=True), TypeError, "num_samples"),
        (dict(noise_scale=0.0), ValueError, "noise_scale must be > 0"),
        (dict(temperature=-1.0), ValueError, "temperature must be > 0"),
        (dict(mix=1.5), ValueError, r"mix must be in \[0, 1\], got 1.5"),
        (dict(mix=-0.1), ValueError, "mix"),
    ],
)
def test_bad_hyperparameters(kwargs, error, match):
    params = _params()
    with pytest.raises(error, match=match):
        mle_guided_update(jax.random.key(0), params, _grad(params), _loss, **kwargs)


def test_bad_inputs():
    params = _params()
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="tree structure"):
        mle_guided_update(key, params, {"w": params["w"]}, _loss)
    with pytest.raises(ValueError, match="shapes"):
        mle_guided_update(key, params, {"w": params["w"], "b": jnp.zeros(3)}, _loss)
    with pytest.raises(TypeError, match="floating point"):
        mle_guided_update(key, jnp.arange(3), jnp.zeros(3), lambda p: jnp.sum(p))
    with pytest.raises(ValueError, match="no array leaves"):
        mle_guided_update(key, {}, {}, lambda p: 0.0)
    with pytest.raises(ValueError, match="scalar"):
        mle_guided_update(key, params, _grad(params), lambda p: p["b"])
