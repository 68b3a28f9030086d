"""Vector quantization: NumPy float64 references, brute force, dm-haiku parity, EMA, sharding."""

import functools

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
from jaxpr_checks import dot_precisions
from references import ema_codebook_step

from jaxtricks.nn import (
    VQVAE,
    VectorQuantizer,
    VectorQuantizerEMA,
    VQStatistics,
    nearest_codes,
    vector_quantize,
)

K, D = 7, 4
SEEDS = st.integers(0, 2**32 - 1)


def _data(seed, shape=(3, 5, D), k=K):
    rng = np.random.default_rng(seed)
    return rng.normal(size=shape), rng.normal(size=(k, D))


def _np_reference(z, codebook, beta=0.25):
    """Float64 NumPy VQ: brute-force distances, losses, perplexity and usage."""
    z, codebook = np.asarray(z, np.float64), np.asarray(codebook, np.float64)
    flat = z.reshape(-1, z.shape[-1])
    dist = ((flat[:, None, :] - codebook[None, :, :]) ** 2).sum(-1)
    idx = dist.argmin(-1)
    e = codebook[idx]
    mse = ((flat - e) ** 2).mean()
    p = np.bincount(idx, minlength=len(codebook)) / len(idx)
    nz = p[p > 0]
    return dict(
        indices=idx.reshape(z.shape[:-1]),
        quantized=e.reshape(z.shape),
        codebook_loss=mse,
        commitment_loss=mse,
        loss=(1 + beta) * mse,
        perplexity=np.exp(-(nz * np.log(nz)).sum()),
        usage=(p > 0).mean(),
    )


_vq_jit = jax.jit(vector_quantize, static_argnames="chunk_size")
_apply = nnx.jit(lambda module, z: module(z))


@given(seed=SEEDS, beta=st.floats(0.0, 2.0))
def test_matches_numpy_reference(seed, beta):
    z, codebook = _data(seed)
    out = _vq_jit(
        jnp.asarray(z, jnp.float32), jnp.asarray(codebook, jnp.float32), commitment_cost=beta
    )
    ref = _np_reference(z, codebook, beta)
    np.testing.assert_array_equal(out.indices, ref["indices"])
    assert out.indices.dtype == jnp.int32
    for name in ("quantized", "codebook_loss", "commitment_loss", "loss", "perplexity", "usage"):
        np.testing.assert_allclose(getattr(out, name), ref[name], rtol=1e-5, atol=1e-6)


def test_float64_matches_reference_tightly(x64):
    z, codebook = _data(0)
    out = _vq_jit(jnp.asarray(z), jnp.asarray(codebook), commitment_cost=0.5)
    ref = _np_reference(z, codebook, 0.5)
    assert out.loss.dtype == jnp.float64
    np.testing.assert_array_equal(out.indices, ref["indices"])
    for name in ("quantized", "loss", "perplexity"):
        np.testing.assert_allclose(getattr(out, name), ref[name], rtol=1e-12)


def test_chunked_equals_unchunked_and_brute_force():
    z, codebook = _data(1, shape=(37, D), k=11)
    z, codebook = jnp.asarray(z, jnp.float32), jnp.asarray(codebook, jnp.float32)
    brute = _np_reference(z, codebook)["indices"]
    full = _vq_jit(z, codebook)
    for chunk in (8, 64):  # with a remainder; a single short chunk
        out = _vq_jit(z, codebook, chunk_size=chunk)
        np.testing.assert_array_equal(out.indices, brute)
        for a, b in zip(out, full):
            np.testing.assert_array_equal(a, b)


def test_chunking_bounds_compiled_memory():
    z = jax.ShapeDtypeStruct((4096, 8), jnp.float32)
    codebook = jax.ShapeDtypeStruct((1024, 8), jnp.float32)

    def temp(chunk):
        f = jax.jit(lambda z, c: nearest_codes(z, c, chunk_size=chunk))
        return f.lower(z, codebook).compile().memory_analysis().temp_size_in_bytes

    full_matrix = 4096 * 1024 * 4
    assert temp(None) >= full_matrix
    assert temp(256) <= full_matrix / 8


