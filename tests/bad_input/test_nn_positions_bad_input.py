"""Bad inputs of jaxtricks.nn positions, attention, encoder and widening: named errors, limits."""

from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st
from probes import probe, raises
from references import rope64

from jaxtricks.nn import (
    RoPEAttention,
    TransformerEncoder,
    apply_rope,
    apply_rope_2d,
    rope_attention,
    rope_permutation,
    sinusoidal_embedding,
    widen,
)

B, T, N, H = 2, 3, 2, 8
X = jnp.ones((B, T, N, H))
POS = jnp.arange(T)
RNGS = nnx.Rngs(0)

BAD_SIZES = [
    (0, ValueError),
    (-1, ValueError),
    (2.5, TypeError),
    (True, TypeError),
    ("4", TypeError),
]
# Every bad base as a Python float and as a concrete JAX array: (value, fragment).
BAD_BASES = [
    (np.nan, "NaN"),
    (np.inf, "finite"),
    (-np.inf, "finite"),
    (0.0, "> 0"),
    (-2.0, "> 0"),
    (jnp.array(np.nan), "NaN"),
    (jnp.array(np.inf), "finite"),
    (jnp.array(0.0), "> 0"),
]
BAD_POSITIONS = [
    ([0.0, np.nan, 1.0], ValueError, "NaN"),
    (jnp.array([0.0, np.inf, 1.0]), ValueError, "finite"),
    (jnp.array([-np.inf, 0.0, 1.0]), ValueError, "finite"),
    (jnp.array([True, False, True]), TypeError, "bool"),
    (jnp.arange(T) * 1j, TypeError, "complex"),
    ("abc", TypeError, "abc"),
    (np.array([0, 1, 2**40]), ValueError, "int32"),
]
BAD_LAYOUTS = ["neox", "concat", None, 1]


def _exact_angles(positions, dim, base=10000.0):
    """(p theta_i) mod 2 pi, theta_i = base^(-2i/dim) in float64, from exact rationals."""
    two_pi = 2 * Fraction("3.14159265358979323846264338327950288419716939937510")
    theta = base ** (-np.arange(0, dim, 2) / dim)
    return np.array(
        [
            [float(Fraction(float(p)) * Fraction(float(t)) % two_pi) for t in theta]
            for p in positions
        ]
    )


# ------------------------------------------------------------------ sinusoidal_embedding
@probe("error", "nn.sinusoidal_embedding")
@pytest.mark.parametrize("dim,exc", BAD_SIZES + [(7, ValueError), (np.float64(4.0), TypeError)])
def test_sinusoidal_dim_is_a_positive_even_int(dim, exc):
    with raises(exc, "dim", "got"):
        sinusoidal_embedding(POS, dim)


@probe("error", "nn.sinusoidal_embedding", "nn.apply_rope", "nn.apply_rope_2d")
@pytest.mark.parametrize("base,fragment", BAD_BASES)
def test_base_is_finite_and_positive(base, fragment):
    with raises(ValueError, "base", fragment):
        sinusoidal_embedding(POS, 4, base=base)
    with raises(ValueError, "base", fragment):
        apply_rope(X, POS, base=base)
    with raises(ValueError, "base", fragment):
        apply_rope_2d(X, jnp.zeros((T, 2)), base=base)


@probe("error", "nn.sinusoidal_embedding", "nn.apply_rope", "nn.rope_attention")
@pytest.mark.parametrize("bad", ["10000", None, jnp.array([1e4, 1e4])])
def test_base_is_a_number_and_a_scalar(bad):
    exc = ValueError if isinstance(bad, jax.Array) else TypeError
    with raises(exc, "base"):
        sinusoidal_embedding(POS, 4, base=bad)
    with raises(exc, "base"):
        apply_rope(X, POS, base=bad)
    with raises(exc, "base"):
        rope_attention(X, X, X, base=bad)


