"""RoPEAttention and rope_attention against a float64 NumPy reference; invariances; errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxtricks.nn import RoPEAttention, rope_attention

B, T, D, N = 2, 8, 32, 4
H = D // N


# ---------------------------------------------------------------- NumPy reference (float64)
def _rotation(pos: float, dim: int, base: float, layout: str) -> np.ndarray:
    """The (dim, dim) RoPE matrix at one position: pair i rotated by pos * base^(-2i/dim)."""
    r = np.zeros((dim, dim))
    for i in range(dim // 2):
        a, b = (2 * i, 2 * i + 1) if layout == "interleaved" else (i, i + dim // 2)
        angle = pos * base ** (-2.0 * i / dim)
        c, s = np.cos(angle), np.sin(angle)
        r[a, a], r[a, b], r[b, a], r[b, b] = c, -s, s, c
    return r


def _rotation_for(pos, rope, layout, base=10000.0):
    if rope == "1d":
        return _rotation(float(pos), H, base, layout)
    out = np.zeros((H, H))  # 2d: block-diagonal, first half by pos[0], second by pos[1]
    out[: H // 2, : H // 2] = _rotation(float(pos[0]), H // 2, base, layout)
    out[H // 2 :, H // 2 :] = _rotation(float(pos[1]), H // 2, base, layout)
    return out


def _np_attention(p, x, positions, *, rope, layout, mask, causal):
    """softmax(R q (R k)^T / sqrt(H)) V with explicit per-position rotation matrices."""
    x = np.asarray(x, np.float64)
    b, t, _ = x.shape

    def proj(name):
        return (x @ p[name]["kernel"] + p[name]["bias"]).reshape(b, t, N, H)

    q, k, v = proj("query"), proj("key"), proj("value")
    if rope is not None:
        for bi in range(b):
            for ti in range(t):
                pos = positions[bi % len(positions)][ti]
                r = _rotation_for(pos, rope, layout)
                q[bi, ti] = q[bi, ti] @ r.T
                k[bi, ti] = k[bi, ti] @ r.T
    logits = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(H)
    allowed = np.ones((b, 1, t, t), bool)
    if mask is not None:
        allowed &= np.asarray(mask)[:, None, None, :]
    if causal:
        allowed &= np.tril(np.ones((t, t), bool))
    logits = np.where(allowed, logits, -np.inf)
    top = np.max(logits, axis=-1, keepdims=True)
    w = np.exp(logits - np.where(np.isfinite(top), top, 0.0))
    z = np.sum(w, axis=-1, keepdims=True)
    w = np.where(z > 0, w / np.where(z > 0, z, 1.0), 0.0)  # no valid key: zero output
    o = np.einsum("bnts,bsnh->btnh", w, v).reshape(b, t, D)
    return o @ p["out"]["kernel"] + p["out"]["bias"]


def _params(layer):
    return {
        name: {
            "kernel": np.asarray(getattr(layer, name).kernel[...], np.float64),
            "bias": np.asarray(getattr(layer, name).bias[...], np.float64),
        }
        for name in ("query", "key", "value", "out")
    }


def _x(seed, shape=(B, T, D), dtype=jnp.float32):
    return jax.random.normal(jax.random.key(seed), shape, dtype)


# ---------------------------------------------------------------- against the reference
CASES = [
    ("1d", "interleaved", False, False),
    ("1d", "half", True, True),
    ("2d", "interleaved", False, True),
    ("2d", "half", True, False),
    (None, "interleaved", True, True),
]


@pytest.mark.parametrize("rope,layout,causal,masked", CASES)
def test_matches_numpy_reference(x64, rope, layout, causal, masked):
    layer = RoPEAttention(
        D, N, rope=rope, layout=layout, causal=causal, rngs=nnx.Rngs(0), param_dtype=jnp.float64
    )
    # Random biases too, so the reference checks where each bias enters.
    for name in ("query", "key", "value", "out"):
        lin = getattr(layer, name)
        lin.bias[...] = jax.random.normal(jax.random.key(len(name)), (D,), jnp.float64)
    x = _x(1, dtype=jnp.float64)
    rng = np.random.default_rng(0)
    if rope == "2d":
        positions = rng.integers(0, 5, size=(B, T, 2))
    else:
        positions = rng.permutation(T)[None] + 3  # (1, T): shared by the batch, not arange
    # Row 1 fully padded after 3 tokens, row 0 padded at the front (causal row 0 has no key).
    mask = np.array([[False] + [True] * (T - 1), [True] * 3 + [False] * (T - 3)])
    mask = mask if masked else None
    got = layer(x, positions=None if rope is None else positions, mask=mask)
    want = _np_attention(
        _params(layer), x, positions, rope=rope, layout=layout, mask=mask, causal=causal
    )
    assert got.dtype == jnp.float64
    # jax.nn.dot_product_attention runs its softmax in float32, whatever the input dtype.
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)


def test_default_positions_are_arange(x64):
    layer = RoPEAttention(D, N, rngs=nnx.Rngs(0), param_dtype=jnp.float64)
    x = _x(2, dtype=jnp.float64)
    want = _np_attention(
        _params(layer), x, [np.arange(T)], rope="1d", layout="interleaved", mask=None, causal=False
    )
    np.testing.assert_allclose(np.asarray(layer(x)), want, rtol=1e-5, atol=1e-6)


def test_jit_equals_eager():
    layer = RoPEAttention(D, N, causal=True, rngs=nnx.Rngs(0))
    x, mask = _x(3), jnp.arange(T)[None, :] < jnp.array([[T], [5]])
    eager = layer(x, mask=mask)
    jitted = nnx.jit(lambda m, x, mask: m(x, mask=mask))(layer, x, mask)
    np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- invariances
@settings(max_examples=5)
@given(seed=st.integers(0, 2**16))
def test_no_positions_permutation_equivariant(seed):
    layer = RoPEAttention(D, N, rope=None, rngs=nnx.Rngs(0))
    x = _x(seed)
    perm = np.random.default_rng(seed).permutation(T)
    np.testing.assert_allclose(layer(x[:, perm]), layer(x)[:, perm], rtol=1e-5, atol=1e-5)


def test_rope_breaks_permutation_equivariance():
    layer = RoPEAttention(D, N, rope="1d", rngs=nnx.Rngs(0))
    x = _x(4)
    perm = np.roll(np.arange(T), 3)
    deviation = jnp.max(jnp.abs(layer(x[:, perm]) - layer(x)[:, perm]))
    assert deviation > 1e-2


_CAUSAL = RoPEAttention(D, N, causal=True, rngs=nnx.Rngs(0))
_causal_apply = nnx.jit(lambda m, x: m(x))


@settings(max_examples=5)
@given(seed=st.integers(0, 2**16), t=st.integers(0, T - 2))
def test_causal_output_ignores_the_future(seed, t):
    x = _x(seed)
    changed = x.at[:, t + 1 :].set(_x(seed + 1)[:, t + 1 :])
    a, b = _causal_apply(_CAUSAL, x), _causal_apply(_CAUSAL, changed)
    np.testing.assert_allclose(a[:, : t + 1], b[:, : t + 1], rtol=1e-6, atol=1e-6)
    assert not np.allclose(a[:, t + 1 :], b[:, t + 1 :])  # the future does matter afterwards


_PADDED = RoPEAttention(D, N, rngs=nnx.Rngs(1))
_padded_apply = nnx.jit(lambda m, x, mask: m(x, mask=mask))


@settings(max_examples=5)
@given(seed=st.integers(0, 2**16), length=st.integers(1, T - 1))
def test_padding_mask_hides_padded_values(seed, length):
    mask = jnp.broadcast_to(jnp.arange(T) < length, (B, T))
    x = _x(seed)
    changed = jnp.where(mask[..., None], x, 100.0 * _x(seed + 1))
    a, b = _padded_apply(_PADDED, x, mask), _padded_apply(_PADDED, changed, mask)
    np.testing.assert_allclose(a[:, :length], b[:, :length], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_rows_without_valid_keys_are_finite_and_zero(causal):
    layer = RoPEAttention(D, N, causal=causal, rngs=nnx.Rngs(0))
    x = _x(5)
    mask = jnp.array([[False] * T, [False, False] + [True] * (T - 2)])

    def loss(m, x):
        return jnp.sum(m(x, mask=mask) ** 2)

    out = layer(x, mask=mask)
    grads = nnx.grad(loss, argnums=(0, 1))(layer, x)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    # No valid key: the attention output is zero, so the layer returns the out bias.
    bias = layer.out.bias[...]
    np.testing.assert_allclose(out[0], jnp.broadcast_to(bias, (T, D)), atol=1e-6)
    if causal:
        np.testing.assert_allclose(out[1, :2], jnp.broadcast_to(bias, (2, D)), atol=1e-6)


def test_pure_function_matches_module():
    layer = RoPEAttention(D, N, layout="half", rngs=nnx.Rngs(0))
    x = _x(6)
    heads = (B, T, N, H)
    q, k, v = (getattr(layer, n)(x).reshape(heads) for n in ("query", "key", "value"))
    o = rope_attention(q, k, v, jnp.arange(T)[None], layout="half")
    np.testing.assert_allclose(layer.out(o.reshape(B, T, D)), layer(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("offset", [10**6, 2**24 - T])
def test_long_context_offsets_leave_float32_attention_unchanged(offset):
    # Scores depend on m - n only; with exactly reduced angles this holds in float32 at
    # long-context offsets too (float32 angles p * theta would drift by ~p 2^-24 rad).
    q, k, v = (_x(s, (B, T, N, H)) for s in (11, 12, 13))
    near = rope_attention(q, k, v, jnp.arange(T), layout="half", causal=True)
    far = rope_attention(q, k, v, offset + jnp.arange(T), layout="half", causal=True)
    np.testing.assert_allclose(far, near, rtol=0, atol=2e-5)


# ---------------------------------------------------------------- dtypes
def test_bf16_path():
    ref = RoPEAttention(D, N, rngs=nnx.Rngs(0))
    low = RoPEAttention(D, N, rngs=nnx.Rngs(0), dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    # Same weights as ref, rounded to bf16 (initialisers sample differently per dtype).
    nnx.update(low, jax.tree.map(lambda p: p.astype(jnp.bfloat16), nnx.state(ref, nnx.Param)))
    x = _x(7)
    out = low(x.astype(jnp.bfloat16))
    assert out.dtype == jnp.bfloat16
    assert low.query.kernel[...].dtype == jnp.bfloat16
    np.testing.assert_allclose(out.astype(jnp.float32), ref(x), rtol=0.1, atol=0.1)
    grads = nnx.grad(lambda m: jnp.sum(m(x.astype(jnp.bfloat16)).astype(jnp.float32)))(low)
    assert {g.dtype for g in jax.tree.leaves(grads)} == {jnp.dtype(jnp.bfloat16)}


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(in_features=30, num_heads=4), "in_features must be divisible by num_heads"),
        (dict(in_features=12, num_heads=4), "head dim divisible by 2, got head dim 3"),
        (dict(in_features=24, num_heads=4, rope="2d"), "divisible by 4, got head dim 6"),
        (dict(in_features=32, num_heads=4, rope="alibi"), "rope must be one of"),
        (dict(in_features=32, num_heads=4, layout="neox"), "layout must be one of"),
    ],
)
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RoPEAttention(**kwargs, rngs=nnx.Rngs(0))


def test_call_errors():
    layer = RoPEAttention(D, N, rope="2d", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="rope='2d' needs positions"):
        layer(_x(0))
    with pytest.raises(ValueError, match="mask must have shape"):
        layer(_x(0), positions=jnp.zeros((1, T, 2)), mask=jnp.ones((T,), bool))
    with pytest.raises(ValueError, match="x must have shape"):
        layer(_x(0, shape=(B, T, D + 1)))
    with pytest.raises(ValueError, match="query must have shape"):
        rope_attention(jnp.ones((T, N, H)), jnp.ones((T, N, H)), jnp.ones((T, N, H)))