def test_gradients_reach_the_right_arguments():
    """Codebook loss moves only the codebook, commitment only z (the port bug swaps them)."""
    z, codebook = _data(2)
    z, codebook = jnp.asarray(z, jnp.float32), jnp.asarray(codebook, jnp.float32)
    ref = _np_reference(z, codebook)
    flat, idx = np.asarray(z, np.float64).reshape(-1, D), ref["indices"].reshape(-1)
    diff = flat - np.asarray(codebook, np.float64)[idx]
    # d/de_k mean((sg z - e)^2) = -2/size * sum_{i in k} (z_i - e_k); d/dz of the commitment.
    want_codebook = np.zeros((K, D))
    np.add.at(want_codebook, idx, -2.0 * diff / diff.size)
    want_z = 2.0 * diff / diff.size

    @jax.jit
    def grads(z, c):
        jac = jax.jacrev(lambda z, c: vector_quantize(z, c)[3:5], argnums=(0, 1))
        return jac(z, c)

    (gz, gc), (gz_commit, gc_commit) = grads(z, codebook)
    np.testing.assert_array_equal(gz, 0.0)
    np.testing.assert_allclose(gc, want_codebook, rtol=1e-5, atol=1e-7)
    gz, gc = gz_commit, gc_commit
    np.testing.assert_array_equal(gc, 0.0)
    np.testing.assert_allclose(gz.reshape(-1, D), want_z, rtol=1e-5, atol=1e-7)


@given(seed=SEEDS)
def test_straight_through_gradient(seed):
    """dL/dz = dL/dz_q: the gradient of f(z_q) w.r.t. z is f's gradient at z_q."""
    z, codebook = _data(seed)
    w = np.random.default_rng(seed + 1).normal(size=z.shape)
    z, codebook = jnp.asarray(z, jnp.float32), jnp.asarray(codebook, jnp.float32)
    g = _ste_grad(z, codebook, jnp.asarray(w, jnp.float32))
    e = _np_reference(z, codebook)["quantized"]
    np.testing.assert_allclose(g, 2.0 * w * e, rtol=1e-5, atol=1e-6)


@jax.jit
def _ste_grad(z, codebook, w):
    return jax.grad(lambda z: jnp.sum(w * vector_quantize(z, codebook).quantized ** 2))(z)