@probe("error", "nn.sinusoidal_embedding", "nn.apply_rope")
def test_traced_base_is_named():
    # The frequencies are static (float64 at trace time): a traced base cannot work.
    with raises(TypeError, "base", "concrete"):
        jax.jit(lambda b: sinusoidal_embedding(POS, 4, base=b))(1e4)
    with raises(TypeError, "base", "concrete"):
        jax.jit(lambda b: apply_rope(X, POS, base=b))(1e4)


@probe("error", "nn.sinusoidal_embedding")
@pytest.mark.parametrize("layout", ["neox", "half", None, 1])
def test_sinusoidal_layout(layout):
    with raises(ValueError, "layout", "interleaved"):
        sinusoidal_embedding(POS, 4, layout=layout)


@probe("error", "nn.sinusoidal_embedding", "nn.apply_rope")
@pytest.mark.parametrize("positions,exc,fragment", BAD_POSITIONS)
def test_positions_must_be_real_finite_numbers(positions, exc, fragment):
    with raises(exc, "positions", fragment):
        sinusoidal_embedding(positions, 4)
    with raises(exc, "positions", fragment):
        apply_rope(X, positions)


_sinusoidal = jax.jit(sinusoidal_embedding, static_argnums=1)


@probe("value", "nn.sinusoidal_embedding")
@pytest.mark.parametrize("shape", [(0,), (2, 0)])
def test_sinusoidal_of_no_positions_is_empty(shape):
    out = _sinusoidal(jnp.zeros(shape, jnp.int32), 6)
    assert out.shape == shape + (6,) and out.dtype == jnp.float32


