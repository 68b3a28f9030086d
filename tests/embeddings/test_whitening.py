"""Tests of jaxtricks.embeddings (BERT-whitening and streaming statistics).

The reference is a float64 NumPy implementation of the post's formulas: mean, covariance with
1/N, ``np.linalg.eigh`` sorted descending, ``W = U diag(λ^{-1/2})``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from jaxpr_checks import dot_precisions

from jaxtricks.embeddings import Whitening, WhiteningStats, whitening_apply, whitening_fit

D = 6


def _data(n=64, d=D, seed=0, offset=5.0):
    """Anisotropic rows with a common offset: distinct eigenvalues (a unique kernel)."""
    rng = np.random.default_rng(seed)
    rotation = np.linalg.qr(rng.standard_normal((d, d)))[0]
    scales = np.geomspace(3.0, 0.3, d)
    return rng.standard_normal((n, d)) * scales @ rotation + offset


def _np_fit(x, dim=None):
    x = np.asarray(x, np.float64)
    mean = x.mean(0)
    cov = (x - mean).T @ (x - mean) / x.shape[0]
    lam, u = np.linalg.eigh(cov)
    lam, u = lam[::-1], u[:, ::-1]
    dim = x.shape[1] if dim is None else dim
    return mean, cov, u[:, :dim] / np.sqrt(lam[:dim])


def _align_signs(kernel, ref):
    """Eigenvector signs are a convention: flip columns of ``kernel`` to match ``ref``."""
    return kernel * np.sign(np.sum(kernel * ref, axis=0))


def _np_apply(x, mean, kernel, normalize):
    y = (np.asarray(x, np.float64) - mean) @ kernel
    return y / np.linalg.norm(y, axis=-1, keepdims=True) if normalize else y


@pytest.mark.parametrize("dim", [None, 3])
def test_fit_matches_numpy_reference(x64, dim):
    x = _data()
    w = whitening_fit(jnp.asarray(x), dim=dim)
    mean, cov, kernel = _np_fit(x, dim)
    assert w.kernel.dtype == jnp.float64 and w.kernel.shape == kernel.shape
    np.testing.assert_allclose(w.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(_align_signs(np.asarray(w.kernel), kernel), kernel, atol=1e-10)
    if dim is None:  # W W^T = Σ^{-1}, independent of any sign or basis convention
        np.testing.assert_allclose(w.kernel @ w.kernel.T, np.linalg.inv(cov), rtol=1e-9)


def test_whitened_covariance_is_identity_float32():
    x = _data()
    for dim in (D, 2):
        y = np.asarray(
            whitening_apply(x.astype(np.float32), whitening_fit(x, dim=dim), normalize=False),
            np.float64,
        )
        cov = np.cov(y.T, bias=True)  # full D, or the top-dim block for dim < D
        np.testing.assert_allclose(cov, np.eye(dim), atol=2e-4)
        np.testing.assert_allclose(y.mean(0), 0.0, atol=2e-4)


def test_apply_matches_reference_batched_and_dtype():
    x = _data()
    w = whitening_fit(jnp.asarray(x, jnp.float32), dim=4)
    mean, _, kernel = _np_fit(x, 4)
    w = Whitening(w.mean, jnp.asarray(_align_signs(np.asarray(w.kernel), kernel)))
    tokens = x[:12].reshape(3, 4, D)  # (B, T, D)
    for normalize in (True, False):
        y = whitening_apply(jnp.asarray(tokens, jnp.float32), w, normalize=normalize)
        assert y.shape == (3, 4, 4) and y.dtype == jnp.float32
        np.testing.assert_allclose(y, _np_apply(tokens, mean, kernel, normalize), atol=2e-5)
    y16 = whitening_apply(jnp.asarray(tokens, jnp.bfloat16), w)
    assert y16.dtype == jnp.bfloat16
    np.testing.assert_allclose(
        np.asarray(y16, np.float32), _np_apply(tokens, mean, kernel, True), atol=5e-2
    )
    assert whitening_fit(jnp.asarray(x, jnp.bfloat16)).kernel.dtype == jnp.float32


def test_safe_norm_zero_vector_and_gradient():
    w = whitening_fit(_data())
    y = whitening_apply(w.mean, w)  # the mean maps to the zero vector
    assert np.all(np.asarray(y) == 0.0)
    g = jax.grad(lambda v: whitening_apply(v, w).sum())(w.mean)
    assert np.all(np.isfinite(g))


@pytest.mark.parametrize("scale", [1e-30, 1e-18, 1e18, 1e30])
def test_normalize_gives_unit_vectors_at_any_scale(scale):
    # The safe norm is scaled before squaring: 1e-18 squared is below float32's smallest
    # normal, 1e30 squared above its largest. Direction from a float64 NumPy reference.
    w = Whitening(jnp.zeros(3), jnp.eye(3)[:, :2])
    x = np.array([[3.0, -4.0, 7.0], [1e-3, 2.0, 0.0]], np.float32) * np.float32(scale)
    y = np.asarray(whitening_apply(jnp.asarray(x), w), np.float64)
    want = x[:, :2].astype(np.float64)
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(y, want, rtol=2e-6)


HIGHEST = (jax.lax.Precision.HIGHEST,) * 2


@pytest.mark.parametrize(
    "fn",
    [
        lambda x: whitening_fit(x, dim=3),
        lambda x: WhiteningStats.from_batch(x, mask=x[:, 0] > 5),
        lambda x: WhiteningStats.from_batch(x[:5]).merge(WhiteningStats.from_batch(x[5:])),
        lambda x: WhiteningStats.create(D).update(x).to_whitening(),
        lambda x: whitening_apply(x, whitening_fit(x)),
        lambda x: jax.grad(lambda v: whitening_apply(v, whitening_fit(x)).sum())(x),
    ],
    ids=["fit", "masked", "merge", "update", "apply", "apply-grad"],
)
def test_statistics_and_projection_run_at_highest_precision(fn):
    # The CPU ignores the precision, so read it from the jaxpr, under a low default (TPU).
    x = jnp.asarray(_data(n=12), jnp.float32)
    with jax.default_matmul_precision("bfloat16"):
        precisions = dot_precisions(fn, x)
    assert precisions and all(p == HIGHEST for p in precisions), precisions


def test_apply_precision_argument_is_passed_to_the_product():
    x = jnp.asarray(_data(n=12), jnp.float32)
    w = whitening_fit(x)
    for precision, want in [("default", jax.lax.Precision.DEFAULT), (None, None)]:
        got = dot_precisions(whitening_apply, x, w, precision=precision)
        assert got == [None if want is None else (want, want)], got


def test_streaming_uneven_batches_equals_batch(x64):
    x = _data(offset=1e3)
    stats = WhiteningStats.create(D, jnp.float64)
    for chunk in np.split(x, [5, 5]):  # sizes 5, 0 (empty), 59
        stats = stats.update(chunk)
    # A fixed-shape padded batch with a mask adds nothing for the padding rows.
    padded = np.concatenate([x[:5], np.full((3, D), 1e6)])
    masked = WhiteningStats.create(D, jnp.float64).update(padded, mask=np.arange(8) < 5)
    masked = masked.update(x[5:])
    mean, cov, kernel = _np_fit(x)
    for s in (stats, masked):
        assert float(s.count) == len(x)
        np.testing.assert_allclose(s.mean, mean, rtol=1e-13)
        np.testing.assert_allclose(s.covariance(), cov, rtol=1e-9, atol=1e-12)
        k = np.asarray(s.to_whitening().kernel)
        np.testing.assert_allclose(_align_signs(k, kernel), kernel, atol=1e-9)


# Jitted once per shape so that the hypothesis examples do not pay eager dispatch.
_from_batch, _merge = jax.jit(WhiteningStats.from_batch), jax.jit(WhiteningStats.merge)


@given(
    values=hnp.arrays(np.float64, (24, 3), elements=st.floats(-1e3, 1e3)),
    order=st.permutations(range(4)),
    nested=st.booleans(),
)
def test_merge_any_order(x64, values, order, nested):
    chunks = np.split(values, [3, 4, 15])  # sizes 3, 1, 11, 9
    parts = [_from_batch(chunks[i]) for i in order]
    if nested:  # ((a + b) + (c + d))
        merged = _merge(_merge(parts[0], parts[1]), _merge(parts[2], parts[3]))
    else:  # (((a + b) + c) + d), starting from empty
        merged = WhiteningStats.create(3, jnp.float64)
        for p in parts:
            merged = _merge(merged, p)
    mean = values.mean(0)
    cov = (values - mean).T @ (values - mean) / len(values)
    scale = 1.0 + np.abs(values).max() ** 2
    np.testing.assert_allclose(merged.mean, mean, atol=1e-12 * (1 + np.abs(values).max()))
    np.testing.assert_allclose(merged.covariance(), cov, atol=1e-12 * scale)


def test_sharded_batch_equals_unsharded(mesh8):
    x = jnp.asarray(_data(n=64), jnp.float32)
    reference = WhiteningStats.from_batch(x)
    sharded = jax.device_put(x, NamedSharding(mesh8, P("data")))
    # (1) jit over a sharded batch: XLA inserts the reductions.
    stats = jax.jit(WhiteningStats.from_batch)(sharded)
    # (2) explicit per-device statistics merged with psum.
    merged = jax.shard_map(
        lambda xs: WhiteningStats.from_batch(xs).merge_over("data"),
        mesh=mesh8,
        in_specs=P("data"),
        out_specs=P(),
    )(sharded)
    for s in (stats, merged):
        np.testing.assert_allclose(s.count, 64)
        np.testing.assert_allclose(s.mean, reference.mean, rtol=1e-6)
        np.testing.assert_allclose(s.m2, reference.m2, rtol=1e-5, atol=1e-4)
    w = jax.jit(whitening_fit)(sharded)
    y = jax.jit(whitening_apply)(sharded, w)
    assert y.sharding.is_equivalent_to(sharded.sharding, y.ndim)
    np.testing.assert_allclose(y, whitening_apply(x, whitening_fit(x)), atol=1e-4)


def test_rank_deficient_is_finite():
    rng = np.random.default_rng(1)
    base = rng.standard_normal((64, 3)) + 3.0
    cases = {  # name: (x, rank of the centred data)
        "n_less_than_d": (rng.standard_normal((4, D)) + 3.0, 3),  # centring removes one more
        "collinear": (np.concatenate([base, base @ rng.standard_normal((3, D - 3))], 1), 3),
        "constant": (np.full((64, D), 2.5), 0),
    }
    for name, (x, rank) in cases.items():
        x = jnp.asarray(x, jnp.float32)
        w = whitening_fit(x)
        y = np.asarray(whitening_apply(x, w, normalize=False), np.float64)
        new = np.asarray(whitening_apply(x + 1.0, w), np.float64)
        finite = [np.all(np.isfinite(a)) for a in (w.kernel, y, new)]
        assert all(finite), name
        if rank:  # the top-rank block of the whitened covariance is still the identity
            cov = np.cov(y[:, :rank].T, bias=True)
            np.testing.assert_allclose(cov, np.eye(rank), atol=1e-3, err_msg=name)


def test_jit_equals_eager():
    x = jnp.asarray(_data(), jnp.float32)
    w_eager = whitening_fit(x, dim=3)
    w_jit = jax.jit(whitening_fit, static_argnames="dim")(x, dim=3)
    np.testing.assert_allclose(w_jit.kernel, w_eager.kernel, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        jax.jit(whitening_apply)(x, w_eager), whitening_apply(x, w_eager), rtol=1e-5, atol=1e-6
    )
    update = jax.jit(WhiteningStats.update)
    s_eager = WhiteningStats.create(D).update(x[:5]).update(x[5:])
    s_jit = update(update(WhiteningStats.create(D), x[:5]), x[5:])
    for a, b in zip(s_jit, s_eager):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_errors():
    x = jnp.ones((4, 3))
    with pytest.raises(ValueError, match="dim must be a positive int, got 0"):
        whitening_fit(x, dim=0)
    with pytest.raises(ValueError, match="dim must satisfy 1 <= dim <= 3.*got 4"):
        whitening_fit(x, dim=4)
    with pytest.raises(TypeError, match="dim must be a positive int"):
        whitening_fit(x, dim=2.0)
    with pytest.raises(ValueError, match=r"x must be 2-D \(N, D\) with D >= 1, got shape \(3,\)"):
        whitening_fit(jnp.ones(3))
    with pytest.raises(ValueError, match="N >= 2 rows.*N = 1"):
        whitening_fit(jnp.ones((1, 3)))
    with pytest.raises(ValueError, match="rtol must be"):
        whitening_fit(x, rtol=-1.0)
    w = Whitening(jnp.zeros(3), jnp.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 3\) to match w"):
        whitening_apply(jnp.ones((2, 5)), w)
    with pytest.raises(ValueError, match="w must hold mean"):
        whitening_apply(jnp.ones((2, 3)), Whitening(jnp.zeros(3), jnp.zeros((4, 2))))
    stats = WhiteningStats.create(3)
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 3\) to match the stat"):
        stats.update(jnp.ones((2, 5)))
    with pytest.raises(ValueError, match="mask must have shape"):
        stats.update(jnp.ones((2, 3)), mask=jnp.ones(3, bool))
    with pytest.raises(ValueError, match="other must have the feature size"):
        stats.merge(WhiteningStats.create(4))
    with pytest.raises(ValueError, match="features must be a positive int, got 0"):
        WhiteningStats.create(0)
    with pytest.raises(TypeError, match="dtype must be a floating dtype"):
        WhiteningStats.create(3, jnp.int32)
    with pytest.raises(ValueError, match="dim must satisfy"):
        stats.to_whitening(dim=5)


def test_claim_spearman_toy_holds():
    from jaxtricks.reproduce.post_8069_whitening import spearman_toy

    assert spearman_toy().ok
