"""Bad inputs of jaxtricks.optim: named errors, and finite, correct limits on degenerate values.

References are float64 NumPy formulas written here (or the mathematical limit), never numbers
read off the library.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given
from hypothesis import strategies as st
from probes import probe, raises

from jaxtricks.optim import (
    AccumulateState,
    EmaParamsState,
    LookaheadState,
    ScaleByAdaXState,
    accumulate,
    adax,
    adaxw,
    ema_params,
    ema_weights,
    grad_cache,
    lazy_rows,
    lookahead,
    microbatch_value_and_grad,
    mle_guided_update,
    name_mask,
    piecewise_linear_schedule,
    scale_by_adax,
    scale_by_name,
)

KEY = jax.random.key(0)
PARAMS = {"w": jnp.ones((3, 2)), "b": jnp.ones(2)}
BAD_SIZES = [(0, ValueError, "0"), (-1, ValueError, "-1"), (2.5, TypeError, "2.5")]
BAD_SIZES += [(True, TypeError, "True"), ("2", TypeError, "'2'")]
NOT_TRANSFORMS = [lambda g: g, None, optax.sgd]  # optax.sgd uncalled is a factory
BAD_KEYS = [
    (0, TypeError, "got 0"),
    (jnp.ones(2), TypeError, "float32"),
    (jax.random.split(KEY, 3), ValueError, "(3,)"),
]
NAN, INF = float("nan"), float("inf")


def _adax_factories():
    return {
        "scale_by_adax": scale_by_adax,
        "adax": lambda **k: adax(1e-3, **k),
        "adaxw": lambda **k: adaxw(1e-3, **k),
    }


ADAX_NAMES = ("optim.scale_by_adax", "optim.adax", "optim.adaxw")

# ----------------------------------------------------------------------------- AdaX family


@probe("error", *ADAX_NAMES)
@pytest.mark.parametrize("factory", sorted(_adax_factories()))
@pytest.mark.parametrize(
    "kwarg,value,fragment",
    [
        ("b1", 1.0, "[0, 1)"),
        ("b1", -0.1, "-0.1"),
        ("b1", NAN, "nan"),
        ("b1", jnp.array(1.0), "[0, 1)"),
        ("b2", 0.0, "> 0"),
        ("b2", -1e-4, "-0.0001"),
        ("b2", INF, "inf"),
        ("b2", jnp.array(NAN), "NaN"),
        ("eps", -1e-8, ">= 0"),
        ("eps", NAN, "nan"),
        ("eps", jnp.array(INF), "finite"),
        ("eps_root", -1.0, ">= 0"),
        ("eps_root", INF, "inf"),
    ],
)
def test_adax_hyperparameters_checked(factory, kwarg, value, fragment):
    with raises(ValueError, kwarg, fragment):
        _adax_factories()[factory](**{kwarg: value})


@probe("error", *ADAX_NAMES)
@pytest.mark.parametrize("factory", sorted(_adax_factories()))
@pytest.mark.parametrize(
    "mu_dtype,fragment", [(jnp.int32, "int32"), (jnp.bool_, "bool"), ("nope", "nope")]
)
def test_adax_mu_dtype_must_be_inexact(factory, mu_dtype, fragment):
    # An int32 first moment used to truncate every step's m to 0, silently.
    with raises(TypeError, "mu_dtype", fragment):
        _adax_factories()[factory](mu_dtype=mu_dtype)


@probe("error", "optim.scale_by_adax", "optim.ScaleByAdaXState")
@pytest.mark.parametrize(
    "params,updates,exc,argument,fragment",
    [
        (jnp.zeros(2, jnp.complex64), None, TypeError, "mu_dtype", "complex"),
        (jnp.zeros(2, jnp.int32), None, TypeError, "params", "int32"),
        (PARAMS, {"w": jnp.ones((3, 2))}, ValueError, "updates", "tree structure"),
        (PARAMS, {"w": jnp.ones((2, 3)), "b": jnp.ones(2)}, ValueError, "updates", "(3, 2)"),
        (jnp.zeros(2), jnp.zeros(2, jnp.int32), TypeError, "updates", "int32"),
    ],
)
def test_adax_params_and_updates_checked(params, updates, exc, argument, fragment):
    tx = scale_by_adax(mu_dtype=jnp.float32 if argument == "mu_dtype" else None)
    with raises(exc, argument, fragment):
        state = tx.init(params)
        tx.update(updates, state)


@probe("error", "optim.adax", "optim.adaxw")
@pytest.mark.parametrize("make", [adax, adaxw])
@pytest.mark.parametrize(
    "lr,exc,fragment", [(NAN, ValueError, "nan"), (INF, ValueError, "inf"), ("1e-3", TypeError, "")]
)
def test_adax_learning_rate_checked(make, lr, exc, fragment):
    with raises(exc, "learning_rate", fragment):
        make(lr)


@probe("error", "optim.adaxw")
@pytest.mark.parametrize(
    "value,fragment", [(-0.1, "-0.1"), (NAN, "nan"), (INF, "inf"), (jnp.array(-1.0), ">= 0")]
)
def test_adaxw_weight_decay_checked(value, fragment):
    with raises(ValueError, "weight_decay", fragment):
        adaxw(1e-3, weight_decay=value)


@probe("error", "optim.adaxw")
@pytest.mark.parametrize(
    "mask,exc,fragment",
    [
        ({"w": True}, ValueError, "tree structure"),
        ({"w": True, "b": False, "c": True}, ValueError, "expected"),
        ({"w": True, "b": 0}, TypeError, "got 0"),
        ({"w": jnp.array([True, False]), "b": True}, TypeError, "shape (2,)"),
        (lambda p: [True, False], ValueError, "tree structure"),
    ],
)
def test_adaxw_mask_must_match_params(mask, exc, fragment):
    with raises(exc, "mask", fragment):
        adaxw(1e-3, mask=mask).init(PARAMS)


@probe("value", "optim.adaxw")
def test_adaxw_prefix_mask_decays_the_subtree():
    params = {"enc": {"w": jnp.ones(2), "b": jnp.ones(1)}, "head": jnp.ones(3)}
    tx = adaxw(0.1, weight_decay=0.5, mask={"enc": True, "head": False})
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = jax.jit(tx.update)(zero, tx.init(params), params)
    # Zero gradient: only the decay moves, -lr * wd * p = -0.05 where masked in.
    np.testing.assert_allclose(np.asarray(updates["enc"]["w"]), -0.05, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(updates["head"]), 0.0)


@probe("value", "optim.scale_by_adax", "optim.adax", "optim.ScaleByAdaXState")
@pytest.mark.parametrize("eps_root", [0.0, 1e-12])
def test_adax_eps_zero_on_an_all_zero_leaf(eps_root):
    # 0/0 used to give NaN. The leaf never had a gradient: m = v = 0, the update is 0.
    tx = scale_by_adax(eps=0.0, eps_root=eps_root)
    grads = {"used": jnp.array([0.5, -2.0]), "unused": jnp.zeros(3)}
    state = tx.init(jax.tree.map(jnp.zeros_like, grads))
    for _ in range(2):
        u, state = jax.jit(tx.update)(grads, state)
    assert isinstance(state, ScaleByAdaXState)
    np.testing.assert_array_equal(np.asarray(u["unused"]), 0.0)
    g = np.array([0.5, -2.0])
    want = (1 - 0.9**2) * g / (np.sqrt(g * g + eps_root))  # m_2 / sqrt(v_2), v_2 = g^2
    np.testing.assert_allclose(np.asarray(u["used"]), want, rtol=1e-6)


ADAX_EPS0 = scale_by_adax(b2=0.1, eps=0.0)
ADAX_EPS0_RUN = jax.jit(
    lambda gs: jax.lax.scan(lambda s, g: ADAX_EPS0.update(g, s)[::-1], ADAX_EPS0.init(gs[0]), gs)
)


@probe("value", "optim.adaxw", "optim.adax")
@pytest.mark.parametrize("weight_decay", [0.0, 0.3])
def test_adaxw_eps_zero_with_zero_gradients_is_the_decay_alone(weight_decay):
    # Zero gradients and eps = 0: the AdaX direction is 0 (it was 0/0 = NaN), so the update
    # is the decay -lr * wd * p alone (adaxw with wd = 0 is adax).
    params = {"w": jnp.array([1.0, -2.0]), "b": jnp.array([0.5])}
    tx = adaxw(0.1, eps=0.0, weight_decay=weight_decay)
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = jax.jit(tx.update)(zero, tx.init(params), params)
    for k in params:
        want = -0.1 * weight_decay * np.asarray(params[k])
        np.testing.assert_allclose(np.asarray(updates[k]), want, rtol=1e-6, atol=0)


@probe("value", "optim.scale_by_adax")
@pytest.mark.parametrize("scale", [1e-15, 1.0, 1e15])
def test_adax_scale_invariant_at_tiny_and_huge_gradients(scale):
    # With eps = 0, AdaX's update does not depend on the gradients' scale; float32 squares
    # stay normal for 1e-15 and 1e15 (they underflow/overflow only past ~1e-19 / ~1.8e19).
    g = np.random.default_rng(0).standard_normal((4, 3))
    u = ADAX_EPS0_RUN(jnp.asarray(g * scale, jnp.float32))[1][-1]
    m, v, d = np.zeros(3), np.zeros(3), 0.0
    for gt in g:  # the paper's raw sum in float64, at scale 1
        m = 0.9 * m + 0.1 * gt
        v = 1.1 * v + 0.1 * gt * gt
        d = 1.1 * d + 0.1
    np.testing.assert_allclose(np.asarray(u), m / np.sqrt(v / d), rtol=1e-5)


@probe("value", "optim.scale_by_adax")
@pytest.mark.parametrize("b2", [1e300, 3.4e38])
def test_adax_b2_beyond_float32_takes_its_limit(b2):
    # c_1 = 1 and c_t = b2 / ((1 + b2)^t - 1) -> 0 for t >= 2: v_hat stays g_1^2, never NaN.
    tx = scale_by_adax(b2=b2)
    state = tx.init(jnp.zeros(2))
    for g in ([1.0, 2.0], [3.0, -1.0], [10.0, 1.0]):
        u, state = tx.update(jnp.asarray(g), state)
    np.testing.assert_allclose(np.asarray(state.nu), [1.0, 4.0], rtol=1e-6)
    assert np.all(np.isfinite(np.asarray(u)))


@probe("value", "optim.scale_by_adax", "optim.ScaleByAdaXState")
@given(
    re=st.lists(st.floats(-3, 3), min_size=6, max_size=6),
    im=st.lists(st.floats(-3, 3), min_size=6, max_size=6),
)
def test_adax_complex_moments_follow_optax_convention(re, im):
    # nu of a complex leaf is the real AdaX nu of |g|; mu is AdaX's mu of the real and the
    # imaginary parts (optax's convention for complex Adam).
    g = (np.asarray(re) + 1j * np.asarray(im)).reshape(3, 2)
    tx = scale_by_adax(b2=0.5)
    state = tx.init(jnp.zeros(2, jnp.complex64))
    for gt in g:
        u, state = tx.update(jnp.asarray(gt, jnp.complex64), state)
    m, v, d = np.zeros(2, complex), np.zeros(2), 0.0
    for gt in g:
        m = 0.9 * m + 0.1 * gt
        v = 1.5 * v + 0.5 * np.abs(gt) ** 2
        d = 1.5 * d + 0.5
    assert state.nu.dtype == jnp.float32 and state.mu.dtype == jnp.complex64
    np.testing.assert_allclose(np.asarray(state.nu), v / d, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(state.mu), m, rtol=1e-5, atol=1e-6)
    want = np.divide(m, np.sqrt(v / d) + 1e-8, out=np.zeros(2, complex), where=m != 0)
    np.testing.assert_allclose(np.asarray(u), want, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------- accumulate


@probe("error", "optim.accumulate")
@pytest.mark.parametrize("inner", NOT_TRANSFORMS)
def test_accumulate_inner_checked_at_construction(inner):
    # It used to fail only at init, with an AttributeError.
    with raises(TypeError, "inner", "GradientTransformation"):
        accumulate(inner, 2)


@probe("error", "optim.accumulate")
@pytest.mark.parametrize("every_k,exc,fragment", BAD_SIZES)
def test_accumulate_every_k_positive_int(every_k, exc, fragment):
    with raises(exc, "every_k", fragment):
        accumulate(optax.sgd(1.0), every_k)


@probe("error", "optim.accumulate", "optim.AccumulateState")
@pytest.mark.parametrize(
    "weight,exc,fragment",
    [
        (-1.0, ValueError, "-1.0"),
        (NAN, ValueError, "nan"),
        (INF, ValueError, "inf"),
        (jnp.array(-2.0), ValueError, ">= 0"),
        (jnp.ones(2), ValueError, "(2,)"),
        (True, TypeError, "bool"),
        (1j, TypeError, "complex"),
    ],
)
def test_accumulate_weight_checked(weight, exc, fragment):
    tx = accumulate(optax.sgd(1.0), 2)
    state = tx.init(jnp.zeros(2))
    assert isinstance(state, AccumulateState)
    with raises(exc, "weight", fragment):
        tx.update(jnp.ones(2), state, weight=weight)


@probe("error", "optim.accumulate")
@pytest.mark.parametrize(
    "grads,fragment",
    [({"w": jnp.ones((3, 2))}, "tree structure"), ({**PARAMS, "b": jnp.ones(3)}, "(2,)")],
)
def test_accumulate_grads_must_match_params(grads, fragment):
    tx = accumulate(optax.sgd(1.0), 2)
    with raises(ValueError, "grads", fragment):
        tx.update(grads, tx.init(PARAMS))


@probe("value", "optim.accumulate", "optim.AccumulateState")
def test_accumulate_zero_weight_micro_batch_with_nan_gradient_is_left_out():
    # A fully masked micro-batch: its mean-over-no-tokens gradient is NaN and its weight 0.
    tx = jax.jit(accumulate(optax.sgd(1.0), 3).update)
    state = accumulate(optax.sgd(1.0), 3).init(jnp.zeros(2))
    grads = [jnp.array([1.0, 2.0]), jnp.array([jnp.nan, jnp.inf]), jnp.array([4.0, -1.0])]
    for g, w in zip(grads, (1.0, 0.0, 3.0)):
        u, state = tx(g, state, weight=w)
    want = -(1.0 * np.array([1.0, 2.0]) + 3.0 * np.array([4.0, -1.0])) / 4.0
    np.testing.assert_allclose(np.asarray(u), want, rtol=1e-6)


@probe("value", "optim.accumulate")
def test_accumulate_all_zero_weights_give_a_zero_gradient():
    # Sum w = 0 at the emitting call: inner sees a zero gradient (documented), not 0/0.
    tx = accumulate(optax.sgd(0.5, momentum=0.9), 2)
    state = tx.init(jnp.zeros(2))
    for g in (jnp.array([1.0, jnp.nan]), jnp.array([2.0, 3.0])):
        u, state = tx.update(g, state, weight=0.0)
    np.testing.assert_array_equal(np.asarray(u), 0.0)
    assert np.all(np.isfinite(np.asarray(state.inner_state[0].trace)))


@probe("value", "optim.accumulate")
@given(
    weights=st.lists(st.sampled_from([0.0, 0.5, 1.0, 7.0, 1e6]), min_size=3, max_size=3),
    seed=st.integers(0, 2**16),
)
def test_accumulate_weighted_mean_equals_float64(weights, seed):
    grads = np.random.default_rng(seed).standard_normal((3, 4))
    tx = accumulate(optax.sgd(1.0), 3)
    update = jax.jit(tx.update)
    state = tx.init(jnp.zeros(4))
    for g, w in zip(grads, weights):
        u, state = update(jnp.asarray(g, jnp.float32), state, weight=w)
    w = np.asarray(weights)
    want = -(w @ grads) / w.sum() if w.sum() > 0 else np.zeros(4)
    np.testing.assert_allclose(np.asarray(u), want, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------ microbatch_value_and_grad


def _sum_loss(p, batch):
    return jnp.sum(batch["x"] @ p), jnp.sum(batch["m"])


@probe("error", "optim.microbatch_value_and_grad")
@pytest.mark.parametrize("num,exc,fragment", BAD_SIZES)
def test_microbatch_num_positive_int(num, exc, fragment):
    with raises(exc, "num_microbatches", fragment):
        microbatch_value_and_grad(_sum_loss, num)


@probe("error", "optim.microbatch_value_and_grad", "optim.grad_cache")
@pytest.mark.parametrize("fn", [None, 3, "loss"])
def test_microbatch_and_grad_cache_functions_callable(fn):
    with raises(TypeError, "loss_fn", "callable"):
        microbatch_value_and_grad(fn, 2)
    with raises(TypeError, "encode_fn", "callable"):
        grad_cache(fn, jnp.sum, 2)
    with raises(TypeError, "loss_fn", "callable"):
        grad_cache(lambda p, x: x, fn, 2)


@probe("error", "optim.microbatch_value_and_grad")
@pytest.mark.parametrize(
    "batch,exc,argument,fragment",
    [
        ({"x": jnp.ones((10, 2)), "m": jnp.ones(10)}, ValueError, "num_microbatches", "(10)"),
        ({"x": jnp.ones((4, 2)), "m": jnp.ones(6)}, ValueError, "batch", "6"),
        ({"x": jnp.ones((4, 2)), "m": jnp.float32(1)}, ValueError, "batch", "scalar"),
        ({}, ValueError, "batch", "no array leaves"),
    ],
)
def test_microbatch_batch_checked(batch, exc, argument, fragment):
    f = microbatch_value_and_grad(_sum_loss, 4)
    with raises(exc, argument, fragment):
        f(jnp.ones(2), batch)


@probe("error", "optim.microbatch_value_and_grad")
@pytest.mark.parametrize(
    "loss_fn,params,exc,argument,fragment",
    [
        (lambda p, b: jnp.sum(b["x"] @ p), jnp.ones(2), TypeError, "loss_fn", "pair"),
        (lambda p, b: (b["x"] @ p, 1.0), jnp.ones(2), ValueError, "loss_sum", "(1,)"),
        (lambda p, b: (jnp.int32(1), 1.0), jnp.ones(2), TypeError, "loss_sum", "int32"),
        (_sum_loss, jnp.ones(2, jnp.int32), TypeError, "params", "int32"),
    ],
)
def test_microbatch_loss_fn_output_and_params_checked(loss_fn, params, exc, argument, fragment):
    batch = {"x": jnp.ones((4, 2)), "m": jnp.ones(4)}
    with raises(exc, argument, fragment):
        microbatch_value_and_grad(loss_fn, 4)(params, batch)


@probe("value", "optim.microbatch_value_and_grad")
@pytest.mark.parametrize("rows", [0, 8])
def test_microbatch_empty_or_all_masked_batch_gives_zero(rows):
    # B = 0, or every weight 0: loss and gradient 0 (documented), not 0/0.
    batch = {"x": jnp.ones((rows, 2)), "m": jnp.zeros(rows)}
    loss, grads = microbatch_value_and_grad(_sum_loss, 4)(jnp.ones(2), batch)
    assert float(loss) == 0.0
    np.testing.assert_array_equal(np.asarray(grads), 0.0)


# ----------------------------------------------------------------------------- grad_cache


def _encode(w, x):
    return jnp.tanh(x @ w)


def _contrastive(h):
    logits = h @ h.T
    return jnp.mean(jax.nn.logsumexp(logits, axis=1) - jnp.diag(logits))


@probe("error", "optim.grad_cache")
@pytest.mark.parametrize("num,exc,fragment", BAD_SIZES)
def test_grad_cache_num_chunks_positive_int(num, exc, fragment):
    with raises(exc, "num_chunks", fragment):
        grad_cache(_encode, _contrastive, num)


@probe("error", "optim.grad_cache")
@pytest.mark.parametrize(
    "make,args,exc,argument,fragment",
    [
        (lambda: grad_cache(_encode, _contrastive, 2, with_key=1), (), TypeError, "with_key", "1"),
        (lambda: grad_cache(_encode, _contrastive, 3), (jnp.ones((2, 3)), jnp.ones((8, 2))),
         ValueError, "num_chunks", "(8)"),
        (lambda: grad_cache(_encode, _contrastive, 2), (jnp.ones((2, 3), jnp.int32),
         jnp.ones((8, 2))), TypeError, "params", "int32"),
        (lambda: grad_cache(_encode, jnp.diag, 2), (jnp.ones((3, 3)), jnp.ones((8, 3))),
         ValueError, "loss_fn", "scalar"),
        (lambda: grad_cache(_encode, lambda h: jnp.int32(1), 2), (jnp.ones((2, 3)),
         jnp.ones((8, 2))), TypeError, "loss_fn", "int32"),
        (lambda: grad_cache(lambda w, x: jnp.sum(x @ w), _contrastive, 2),
         (jnp.ones((2, 3)), jnp.ones((8, 2))), ValueError, "encode_fn", "leading axis 4"),
    ],
)  # fmt: skip
def test_grad_cache_arguments_checked(make, args, exc, argument, fragment):
    with raises(exc, argument, fragment):
        jax.eval_shape(make(), *args)


@probe("error", "optim.grad_cache")
@pytest.mark.parametrize("key,exc,fragment", BAD_KEYS)
def test_grad_cache_key_must_be_one_prng_key(key, exc, fragment):
    f = grad_cache(lambda w, x, k: _encode(w, x), _contrastive, 2, with_key=True)
    with raises(exc, "key", fragment):
        f(jnp.ones((2, 3)), jnp.ones((4, 2)), key)


@probe("value", "optim.grad_cache")
def test_grad_cache_equals_full_batch_in_float64(x64):
    rng = np.random.default_rng(0)
    w, x = rng.standard_normal((3, 4)), rng.standard_normal((8, 3))
    value, grads = jax.jit(grad_cache(_encode, _contrastive, 4))(jnp.asarray(w), jnp.asarray(x))
    # The full-batch value and gradient written out in NumPy: L = mean(lse(HH^T) - diag).
    h = np.tanh(x @ w)
    logits = h @ h.T
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    want = np.mean(np.log(np.exp(logits).sum(1)) - np.diag(logits))
    dlogits = (p - np.eye(8)) / 8
    dh = (dlogits + dlogits.T) @ h
    want_grad = x.T @ (dh * (1 - h**2))
    np.testing.assert_allclose(float(value), want, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(grads), want_grad, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------- mle_guided_update


def _mgs(**kw):
    args = dict(key=KEY, params=jnp.ones(3), grad=jnp.ones(3), loss_fn=jnp.sum)
    return mle_guided_update(**{**args, **kw})


@probe("error", "optim.mle_guided_update")
@pytest.mark.parametrize(
    "kwargs,exc,argument,fragment",
    [
        *[(dict(num_samples=n), e, "num_samples", f) for n, e, f in BAD_SIZES],
        (dict(noise_scale=0.0), ValueError, "noise_scale", "> 0"),
        (dict(noise_scale=NAN), ValueError, "noise_scale", "nan"),
        (dict(noise_scale=jnp.array(INF)), ValueError, "noise_scale", "finite"),
        (dict(temperature=-1.0), ValueError, "temperature", "-1.0"),
        (dict(temperature=INF), ValueError, "temperature", "inf"),
        (dict(mix=1.5), ValueError, "mix", "[0, 1]"),
        (dict(mix=jnp.array(NAN)), ValueError, "mix", "NaN"),
        (dict(loss_fn="sum"), TypeError, "loss_fn", "callable"),
        (dict(grad={"a": jnp.ones(3)}), ValueError, "grad", "structure"),
        (dict(grad=jnp.ones(4)), ValueError, "grad", "(4,)"),
        (dict(grad=jnp.ones(3, jnp.complex64)), TypeError, "grad", "complex64"),
        (dict(params=jnp.ones(3, jnp.int32), grad=jnp.ones(3, jnp.int32)), TypeError, "params",
         "int32"),
        (dict(loss_fn=lambda p: p), ValueError, "loss_fn", "(3,)"),
        (dict(loss_fn=lambda p: (p[0], p[1])), TypeError, "loss_fn", "tuple"),
    ],
)  # fmt: skip
def test_mgs_arguments_checked(kwargs, exc, argument, fragment):
    # Abstract evaluation: the checks run while tracing; closed-over values stay concrete.
    with raises(exc, argument, fragment):
        jax.eval_shape(lambda: _mgs(**kwargs))


@probe("error", "optim.mle_guided_update")
@pytest.mark.parametrize("key,exc,fragment", BAD_KEYS)
def test_mgs_key_must_be_one_prng_key(key, exc, fragment):
    with raises(exc, "key", fragment):
        jax.eval_shape(lambda: _mgs(key=key))


def _mgs_perturbations(key, params, grad, num_samples, noise_scale, mix):
    """The perturbations, drawn as the docstring documents (float64 copies)."""
    choice_key, noise_key = jax.random.split(key)
    from_zero = np.asarray(jax.random.bernoulli(choice_key, mix, (num_samples,)))
    (k,) = optax.tree.split_key_like(noise_key, [params])
    z = np.asarray(jax.random.normal(k, (num_samples,) + params.shape, jnp.float32), np.float64)
    return noise_scale * z - np.where(from_zero[:, None], 0.0, np.asarray(grad)[None])


MGS_PARAMS, MGS_GRAD = jnp.ones(3), jnp.array([0.5, -0.5, 0.2])
MGS_LOSSES = [
    lambda p, scale: jnp.inf + 0 * p[0],  # no sample improves: no information, no step
    lambda p, scale: jnp.nan + 0 * p[0],  # failed evaluations weigh 0
    lambda p, scale: -jnp.inf + 0 * p[0],  # every sample infinitely good: the plain mean
    lambda p, scale: jnp.where(p[0] > 1.0, -jnp.inf, 0.0),  # the -inf ones share the weight
    lambda p, scale: scale * jnp.sum(p**2),  # finite, at a huge or tiny scale
]


@jax.jit
def _mgs_case(case, scale, temperature):
    """One compile for every degenerate-loss case (the case is a traced switch index)."""

    def loss(p):
        return jax.lax.switch(case, MGS_LOSSES, p, scale)

    return mle_guided_update(
        KEY, MGS_PARAMS, MGS_GRAD, loss, num_samples=8, noise_scale=0.5, temperature=temperature
    )


@probe("value", "optim.mle_guided_update")
@pytest.mark.parametrize("case,selected", [(0, "none"), (1, "none"), (2, "all"), (3, "p0>1")])
def test_mgs_infinite_and_nan_losses_give_their_limit(case, selected):
    got = _mgs_case(case, 1.0, 1.0)
    eps = _mgs_perturbations(KEY, MGS_PARAMS, MGS_GRAD, 8, 0.5, 0.5)
    if selected == "none":
        want = np.zeros(3)
    else:
        chosen = np.ones(8, bool) if selected == "all" else (1.0 + eps[:, 0] > 1.0)
        assert 0 < chosen.sum() < 8 or selected == "all"
        want = -eps[chosen].mean(axis=0)  # the function returns -Delta
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, atol=1e-7)


@probe("value", "optim.mle_guided_update")
@pytest.mark.parametrize("scale", [1e-30, 1e30])
def test_mgs_huge_and_tiny_loss_scales_equal_float64(scale):
    # -L/alpha reaches -1e33 here: the best sample must take the weight (no overflow to a
    # 0/0), and at 1e-30 the losses vanish and only the proposal density weighs.
    got = np.asarray(_mgs_case(4, scale, 1e-3))
    eps = _mgs_perturbations(KEY, MGS_PARAMS, MGS_GRAD, 8, 0.5, 0.5)
    g = np.asarray(MGS_GRAD, np.float64)
    losses = scale * np.sum((1.0 + eps) ** 2, axis=1)
    log_q = np.logaddexp(
        np.log(0.5) - np.sum(eps**2, 1) / 0.5, np.log(0.5) - np.sum((eps + g) ** 2, 1) / 0.5
    )  # 2 sigma^2 = 0.5
    log_w = -losses / 1e-3 - log_q
    w = np.exp(log_w - log_w.max())
    np.testing.assert_allclose(got, -(w / w.sum()) @ eps, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------------------ ema_params


@probe("error", "optim.ema_params")
@pytest.mark.parametrize(
    "kwargs,exc,argument,fragment",
    [
        (dict(decay=-0.1), ValueError, "decay", "[0, 1]"),
        (dict(decay=1.5), ValueError, "decay", "1.5"),
        (dict(decay=NAN), ValueError, "decay", "nan"),
        (dict(decay=jnp.array(2.0)), ValueError, "decay", "[0, 1]"),
        (dict(decay=0.9, debias="yes"), TypeError, "debias", "'yes'"),
        (dict(decay=0.9, ema_dtype=jnp.int32), TypeError, "ema_dtype", "int32"),
        (dict(decay=0.9, ema_dtype="nope"), TypeError, "ema_dtype", "nope"),
    ],
)
def test_ema_params_hyperparameters_checked(kwargs, exc, argument, fragment):
    with raises(exc, argument, fragment):
        ema_params(**kwargs)


@probe("error", "optim.ema_params", "optim.EmaParamsState")
@pytest.mark.parametrize(
    "ema_dtype,params,update_params,exc,argument,fragment",
    [
        (None, jnp.zeros(2, jnp.int32), None, TypeError, "ema_dtype", "int32"),
        (jnp.float32, jnp.zeros(2, jnp.complex64), None, TypeError, "ema_dtype", "complex64"),
        (None, jnp.zeros(2), "none", ValueError, "params", "None"),
        (None, jnp.zeros(2), jnp.zeros(3), ValueError, "params", "(3,)"),
        (None, PARAMS, {"w": jnp.ones((3, 2))}, ValueError, "params", "tree structure"),
    ],
)
def test_ema_params_init_and_update_checked(
    ema_dtype, params, update_params, exc, argument, fragment
):
    tx = ema_params(0.9, ema_dtype=ema_dtype)
    with raises(exc, argument, fragment):
        state = tx.init(params)
        assert isinstance(state, EmaParamsState)
        tx.update(params, state, None if update_params == "none" else update_params)


def _averaged(decay, debias, thetas):
    tx = ema_params(decay, debias=debias)
    params = jnp.zeros(thetas.shape[1])
    state = tx.init(params)
    for theta in thetas:
        _, state = tx.update(jnp.asarray(theta) - params, state, params)
        params = jnp.asarray(theta)
    return np.asarray(ema_weights(state))


@probe("value", "optim.ema_params", "optim.ema_weights")
@pytest.mark.parametrize("decay", [1.0, 1 - 1e-9])  # 1 - 1e-9 is 1.0 in float32
def test_ema_decay_one_is_the_running_mean(decay):
    # lim_{d->1} (1 - d) / (1 - d^t) = 1/t: the debiased average becomes the plain mean.
    thetas = np.cumsum(np.random.default_rng(0).standard_normal((5, 3)), axis=0)
    np.testing.assert_allclose(_averaged(decay, True, thetas), thetas.mean(0), rtol=1e-5)
    np.testing.assert_allclose(_averaged(decay, False, thetas), 0.0, atol=0)


@probe("value", "optim.ema_params")
def test_ema_decay_zero_is_the_latest_params():
    thetas = np.random.default_rng(1).standard_normal((3, 2))
    for debias in (True, False):
        np.testing.assert_allclose(_averaged(0.0, debias, thetas), thetas[-1], rtol=1e-6)


@probe("error", "optim.ema_weights")
@pytest.mark.parametrize(
    "state,fragment",
    [
        (optax.adam(0.1).init(jnp.ones(2)), "found 0"),
        (optax.chain(ema_params(0.9), ema_params(0.5)).init(jnp.ones(2)), "found 2"),
        (None, "found 0"),
        ("not a state", "found 0"),
    ],
)
def test_ema_weights_needs_exactly_one_average(state, fragment):
    with raises(ValueError, "opt_state", fragment):
        ema_weights(state)


@probe("value", "optim.ema_weights")
def test_ema_weights_found_through_wrappers():
    wrapped = optax.MultiSteps(optax.chain(optax.sgd(1.0), ema_params(0.5)), every_k_schedule=1)
    params = jnp.zeros(1)
    state = wrapped.init(params)
    for g in (-1.0, -1.0):
        u, state = wrapped.update(jnp.array([g]), state, params)
        params = params + u
    # Debiased: (0.5 * 1 + 1 * 2) / (1 + 0.5), params 1 then 2.
    np.testing.assert_allclose(np.asarray(ema_weights(state)), [2.5 / 1.5], rtol=1e-6)


# ------------------------------------------------------------------------------- lazy_rows


@probe("error", "optim.lazy_rows")
@pytest.mark.parametrize("inner", NOT_TRANSFORMS)
def test_lazy_rows_inner_checked(inner):
    with raises(TypeError, "inner", "GradientTransformation"):
        lazy_rows(inner)


@probe("error", "optim.lazy_rows")
@pytest.mark.parametrize(
    "mask,exc,fragment",
    [
        ({"w": True}, ValueError, "tree structure"),
        ({"w": True, "b": True, "x": False}, ValueError, "expected"),
        ({"w": True, "b": 0}, TypeError, "got 0"),
        ({"w": jnp.ones((3, 2), bool), "b": True}, TypeError, "(3, 2)"),
        (lambda p: {"w": True}, ValueError, "tree structure"),
        (name_mask(include="w"), None, None),  # a valid callable mask: no error
    ],
)
def test_lazy_rows_mask_must_match_params_at_init(mask, exc, fragment):
    tx = lazy_rows(optax.sgd(1.0), mask=mask)
    if exc is None:
        tx.init(PARAMS)
        return
    with raises(exc, "mask", fragment):
        tx.init(PARAMS)


@probe("error", "optim.lazy_rows")
def test_lazy_rows_callable_mask_needs_params():
    tx = lazy_rows(optax.sgd(1.0), mask=name_mask(include="w"))
    with raises(ValueError, "params", "None"):
        tx.update(PARAMS, tx.init(PARAMS))


@probe("value", "optim.lazy_rows")
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.complex64])
def test_lazy_rows_all_zero_table_and_untouched_rows_stay(dtype):
    tx = lazy_rows(optax.sgd(0.1, momentum=0.9))
    table = jnp.ones((4, 2), dtype)
    state = tx.init(table)
    _, state = tx.update(jnp.ones((4, 2), dtype), state, table)  # momentum on every row
    one_entry = jnp.zeros((4, 2), dtype).at[2, 1].set(1)
    update = jax.jit(tx.update)
    for grad, moved in ((jnp.zeros((4, 2), dtype), [False] * 4), (one_entry, [0, 0, 1, 0])):
        u, state = update(grad, state, table)
        np.testing.assert_array_equal(np.asarray(jnp.any(u != 0, axis=1)), moved)


# ------------------------------------------------------------------------------- lookahead


@probe("error", "optim.lookahead")
@pytest.mark.parametrize("inner", NOT_TRANSFORMS)
def test_lookahead_inner_checked(inner):
    with raises(TypeError, "inner", "GradientTransformation"):
        lookahead(inner)


@probe("error", "optim.lookahead")
@pytest.mark.parametrize(
    "kwargs,exc,argument,fragment",
    [
        *[(dict(sync_period=n), e, "sync_period", f) for n, e, f in BAD_SIZES],
        (dict(sync_period=2.0), TypeError, "sync_period", "2.0"),
        (dict(sync_period=jnp.array(2.0)), TypeError, "sync_period", "float32"),
        (dict(sync_period=jnp.array([2, 3])), ValueError, "sync_period", "(2,)"),
        (dict(sync_period=jnp.array(0)), ValueError, "sync_period", ">= 1"),
        (dict(slow_step_size=-0.1), ValueError, "slow_step_size", "[0, 1]"),
        (dict(slow_step_size=1.5), ValueError, "slow_step_size", "1.5"),
        (dict(slow_step_size=NAN), ValueError, "slow_step_size", "nan"),
        (dict(slow_step_size=jnp.array(2.0)), ValueError, "slow_step_size", "[0, 1]"),
    ],
)
def test_lookahead_hyperparameters_checked(kwargs, exc, argument, fragment):
    with raises(exc, argument, fragment):
        lookahead(optax.sgd(0.1), **kwargs)


@probe("error", "optim.lookahead", "optim.LookaheadState")
@pytest.mark.parametrize(
    "params,fragment", [(None, "None"), (jnp.ones(3), "(3,)"), ({"w": jnp.ones(2)}, "structure")]
)
def test_lookahead_update_needs_matching_params(params, fragment):
    tx = lookahead(optax.sgd(0.1))
    state = tx.init(jnp.ones(2))
    assert isinstance(state, LookaheadState)
    with raises(ValueError, "params", fragment):
        tx.update(jnp.ones(2), state, params)


@probe("value", "optim.lookahead", "optim.LookaheadState")
@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_lookahead_alpha_limits(alpha):
    # alpha = 0: every period ends back at theta_0; alpha = 1: the fast optimizer alone.
    tx = lookahead(optax.sgd(1.0), sync_period=2, slow_step_size=alpha)
    params = jnp.array([0.0])
    state = tx.init(params)
    for t in range(1, 5):
        updates, state = tx.update(jnp.array([-1.0]), state, params)
        params = optax.apply_updates(params, updates)
        fast = float(t)  # sgd(1) on a gradient of -1 moves by +1 per step
        want = (0.0 if t % 2 == 0 else float(t % 2)) if alpha == 0.0 else fast
        assert float(params[0]) == pytest.approx(want)


@probe("value", "optim.lookahead")
def test_lookahead_under_inject_hyperparams_with_integer_array_period():
    tx = optax.inject_hyperparams(lookahead)(optax.sgd(1.0), sync_period=2, slow_step_size=0.5)
    params = jnp.array([0.0])
    state = tx.init(params)
    update = jax.jit(tx.update)
    for _ in range(2):
        updates, state = update(jnp.array([-1.0]), state, params)
        params = optax.apply_updates(params, updates)
    assert float(params[0]) == pytest.approx(1.0)  # slow 0 + 0.5 * (2 - 0)


# ---------------------------------------------------------------- piecewise_linear_schedule


@probe("error", "optim.piecewise_linear_schedule")
@pytest.mark.parametrize(
    "points,scale,exc,argument,fragment",
    [
        ([(10, 1.0)], 1.0, TypeError, "points", "mapping"),
        (None, 1.0, TypeError, "points", "NoneType"),
        ({}, 1.0, ValueError, "points", "empty"),
        ({-1: 1.0}, 1.0, ValueError, "points", "-1"),
        ({2.5: 1.0}, 1.0, TypeError, "points", "2.5"),
        ({100.0: 1.0}, 1.0, TypeError, "points", "100.0"),
        ({True: 1.0}, 1.0, TypeError, "points", "True"),
        ({"10": 1.0}, 1.0, TypeError, "points", "'10'"),
        ({10: NAN}, 1.0, ValueError, "points[10]", "nan"),
        ({10: INF}, 1.0, ValueError, "points[10]", "inf"),
        ({10: "a"}, 1.0, TypeError, "points[10]", "'a'"),
        ({10: jnp.ones(2)}, 1.0, ValueError, "points[10]", "(2,)"),
        ({10: 1.0}, NAN, ValueError, "scale", "nan"),
        ({10: 1.0}, -INF, ValueError, "scale", "-inf"),
        ({10: 1.0}, "1e-3", TypeError, "scale", "'1e-3'"),
    ],
)
def test_schedule_points_and_scale_checked(points, scale, exc, argument, fragment):
    with raises(exc, argument, fragment):
        piecewise_linear_schedule(points, scale)


@probe("value", "optim.piecewise_linear_schedule")
@pytest.mark.parametrize("t", [0, 5, 10, 10**6, 2**31 - 1])
def test_schedule_held_after_the_last_point_at_any_count(t, x64):
    points = {0: 0.2, 10: 1.0}
    got = float(piecewise_linear_schedule(points, 3.0)(jnp.asarray(t, jnp.int32)))
    assert got == pytest.approx(3.0 * np.interp(t, [0, 10], [0.2, 1.0]), rel=1e-15)


# ------------------------------------------------------------------- scale_by_name, name_mask


@probe("error", "optim.scale_by_name")
@pytest.mark.parametrize(
    "multipliers,exc,argument,fragment",
    [
        ([("b", 2.0)], TypeError, "multipliers", "list"),
        ({3: 2.0}, TypeError, "multipliers", "3"),
        ({"": 2.0}, ValueError, "multipliers", "''"),
        ({"b": NAN}, ValueError, "multipliers['b']", "nan"),
        ({"b": INF}, ValueError, "multipliers['b']", "inf"),
        ({"b": "x"}, TypeError, "multipliers['b']", "'x'"),
        ({"b": True}, TypeError, "multipliers['b']", "True"),
        ({"b": jnp.ones(2)}, ValueError, "multipliers['b']", "(2,)"),
    ],
)
def test_scale_by_name_multipliers_checked(multipliers, exc, argument, fragment):
    with raises(exc, argument, fragment):
        scale_by_name(multipliers)


@probe("error", "optim.scale_by_name")
def test_scale_by_name_key_matching_no_parameter():
    # A typo ("bais") used to leave every learning rate unchanged without a word.
    with raises(ValueError, "multipliers", "'bais'", "['b']"):
        scale_by_name({"['b']": 2.0, "bais": 0.5}).init(PARAMS)


@probe("value", "optim.scale_by_name")
def test_scale_by_name_products_and_zero(x64):
    params = {"enc": {"w": jnp.ones(2), "b": jnp.ones(2)}, "head": {"w": jnp.ones(2)}}
    tx = scale_by_name({"enc": 0.5, "['w']": 3.0, "head": 0.0})
    updates, _ = tx.update(params, tx.init(params), params)
    np.testing.assert_array_equal(np.asarray(updates["enc"]["w"]), 0.5 * 3.0)
    np.testing.assert_array_equal(np.asarray(updates["enc"]["b"]), 0.5)
    np.testing.assert_array_equal(np.asarray(updates["head"]["w"]), 0.0)


@probe("error", "optim.name_mask")
@pytest.mark.parametrize(
    "kwargs,exc,argument,fragment",
    [
        (dict(include=5), TypeError, "include", "5"),
        (dict(exclude=None), TypeError, "exclude", "None"),
        (dict(exclude=("bias", 1)), TypeError, "exclude", "1"),
        (dict(include=("",)), ValueError, "include", "''"),
        (dict(include=b"w"), TypeError, "include", "b'w'"),
    ],
)
def test_name_mask_patterns_checked(kwargs, exc, argument, fragment):
    with raises(exc, argument, fragment):
        name_mask(**kwargs)


@probe("error", "optim.name_mask")
def test_name_mask_include_matching_nothing():
    with raises(ValueError, "include", "'dense'"):
        name_mask(include="dense")(PARAMS)


@probe("value", "optim.name_mask")
def test_name_mask_exclude_matching_nothing_keeps_everything():
    assert name_mask(exclude=("scale",))(PARAMS) == {"w": True, "b": True}