@probe("value", "nn.sinusoidal_embedding")
@given(p=st.integers(-(2**31), 2**31 - 1))
def test_sinusoidal_exact_over_the_whole_int32_range(p):
    # float32 p * theta would be off by up to |p| 2^-24 rad, i.e. meaningless beyond 2^24.
    pos = np.array([p, p // 3, -p // 7])
    got = np.asarray(_sinusoidal(jnp.asarray(pos, jnp.int32), 16), np.float64)
    angles = _exact_angles(pos, 16)
    np.testing.assert_allclose(got[:, 0::2], np.sin(angles), rtol=0, atol=1e-6)
    np.testing.assert_allclose(got[:, 1::2], np.cos(angles), rtol=0, atol=1e-6)


@probe("value", "nn.sinusoidal_embedding")
@pytest.mark.parametrize("p", [2.0**24 - 1.5, -(10.0**6) - 0.75, 3.0e9, 2.0**40, 1.0e17])
def test_sinusoidal_huge_float_positions_are_exact_as_given(p):
    pos = np.array([p], np.float32)
    got = np.asarray(_sinusoidal(jnp.asarray(pos), 8), np.float64)
    angles = _exact_angles(pos, 8)
    np.testing.assert_allclose(got[:, 0::2], np.sin(angles), rtol=0, atol=1e-6)
    np.testing.assert_allclose(got[:, 1::2], np.cos(angles), rtol=0, atol=1e-6)


# ------------------------------------------------------------------------ rope_permutation
@probe("error", "nn.rope_permutation")
@pytest.mark.parametrize(
    "h,exc", BAD_SIZES + [(-2, ValueError), (5, ValueError), (None, TypeError)]
)
def test_rope_permutation_head_dim(h, exc):
    with raises(exc, "head_dim", "got"):
        rope_permutation(h)


@probe("value", "nn.rope_permutation")
@pytest.mark.parametrize("h", [2, 4, np.int64(6)])
def test_rope_permutation_smallest_heads(h):
    perm = rope_permutation(h)
    np.testing.assert_array_equal(perm, list(range(0, h, 2)) + list(range(1, h, 2)))


# ------------------------------------------------------------------------------ apply_rope
@probe("error", "nn.apply_rope", "nn.apply_rope_2d")
@pytest.mark.parametrize(
    "x,exc,fragment",
    [
        (jnp.ones((B, T, N, H), jnp.int32), TypeError, "int32"),
        (jnp.ones((B, T, N, H), bool), TypeError, "bool"),
        (jnp.ones((B, T, N, H), jnp.complex64), TypeError, "complex64"),
        ("x", TypeError, "floating"),
        (jnp.ones((T, H)), ValueError, "(3, 8)"),
    ],
)
def test_x_must_be_real_floating_with_heads(x, exc, fragment):
    with raises(exc, "x", fragment):
        apply_rope(x, POS)
    with raises(exc, "x", fragment):
        apply_rope_2d(x, jnp.zeros((T, 2)))


@probe("error", "nn.apply_rope", "nn.apply_rope_2d")
@pytest.mark.parametrize("h,multiple", [(7, 2), (6, 4), (5, 4)])
def test_head_dim_parity(h, multiple):
    fn = apply_rope if multiple == 2 else apply_rope_2d
    positions = POS if multiple == 2 else jnp.zeros((T, 2))
    with raises(ValueError, "x.shape[-1]", f"divisible by {multiple}", f"got {h}"):
        fn(jnp.ones((T, N, h)), positions)


@probe("error", "nn.apply_rope")
@pytest.mark.parametrize(
    "positions", [jnp.arange(T + 1), jnp.zeros((3, T)), jnp.zeros((B, T, 1)), jnp.array(0)]
)
def test_positions_shape_names_both_shapes(positions):
    with raises(ValueError, "positions", "(2, 3)", str(positions.shape)):
        apply_rope(X, positions)


@probe("error", "nn.apply_rope_2d")
@pytest.mark.parametrize("positions", [POS, jnp.zeros((T, 3)), jnp.zeros((T + 1, 2))])
def test_2d_positions_shape_names_both_shapes(positions):
    with raises(ValueError, "positions", "(..., T) + (2,)", str(positions.shape)):
        apply_rope_2d(X, positions)


@probe("error", "nn.apply_rope_2d")
@pytest.mark.parametrize("positions,exc,fragment", BAD_POSITIONS[:6])
def test_2d_positions_must_be_real_finite(positions, exc, fragment):
    grid = positions
    if isinstance(positions, (list, jax.Array)):
        grid = jnp.stack([jnp.asarray(positions)] * 2, -1)
    with raises(exc, "positions", fragment):
        apply_rope_2d(X, grid)


@probe("error", "nn.apply_rope", "nn.apply_rope_2d")
@pytest.mark.parametrize("layout", BAD_LAYOUTS)
def test_rope_layout(layout):
    with raises(ValueError, "layout", "half"):
        apply_rope(X, POS, layout=layout)
    with raises(ValueError, "layout", "half"):
        apply_rope_2d(X, jnp.zeros((T, 2)), layout=layout)


@probe("error", "nn.apply_rope")
@pytest.mark.parametrize(
    "rotary_dim,exc,fragment",
    [
        (0, ValueError, "got 0"),
        (-2, ValueError, "got -2"),
        (3, ValueError, "divisible by 2, got 3"),
        (10, ValueError, "<= the head dim 8"),
        (2.0, TypeError, "got 2.0"),
        (True, TypeError, "got True"),
        ("4", TypeError, "got '4'"),
    ],
)
def test_rotary_dim(rotary_dim, exc, fragment):
    with raises(exc, "rotary_dim", fragment):
        apply_rope(X, POS, rotary_dim=rotary_dim)


_rope = jax.jit(apply_rope, static_argnames=("layout", "rotary_dim"))
_rope_2d = jax.jit(apply_rope_2d, static_argnames="layout")


@probe("value", "nn.apply_rope", "nn.apply_rope_2d")
@pytest.mark.parametrize("layout", ["interleaved", "half"])
def test_rope_of_no_tokens_is_empty(layout):
    x = jnp.ones((B, 0, N, H), jnp.bfloat16)
    out = _rope(x, jnp.zeros((0,), jnp.int32), layout=layout)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert _rope(x, jnp.zeros((B, 0)), layout=layout, rotary_dim=4).shape == x.shape
    assert _rope_2d(x, jnp.zeros((0, 2)), layout=layout).shape == x.shape


@probe("value", "nn.apply_rope", "nn.apply_rope_2d")
@pytest.mark.parametrize("p", [0, 2**24, -(2**31), 2**31 - 1])
def test_rope_of_the_zero_vector_is_zero_and_position_zero_is_identity(p):
    zero = jnp.zeros((2, 1, H))  # (T, N, H)
    pos = jnp.array([p, 0], jnp.int32)
    assert np.all(np.asarray(_rope(zero, pos)) == 0)
    assert np.all(np.asarray(_rope_2d(zero, jnp.stack([pos, pos[::-1]], -1))) == 0)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 1, H)), jnp.float32)
    # Position 0 rotates by exactly 0 (cos 1, sin 0): x comes back bit for bit.
    np.testing.assert_array_equal(_rope(x, pos)[1], x[1])
    np.testing.assert_array_equal(_rope(x, pos, layout="half", rotary_dim=4)[1], x[1])