def test_matches_haiku():
    hk = pytest.importorskip("haiku")
    z, codebook = _data(3, shape=(4, 6, D), k=9)
    z, codebook = jnp.asarray(z, jnp.float32), jnp.asarray(codebook, jnp.float32)

    def haiku_loss(z):
        vq = hk.nets.VectorQuantizer(embedding_dim=D, num_embeddings=9, commitment_cost=0.25)
        out = vq(z, is_training=True)
        return out["loss"], out

    f = hk.without_apply_rng(hk.transform(haiku_loss))
    params = {"vector_quantizer": {"embeddings": codebook.T}}  # haiku stores (D, K)

    def ours(c, z):
        out = vector_quantize(z, c)
        return out.loss, out

    @jax.jit
    def both(params, codebook, z):
        hk_vg = jax.value_and_grad(f.apply, argnums=(0, 1), has_aux=True)(params, z)
        return hk_vg, jax.value_and_grad(ours, argnums=(0, 1), has_aux=True)(codebook, z)

    ((hk_loss, hk_out), (hk_gp, hk_gz)), ((loss, out), (gc, gz)) = both(params, codebook, z)
    np.testing.assert_array_equal(out.indices, hk_out["encoding_indices"])
    np.testing.assert_allclose(out.quantized, hk_out["quantize"], rtol=1e-6)
    np.testing.assert_allclose(loss, hk_loss, rtol=1e-6)
    np.testing.assert_allclose(out.perplexity, hk_out["perplexity"], rtol=1e-5)
    np.testing.assert_allclose(gz, hk_gz, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(gc, hk_gp["vector_quantizer"]["embeddings"].T, rtol=1e-5, atol=1e-8)


def test_ema_decay_zero_matches_haiku():
    hk = pytest.importorskip("haiku")
    z, codebook = _data(4, shape=(40, D), k=5)
    z, codebook = jnp.asarray(z, jnp.float32), jnp.asarray(codebook, jnp.float32)

    def haiku_vq(z):
        vq = hk.nets.VectorQuantizerEMA(
            embedding_dim=D, num_embeddings=5, commitment_cost=0.25, decay=0.0
        )
        return vq(z, is_training=True)

    f = hk.without_apply_rng(hk.transform_with_state(haiku_vq))
    _, state = jax.jit(f.init)(jax.random.key(0), z)
    state = {**state, "vector_quantizer_ema": {"embeddings": codebook.T}}
    hk_out, hk_state = jax.jit(f.apply)({}, state, z)
    vq = VectorQuantizerEMA(5, D, decay=0.0, rngs=nnx.Rngs(0))
    vq.codebook[...] = codebook
    out = _apply(vq, z)
    np.testing.assert_array_equal(out.indices, hk_out["encoding_indices"])
    np.testing.assert_allclose(out.loss, hk_out["loss"], rtol=1e-6)
    np.testing.assert_allclose(
        vq.codebook[...], hk_state["vector_quantizer_ema"]["embeddings"].T, rtol=1e-5
    )


def test_ema_updates_match_numpy():
    vq = VectorQuantizerEMA(K, D, decay=0.9, epsilon=1e-3, rngs=nnx.Rngs(1))
    size = np.ones(K)
    total = np.asarray(vq.codebook[...], np.float64)
    for seed in (5, 6):
        z = np.random.default_rng(seed).normal(size=(30, D))
        idx = _np_reference(z, np.asarray(vq.codebook[...]))["indices"]
        out = _apply(vq, jnp.asarray(z, jnp.float32))
        np.testing.assert_array_equal(out.indices, idx)
        prev = np.zeros_like(total)  # unused: with epsilon > 0 every smoothed count is > 0
        size, total, codebook = ema_codebook_step(size, total, prev, z, idx, 0.9, 1e-3)
        np.testing.assert_allclose(vq.cluster_size[...], size, rtol=1e-5)
        np.testing.assert_allclose(vq.code_sum[...], total, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(vq.codebook[...], codebook, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out.loss, 0.25 * out.commitment_loss, rtol=1e-7)


def test_ema_decay_zero_is_one_kmeans_step():
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(K, D)) * 5
    z = (centres[:, None, :] + rng.normal(size=(K, 6, D))).reshape(-1, D)
    vq = VectorQuantizerEMA(K, D, decay=0.0, epsilon=1e-5, rngs=nnx.Rngs(0))
    vq.codebook[...] = jnp.asarray(centres + 0.5, jnp.float32)
    idx = _np_reference(z, centres + 0.5)["indices"]
    assert len(np.unique(idx)) == K  # every code used: the k-means step is defined for all
    means = np.stack([z[idx == k].mean(0) for k in range(K)])
    _apply(vq, jnp.asarray(z, jnp.float32))
    np.testing.assert_allclose(vq.codebook[...], means, rtol=1e-4, atol=1e-4)


def _snapshot(module):
    return jax.tree.map(np.array, nnx.state(module, VQStatistics))


def test_eval_freezes_statistics_and_train_resumes():
    vq = VectorQuantizerEMA(K, D, rngs=nnx.Rngs(0))
    z = jax.random.normal(jax.random.key(0), (12, D))
    before = _snapshot(vq)
    vq.eval()
    assert vq.use_running_average
    _apply(vq, z)
    jax.tree.map(np.testing.assert_array_equal, before, _snapshot(vq))
    nnx.jit(lambda m, z: m(z, use_running_average=False))(vq, z)  # the per-call override
    changed = _snapshot(vq)
    assert not np.allclose(changed["cluster_size"], before["cluster_size"])
    vq.train()
    _apply(vq, z)
    assert not np.allclose(vq.cluster_size[...], changed["cluster_size"])


def test_module_jit_equals_eager():
    z = jax.random.normal(jax.random.key(4), (2, 6, D))
    # The EMA module runs all of vector_quantize plus the statistics update.
    eager = VectorQuantizerEMA(K, D, rngs=nnx.Rngs(0))
    jitted = VectorQuantizerEMA(K, D, rngs=nnx.Rngs(0))
    for a, b in zip(eager(z), _apply(jitted, z)):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    close = functools.partial(np.testing.assert_allclose, rtol=1e-6, atol=1e-7)
    jax.tree.map(close, nnx.state(eager), nnx.state(jitted))


def test_optimizer_skips_statistics():
    model = VQVAE(16, num_latents=4, num_codes=8, code_dim=4, hidden=16, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(
        nnx.state(optimizer.opt_state))]  # fmt: skip
    assert paths and not any("cluster_size" in p or "code_sum" in p for p in paths)
    x = jax.random.normal(jax.random.key(1), (4, 16))
    params, stats = jax.tree.map(np.array, (nnx.state(model, nnx.Param), _snapshot(model)))

    @nnx.jit
    def step(model, optimizer, x):
        def loss_fn(model):
            recon, out = model(x)
            return jnp.mean((recon - x) ** 2) + out.loss

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    step(model, optimizer, x)
    # Both moved: the parameters by Adam, the statistics by their moving averages.
    assert not np.allclose(model.enc1.kernel[...], params["enc1"]["kernel"])
    assert not np.allclose(model.vq.cluster_size[...], stats["vq"]["cluster_size"])


@pytest.mark.parametrize(
    "cls, z_dtype, param_dtype",
    [
        (VectorQuantizer, jnp.bfloat16, jnp.float32),
        (VectorQuantizer, jnp.float32, jnp.float32),
        (VectorQuantizerEMA, jnp.bfloat16, jnp.bfloat16),
    ],
)
def test_dtypes(cls, z_dtype, param_dtype):
    z = jax.random.normal(jax.random.key(2), (16, D)).astype(z_dtype)
    vq = cls(K, D, param_dtype=param_dtype, rngs=nnx.Rngs(0))
    codebook = vq.codebook[...]
    out = _apply(vq, z)
    assert out.quantized.dtype == z_dtype
    assert out.loss.dtype == jnp.float32
    for v in jax.tree.leaves(nnx.state(vq, (nnx.Param, VQStatistics))):
        assert v.dtype == param_dtype  # the statistics keep their dtype after the update
    # Distances in float32 of the (upcast) inputs: the same nearest codes.
    want = _np_reference(np.asarray(z, np.float32), np.asarray(codebook, np.float32))
    np.testing.assert_array_equal(out.indices, want["indices"])


def test_sharded_batch_update_equals_unsharded(mesh8):
    z = jax.random.normal(jax.random.key(3), (64, D))
    graphdef, state = nnx.split(VectorQuantizerEMA(K, D, decay=0.5, rngs=nnx.Rngs(0)))

    @jax.jit
    def update(state, z):
        vq = nnx.merge(graphdef, state)
        out = vq(z)
        return nnx.state(vq, VQStatistics), out.perplexity, out.loss

    sharded = update(state, jax.device_put(z, NamedSharding(mesh8, P("data"))))
    plain = update(state, z)
    for a, b in zip(jax.tree.leaves(sharded), jax.tree.leaves(plain)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_vqvae_shapes_and_plain_codebook():
    # Sizes of test_optimizer_skips_statistics, all kernels 16 x 16: eager initialisers
    # compile once per shape.
    model = VQVAE(
        16, num_latents=4, num_codes=8, code_dim=4, hidden=16, ema=False, rngs=nnx.Rngs(0)
    )
    recon, out = _apply(model, jnp.ones((2, 5, 16)))
    assert recon.shape == (2, 5, 16) and out.indices.shape == (2, 5, 4)
    assert isinstance(model.vq.codebook, nnx.Param)


HIGHEST = (jax.lax.Precision.HIGHEST,) * 2


@pytest.mark.parametrize("chunk_size", [None, 4])
def test_distance_matmul_runs_at_highest_precision(chunk_size):
    # The CPU ignores matmul precision, so the jaxpr is where it can be seen: the default
    # (bf16 on TPU, TF32 on GPUs) would flip near-ties between codes.
    z, codebook = jnp.ones((10, D)), jnp.ones((K, D))
    for fn in (nearest_codes, vector_quantize):
        got = dot_precisions(lambda z, c: fn(z, c, chunk_size=chunk_size), z, codebook)  # noqa: B023
        assert got and all(p == HIGHEST for p in got), got
        low = dot_precisions(
            lambda z, c: fn(z, c, chunk_size=chunk_size, precision="default"),  # noqa: B023
            z,
            codebook,
        )
        assert low and all(p == (jax.lax.Precision.DEFAULT,) * 2 for p in low), low
    for cls in (VectorQuantizer, VectorQuantizerEMA):
        graphdef, state = nnx.split(cls(K, D, chunk_size=chunk_size, rngs=nnx.Rngs(0)))
        got = dot_precisions(lambda state, z: nnx.merge(graphdef, state)(z), state, z)  # noqa: B023
        assert got and all(p == HIGHEST for p in got), (cls, got)


def test_claims_cheap():
    from jaxtricks.reproduce import post_6760_vq as claims

    m = claims.straight_through()  # ema-kmeans is test_ema_decay_zero_is_one_kmeans_step
    assert m.ok, m.measured
