"""grad_cache: the full-batch gradient of a contrastive loss, computed chunk by chunk.

The reference everywhere is ``jax.value_and_grad`` of the whole-batch loss written out in the
test; where chunks matter (dropout keys, naive accumulation) they are built by indexing
``batch[i::n]`` here, not with the library's slicing helpers.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxtricks.optim import grad_cache

B, D, E, N = 16, 5, 4, 4  # batch, input features, embedding size, chunks
TEMPERATURE = 0.1


def init_mlp(key, sizes, dtype=jnp.float32):
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        {
            "w": (jax.random.normal(k, (a, b)) / np.sqrt(a)).astype(dtype),
            "b": jnp.full((b,), 0.1, dtype),
        }
        for k, a, b in zip(keys, sizes, sizes[1:])
    ]


def dense(layer, x):
    return x @ layer["w"] + layer["b"].reshape((1,) * (x.ndim - 1) + (-1,))


def mlp(params, x):
    for layer in params[:-1]:
        x = jnp.tanh(dense(layer, x))
    return dense(params[-1], x)


def info_nce(a, b, temperature=TEMPERATURE, *, replicate=False):
    """Symmetric InfoNCE: row i of ``a`` is positive with row i of ``b``, negatives the rest.

    ``replicate`` gathers the other view on every device (needed under an explicit
    data-sharded mesh, where each row must meet all rows of the other view).
    """
    a = a / jnp.linalg.norm(a, axis=-1, keepdims=True)
    b = b / jnp.linalg.norm(b, axis=-1, keepdims=True)
    pos = jnp.sum(a * b, axis=-1) / temperature
    a_all, b_all = (
        (jax.sharding.reshard(a, P()), jax.sharding.reshard(b, P())) if replicate else (a, b)
    )
    row = jax.nn.logsumexp(a @ b_all.T / temperature, axis=1) - pos
    col = jax.nn.logsumexp(b @ a_all.T / temperature, axis=1) - pos
    return 0.5 * (jnp.mean(row) + jnp.mean(col))


def encode_views(params, x):
    """``x`` ``(m, 2, D)``: two views per sample through one shared MLP → ``(m, 2, E)``."""
    return mlp(params, x)


def views_loss(h):
    return info_nce(h[:, 0], h[:, 1])


def full_batch(encode, loss_fn):
    return jax.value_and_grad(lambda p, x: loss_fn(encode(p, x)))


GC = jax.jit(grad_cache(encode_views, views_loss, N))
REF = jax.jit(full_batch(encode_views, views_loss))


def relative_error(tree, ref):
    def err(a, b):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        return np.linalg.norm(a - b) / np.linalg.norm(b)

    return max(jax.tree.leaves(jax.tree.map(err, tree, ref)))


def views_problem(seed, dtype=jnp.float64, scale=1.0, batch=B):
    kp, kx = jax.random.split(jax.random.key(seed))
    params = init_mlp(kp, (D, 8, E), dtype)
    x = scale * jax.random.normal(kx, (batch, 2, D), dtype)
    x = x.at[:, 1].add(0.3 * x[:, 0])  # the two views are correlated, as positives should be
    return params, x


@given(seed=st.integers(0, 2**16), scale=st.floats(0.2, 5.0))
def test_equals_full_batch_gradient(x64, seed, scale):
    params, x = views_problem(seed, scale=scale)
    loss, grads = GC(params, x)
    ref_loss, ref_grads = REF(params, x)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)
    assert relative_error(grads, ref_grads) < 1e-12


def test_pytree_embeddings_two_towers(x64):
    def encode(params, batch):
        return {"q": mlp(params["q"], batch["q"]), "d": mlp(params["d"], batch["d"])}

    def loss_fn(h):
        return info_nce(h["q"], h["d"])

    kq, kd, kx, ky = jax.random.split(jax.random.key(1), 4)
    params = {"q": init_mlp(kq, (D, 8, E), jnp.float64), "d": init_mlp(kd, (3, 6, E), jnp.float64)}
    batch = {
        "q": jax.random.normal(kx, (B, D), jnp.float64),
        "d": jax.random.normal(ky, (B, 3), jnp.float64),
    }
    loss, grads = jax.jit(grad_cache(encode, loss_fn, N))(params, batch)
    ref_loss, ref_grads = jax.jit(full_batch(encode, loss_fn))(params, batch)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)
    assert relative_error(grads, ref_grads) < 1e-12


def test_naive_accumulation_differs(x64):
    params, x = views_problem(3)
    _, grads = GC(params, x)
    _, ref_grads = REF(params, x)
    chunk_grad = jax.jit(jax.grad(lambda p, c: views_loss(encode_views(p, c))))
    naive = jax.tree.map(lambda *g: sum(g) / N, *[chunk_grad(params, x[i::N]) for i in range(N)])
    assert relative_error(grads, ref_grads) < 1e-12
    assert relative_error(naive, ref_grads) > 1e-2


def dropout_encoder(params, x, key):
    h = jnp.tanh(dense(params[0], x))
    keep = jax.random.bernoulli(key, 0.7, h.shape)
    h = jnp.where(keep, h / 0.7, 0.0)
    return dense(params[1], h)


def test_keyed_dropout_equals_full_batch_with_same_chunk_keys(x64):
    params, x = views_problem(4)

    def reference(p, x, key):
        parts = [dropout_encoder(p, x[i::N], jax.random.fold_in(key, i)) for i in range(N)]
        h = jnp.zeros((B,) + parts[0].shape[1:], parts[0].dtype)
        for i, part in enumerate(parts):  # chunk i holds rows i, i + N, …
            h = h.at[i::N].set(part)
        return views_loss(h)

    f = jax.jit(grad_cache(dropout_encoder, views_loss, N, with_key=True))
    key = jax.random.key(7)
    loss, grads = f(params, x, key)
    ref_loss, ref_grads = jax.jit(jax.value_and_grad(reference))(params, x, key)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)
    assert relative_error(grads, ref_grads) < 1e-12
    # Dropout is active: another key gives another gradient.
    assert relative_error(f(params, x, jax.random.key(8))[1], grads) > 1e-3


def test_jit_equals_eager(x64):
    params, x = views_problem(5)
    eager = grad_cache(encode_views, views_loss, N)(params, x)
    jitted = GC(params, x)
    np.testing.assert_allclose(jitted[0], eager[0], rtol=1e-13)
    assert relative_error(jitted[1], eager[1]) < 1e-13


def test_batch_sharded_over_data_axis(mesh8):
    # 32 rows, 4 strided chunks of 8: every chunk keeps one row on each of the 8 devices.
    params, x = views_problem(6, jnp.float32, batch=32)
    ref_loss, ref_grads = REF(params, x)
    with jax.set_mesh(mesh8):
        sharded = jax.device_put(x, NamedSharding(mesh8, P("data")))
        loss_fn = lambda h: info_nce(h[:, 0], h[:, 1], replicate=True)  # noqa: E731
        loss, grads = jax.jit(grad_cache(encode_views, loss_fn, N))(params, sharded)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    assert relative_error(grads, ref_grads) < 1e-5


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_grads_keep_param_dtype(dtype):
    params, x = views_problem(7, dtype)
    loss, grads = GC(params, x)
    assert jax.tree.map(lambda g: g.dtype, grads) == jax.tree.map(lambda p: p.dtype, params)
    _, ref = REF(params, x)
    assert relative_error(grads, ref) < (1e-5 if dtype == jnp.float32 else 0.1)


def temp_bytes(f, *args):
    return jax.jit(f).lower(*args).compile().memory_analysis().temp_size_in_bytes


def test_compiled_memory_is_about_one_chunk():
    # Token-wise MLP over (batch, tokens, features), then mean pooling: the activations
    # (batch × tokens × hidden) dwarf the parameters and the embeddings.
    batch, tokens, features, hidden, emb = 256, 16, 8, 128, 8
    params = jax.eval_shape(lambda: init_mlp(jax.random.key(0), (features, hidden, hidden, emb)))
    x = jax.ShapeDtypeStruct((batch, tokens, features), jnp.float32)

    def encode(p, x):
        return mlp(p, x).mean(axis=1)

    def loss_fn(h):
        return info_nce(h[0::2], h[1::2])

    full = temp_bytes(full_batch(encode, loss_fn), params, x)
    cached = temp_bytes(grad_cache(encode, loss_fn, 16), params, x)
    assert cached < 0.3 * full, (cached, full)


def test_errors():
    params, x = views_problem(0, jnp.float32)
    make = functools.partial(grad_cache, encode_views, views_loss)
    with pytest.raises(ValueError, match="num_chunks must be a positive int, got 0"):
        make(0)
    with pytest.raises(ValueError, match="num_chunks must be a positive int, got -2"):
        make(-2)
    with pytest.raises(TypeError, match="num_chunks must be a positive int, got 2.0"):
        make(2.0)
    with pytest.raises(TypeError, match="with_key must be a bool, got 'yes'"):
        make(2, with_key="yes")
    with pytest.raises(ValueError, match=r"leading axis of batch \(16\) .* num_chunks=3"):
        jax.eval_shape(make(3), params, x)
    pooled = lambda p, c: encode_views(p, c).mean(axis=0)  # noqa: E731  (drops the batch axis)
    with pytest.raises(ValueError, match=r"encode_fn .* leading axis 4 .* num_chunks=4"):
        jax.eval_shape(grad_cache(pooled, views_loss, 4), params, x)
    with pytest.raises(ValueError, match=r"loss_fn must return a scalar, got \(16,\)"):
        jax.eval_shape(grad_cache(encode_views, lambda h: h[:, 0, 0], 4), params, x)