@probe("value", "nn.apply_rope")
@pytest.mark.parametrize("layout", ["interleaved", "half"])
@pytest.mark.parametrize("start", [10**6 - 8, 2**24 - 8, 2**31 - 8, -(2**31)])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_rope_at_huge_positions_matches_exact_angles(layout, start, dtype):
    pos = np.arange(start, start + 8)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(8, 2, 16)), dtype)
    got = np.asarray(_rope(x, jnp.asarray(pos, jnp.int32), layout=layout).astype(jnp.float32))
    want = rope64(np.asarray(x, np.float64), _exact_angles(pos, 16), layout)
    rel = 2.0**-8 if dtype == jnp.bfloat16 else 0.0  # one bf16 rounding of the result
    assert np.all(np.abs(got - want) <= 1e-5 + rel * np.abs(want)), np.abs(got - want).max()


@probe("value", "nn.apply_rope_2d")
@pytest.mark.parametrize("layout", ["interleaved", "half"])
def test_rope_2d_at_huge_coordinates_matches_exact_angles(layout):
    grid = np.array([[2**24 - 1, 10**6], [-(10**6), 2**24 + 2], [2**30, 3]])
    x = np.random.default_rng(2).normal(size=(3, 1, 16))
    got = np.asarray(_rope_2d(jnp.asarray(x, jnp.float32), jnp.asarray(grid), layout=layout))
    want = np.concatenate(
        [rope64(x[..., i * 8 : (i + 1) * 8], _exact_angles(grid[:, i], 8), layout) for i in (0, 1)],
        axis=-1,
    )
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


# --------------------------------------------------------------------------- rope_attention
Q = jnp.asarray(np.random.default_rng(3).normal(size=(B, T, N, H)), jnp.float32)


@probe("error", "nn.rope_attention")
@pytest.mark.parametrize(
    "q,k,v,exc,argument,fragments",
    [
        (Q[0], Q[0], Q[0], ValueError, "query", ("(B, T, N, H)", "(3, 2, 8)")),
        (Q, Q[:, :2], Q[:, :2], ValueError, "key", ("(2, 3, 2, 8)", "(2, 2, 2, 8)")),
        (Q, Q, Q[:1], ValueError, "value", ("(2, 3, 2, 8)", "(1, 3, 2, 8)")),
        (Q, Q.astype(jnp.bfloat16), Q, TypeError, "key", ("float32", "bfloat16")),
        (Q.astype(jnp.int32), Q, Q, TypeError, "query", ("int32",)),
        (Q, Q, Q.astype(jnp.complex64), TypeError, "value", ("complex64",)),
    ],
)
def test_attention_operands(q, k, v, exc, argument, fragments):
    with raises(exc, argument, *fragments):
        rope_attention(q, k, v)


