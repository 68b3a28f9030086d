"""TransformerEncoder: NumPy reference of post-/pre-LN, scan = loop, remat, data parallel."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from scipy.special import erf

from jaxtricks.nn import TransformerEncoder

L, B, T, D, N, F = 2, 2, 8, 32, 4, 64
H = D // N


def _x(seed, shape=(B, T, D), dtype=jnp.float32):
    return jax.random.normal(jax.random.key(seed), shape, dtype)


def _mask():
    return jnp.arange(T)[None, :] < jnp.array([[T], [5]])  # row 1: 5 valid tokens


# One compile per model structure (nnx.jit caches on the graph definition).
_apply = nnx.jit(lambda m, x, mask=None: m(x, mask))


def _randomize(model, scale=0.3):
    """Random values for every parameter (biases and LayerNorm affine are zero/one at init)."""
    rng = np.random.default_rng(42)  # on the host: no compile per parameter shape
    state = nnx.state(model, nnx.Param)
    nnx.update(
        model,
        jax.tree.map(lambda a: a + jnp.asarray(scale * rng.normal(size=a.shape), a.dtype), state),
    )


# ---------------------------------------------------------------- NumPy reference (float64)
def _np_layer_norm(x, p, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _np_attention(p, x, mask):
    """Multi-head softmax(QK^T/sqrt(H))V without positions; keys masked by ``mask``."""
    b, t, _ = x.shape

    def proj(name):
        return (x @ p[name]["kernel"] + p[name]["bias"]).reshape(b, t, N, H)

    q, k, v = proj("query"), proj("key"), proj("value")
    logits = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(H)
    logits = np.where(mask[:, None, None, :], logits, -np.inf)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    o = np.einsum("bnts,bsnh->btnh", w, v).reshape(b, t, D)
    return o @ p["out"]["kernel"] + p["out"]["bias"]


def _np_mlp(p, x):
    h = x @ p["fc1"]["kernel"] + p["fc1"]["bias"]
    h = 0.5 * h * (1.0 + erf(h / np.sqrt(2.0)))  # exact GELU (BERT)
    return h @ p["fc2"]["kernel"] + p["fc2"]["bias"]


def _np_encoder(params, x, mask, norm, eps):
    """The documented formulas, reading the documented parameter tree (float64)."""
    x = np.asarray(x, np.float64)
    params = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    for i in range(L):
        p = jax.tree.map(lambda a, i=i: a[i], params["layers"])
        if norm == "post":
            x = _np_layer_norm(x + _np_attention(p["attention"], x, mask), p["norm1"], eps)
            x = _np_layer_norm(x + _np_mlp(p["mlp"], x), p["norm2"], eps)
        else:
            x = x + _np_attention(p["attention"], _np_layer_norm(x, p["norm1"], eps), mask)
            x = x + _np_mlp(p["mlp"], _np_layer_norm(x, p["norm2"], eps))
    if norm == "pre":
        x = _np_layer_norm(x, params["final_norm"], eps)
    return x


def _param_dict(model):
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


@pytest.mark.parametrize("norm,eps", [("post", 1e-12), ("pre", 1e-6)])
def test_matches_numpy_reference(x64, norm, eps):
    model = TransformerEncoder(
        L,
        D,
        N,
        F,
        rope=None,
        norm=norm,
        layer_norm_epsilon=eps,
        rngs=nnx.Rngs(0),
        param_dtype=jnp.float64,
    )
    _randomize(model)
    x, mask = _x(1, dtype=jnp.float64), np.asarray(_mask())
    want = _np_encoder(_param_dict(model), x, mask, norm, eps)
    # jax.nn.dot_product_attention runs its softmax in float32.
    np.testing.assert_allclose(np.asarray(_apply(model, x, mask)), want, rtol=1e-5, atol=1e-5)


def test_parameter_tree_is_documented():
    model = nnx.eval_shape(lambda: TransformerEncoder(L, D, N, F, norm="pre", rngs=nnx.Rngs(0)))
    shapes = {
        jax.tree_util.keystr(path, simple=True, separator="."): leaf.shape
        for path, leaf in jax.tree_util.tree_leaves_with_path(_param_dict(model))
    }
    want = {"final_norm.scale": (D,), "final_norm.bias": (D,)}
    for name in ("query", "key", "value", "out"):
        want[f"layers.attention.{name}.kernel"] = (L, D, D)
        want[f"layers.attention.{name}.bias"] = (L, D)
    for name in ("norm1", "norm2"):
        want[f"layers.{name}.scale"] = (L, D)
        want[f"layers.{name}.bias"] = (L, D)
    want |= {
        "layers.mlp.fc1.kernel": (L, D, F),
        "layers.mlp.fc1.bias": (L, F),
        "layers.mlp.fc2.kernel": (L, F, D),
        "layers.mlp.fc2.bias": (L, D),
    }
    assert shapes == want


@pytest.mark.parametrize("norm", ["post", "pre"])
def test_scan_equals_python_loop_over_layers(norm):
    model = TransformerEncoder(L, D, N, F, norm=norm, rngs=nnx.Rngs(0))
    _randomize(model)
    x, mask = _x(2), _mask()

    @nnx.jit
    def loop(model, h):
        graphdef, state = nnx.split(model.layers)
        for i in range(L):
            layer = nnx.merge(graphdef, jax.tree.map(lambda a, i=i: a[i], state))
            h = layer(h, None, mask)
        return h if norm == "post" else model.final_norm(h)

    np.testing.assert_allclose(_apply(model, x, mask), loop(model, x), rtol=1e-5, atol=1e-5)


def test_post_and_pre_ln_as_documented():
    x = _x(3)
    for norm in ("post", "pre"):
        model = TransformerEncoder(L, D, N, F, norm=norm, rngs=nnx.Rngs(0))
        y = _apply(model, x)
        # Default affine (scale 1, bias 0): every output token is standardised.
        np.testing.assert_allclose(y.mean(-1), 0.0, atol=1e-5)
        np.testing.assert_allclose(y.var(-1), 1.0, rtol=1e-4)
        # Zero the residual branches' output layers: only the identity path is left.
        for sub in (model.layers.attention.out, model.layers.mlp.fc2):
            sub.kernel[...] = jnp.zeros_like(sub.kernel[...])
            sub.bias[...] = jnp.zeros_like(sub.bias[...])
        identity = _apply(model, 5.0 + 3.0 * x)
        if norm == "pre":
            # pre-LN: x passes through untouched until final_norm.
            np.testing.assert_allclose(identity, model.final_norm(5.0 + 3.0 * x), atol=1e-5)
        else:
            # post-LN: normalised after every sub-layer, 2L LayerNorms of the same input.
            standard = (x - x.mean(-1, keepdims=True)) / x.std(-1, keepdims=True)
            np.testing.assert_allclose(identity, standard, atol=1e-4)


def test_padded_tokens_do_not_affect_valid_outputs():
    model = TransformerEncoder(L, D, N, F, rngs=nnx.Rngs(0))
    x, mask = _x(4), _mask()
    changed = jnp.where(mask[..., None], x, 50.0 * _x(5))
    a, b = _apply(model, x, mask), _apply(model, changed, mask)
    np.testing.assert_allclose(a[mask], b[mask], rtol=1e-5, atol=1e-5)


def test_activation_names_and_callables():
    x = _x(6)
    # "gelu_tanh" is jax.nn.gelu's default (approximate=True); "gelu_erf" is checked above.
    by_name = TransformerEncoder(L, D, N, F, activation="gelu_tanh", rngs=nnx.Rngs(0))
    by_fn = TransformerEncoder(L, D, N, F, activation=jax.nn.gelu, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(_apply(by_name, x), _apply(by_fn, x), rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- remat
def _loss_and_grads(remat):
    """Masked mean-square output and its gradients; x, mask and parameters fixed."""
    x, mask = _x(7), _mask()
    graphdef, params = nnx.split(TransformerEncoder(L, D, N, F, remat=remat, rngs=nnx.Rngs(0)))

    def loss(params):
        y = nnx.merge(graphdef, params)(x, mask)
        return jnp.mean(jnp.where(mask[..., None], y, 0.0) ** 2)

    jaxpr = str(jax.make_jaxpr(jax.grad(loss))(params))
    return jax.jit(jax.value_and_grad(loss))(params), jaxpr


_no_remat = functools.cache(lambda: _loss_and_grads(None)[0])


# "dots" is left out to save a compile: policies themselves are tested in tests/remat.
@pytest.mark.parametrize("policy", ["full", "save:query,mlp_hidden"])
def test_remat_policies_match_no_remat(policy):
    (l1, g1), jaxpr = _loss_and_grads(policy)
    assert "checkpoint" in jaxpr or "remat" in jaxpr  # recomputation is really in place
    l0, g0 = _no_remat()
    np.testing.assert_allclose(l1, l0, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), g1, g0)


# ---------------------------------------------------------------- data parallel
def test_data_parallel_step_equals_single_device(mesh8):
    model = TransformerEncoder(L, D, N, F, norm="pre", rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    x = _x(8, shape=(8, T, D))
    mask = jnp.arange(T)[None, :] < jnp.arange(1, 9)[:, None]

    def step(params, x, mask):
        def loss(params):
            y = nnx.merge(graphdef, params)(x, mask)
            return jnp.sum(jnp.where(mask[..., None], y, 0.0) ** 2) / jnp.sum(mask)

        value, grads = jax.value_and_grad(loss)(params)
        return value, jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)

    step = jax.jit(step)
    want_loss, want = step(params, x, mask)
    data, replicated = NamedSharding(mesh8, P("data")), NamedSharding(mesh8, P())
    got_loss, got = step(
        jax.device_put(params, replicated), jax.device_put(x, data), jax.device_put(mask, data)
    )
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert a.sharding.is_fully_replicated
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- dtypes
def test_bf16_path():
    # Gradients in bf16 are checked on RoPEAttention (tests/nn/test_attention.py).
    ref = TransformerEncoder(L, D, N, F, norm="pre", rngs=nnx.Rngs(0))
    low = TransformerEncoder(
        L, D, N, F, norm="pre", rngs=nnx.Rngs(0), dtype=jnp.bfloat16, param_dtype=jnp.bfloat16
    )
    nnx.update(low, jax.tree.map(lambda p: p.astype(jnp.bfloat16), nnx.state(ref, nnx.Param)))
    assert {p.dtype for p in jax.tree.leaves(nnx.state(low, nnx.Param))} == {
        jnp.dtype(jnp.bfloat16)
    }
    x = _x(9)
    out = _apply(low, x.astype(jnp.bfloat16))
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(out.astype(jnp.float32), _apply(ref, x), rtol=0.1, atol=0.1)


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(num_layers=0), "num_layers must be a positive int, got 0"),
        (dict(norm="sandwich"), "norm must be one of"),
        (dict(activation="swish"), "activation must be a callable or one of"),
        (dict(remat="everything"), "remat='everything': .*unknown policy 'everything'"),
        (dict(dim=30), "dim must be divisible by num_heads, got dim=30, num_heads=4"),
        (dict(mlp_dim=0), "mlp_dim must be a positive int, got 0"),
    ],
)
def test_constructor_errors(kwargs, match):
    args = dict(num_layers=L, dim=D, num_heads=N, mlp_dim=F) | kwargs
    with pytest.raises(ValueError, match=match):
        TransformerEncoder(**args, rngs=nnx.Rngs(0))


def test_call_error():
    with pytest.raises(ValueError, match=f"x must have shape \\(B, T, {D}\\)"):
        TransformerEncoder(L, D, N, F, rngs=nnx.Rngs(0))(jnp.ones((B, T, D + 2)))


def test_bert_base_shapes_without_allocation():
    abstract = nnx.eval_shape(lambda: TransformerEncoder(12, 768, 12, 3072, rngs=nnx.Rngs(0)))
    state = nnx.state(abstract, nnx.Param)
    leaves = jax.tree.leaves(state)
    assert all(isinstance(a, jax.ShapeDtypeStruct) for a in leaves)
    # 12 x (4 (768^2 + 768) + 2 * 768 * 3072 + 3072 + 768 + 4 * 768), BERT-base without embeddings
    assert sum(int(np.prod(a.shape)) for a in leaves) == 12 * 7_087_872
