"""Tests of `widen`: the widened encoder maps rep(x)/sqrt(f) to rep(original output)/sqrt(f)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxtricks.nn import TransformerEncoder, widen

B, T, D, HEADS, F = 2, 6, 8, 2, 12
MASK = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], bool)


def _rep(a, f):
    """The post's convention: interleaved repetition (x1, x1, x2, x2, ...) over sqrt(f)."""
    return jnp.repeat(a, f, axis=-1) / np.sqrt(f)


def _encoder(seed=0, param_dtype=jnp.float64, **kw):
    """A small encoder whose every parameter (biases, LayerNorm affine too) is random.

    Built abstractly and filled from NumPy: no JAX random kernels to compile.
    """
    abstract = nnx.eval_shape(
        lambda: TransformerEncoder(1, D, HEADS, F, rngs=nnx.Rngs(0), param_dtype=param_dtype, **kw)
    )
    graphdef, state = nnx.split(abstract)
    rng = np.random.default_rng(seed)
    state = jax.tree.map(lambda x: jnp.asarray(0.5 * rng.standard_normal(x.shape), x.dtype), state)
    return nnx.merge(graphdef, state)


def _inputs(dtype=jnp.float64):
    rng = np.random.default_rng(7)
    x = jnp.asarray(rng.standard_normal((B, T, D)), dtype)
    grid = jnp.asarray(rng.integers(0, 9, (B, T, 2)))
    return x, grid


@nnx.jit(static_argnames=("f", "rope"))
def _max_deviation(enc, wide, x, grid, f, rope):
    """max |wide(rep(x)) - rep(enc(x))|, both models in one compilation."""
    positions = grid if rope == "2d" else None
    ours = wide(_rep(x, f).astype(x.dtype), mask=MASK, positions=positions)
    return jnp.max(jnp.abs(ours - _rep(enc(x, mask=MASK, positions=positions), f)))


def _deviation(enc, wide, f, rope, dtype=jnp.float64):
    return float(_max_deviation(enc, wide, *_inputs(dtype), f=f, rope=rope))


@pytest.mark.parametrize(
    "norm,rope,layout",
    [
        ("post", None, "interleaved"),
        ("pre", None, "interleaved"),
        ("post", "1d", "interleaved"),
        ("pre", "1d", "half"),
        ("post", "2d", "half"),
    ],
)
def test_function_preserving(x64, norm, rope, layout):
    enc = _encoder(norm=norm, rope=rope, layout=layout, activation="gelu_erf")
    for f in (2, 3):
        wide = widen(enc, f)
        assert (wide.dim, wide.mlp_dim, wide.num_heads) == (f * D, f * F, HEADS)
        assert wide.layer_norm_epsilon == pytest.approx(enc.layer_norm_epsilon / f)
        assert _deviation(enc, wide, f, rope) < 1e-12, (norm, rope, layout, f)


def test_post_table_fc2_bias_is_not_exact(x64):
    """The post's table scales the second FFN bias by 1/f (1/2); 1/sqrt(f) is what works."""
    f = 2
    enc = _encoder(norm="pre", rope=None)
    wide = widen(enc, f)
    ok = _deviation(enc, wide, f, None)
    fc2 = wide.layers.mlp.fc2
    fc2.bias[...] = jnp.repeat(enc.layers.mlp.fc2.bias[...], f, axis=1) / f
    assert ok < 1e-12
    assert _deviation(enc, wide, f, None) > 1e-2


def test_plain_repetition_breaks_rope(x64):
    """Repeating q/k (the rope=None rule) under RoPE changes the function: hence the remap."""
    f = 2
    enc = _encoder(rope="1d", layout="half")
    plain = _encoder(rope=None)
    nnx.update(plain, nnx.state(enc))
    wide = widen(enc, f)
    assert _deviation(enc, wide, f, "1d") < 1e-12
    nnx.update(wide, nnx.state(widen(plain, f)))  # repeated q/k in the RoPE model
    assert _deviation(enc, wide, f, "1d") > 1e-2


def test_dtypes_identity_and_original_untouched():
    enc = _encoder(param_dtype=jnp.float32)
    before = jax.tree.map(np.array, nnx.state(enc))
    wide = widen(enc, 2)
    assert wide.layers.attention.query.kernel[...].dtype == jnp.float32
    assert _deviation(enc, wide, 2, "1d", jnp.float32) < 1e-4
    jax.tree.map(np.testing.assert_array_equal, before, nnx.state(enc))
    # factor 1: every scale is 1 and every column stays in place.
    jax.tree.map(np.testing.assert_array_equal, before, nnx.state(widen(enc, 1)))


@pytest.mark.parametrize(
    "factor,error",
    [(0, ValueError), (-2, ValueError), (1.5, TypeError), (True, TypeError), ("2", TypeError)],
)
def test_bad_factor(factor, error):
    enc = nnx.eval_shape(lambda: TransformerEncoder(1, 8, 2, 8, rngs=nnx.Rngs(0)))
    with pytest.raises(error, match=r"factor must be a positive int, got"):
        widen(enc, factor)


def test_bad_model():
    with pytest.raises(TypeError, match="model must be a TransformerEncoder, got Linear"):
        widen(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), 2)