@probe("error", "nn.rope_attention")
@pytest.mark.parametrize(
    "mask,exc,fragments",
    [
        (jnp.ones((B, T), jnp.int32), TypeError, ("bool", "int32")),
        (jnp.ones((B, T), jnp.float32), TypeError, ("bool", "float32")),
        (jnp.ones((T,), bool), ValueError, ("(2, 3)", "(3,)")),
        (jnp.ones((B, T + 1), bool), ValueError, ("(2, 3)", "(2, 4)")),
        (jnp.ones((B, 1, 1, T), bool), ValueError, ("(2, 3)", "(2, 1, 1, 3)")),
    ],
)
def test_attention_mask_dtype_and_shape(mask, exc, fragments):
    with raises(exc, "mask", *fragments):
        rope_attention(Q, Q, Q, mask=mask)
    with raises(exc, "mask", *fragments):  # the dtype and shape are known under jit too
        jax.jit(lambda m: rope_attention(Q, Q, Q, mask=m))(mask)


@probe("error", "nn.rope_attention")
@pytest.mark.parametrize(
    "kwargs,exc,argument,fragment",
    [
        (dict(rope="alibi"), ValueError, "rope", "alibi"),
        (dict(layout="neox"), ValueError, "layout", "neox"),
        (dict(causal="yes"), TypeError, "causal", "yes"),
        (dict(causal=1), TypeError, "causal", "1"),
        (dict(rope="2d"), ValueError, "positions", "None"),
        (dict(positions=jnp.arange(T + 1)), ValueError, "positions", "(4,)"),
        (dict(positions=jnp.zeros((B, T)), rope="2d"), ValueError, "positions", "(2, 3)"),
        (dict(positions=jnp.array([0.0, np.nan, 1.0])), ValueError, "positions", "NaN"),
        (dict(base=np.nan), ValueError, "base", "NaN"),
    ],
)
def test_attention_options(kwargs, exc, argument, fragment):
    with raises(exc, argument, fragment):
        rope_attention(Q, Q, Q, **kwargs)


@probe("error", "nn.rope_attention")
@pytest.mark.parametrize("h,rope", [(6, "2d"), (7, "1d")])
def test_attention_head_dim_for_rope(h, rope):
    q = jnp.ones((B, T, N, h))
    with raises(ValueError, "rope", "head dim", f"got head dim {h}"):
        rope_attention(q, q, q, jnp.zeros((T, 2)), rope=rope)


@jax.jit
def _attend_with_grad(q, mask):
    def loss(q):
        plain = rope_attention(q, q, q, mask=mask)
        causal = rope_attention(q, q, q, mask=mask, causal=True)
        return jnp.sum(plain**2) + jnp.sum(causal**2), (plain, causal)

    return jax.grad(loss, has_aux=True)(q)


@probe("value", "nn.rope_attention")
def test_attention_rows_without_keys_are_zero_with_zero_gradient():
    # Row 0 masks every key; causal row 1 sees only padding before its third token.
    mask = jnp.array([[False] * T, [False, False, True]])
    grads, (plain, causal) = _attend_with_grad(Q, mask)
    np.testing.assert_array_equal(plain[0], 0.0)
    np.testing.assert_array_equal(causal[0], 0.0)
    np.testing.assert_array_equal(causal[1, :2], 0.0)
    assert np.all(np.isfinite(grads)) and np.all(np.isfinite(plain))
    np.testing.assert_array_equal(grads[0], 0.0)


@probe("value", "nn.rope_attention")
def test_attention_of_no_tokens_is_empty():
    q = jnp.ones((B, 0, N, H))
    run = jax.jit(lambda q, m: rope_attention(q, q, q, mask=m, causal=True))
    assert run(q, jnp.ones((B, 0), bool)).shape == q.shape


_attend_at = jax.jit(lambda q, p: rope_attention(q, q, q, p, layout="half"))


