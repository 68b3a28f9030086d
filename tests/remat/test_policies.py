"""Tests for jaxtricks.remat policies and checkpoint."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from jax.ad_checkpoint import checkpoint_name

from jaxtricks.remat import checkpoint, memory_report, policy

POLICIES = ["none", "full", "dots", "dots_no_batch", "save:pre", ("pre", "act"), None]
CP = jax.checkpoint_policies


def _layer(p, x):
    """A residual block x + tanh(x w1 + b) w2 whose hidden width is 4x: per-layer remat pays."""
    w1, b, w2 = p
    pre = checkpoint_name(x @ w1 + b, "pre")
    return x + checkpoint_name(jnp.tanh(pre), "act") @ w2


def _make_loss(spec):
    body = checkpoint(_layer, spec)

    def loss(params, x):
        for p in params:
            x = body(p, x)
        return jnp.sum(x**2)

    return loss


def _params(key, depth, width, dtype):
    keys = jax.random.split(key, (depth, 2))
    return [
        (
            jax.random.normal(k1, (width, 4 * width), dtype) / np.sqrt(width),
            jnp.full((1, 4 * width), 0.1, dtype),
            jax.random.normal(k2, (4 * width, width), dtype) / np.sqrt(8 * width),
        )
        for k1, k2 in keys
    ]


def _numpy_loss_and_grad(params, x):
    """Float64 NumPy forward and hand-written backward of the residual MLP (the reference)."""
    params = [tuple(np.asarray(a, np.float64) for a in p) for p in params]
    xs, hs = [np.asarray(x, np.float64)], []
    for w1, b, w2 in params:
        hs.append(np.tanh(xs[-1] @ w1 + b))
        xs.append(xs[-1] + hs[-1] @ w2)
    g = 2 * xs[-1]
    grads = []
    for (w1, _, w2), x_in, h in zip(reversed(params), reversed(xs[:-1]), reversed(hs)):
        gpre = (g @ w2.T) * (1 - h**2)
        grads.append((x_in.T @ gpre, gpre.sum(0, keepdims=True), h.T @ g))
        g = g + gpre @ w1.T
    return np.sum(xs[-1] ** 2), grads[::-1]


@pytest.mark.parametrize("spec", POLICIES, ids=str)
def test_values_and_gradients_match_plain_and_numpy(x64, spec):
    params = _params(jax.random.key(0), 4, 8, jnp.float64)
    x = jax.random.normal(jax.random.key(1), (5, 8), jnp.float64)
    plain = jax.value_and_grad(_make_loss("none"))(params, x)
    value, grads = jax.jit(jax.value_and_grad(_make_loss(spec)))(params, x)
    ref_value, ref_grads = _numpy_loss_and_grad(params, x)
    np.testing.assert_allclose(value, plain[0], rtol=1e-13)
    np.testing.assert_allclose(value, ref_value, rtol=1e-12)
    for got, want, ref in zip(
        jax.tree.leaves(grads), jax.tree.leaves(plain[1]), jax.tree.leaves(ref_grads)
    ):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)


_GRAD_FULL = jax.jit(jax.grad(_make_loss("full")))
_GRAD_NONE = jax.jit(jax.grad(_make_loss("none")))


@settings(max_examples=8)
@given(hnp.arrays(np.float64, (3, 8), elements=st.floats(-3, 3)))
def test_full_gradient_matches_plain_over_inputs(x):
    with jax.enable_x64(True):
        params = _params(jax.random.key(2), 3, 8, jnp.float64)
        got = _GRAD_FULL(params, x)
        want = _GRAD_NONE(params, x)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_jit_equals_eager_and_vmap_equals_loop():
    params = _params(jax.random.key(3), 2, 4, jnp.float32)
    xs = jax.random.normal(jax.random.key(4), (3, 2, 4))
    g = jax.grad(_make_loss("dots"))
    jitted = jax.jit(g)
    loop = [jitted(params, x) for x in xs]
    batched = jax.jit(jax.vmap(g, in_axes=(None, 0)))(params, xs)
    for a, b in zip(jax.tree.leaves(g(params, xs[0])), jax.tree.leaves(loop[0])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for i, e in enumerate(loop):
        for a, b in zip(jax.tree.leaves(batched), jax.tree.leaves(e)):
            np.testing.assert_allclose(a[i], b, rtol=1e-5, atol=1e-6)


def test_policy_maps_to_jax_policies():
    assert policy("none") is None and policy(None) is None
    assert policy("full") is CP.nothing_saveable
    assert policy("dots") is CP.checkpoint_dots
    assert policy("dots_no_batch") is CP.dots_with_no_batch_dims_saveable
    assert checkpoint(jnp.sin, "none") is jnp.sin
    assert checkpoint(jnp.sin, "full") is not jnp.sin


def test_full_reduces_temp_memory_of_deep_mlp():
    depth, width, batch = 16, 64, 256
    params = (
        jax.ShapeDtypeStruct((depth, width, 4 * width), jnp.float32),
        jax.ShapeDtypeStruct((depth, 1, 4 * width), jnp.float32),
        jax.ShapeDtypeStruct((depth, 4 * width, width), jnp.float32),
    )
    x = jax.ShapeDtypeStruct((batch, width), jnp.float32)

    def scanned_loss(spec):
        # Layers under lax.scan: in an unrolled loop XLA may hoist the recomputation.
        body = checkpoint(_layer, spec)

        def loss(params, x):
            y, _ = jax.lax.scan(lambda c, p: (body(p, c), None), x, params)
            return jnp.sum(y**2)

        return jax.value_and_grad(loss)

    temp = {s: memory_report(scanned_loss(s), params, x).temp_bytes for s in ("none", "full")}
    hidden = batch * 4 * width * 4  # one layer's (256, 256) float32 tanh output
    # Without remat all 16 hidden activations are kept; with it, the 16 layer inputs (4x
    # smaller) plus one layer's recomputation.
    assert temp["none"] >= depth * hidden
    assert temp["full"] < 0.25 * temp["none"], temp


@pytest.mark.parametrize(
    "spec,match,exc",
    [
        ("everything", "unknown policy 'everything'.*'none', 'full', 'dots'", ValueError),
        ("save:", "at least one non-empty", ValueError),
        ((), "at least one non-empty", ValueError),
        (("a", 3), "checkpoint names must be strings, got 3", TypeError),
        (("a", ""), "at least one non-empty", ValueError),
        (b"full", "expected a policy name", TypeError),
        (3, "expected a policy name.*got 3", TypeError),
    ],
)
def test_bad_policy_raises(spec, match, exc):
    with pytest.raises(exc, match=match):
        policy(spec)
    with pytest.raises(exc, match=match):
        checkpoint(jnp.sin, spec)
