"""squash, dynamic_routing and Capsule against float64 NumPy references of the paper / posts."""

import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
import pytest
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from jaxtricks.nn import Capsule, dynamic_routing, squash

B, N_IN, N_OUT, D_OUT, F = 2, 5, 3, 4, 6


def squash_ref(s, offset, axis=-1):
    """Eq. (1) of the paper / post 4819, literally, with squash(0) = 0."""
    s = np.asarray(s, np.float64)
    norm = np.linalg.norm(s, axis=axis, keepdims=True)
    safe = np.where(norm > 0, norm, 1.0)
    # The unit vector first: s * norm**2 would underflow for tiny s before the division.
    return np.where(norm > 0, (s / safe) * (norm**2 / (offset + norm**2)), 0.0)


def routing_ref(u_hat, num_iters, method):
    """Procedure 1 of the paper (hinton) and Su's Capsule_Keras.py loop (kmeans), by loops."""
    u_hat = np.asarray(u_hat, np.float64)
    batch, n_in, n_out, _ = u_hat.shape
    out = []
    for b in range(batch):
        u = u_hat[b]
        logits = np.zeros((n_in, n_out))
        for _ in range(num_iters):
            c = np.exp(logits - logits.max(1, keepdims=True))
            c /= c.sum(1, keepdims=True)  # softmax over the output capsules j
            s = np.stack([sum(c[i, j] * u[i, j] for i in range(n_in)) for j in range(n_out)])
            if method == "hinton":
                v = squash_ref(s, 1.0)
                agreement = np.array([[u[i, j] @ v[j] for j in range(n_out)] for i in range(n_in)])
                logits = logits + agreement
            else:
                v = squash_ref(s, 0.5)
                norm = np.linalg.norm(s, axis=-1, keepdims=True)
                unit = s / np.where(norm > 0, norm, 1.0)  # a zero centre has no direction: 0
                logits = np.array([[u[i, j] @ unit[j] for j in range(n_out)] for i in range(n_in)])
        out.append(v)
    return np.stack(out)


def finite(shape, lo=-3.0, hi=3.0):
    return hnp.arrays(np.float64, shape, elements=st.floats(lo, hi, width=64))


_squash = jax.jit(squash, static_argnames=("axis", "offset"))
_route = jax.jit(dynamic_routing, static_argnums=1, static_argnames="method")


@pytest.mark.usefixtures("x64")
@given(s=finite((3, 4)))
def test_squash_matches_reference(s):
    for offset in (1.0, 0.5):
        np.testing.assert_allclose(_squash(s, offset=offset), squash_ref(s, offset), atol=1e-12)
        np.testing.assert_allclose(
            _squash(s, axis=0, offset=offset), squash_ref(s, offset, axis=0), atol=1e-12
        )


@pytest.mark.usefixtures("x64")
def test_squash_gradient_checks():
    s = jax.random.normal(jax.random.key(0), (3, 4), jnp.float64)
    jax.test_util.check_grads(jax.jit(lambda x: squash(x, offset=0.5)), (s,), 1, modes=["rev"])


def test_squash_zero_has_finite_value_and_gradient():
    zero = jnp.zeros((2, 4))
    for offset in (1.0, 0.5):
        assert np.array_equal(_squash(zero, offset=offset), zero)
        jac = jax.jit(jax.jacrev(lambda x: squash(x, offset=offset)))(zero[0])  # noqa: B023
        assert np.all(jac == 0)  # the exact Jacobian at 0 (no floor on the norm any more)


@pytest.mark.usefixtures("x64")
@given(s=finite((3, 4), -1e-3, 1e-3), exponent=st.integers(-100, 100))
def test_squash_matches_reference_at_any_scale(s, exponent):
    # The rescaled form (no ||s||^2) agrees with eq. (1) from 1e-103 to 1e97 in float64.
    s = s * 10.0**exponent
    np.testing.assert_allclose(_squash(s, offset=0.5), squash_ref(s, 0.5), rtol=1e-12, atol=1e-300)


@pytest.mark.usefixtures("x64")
@given(u_hat=finite((B, N_IN, N_OUT, D_OUT), -1.5, 1.5))
def test_routing_matches_reference(u_hat):
    for method in ("hinton", "kmeans"):
        for num_iters in (1, 3):
            np.testing.assert_allclose(
                _route(u_hat, num_iters, method=method),
                routing_ref(u_hat, num_iters, method),
                atol=1e-10,
            )


