"""scale_by_name and name_mask against names written out by hand."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st

from jaxtricks.optim import name_mask, scale_by_name

PARAMS = {
    "encoder": {
        "layer_0": {"attention": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}},
        "norm": {"scale": jnp.ones(2), "bias": jnp.ones(2)},
    },
    "embeddings": [jnp.ones((3, 2)), jnp.ones((4, 2))],
}
# The same leaves, named as jax.tree_util.keystr writes them (dict keys sorted).
NAMES = {
    "['embeddings'][0]": ("embeddings", 0),
    "['embeddings'][1]": ("embeddings", 1),
    "['encoder']['layer_0']['attention']['bias']": ("encoder", "layer_0", "attention", "bias"),
    "['encoder']['layer_0']['attention']['kernel']": ("encoder", "layer_0", "attention", "kernel"),
    "['encoder']['norm']['bias']": ("encoder", "norm", "bias"),
    "['encoder']['norm']['scale']": ("encoder", "norm", "scale"),
}


def _get(tree, keys):
    for k in keys:
        tree = tree[k]
    return tree


@given(
    a=st.floats(0.01, 10.0),
    b=st.floats(0.01, 10.0),
    c=st.floats(0.01, 10.0),
)
def test_scale_by_name_products(x64, a, b, c):
    multipliers = {"bias": a, "encoder": b, "[1]": c}
    updates = jax.tree.map(lambda p: jnp.full(p.shape, 3.0, jnp.float64), PARAMS)
    out, _ = scale_by_name(multipliers).update(updates, optax.EmptyState())
    for name, keys in NAMES.items():
        factor = np.prod([v for k, v in multipliers.items() if k in name])
        np.testing.assert_allclose(_get(out, keys), 3.0 * factor, rtol=1e-15)


def test_scale_by_name_multiplies_learning_rate():
    # After sgd, a multiplier m on a leaf is a learning rate m·lr on it.
    tx = optax.chain(optax.sgd(0.1), scale_by_name({"kernel": 0.5}))
    grads = jax.tree.map(jnp.ones_like, PARAMS)
    updates, _ = jax.jit(tx.update)(grads, tx.init(PARAMS), PARAMS)
    kernel = updates["encoder"]["layer_0"]["attention"]["kernel"]
    np.testing.assert_allclose(kernel, -0.05 * np.ones((2, 2)), rtol=1e-6)
    np.testing.assert_allclose(updates["embeddings"][0], -0.1 * np.ones((3, 2)), rtol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_scale_by_name_keeps_dtype_jit_equals_eager(dtype):
    tx = scale_by_name({"bias": 0.3})
    updates = jax.tree.map(lambda p: p.astype(dtype), PARAMS)
    eager, _ = tx.update(updates, tx.init(PARAMS))
    jitted, _ = jax.jit(tx.update)(updates, tx.init(PARAMS))
    chex.assert_trees_all_equal(eager, jitted)
    assert all(x.dtype == dtype for x in jax.tree.leaves(eager))


@pytest.mark.parametrize(
    "include,exclude",
    [((), ()), ((), ("bias", "scale")), (("encoder",), ("bias",)), ("embeddings", "[1]")],
)
def test_name_mask_nested_dict(include, exclude):
    mask = name_mask(include, exclude)(PARAMS)
    inc = (include,) if isinstance(include, str) else include
    exc = (exclude,) if isinstance(exclude, str) else exclude
    for name, keys in NAMES.items():
        want = (not inc or any(k in name for k in inc)) and not any(k in name for k in exc)
        assert _get(mask, keys) is want, name


class _Model(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.dense = nnx.Linear(3, 4, rngs=rngs)
        self.norm = nnx.LayerNorm(4, rngs=rngs)


def test_name_mask_and_scale_by_name_on_nnx_state():
    state = nnx.state(_Model(nnx.Rngs(0)), nnx.Param)
    mask = name_mask(exclude=("bias", "scale"))(state)
    flat = {jax.tree_util.keystr(p): m for p, m in jax.tree_util.tree_leaves_with_path(mask)}
    assert flat == {
        "['dense']['bias'].value": False,
        "['dense']['kernel'].value": True,
        "['norm']['bias'].value": False,
        "['norm']['scale'].value": False,
    }
    grads = jax.tree.map(jnp.ones_like, state)
    out, _ = scale_by_name({"norm": 0.1}).update(grads, optax.EmptyState())
    np.testing.assert_allclose(out["norm"]["scale"][...], 0.1 * np.ones(4), rtol=1e-7)
    np.testing.assert_array_equal(out["dense"]["kernel"][...], np.ones((3, 4)))


def test_name_mask_in_nnx_optimizer_weight_decay():
    model = _Model(nnx.Rngs(1))
    before = nnx.as_pure(nnx.state(model, nnx.Param))
    tx = optax.chain(
        optax.add_decayed_weights(0.5, mask=name_mask(exclude=("bias", "scale"))), optax.sgd(0.1)
    )
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    zero = jax.tree.map(jnp.zeros_like, nnx.state(model, nnx.Param))
    optimizer.update(model, zero)
    after = nnx.as_pure(nnx.state(model, nnx.Param))
    np.testing.assert_allclose(
        after["dense"]["kernel"], 0.95 * before["dense"]["kernel"], rtol=1e-6
    )
    for layer, leaf in (("dense", "bias"), ("norm", "bias"), ("norm", "scale")):
        np.testing.assert_array_equal(after[layer][leaf], before[layer][leaf])


def test_errors():
    with pytest.raises(TypeError, match="multipliers must be a mapping"):
        scale_by_name([("bias", 2.0)])
    with pytest.raises(TypeError, match="multipliers keys must be strings, got 3"):
        scale_by_name({3: 2.0})
    with pytest.raises(ValueError, match="multipliers has the key ''"):
        scale_by_name({"": 2.0})
    with pytest.raises(TypeError, match=r"multipliers\['bias'\] must be a real number, got 'x'"):
        scale_by_name({"bias": "x"})
    with pytest.raises(ValueError, match=r"multipliers\['bias'\] must be finite, got inf"):
        scale_by_name({"bias": float("inf")})
    params = {"dense": {"kernel": jnp.ones(2)}}
    with pytest.raises(ValueError, match=r"multipliers keys \['bais'\] match no parameter"):
        scale_by_name({"bais": 2.0}).init(params)
    with pytest.raises(ValueError, match=r"include patterns \['dnse'\] match no parameter"):
        name_mask(include="dnse")(params)
    assert name_mask(exclude="scale")(params) == {"dense": {"kernel": True}}
    with pytest.raises(TypeError, match="exclude must hold strings, got 1"):
        name_mask(exclude=("bias", 1))
    with pytest.raises(ValueError, match="include holds an empty pattern"):
        name_mask(include=("",))