@probe("value", "nn.rope_attention")
@pytest.mark.parametrize("offset", [10**6, 2**24, 2**31 - 8])
def test_attention_is_shift_invariant_at_huge_offsets(offset):
    # Scores depend on m - n only; exact angles keep that true far out in float32.
    near = _attend_at(Q, jnp.arange(T))
    far = _attend_at(Q, offset + jnp.arange(T))
    np.testing.assert_allclose(far, near, rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------- RoPEAttention
@probe("error", "nn.RoPEAttention")
@pytest.mark.parametrize("argument", ["in_features", "num_heads"])
@pytest.mark.parametrize("size,exc", BAD_SIZES)
def test_attention_module_sizes(argument, size, exc):
    kwargs = dict(in_features=8, num_heads=2) | {argument: size}
    with raises(exc, argument, "got"):
        RoPEAttention(**kwargs, rngs=RNGS)


@probe("error", "nn.RoPEAttention")
@pytest.mark.parametrize(
    "kwargs,exc,argument,fragment",
    [
        (dict(in_features=10, num_heads=4), ValueError, "in_features", "num_heads=4"),
        (dict(in_features=12, num_heads=4), ValueError, "rope", "got head dim 3"),
        (dict(in_features=12, num_heads=2, rope="2d"), ValueError, "rope", "got head dim 6"),
        (dict(rope="3d"), ValueError, "rope", "3d"),
        (dict(layout="neox"), ValueError, "layout", "neox"),
        (dict(causal=None), TypeError, "causal", "None"),
        (dict(base=0.0), ValueError, "base", "0.0"),
        (dict(base=jnp.array(np.inf)), ValueError, "base", "finite"),
        (dict(rngs=0), TypeError, "rngs", "int"),
        (dict(param_dtype=jnp.int32), TypeError, "param_dtype", "int32"),
        (dict(dtype=jnp.complex64), TypeError, "dtype", "complex64"),
    ],
)
def test_attention_module_options(kwargs, exc, argument, fragment):
    kwargs = dict(in_features=8, num_heads=2, rngs=RNGS) | kwargs
    with raises(exc, argument, fragment):
        RoPEAttention(**kwargs)


def _filled(make, seed):
    """The module ``make()`` builds, with random parameters from NumPy (no init to compile)."""
    graphdef, state = nnx.split(nnx.eval_shape(make))
    rng = np.random.default_rng(seed)
    state = jax.tree.map(lambda a: jnp.asarray(0.5 * rng.normal(size=a.shape), a.dtype), state)
    return nnx.merge(graphdef, state)


@pytest.fixture(scope="module")
def layer():
    return _filled(lambda: RoPEAttention(8, 2, causal=True, rngs=nnx.Rngs(0)), 4)


@probe("error", "nn.RoPEAttention")
@pytest.mark.parametrize(
    "x,kwargs,exc,argument,fragment",
    [
        (jnp.ones((B, T, 6)), {}, ValueError, "x", "(2, 3, 6)"),
        (jnp.ones((T, 8)), {}, ValueError, "x", "(3, 8)"),
        (jnp.ones((B, T, 8), jnp.int32), {}, TypeError, "x", "int32"),
        (jnp.ones((B, T, 8)), dict(mask=jnp.ones((B, T), jnp.int32)), TypeError, "mask", "int32"),
        (jnp.ones((B, T, 8)), dict(mask=jnp.ones((T,), bool)), ValueError, "mask", "(3,)"),
        (jnp.ones((B, T, 8)), dict(positions=jnp.arange(T + 2)), ValueError, "positions", "(5,)"),
    ],
)
def test_attention_module_call(layer, x, kwargs, exc, argument, fragment):
    with raises(exc, argument, fragment):
        layer(x, **kwargs)


@probe("value", "nn.RoPEAttention")
def test_attention_module_rows_without_keys_give_the_out_bias(layer):
    x = jnp.asarray(np.random.default_rng(4).normal(size=(B, T, 8)), jnp.float32)
    mask = jnp.array([[False] * T, [True] * T])
    out = nnx.jit(lambda m, x: m(x, mask=mask))(layer, x)
    # Attention output zero for the empty row: y = 0 @ W_o + b_o.
    bias = np.asarray(layer.out.bias[...])
    np.testing.assert_allclose(out[0], np.broadcast_to(bias, (T, 8)), rtol=0, atol=0)
    assert np.all(np.isfinite(out))


# One compile per module structure and shape, shared by the cases below.
_at_positions = nnx.jit(lambda m, x, p: m(x, positions=p))


@probe("value", "nn.RoPEAttention")
@pytest.mark.parametrize("offset,length", [(0, 0), (10**6, T), (2**24, T), (2**31 - T, T)])
def test_attention_module_empty_and_huge_offsets(layer, offset, length):
    # Only m - n enters the scores: a shifted sequence gives the same outputs (T = 0: empty).
    x = jnp.asarray(np.random.default_rng(7).normal(size=(B, length, 8)), jnp.float32)
    far = _at_positions(layer, x, offset + jnp.arange(length))
    assert far.shape == (B, length, 8)
    near = _at_positions(layer, x, jnp.arange(length))
    np.testing.assert_allclose(far, near, rtol=0, atol=1e-5)


# ----------------------------------------------------------------------- TransformerEncoder
ENC = dict(num_layers=1, dim=8, num_heads=2, mlp_dim=16)


@probe("error", "nn.TransformerEncoder")
@pytest.mark.parametrize("argument", ["num_layers", "dim", "num_heads", "mlp_dim"])
@pytest.mark.parametrize("size,exc", BAD_SIZES)
def test_encoder_sizes(argument, size, exc):
    with raises(exc, argument, "got"):
        TransformerEncoder(**(ENC | {argument: size}), rngs=RNGS)


@probe("error", "nn.TransformerEncoder")
@pytest.mark.parametrize(
    "kwargs,exc,argument,fragment",
    [
        (dict(dim=10, num_heads=4), ValueError, "dim", "num_heads=4"),
        (dict(dim=6, num_heads=2, rope="2d"), ValueError, "rope", "got head dim 3"),
        (dict(rope="alibi"), ValueError, "rope", "alibi"),
        (dict(layout="gptj"), ValueError, "layout", "gptj"),
        (dict(norm="sandwich"), ValueError, "norm", "sandwich"),
        (dict(activation="swish"), ValueError, "activation", "swish"),
        (dict(activation=3), TypeError, "activation", "3"),
        (dict(remat="everything"), ValueError, "remat", "everything"),
        (dict(remat="save:"), ValueError, "remat", "save:"),
        (dict(remat=7), TypeError, "remat", "7"),
        (dict(causal="no"), TypeError, "causal", "no"),
        (dict(base=-1.0), ValueError, "base", "-1.0"),
        (dict(layer_norm_epsilon=np.nan), ValueError, "layer_norm_epsilon", "NaN"),
        (dict(layer_norm_epsilon=jnp.array(np.inf)), ValueError, "layer_norm_epsilon", "finite"),
        (dict(layer_norm_epsilon=0.0), ValueError, "layer_norm_epsilon", "> 0"),
        (dict(layer_norm_epsilon=-1e-6), ValueError, "layer_norm_epsilon", "-1e-06"),
        (dict(rngs="seed"), TypeError, "rngs", "str"),
        (dict(param_dtype=jnp.int8), TypeError, "param_dtype", "int8"),
    ],
)
def test_encoder_options(kwargs, exc, argument, fragment):
    kwargs = ENC | dict(rngs=RNGS) | kwargs
    with raises(exc, argument, fragment):
        TransformerEncoder(**kwargs)


@pytest.fixture(scope="module")
def encoder():
    return _filled(lambda: TransformerEncoder(**ENC, rngs=nnx.Rngs(0)), 6)


@probe("error", "nn.TransformerEncoder")
@pytest.mark.parametrize(
    "x,kwargs,exc,argument,fragment",
    [
        (jnp.ones((B, T, 4)), {}, ValueError, "x", "(2, 3, 4)"),
        (jnp.ones((B, T, 8), jnp.int32), {}, TypeError, "x", "int32"),
        (jnp.ones((B, T, 8)), dict(mask=jnp.ones((B, T))), TypeError, "mask", "float32"),
        (jnp.ones((B, T, 8)), dict(mask=jnp.ones((B, 1), bool)), ValueError, "mask", "(2, 1)"),
        (
            jnp.ones((B, T, 8)),
            dict(positions=jnp.ones((1, 1, T))),
            ValueError,
            "positions",
            "(1, 1, 3)",
        ),
        (
            jnp.ones((B, T, 8)),
            dict(positions=jnp.array([0, 1, np.nan])),
            ValueError,
            "positions",
            "NaN",
        ),
    ],
)
def test_encoder_call(encoder, x, kwargs, exc, argument, fragment):
    with raises(exc, argument, fragment):
        encoder(x, **kwargs)


@probe("value", "nn.TransformerEncoder")
def test_encoder_row_without_keys_has_zero_attention(encoder):
    # An all-padding row: its attention is exactly zero, as in a copy whose attention output
    # projection is zero (y = 0 @ W_o + b_o for every row), run without a mask.
    x = jnp.asarray(np.random.default_rng(5).normal(size=(B, T, 8)), jnp.float32)
    mask = jnp.array([[False] * T, [True] * T])
    run = nnx.jit(lambda m, x, mask: m(x, mask))
    got = run(encoder, x, mask)
    muted = nnx.clone(encoder)
    muted.layers.attention.out.kernel[...] = jnp.zeros_like(muted.layers.attention.out.kernel[...])
    want = run(muted, x, jnp.ones((B, T), bool))
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6, atol=1e-6)
    assert run(encoder, jnp.ones((B, 0, 8)), jnp.ones((B, 0), bool)).shape == (B, 0, 8)


