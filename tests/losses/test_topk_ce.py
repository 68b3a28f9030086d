"""Top-k (sparse softmax) cross-entropy against brute force and optax."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from jax.test_util import check_grads

from jaxtricks.losses import topk_softmax_cross_entropy
from jaxtricks.reproduce import post_8046_topk

B, K = 4, 9
LABELS = np.array([0, 3, 8, 5])


def _ref(logits, labels, k, include_target=False):
    """Brute force in float64: the k largest (ties to the lower index), plus the target if asked."""
    logits = np.asarray(logits, np.float64)
    out = np.empty(logits.shape[:-1])
    for idx in np.ndindex(logits.shape[:-1]):
        s, t = logits[idx], int(labels[idx])
        omega = set(sorted(range(s.size), key=lambda i: (-s[i], i))[:k])
        if include_target:
            omega.add(t)
        v = s[sorted(omega)]
        out[idx] = v.max() + np.log(np.exp(v - v.max()).sum()) - s[t]
    return out


values = arrays(np.float64, (B, K), elements=st.floats(-30.0, 30.0))


@pytest.mark.parametrize("k", [1, 3, 8, 9])
@pytest.mark.parametrize("include_target", [True, False])
@given(logits=values)
def test_matches_brute_force_and_is_nonnegative(x64, k, include_target, logits):
    got = np.asarray(
        topk_softmax_cross_entropy(
            jnp.asarray(logits), jnp.asarray(LABELS), k, include_target=include_target
        )
    )
    np.testing.assert_allclose(got, _ref(logits, LABELS, k, include_target), rtol=1e-12, atol=1e-12)
    assert (got >= 0).all()


@given(logits=arrays(np.float32, (B, K), elements=st.floats(-50.0, 50.0, width=32)))
def test_equals_optax_when_k_covers_all_classes(logits):
    got = topk_softmax_cross_entropy(logits, LABELS, K)
    ref = optax.softmax_cross_entropy_with_integer_labels(logits, LABELS)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)


def _post_formula(logits, labels, k):
    """The post's sparse cross-entropy in float64: log sum_{i in top k} e^{s_i} - s_t."""
    s = np.asarray(logits, np.float64)
    top = -np.sort(-s, axis=-1)[..., :k]
    m = top.max(axis=-1)
    lse = m + np.log(np.exp(top - m[..., None]).sum(axis=-1))
    return lse - np.take_along_axis(s, np.asarray(labels)[..., None], axis=-1)[..., 0]


@pytest.mark.parametrize("k", [1, 4, 9])
@given(logits=values)
def test_default_is_the_posts_formula(x64, k, logits):
    # kexue.fm/archives/8046: logsumexp over the top k only, minus the target logit, whether
    # or not the target is among the top k.
    got = np.asarray(topk_softmax_cross_entropy(jnp.asarray(logits), jnp.asarray(LABELS), k))
    np.testing.assert_allclose(got, _post_formula(logits, LABELS, k), rtol=1e-12, atol=1e-12)


def test_target_in_top_k_makes_conventions_agree():
    logits = jnp.array([[4.0, 3.0, 0.0, -1.0]] * 2)
    labels = jnp.array([1, 2])
    with_t = topk_softmax_cross_entropy(logits, labels, 2, include_target=True)
    without = topk_softmax_cross_entropy(logits, labels, 2)
    np.testing.assert_allclose(without, _post_formula(logits, labels, 2), rtol=1e-6)
    assert float(with_t[0]) == float(without[0])  # target inside the top 2
    assert float(with_t[1]) > float(without[1])  # target outside: it joins the sum


@pytest.mark.parametrize("include_target", [True, False])
def test_gradient_zero_outside_top_k_and_target(include_target):
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(6, 20)) * 3, jnp.float32)
    labels = jnp.asarray(rng.integers(0, 20, 6))
    k = 4
    grad = np.asarray(
        jax.grad(
            lambda s: jnp.sum(
                topk_softmax_cross_entropy(s, labels, k, include_target=include_target)
            )
        )(logits)
    )
    top = np.zeros((6, 20), bool)
    np.put_along_axis(top, np.argsort(-np.asarray(logits), axis=-1)[:, :k], True, axis=-1)
    target = np.zeros((6, 20), bool)
    target[np.arange(6), np.asarray(labels)] = True
    assert (grad[~(top | target)] == 0).all()
    # grad = softmax over the log-partition's set minus the one-hot target
    omega = top | target if include_target else top
    e = np.where(omega, np.exp(np.asarray(logits, np.float64)), 0.0)
    np.testing.assert_allclose(grad, e / e.sum(-1, keepdims=True) - target, atol=1e-6)


