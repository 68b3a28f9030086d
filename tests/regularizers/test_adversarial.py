"""fgm_perturbation, vat_direction and vat_loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxtricks.regularizers import fgm_perturbation, vat_direction, vat_loss

floats = st.floats(-3.0, 3.0, allow_nan=False, width=32)

# ---------------------------------------------------------------- fgm_perturbation


def _np_fgm(leaves, epsilon):
    """epsilon * g / ||g|| with the norm over every entry of every leaf, float64."""
    leaves = [np.asarray(g, np.float64) for g in leaves]
    norm = np.sqrt(sum(np.sum(g**2) for g in leaves))
    return [epsilon * g / norm for g in leaves]


def test_fgm_global_norm_over_a_pytree():
    rng = np.random.default_rng(0)
    grad = {"emb": rng.standard_normal((4, 3)), "b": [rng.standard_normal(2)]}
    grad = jax.tree.map(lambda a: a.astype(np.float32), grad)
    got = fgm_perturbation(grad, 0.7)
    want = _np_fgm([grad["emb"], grad["b"][0]], 0.7)
    np.testing.assert_allclose(got["emb"], want[0], rtol=1e-6)
    np.testing.assert_allclose(got["b"][0], want[1], rtol=1e-6)


@given(arrays(np.float32, (3, 4), elements=floats), st.floats(0.01, 5.0))
def test_fgm_matches_numpy_over_values(g, epsilon):
    got = np.asarray(fgm_perturbation(g, epsilon), np.float64)
    if not np.any(g):
        np.testing.assert_array_equal(got, 0.0)
    else:
        np.testing.assert_allclose(got, _np_fgm([g], epsilon)[0], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("scale", [1e-30, 1e20, 1e38])
def test_fgm_is_exact_at_scales_whose_squares_leave_float32(scale):
    # Scaled before the norm: 1e20 squared overflows float32, 1e-30 squared underflows.
    rng = np.random.default_rng(3)
    grad = {"a": rng.standard_normal((2, 3)), "b": rng.standard_normal(4)}
    grad = jax.tree.map(lambda g: (g * scale).astype(np.float32), grad)
    got = fgm_perturbation(grad, 0.5)
    want = _np_fgm([grad["a"], grad["b"]], 0.5)
    np.testing.assert_allclose(got["a"], want[0], rtol=2e-6)
    np.testing.assert_allclose(got["b"], want[1], rtol=2e-6)


def test_fgm_zero_gradient_gives_zero_and_finite_derivative():
    zero = jnp.zeros((2, 3))
    np.testing.assert_array_equal(fgm_perturbation(zero, 1.0), 0.0)
    jac = jax.jacobian(lambda g: fgm_perturbation(g, 1.0))(zero)
    assert np.all(np.isfinite(jac))


def test_fgm_norm_over_the_whole_batch_and_vmap_per_example():
    g = np.array([[3.0, 4.0], [0.0, 0.0], [6.0, 8.0]], np.float32)
    whole = fgm_perturbation(g, 1.0)
    np.testing.assert_allclose(np.linalg.norm(whole), 1.0, rtol=1e-6)
    per_example = jax.vmap(fgm_perturbation, (0, None))(jnp.asarray(g), 1.0)
    loop = np.stack([fgm_perturbation(row, 1.0) for row in g])
    np.testing.assert_allclose(per_example, loop)
    np.testing.assert_allclose(per_example, [[0.6, 0.8], [0.0, 0.0], [0.6, 0.8]], rtol=1e-6)


def test_fgm_jit_with_a_traced_epsilon_equals_eager():
    g = np.random.default_rng(1).standard_normal(5).astype(np.float32)
    np.testing.assert_allclose(
        jax.jit(fgm_perturbation)(g, jnp.float32(0.3)), fgm_perturbation(g, 0.3), rtol=1e-6
    )


def test_fgm_keeps_each_leaf_dtype():
    grad = {"a": jnp.array([3.0], jnp.bfloat16), "b": jnp.array([4.0], jnp.float32)}
    got = fgm_perturbation(grad, 1.0)
    assert got["a"].dtype == jnp.bfloat16 and got["b"].dtype == jnp.float32
    np.testing.assert_allclose(np.float32(got["a"]), [0.6], rtol=1e-2)
    np.testing.assert_allclose(got["b"], [0.8], rtol=1e-6)


def test_fgm_empty_pytree_and_errors():
    assert fgm_perturbation({}, 1.0) == {}
    with pytest.raises(ValueError, match="epsilon must be >= 0, got -1"):
        fgm_perturbation(jnp.ones(2), -1.0)
    with pytest.raises(TypeError, match="grad must have a floating dtype"):
        fgm_perturbation(jnp.ones(2, jnp.int32), 1.0)


# ---------------------------------------------------------------- VAT


def _linear_problem(seed=0, k=6, d=8):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((k, d))
    c = rng.standard_normal(k)
    x = 0.5 * rng.standard_normal(d)
    return w, c, x


def _np_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _np_hessian_linear(w, c, x):
    """H = W^T (diag p - p p^T) W for logits W x + c, float64."""
    p = _np_softmax(w @ x + c)
    return w.T @ (np.diag(p) - np.outer(p, p)) @ w


def _np_power_iteration(h, d0, num_iters):
    d = d0 / np.linalg.norm(d0)
    for _ in range(num_iters):
        d = h @ d
        d = d / np.linalg.norm(d)
    return d


@pytest.mark.parametrize("num_iters", [0, 1, 3])
def test_vat_direction_is_numpy_power_iteration(x64, num_iters):
    w, c, x = _linear_problem()
    key = jax.random.key(0)
    d0 = np.asarray(jax.random.normal(key, x.shape, jnp.float64))  # the documented start
    want = _np_power_iteration(_np_hessian_linear(w, c, x), d0, num_iters)
    got = vat_direction(lambda v: w @ v + c, x, key, num_iters=num_iters)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_vat_direction_finds_the_top_eigenvector(x64):
    w, c, x = _linear_problem(seed=1)
    eigenvalues, vectors = np.linalg.eigh(_np_hessian_linear(w, c, x))
    assert eigenvalues[-2] / eigenvalues[-1] < 0.9  # a gap, so 40 iterations suffice
    d = vat_direction(lambda v: w @ v + c, x, jax.random.key(1), num_iters=40)
    assert abs(np.dot(d, vectors[:, -1])) > 0.999


def test_vat_hessian_product_is_the_exact_hessian_of_the_kl(x64):
    # For a nonlinear model, one power step from d0 must equal H d0 / |H d0| with H the full
    # Hessian of r -> KL(p(x) || p(x + r)) at r = 0, computed by forward-over-reverse autodiff.
    rng = np.random.default_rng(2)
    w1, w2, x = rng.standard_normal((5, 4)), rng.standard_normal((3, 5)), rng.standard_normal(4)

    def apply_fn(v):
        return w2 @ jnp.tanh(w1 @ v)

    def kl(r):
        log_p = jax.nn.log_softmax(apply_fn(x))
        return jnp.sum(jnp.exp(log_p) * (log_p - jax.nn.log_softmax(apply_fn(x + r))))

    hessian = np.asarray(jax.hessian(kl)(jnp.zeros(4)))
    key = jax.random.key(3)
    d0 = np.asarray(jax.random.normal(key, (4,), jnp.float64))
    want = _np_power_iteration(hessian, d0, 1)
    np.testing.assert_allclose(vat_direction(apply_fn, x, key), want, rtol=1e-9, atol=1e-12)


def _np_kl_rows(logits_p, logits_q):
    p, q = _np_softmax(logits_p), _np_softmax(logits_q)
    return np.sum(p * (np.log(p) - np.log(q)), axis=-1)


@pytest.mark.parametrize("batched", [False, True])
def test_vat_loss_is_the_kl_at_epsilon_along_the_direction(x64, batched):
    w, c, x = _linear_problem(seed=4)
    if batched:
        x = np.stack([x, -x, 2 * x])
    apply_fn = lambda v: v @ w.T + (c[None] if batched else c)  # noqa: E731
    key = jax.random.key(5)
    d = np.asarray(vat_direction(apply_fn, x, key, num_iters=2))
    want = np.mean(_np_kl_rows(x @ w.T + c, (x + 0.4 * d) @ w.T + c))
    got = vat_loss(apply_fn, x, key, epsilon=0.4, num_iters=2)
    np.testing.assert_allclose(got, want, rtol=1e-9)
    if batched:  # one direction of unit norm for the whole batch
        np.testing.assert_allclose(np.linalg.norm(d), 1.0)


def test_vat_loss_gradient_treats_p_and_direction_as_constants(x64):
    # d/dW of KL(sg p || softmax(W (x + r) + c)) with r fixed is (q - p)(x + r)^T.
    w, c, x = _linear_problem(seed=6)
    key = jax.random.key(7)
    r = 0.5 * np.asarray(vat_direction(lambda v: w @ v + c, x, key))
    p, q = _np_softmax(w @ x + c), _np_softmax(w @ (x + r) + c)
    got = jax.grad(lambda w: vat_loss(lambda v: w @ v + c, x, key, epsilon=0.5))(w)
    np.testing.assert_allclose(got, np.outer(q - p, x + r), rtol=1e-8, atol=1e-12)


# Compiled once for all hypothesis examples (w is an argument, not a new closure each time).
_linear_direction = jax.jit(lambda w, x, key: vat_direction(lambda v: w @ v, x, key))
_linear_loss = jax.jit(lambda w, x, key: vat_loss(lambda v: w @ v, x, key, epsilon=0.5))


@given(arrays(np.float32, (3, 4), elements=floats))
def test_vat_loss_nonnegative_and_matches_numpy_over_values(w):
    x = np.linspace(-1, 1, 4).astype(np.float32)
    key = jax.random.key(8)
    d = np.asarray(_linear_direction(w, x, key), np.float64)
    got = _linear_loss(w, x, key)
    want = _np_kl_rows(w.astype(np.float64) @ x, w.astype(np.float64) @ (x + 0.5 * d))
    assert got >= 0
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-6)


def test_vat_constant_model_gives_zero_direction_and_loss():
    def apply_fn(v):
        return jnp.array([1.0, 2.0, 3.0]) + 0.0 * jnp.sum(v)

    x = jnp.ones(4)
    np.testing.assert_array_equal(vat_direction(apply_fn, x, jax.random.key(0)), 0.0)
    np.testing.assert_array_equal(vat_loss(apply_fn, x, jax.random.key(0)), 0.0)
    grad = jax.grad(lambda x: vat_loss(apply_fn, x, jax.random.key(0)))(x)
    assert np.all(np.isfinite(grad))


def test_vat_xi_is_ignored_and_jit_equals_eager_and_vmap_equals_loop():
    w, c, x = (a.astype(np.float32) for a in _linear_problem(seed=9))
    xs = np.stack([x, -x, 0.5 * x])
    keys = jax.random.split(jax.random.key(10), 3)

    def loss(x, key, xi=1e-6):
        return vat_loss(lambda v: w @ v + c, x, key, xi=xi)

    eager = [loss(xs[i], keys[i]) for i in range(3)]
    np.testing.assert_array_equal(loss(xs[0], keys[0], xi=10.0), eager[0])
    np.testing.assert_allclose(jax.jit(loss)(xs[0], keys[0]), eager[0], rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(loss)(xs, keys), eager, rtol=1e-5)


def test_vat_sharded_batch_gives_the_unsharded_loss(mesh8):
    w, c, _ = _linear_problem(seed=11)
    w, c = w.astype(np.float32), c.astype(np.float32)
    xs = np.random.default_rng(12).standard_normal((8, 8)).astype(np.float32)
    keys = jax.random.split(jax.random.key(13), 8)
    fn = jax.jit(jax.vmap(lambda x, k: vat_loss(lambda v: w @ v + c, x, k)))
    sharded = fn(jax.device_put(xs, NamedSharding(mesh8, P("data"))), keys)
    np.testing.assert_allclose(sharded, fn(xs, keys), rtol=1e-5)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_vat_keeps_dtypes(dtype):
    w, c, x = _linear_problem(seed=14)

    def apply_fn(v):
        return jnp.asarray(w, dtype) @ v + jnp.asarray(c, dtype)

    xd = jnp.asarray(x, dtype)
    assert vat_direction(apply_fn, xd, jax.random.key(0)).dtype == dtype
    got = vat_loss(apply_fn, xd, jax.random.key(0))
    assert got.dtype == dtype
    want = vat_loss(lambda v: w.astype(np.float32) @ v + c.astype(np.float32), x, jax.random.key(0))
    np.testing.assert_allclose(np.float32(got), want, rtol=0.1)


def test_vat_errors():
    apply_fn = lambda v: v  # noqa: E731
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="num_iters must be an int >= 0, got -1"):
        vat_loss(apply_fn, jnp.ones(3), key, num_iters=-1)
    with pytest.raises(TypeError, match="num_iters must be an int >= 0"):
        vat_direction(apply_fn, jnp.ones(3), key, num_iters=1.0)
    with pytest.raises(TypeError, match="num_iters must be an int >= 0"):
        vat_direction(apply_fn, jnp.ones(3), key, num_iters=True)
    with pytest.raises(ValueError, match="epsilon must be >= 0"):
        vat_loss(apply_fn, jnp.ones(3), key, epsilon=-0.1)
    with pytest.raises(TypeError, match="x must have a floating dtype"):
        vat_loss(apply_fn, jnp.ones(3, jnp.int32), key)
    with pytest.raises(ValueError, match=r"logits of shape \(\.\.\., K\)"):
        vat_loss(jnp.sum, jnp.ones(3), key)