@probe("value", "nn.TransformerEncoder")
@pytest.mark.parametrize("offset", [10**6, 2**24, -(2**31)])
def test_encoder_is_shift_invariant_at_huge_offsets(encoder, offset):
    # Every layer sees positions only through m - n, so a shifted sequence is the same input.
    x = jnp.asarray(np.random.default_rng(8).normal(size=(B, T, 8)), jnp.float32)
    far = _at_positions(encoder, x, offset + jnp.arange(T))
    near = _at_positions(encoder, x, jnp.arange(T))
    np.testing.assert_allclose(far, near, rtol=0, atol=2e-5)


# ------------------------------------------------------------------------------------ widen
@probe("error", "nn.widen")
@pytest.mark.parametrize(
    "make",
    [
        lambda: None,
        lambda: "encoder",
        lambda: nnx.eval_shape(lambda: RoPEAttention(4, 1, rngs=nnx.Rngs(0))),
    ],
)
def test_widen_model_type(make):
    model = make()
    with raises(TypeError, "model", type(model).__name__):
        widen(model, 2)


@probe("error", "nn.widen")
@pytest.mark.parametrize("factor,exc", BAD_SIZES + [(2.0, TypeError), (None, TypeError)])
def test_widen_factor(encoder, factor, exc):
    with raises(exc, "factor", "got"):
        widen(encoder, factor)


@probe("value", "nn.widen")
def test_widen_by_one_is_an_exact_copy(encoder):
    copy = widen(encoder, 1)
    assert copy is not encoder and copy.dim == encoder.dim
    jax.tree.map(np.testing.assert_array_equal, nnx.state(copy), nnx.state(encoder))


@probe("value", "nn.widen")
def test_widen_preserves_an_all_padding_row(encoder):
    # The widened model on rep(x)/sqrt(2) gives rep(y)/sqrt(2), the empty row included.
    x = jnp.asarray(np.random.default_rng(9).normal(size=(B, T, 8)), jnp.float32)
    mask = jnp.array([[False] * T, [True, True, False]])

    def rep(a):
        return jnp.repeat(a, 2, axis=-1) / np.sqrt(2.0)

    wide = widen(encoder, 2)
    got = nnx.jit(lambda m, x: m(rep(x), mask))(wide, x)
    want = rep(nnx.jit(lambda m, x: m(x, mask))(encoder, x))
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