def test_gradients(x64):
    logits = jnp.array([[0.3, -1.2, 2.5, 0.9, -0.4, 1.7], [5.0, 4.0, -3.0, 0.0, 1.0, 2.0]])
    labels = jnp.array([1, 2])  # both outside the top 3: the target branch is exercised

    @jax.jit
    def both(s):  # both conventions in one function: one set of compilations
        return jnp.stack(
            [topk_softmax_cross_entropy(s, labels, 3, include_target=inc) for inc in (True, False)]
        )

    check_grads(both, (logits,), order=2, modes=("rev",))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_dtype_kept_and_large_logits_finite(dtype):
    logits = jnp.array([[1e4, -1e4, 3.0, 9000.0], [-1e4, 0.0, 1.0, 2.0]], dtype)
    labels = jnp.array([1, 0])
    loss = topk_softmax_cross_entropy(logits, labels, 2)
    assert loss.dtype == dtype
    assert bool(jnp.isfinite(loss).all())
    ref = _ref(np.asarray(logits, np.float64), np.asarray(labels), 2)
    np.testing.assert_allclose(np.asarray(loss, np.float64), ref, rtol=1e-2)
    variant = topk_softmax_cross_entropy(logits, labels, 2, include_target=True)
    ref = _ref(np.asarray(logits, np.float64), np.asarray(labels), 2, include_target=True)
    np.testing.assert_allclose(np.asarray(variant, np.float64), ref, rtol=1e-2)


def test_jit_and_vmap_equal_eager():
    rng = np.random.default_rng(1)
    logits = jnp.asarray(rng.normal(size=(3, 5, 12)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 12, (3, 5)))
    eager = topk_softmax_cross_entropy(logits, labels, 5)
    assert eager.shape == (3, 5)
    jitted = jax.jit(topk_softmax_cross_entropy, static_argnums=2)(logits, labels, 5)
    np.testing.assert_allclose(jitted, eager, rtol=1e-6)
    mapped = jax.vmap(lambda s, t: topk_softmax_cross_entropy(s, t, 5))(logits, labels)
    np.testing.assert_allclose(mapped, eager, rtol=1e-6)


def test_sharded_batch(mesh8, mesh8_explicit):
    rng = np.random.default_rng(2)
    logits = jnp.asarray(rng.normal(size=(16, 10)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 10, 16))
    ref = topk_softmax_cross_entropy(logits, labels, 3)
    fn = jax.jit(topk_softmax_cross_entropy, static_argnums=2)
    for mesh in (mesh8, mesh8_explicit):
        with jax.set_mesh(mesh):
            sharding = NamedSharding(mesh, P("data"))
            got = fn(jax.device_put(logits, sharding), jax.device_put(labels, sharding), 3)
        np.testing.assert_allclose(got, ref, rtol=1e-6)
        assert got.sharding.is_equivalent_to(sharding, got.ndim)


def test_out_of_range_labels():
    logits = jnp.zeros((2, 4))
    for bad in ([0, 4], [-1, 0]):
        with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
            topk_softmax_cross_entropy(logits, np.array(bad), 2)
        with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
            topk_softmax_cross_entropy(logits, jnp.array(bad), 2)
        # Under jit the labels cannot be inspected: the bad example's loss is NaN.
        loss = jax.jit(topk_softmax_cross_entropy, static_argnums=2)(logits, jnp.array(bad), 2)
        assert np.isnan(np.asarray(loss)).tolist() == [b not in range(4) for b in bad]


def test_bad_arguments():
    logits = jnp.zeros((2, 4))
    labels = jnp.array([0, 1])
    with pytest.raises(ValueError, match=r"k must be a positive int, got 0"):
        topk_softmax_cross_entropy(logits, labels, 0)
    with pytest.raises(ValueError, match=r"k must satisfy 1 <= k <= 4 .*got 5"):
        topk_softmax_cross_entropy(logits, labels, 5)
    with pytest.raises(TypeError, match="k must be a positive int"):
        topk_softmax_cross_entropy(logits, labels, 2.0)
    with pytest.raises(TypeError, match="labels must have a.? integer dtype"):
        topk_softmax_cross_entropy(logits, jnp.array([0.0, 1.0]), 2)
    with pytest.raises(ValueError, match=r"labels must have shape logits.shape\[:-1\]"):
        topk_softmax_cross_entropy(logits, jnp.array([0, 1, 2]), 2)
    with pytest.raises(ValueError, match="a class axis"):
        topk_softmax_cross_entropy(jnp.float32(1.0), jnp.int32(0), 1)


def test_claims_hold():
    for c in post_8046_topk.CLAIMS:
        assert c.fn().ok, c.name