def test_routing_vmap_equals_batched():
    u_hat = jax.random.normal(jax.random.key(1), (B, N_IN, N_OUT, D_OUT))

    def both(u):
        return jax.vmap(lambda x: dynamic_routing(x, 3))(u), dynamic_routing(u, 3)

    mapped, batched = jax.jit(both)(u_hat)
    np.testing.assert_allclose(mapped, batched, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["hinton", "kmeans"])
def test_routing_gradient_finite_at_zero_votes(method):
    w = jax.random.normal(jax.random.key(7), (1, N_OUT, D_OUT))  # a linear read-out

    def loss(u):
        return jnp.sum(dynamic_routing(u, 3, method=method) * w)

    g = jax.jit(jax.grad(loss))(jnp.zeros((1, N_IN, N_OUT, D_OUT)))
    assert np.all(np.isfinite(g))


def _layer(share_weights=True, method="hinton", **kw):
    if not share_weights:
        kw.setdefault("num_inputs", N_IN)
    return Capsule(
        F, N_OUT, D_OUT, share_weights=share_weights, method=method, rngs=nnx.Rngs(0), **kw
    )


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("share_weights", [True, False])
def test_capsule_matches_reference(share_weights):
    layer = _layer(share_weights, method="kmeans", param_dtype=jnp.float64)
    u = np.asarray(jax.random.normal(jax.random.key(2), (B, N_IN, F), jnp.float64))
    w = np.asarray(layer.kernel[...])
    if share_weights:
        votes = np.stack([[u[b, i] @ w for i in range(N_IN)] for b in range(B)])
    else:
        votes = np.stack([[u[b, i] @ w[i] for i in range(N_IN)] for b in range(B)])
    expected = routing_ref(votes.reshape(B, N_IN, N_OUT, D_OUT), 3, "kmeans")
    np.testing.assert_allclose(jax.jit(layer.__call__)(u), expected, atol=1e-10)
    assert layer.kernel[...].shape == ((F, N_OUT * D_OUT) if share_weights else (N_IN, F, 12))


_APPLY = {m: jax.jit(_layer(method=m).__call__) for m in ("hinton", "kmeans")}


@given(
    u=finite((B, N_IN, F)),
    perm=st.permutations(list(range(N_IN))),
)
def test_shared_capsule_is_permutation_invariant(u, perm):
    u = u.astype(np.float32)
    for method in ("hinton", "kmeans"):
        np.testing.assert_allclose(
            _APPLY[method](u[:, np.asarray(perm)]), _APPLY[method](u), rtol=1e-5, atol=1e-6
        )


def test_shared_weights_accept_any_number_of_inputs():
    layer = _layer()
    for n_in in (1, 7):
        shape = jax.eval_shape(layer, jax.ShapeDtypeStruct((B, n_in, F), jnp.float32)).shape
        assert shape == (B, N_OUT, D_OUT)


def test_jit_equals_eager():
    # Eager runs op by op (one compile per primitive): one method, shapes shared with the layer.
    u_hat = jax.random.normal(jax.random.key(4), (B, N_IN, N_OUT, D_OUT))
    eager = dynamic_routing(u_hat, 3, method="kmeans")
    np.testing.assert_allclose(_route(u_hat, 3, method="kmeans"), eager, rtol=1e-5, atol=1e-6)
    layer = _layer(share_weights=False, method="kmeans")
    u = jax.random.normal(jax.random.key(3), (B, N_IN, F))
    np.testing.assert_allclose(jax.jit(layer.__call__)(u), layer(u), rtol=1e-5, atol=1e-6)


def test_capsule_gradient_finite_for_zero_input():
    layer = _layer()

    def loss(model):
        return jnp.sum(model(jnp.zeros((1, N_IN, F))) * jnp.arange(D_OUT)[None, None])

    grads = nnx.jit(nnx.grad(loss))(layer)
    assert np.all(np.isfinite(grads.kernel[...]))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_dtypes_are_kept(dtype):
    x = jax.random.normal(jax.random.key(5), (B, N_IN, N_OUT, D_OUT)).astype(dtype)
    assert _squash(x).dtype == dtype
    out = _route(x, 2, method="kmeans")
    assert out.dtype == dtype
    ref = routing_ref(np.asarray(x, np.float64), 2, "kmeans")
    tol = 2e-2 if dtype == jnp.bfloat16 else 1e-5
    np.testing.assert_allclose(np.asarray(out, np.float64), ref, atol=tol)
    layer = _layer(param_dtype=dtype)
    assert layer.kernel[...].dtype == dtype
    assert jax.eval_shape(layer, jax.ShapeDtypeStruct((B, N_IN, F), dtype)).dtype == dtype
