"""Bad and degenerate inputs of jaxtricks.losses: named errors, and limits instead of NaN.

References are mathematical limits or float64 NumPy formulas written here.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from probes import probe, raises

from jaxtricks.losses import (
    VAEClusterLoss,
    am_softmax_cross_entropy,
    byol_loss,
    byol_tau_schedule,
    capsule_margin_loss,
    info_nce,
    knn_entropy,
    simsiam_loss,
    taylor_softmax_cross_entropy,
    teaforn_loss,
    topk_softmax_cross_entropy,
    vae_cluster_loss,
)

INF = math.inf
NAN = math.nan


def _topk2(logits, labels):
    return topk_softmax_cross_entropy(logits, labels, 2)


# The four losses of (logits (..., K), integer labels (...)), with the argument names they use.
LABELLED = {
    "topk": (_topk2, "logits", "losses.topk_softmax_cross_entropy"),
    "taylor": (taylor_softmax_cross_entropy, "logits", "losses.taylor_softmax_cross_entropy"),
    "am": (am_softmax_cross_entropy, "cos_logits", "losses.am_softmax_cross_entropy"),
}
LABELLED_NAMES = tuple(v[2] for v in LABELLED.values())


def _lse(x, axis=-1):
    x = np.asarray(x, np.float64)
    m = np.max(x, axis=axis, keepdims=True)
    return np.squeeze(m, axis) + np.log(np.sum(np.exp(x - m), axis=axis))


def _normalize(x):
    """float64 x / max(||x||, 1e-12), the documented convention of the Siamese and NCE losses."""
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


# ----------------------------------------------------------------------------- labels (shared)


@probe("error", *LABELLED_NAMES)
@pytest.mark.parametrize("which", LABELLED)
@pytest.mark.parametrize(
    "labels,exc,fragments",
    [
        (np.array([0.0, 1.0]), TypeError, ("labels", "integer", "float")),
        (np.array([True, False]), TypeError, ("labels", "integer", "bool")),
        (np.array([0, 1, 2]), ValueError, ("labels", "(3,)", "(2,)")),
        (np.array([[0, 1]]), ValueError, ("labels", "(1, 2)", "(2,)")),
        (np.array([0, 4]), ValueError, ("labels", "[0, 4)", "4")),
        (jnp.array([-1, 0]), ValueError, ("labels", "[0, 4)", "-1")),
    ],
)
def test_bad_labels(which, labels, exc, fragments):
    fn = LABELLED[which][0]
    with raises(exc, *fragments):
        fn(jnp.zeros((2, 4)), labels)


@probe("error", *LABELLED_NAMES)
@pytest.mark.parametrize("which", LABELLED)
@pytest.mark.parametrize(
    "logits,exc,fragment",
    [
        (np.float32(1.0), ValueError, "class axis"),
        (np.zeros((2, 4), np.complex64), TypeError, "complex64"),
        (np.zeros((2, 4), bool), TypeError, "bool"),
    ],
)
def test_bad_logits(which, logits, exc, fragment):
    fn, name, _ = LABELLED[which]
    labels = np.zeros(np.shape(logits)[:-1], np.int32)
    with raises(exc, name, fragment):
        fn(logits, labels)


_JITTED = {which: jax.jit(fn) for which, (fn, _, _) in LABELLED.items()}


@probe("value", *LABELLED_NAMES)
@pytest.mark.parametrize("which", LABELLED)
def test_empty_batch_gives_empty_losses(which):
    out = _JITTED[which](jnp.zeros((0, 4)), jnp.zeros((0,), jnp.int32))
    assert out.shape == (0,) and out.dtype == jnp.float32


_TOPK_SETTINGS = [(k, inc) for k in (1, 2, 4) for inc in (False, True)]


@jax.jit
def _topk_all(logits, labels):
    """Losses and gradients for every (k, include_target) at once: one compilation."""
    out = {}
    for k, inc in _TOPK_SETTINGS:

        def total(s, k=k, inc=inc):
            loss = topk_softmax_cross_entropy(s, labels, k, include_target=inc)
            return jnp.sum(jnp.where(jnp.isfinite(loss), loss, 0.0)), loss

        (_, loss), grad = jax.value_and_grad(total, has_aux=True)(logits)
        out[k, inc] = (loss, grad)
    return out


def _topk_loss_and_grad(row, t, k, include_target=False):
    logits = jnp.asarray([row], jnp.float32)
    loss, grad = _topk_all(logits, jnp.array([t]))[k, include_target]
    return float(loss[0]), grad


def _topk_ref(row, t, k, include_target):
    """float64 limit: -inf entries masked; if all are -inf, the limit of equal logits."""
    row = np.asarray(row, np.float64)
    if np.all(np.isneginf(row)):
        row = np.zeros_like(row)
    omega = sorted(range(row.size), key=lambda i: (-row[i], i))[:k]
    if include_target and t not in omega:
        omega.append(t)
    kept = row[omega]
    if np.isneginf(row[t]):
        return INF
    return _lse(kept[np.isfinite(kept)]) - row[t]


@probe("value", "losses.topk_softmax_cross_entropy")
@pytest.mark.parametrize("include_target", [False, True])
@pytest.mark.parametrize("k", [1, 2, 4])
@pytest.mark.parametrize(
    "row,t",
    [
        ([-INF, 1.0, -INF, 2.0], 1),  # masked classes
        ([-INF, 1.0, -INF, 2.0], 0),  # a masked target: +inf
        ([-INF, -INF, -INF, -INF], 2),  # everything masked: log k (log(k + 1))
        ([0.5, -INF, 3.0, -INF], 0),
    ],
)
def test_topk_masked_logits_give_the_limit(include_target, k, row, t):
    loss, grad = _topk_loss_and_grad(row, t, k, include_target)
    np.testing.assert_allclose(loss, _topk_ref(row, t, k, include_target), rtol=1e-6)
    assert bool(jnp.isfinite(grad).all())


@probe("value", "losses.topk_softmax_cross_entropy")
@pytest.mark.parametrize("t,expected", [(0, math.log(2)), (2, math.log(2)), (1, INF)])
def test_topk_positive_infinities(t, expected):
    # exp(+inf) dominates: a +inf target tied with another +inf gives log 2, a finite one +inf.
    loss, grad = _topk_loss_and_grad([INF, 1.0, INF, 2.0], t, 4)
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    np.testing.assert_array_equal(grad, np.zeros((1, 4)))


@probe("value", "losses.topk_softmax_cross_entropy")
def test_topk_default_is_the_post_formula_when_the_target_falls_out():
    # kexue.fm/archives/8046: log sum_{top k} e^s - s_t, the target not added to the sum.
    logits = np.array([4.0, 3.0, -1.0, 2.5])
    for t in range(4):
        loss, _ = _topk_loss_and_grad(logits, t, 2)
        np.testing.assert_allclose(loss, _lse([4.0, 3.0]) - logits[t], rtol=1e-6)


@probe("error", "losses.topk_softmax_cross_entropy")
@pytest.mark.parametrize(
    "k,exc,fragments",
    [
        (0, ValueError, ("k", "got 0")),
        (-1, ValueError, ("k", "got -1")),
        (5, ValueError, ("k", "<= 4", "got 5")),
        (2.5, TypeError, ("k", "2.5")),
        (True, TypeError, ("k", "True")),
        (jnp.array(2), TypeError, ("k",)),
    ],
)
def test_topk_bad_k(k, exc, fragments):
    with raises(exc, *fragments):
        topk_softmax_cross_entropy(jnp.zeros((2, 4)), jnp.array([0, 1]), k)


@probe("error", "losses.topk_softmax_cross_entropy")
@pytest.mark.parametrize("flag", [1, "yes", None])
def test_topk_include_target_must_be_a_bool(flag):
    with raises(TypeError, "include_target", repr(flag)):
        topk_softmax_cross_entropy(jnp.zeros((2, 4)), jnp.array([0, 1]), 2, include_target=flag)


# ----------------------------------------------------------------------------- Taylor CE


@probe("error", "losses.taylor_softmax_cross_entropy")
@pytest.mark.parametrize(
    "order,exc",
    [(3, ValueError), (0, ValueError), (-2, ValueError), (2.0, TypeError), (True, TypeError)],
)
def test_taylor_ce_bad_order(order, exc):
    with raises(exc, "order", str(order)):
        taylor_softmax_cross_entropy(jnp.zeros((2, 4)), jnp.array([0, 1]), order=order)


_taylor_ce_vg = jax.jit(jax.value_and_grad(lambda s, t: taylor_softmax_cross_entropy(s, t)[0]))


@probe("value", "losses.taylor_softmax_cross_entropy")
@pytest.mark.parametrize(
    "row,t,expected",
    [
        # f_n(-inf) = +inf: a -inf logit takes the mass (it does not mask).
        ([-INF, 0.0, 1.0], 0, 0.0),
        ([-INF, 0.0, 1.0], 1, INF),
        ([INF, -INF, 1.0], 0, math.log(2)),
        ([-INF, -INF, -INF], 2, math.log(3)),
        ([5.0, 5.0, 5.0], 1, math.log(3)),
    ],
)
def test_taylor_ce_infinite_logits(row, t, expected):
    loss, grad = _taylor_ce_vg(jnp.asarray([row], jnp.float32), jnp.array([t]))
    np.testing.assert_allclose(float(loss), expected, rtol=1e-6)
    assert bool(jnp.isfinite(grad).all())


# ----------------------------------------------------------------------------- AM-Softmax


@probe("error", "losses.am_softmax_cross_entropy")
@pytest.mark.parametrize(
    "kwargs,exc,fragments",
    [
        ({"scale": 0.0}, ValueError, ("scale", "> 0", "0.0")),
        ({"scale": -1.0}, ValueError, ("scale", "-1.0")),
        ({"scale": NAN}, ValueError, ("scale", "NaN")),
        ({"scale": INF}, ValueError, ("scale", "finite", "inf")),
        ({"scale": jnp.array(0.0)}, ValueError, ("scale", "> 0")),
        ({"scale": jnp.array(NAN)}, ValueError, ("scale", "NaN")),
        ({"scale": np.float32(-3.0)}, ValueError, ("scale", "-3.0")),
        ({"scale": jnp.ones(2)}, ValueError, ("scale", "scalar", "(2,)")),
        ({"scale": "30"}, TypeError, ("scale", "'30'")),
        ({"scale": None}, TypeError, ("scale", "None")),
        ({"margin": -0.1}, ValueError, ("margin", ">= 0", "-0.1")),
        ({"margin": NAN}, ValueError, ("margin", "NaN")),
        ({"margin": INF}, ValueError, ("margin", "finite")),
        ({"margin": jnp.array(-1.0)}, ValueError, ("margin", ">= 0")),
        ({"margin": True}, TypeError, ("margin", "True")),
    ],
)
def test_am_softmax_bad_hyperparameters(kwargs, exc, fragments):
    with raises(exc, *fragments):
        am_softmax_cross_entropy(jnp.zeros((2, 4)), jnp.array([0, 1]), **kwargs)


_am = jax.jit(lambda c, t, s, m: am_softmax_cross_entropy(c, t, scale=s, margin=m))


@probe("value", "losses.am_softmax_cross_entropy")
@pytest.mark.parametrize("scale", [30.0, 1e30, 1e38])
def test_am_softmax_huge_scale_matches_float64(scale):
    cos = np.array([[0.9, 0.1, -0.3], [0.2, 0.5, 0.4]])
    labels = np.array([0, 2])
    z = scale * (cos - 0.35 * np.eye(3)[labels])
    ref = _lse(z) - z[np.arange(2), labels]
    got = _am(jnp.asarray(cos, jnp.float32), labels, scale, 0.35)
    np.testing.assert_allclose(np.asarray(got, np.float64), ref, rtol=1e-5, atol=1e-5)


@probe("value", "losses.am_softmax_cross_entropy")
def test_am_softmax_masked_classes():
    # -inf cosines (absent classes) drop out of the sum; a fully masked row gives log K.
    cos = jnp.array([[0.9, -INF, 0.1], [-INF, -INF, -INF]])
    got = _am(cos, jnp.array([0, 1]), 10.0, 0.3)
    ref0 = _lse([10 * (0.9 - 0.3), 10 * 0.1]) - 10 * (0.9 - 0.3)
    np.testing.assert_allclose(got, [ref0, math.log(3)], rtol=1e-5)


# ----------------------------------------------------------------------------- InfoNCE


@probe("error", "losses.info_nce")
@pytest.mark.parametrize(
    "temperature,exc,fragments",
    [
        (0.0, ValueError, ("temperature", "> 0")),
        (-1.0, ValueError, ("temperature", "-1.0")),
        (NAN, ValueError, ("temperature", "NaN")),
        (INF, ValueError, ("temperature", "finite")),
        (jnp.array(0.0), ValueError, ("temperature", "> 0")),
        (jnp.array(NAN), ValueError, ("temperature", "NaN")),
        (np.float32(-0.5), ValueError, ("temperature", "-0.5")),
        (jnp.full(2, 0.05), ValueError, ("temperature", "scalar", "(2,)")),
        ("0.05", TypeError, ("temperature", "'0.05'")),
    ],
)
def test_info_nce_bad_temperature(temperature, exc, fragments):
    with raises(exc, *fragments):
        info_nce(jnp.ones((2, 3)), jnp.ones((2, 3)), temperature=temperature)


@probe("error", "losses.info_nce")
@pytest.mark.parametrize(
    "a,b,kwargs,exc,fragments",
    [
        ((4,), (4, 3), {}, ValueError, ("a", "(any, any)", "(4,)")),
        ((4, 3), (4, 2), {}, ValueError, ("b", "(any, 3)", "(4, 2)")),
        ((4, 3), (3, 3), {}, ValueError, ("b", "at least as many rows", "(3, 3)", "(4, 3)")),
        ((2, 3), (4, 3), {"symmetric": True}, ValueError, ("symmetric", "(2, 3)", "(4, 3)")),
        ((2, 3), (2, 3), {"symmetric": 1}, TypeError, ("symmetric", "1")),
    ],
)
def test_info_nce_bad_shapes(a, b, kwargs, exc, fragments):
    with raises(exc, *fragments):
        info_nce(jnp.ones(a), jnp.ones(b), **kwargs)


@probe("error", "losses.info_nce")
@pytest.mark.parametrize("which", ["a", "b"])
@pytest.mark.parametrize("dtype", [jnp.complex64, jnp.bool_])
def test_info_nce_bad_dtypes(which, dtype):
    args = {"a": jnp.ones((2, 3)), "b": jnp.ones((2, 3))}
    args[which] = args[which].astype(dtype)
    with raises(TypeError, which, jnp.dtype(dtype).name):
        info_nce(**args)


def _info_nce_ref(a, b, tau):
    s = _normalize(a) @ _normalize(b).T / tau
    n = len(a)
    return float(np.mean(_lse(s) - s[np.arange(n), np.arange(n)])) if n else 0.0


_info_nce_vg = jax.jit(
    jax.value_and_grad(lambda a, b, t: info_nce(a, b, temperature=t), argnums=(0, 1))
)


@probe("value", "losses.info_nce")
@pytest.mark.parametrize(
    "a,b",
    [
        (np.zeros((2, 3)), np.ones((2, 3))),  # zero rows: logits 0, chance level log M
        (np.array([[1e30, 0, 0], [0, 3e30, 0]]), np.array([[2e30, 1e30, 0], [0, 1e30, 0]])),
        (np.array([[1e-20, 0, 0], [0, 1e-20, 0]]), np.eye(2, 3)),  # below the 1e-12 floor
        (np.zeros((2, 3)), np.zeros((2, 3))),
    ],
)
def test_info_nce_degenerate_rows_finite_and_correct(a, b):
    loss, grads = _info_nce_vg(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32), 0.05)
    np.testing.assert_allclose(float(loss), _info_nce_ref(a, b, 0.05), rtol=1e-5, atol=1e-5)
    assert all(bool(jnp.isfinite(g).all()) for g in grads)


@probe("value", "losses.info_nce")
@pytest.mark.parametrize("symmetric", [False, True])
def test_info_nce_empty_batch_is_zero(symmetric):
    fn = jax.jit(info_nce, static_argnames="symmetric")
    assert float(fn(jnp.zeros((0, 3)), jnp.zeros((0, 3)), symmetric=symmetric)) == 0.0


@probe("value", "losses.info_nce")
def test_info_nce_subnormal_temperature_stays_finite():
    # Aligned orthogonal pairs: the positive is the unique largest logit, loss -> 0 as tau -> 0.
    eye = jnp.eye(2, 3)  # a traced temperature: the floor applies all the same
    loss, grads = _info_nce_vg(eye, eye, 1e-45)
    assert float(loss) == 0.0 and all(bool(jnp.isfinite(g).all()) for g in grads)
    assert np.isfinite(float(_info_nce_vg(eye, eye[::-1], 1e-45)[0]))


# ----------------------------------------------------------------------------- SimSiam / BYOL


@probe("error", "losses.simsiam_loss", "losses.byol_loss")
@pytest.mark.parametrize(
    "fn,shapes,exc,fragments",
    [
        (simsiam_loss, [(2, 3), (2, 3), (2, 3), (2, 4)], ValueError, ("z2", "(2, 3)", "(2, 4)")),
        (simsiam_loss, [(2, 3), (3, 3), (2, 3), (2, 3)], ValueError, ("p2", "(2, 3)", "(3, 3)")),
        (simsiam_loss, [(), (), (), ()], ValueError, ("p1", "feature axis", "()")),
        (byol_loss, [(2, 3), (3, 3)], ValueError, ("z", "p's shape", "(3, 3)")),
        (byol_loss, [(), ()], ValueError, ("p", "feature axis")),
    ],
)
def test_siamese_bad_shapes(fn, shapes, exc, fragments):
    with raises(exc, *fragments):
        fn(*(jnp.ones(s) for s in shapes))


@probe("error", "losses.simsiam_loss", "losses.byol_loss")
@pytest.mark.parametrize("fn,n", [(simsiam_loss, 4), (byol_loss, 2)])
@pytest.mark.parametrize("dtype", [jnp.complex64, jnp.bool_])
def test_siamese_bad_dtypes(fn, n, dtype):
    args = [jnp.ones((2, 3)) for _ in range(n)]
    args[-1] = args[-1].astype(dtype)
    with raises(TypeError, "z", jnp.dtype(dtype).name):
        fn(*args)


_simsiam_vg = jax.jit(jax.value_and_grad(simsiam_loss, argnums=(0, 1)))
_byol_vg = jax.jit(jax.value_and_grad(byol_loss))

_DEGENERATE_ROWS = [
    (np.array([[0.0, 0.0], [1.0, 2.0]]), np.array([[1.0, 0.0], [0.0, 0.0]])),  # zero vectors
    (np.zeros((2, 2)), np.zeros((2, 2))),
    (np.array([[1e30, 2e30], [3e30, -1e30]]), np.array([[1e30, 0.0], [-2e30, 1e30]])),
    (np.array([[1e-30, 0.0], [1.0, 1.0]]), np.array([[1.0, 1.0], [2e-30, 1e-30]])),
]


@probe("value", "losses.simsiam_loss")
@pytest.mark.parametrize("p,z", _DEGENERATE_ROWS)
def test_simsiam_degenerate_rows_finite_and_correct(p, z):
    # Both views alike: D(p, z) = -<p / max(|p|, 1e-12), z / max(|z|, 1e-12)>.
    loss, grads = _simsiam_vg(*(jnp.asarray(v, jnp.float32) for v in (p, p, z, z)))
    ref = -np.mean(np.sum(_normalize(p) * _normalize(z), axis=-1))
    np.testing.assert_allclose(float(loss), ref, rtol=1e-6, atol=1e-7)
    assert all(bool(jnp.isfinite(g).all()) for g in grads)


@probe("value", "losses.byol_loss")
@pytest.mark.parametrize("p,z", _DEGENERATE_ROWS)
def test_byol_degenerate_rows_finite_and_correct(p, z):
    # The documented form || p / max(|p|, 1e-12) - z / max(|z|, 1e-12) ||^2 (1 for a zero p).
    loss, grad = _byol_vg(jnp.asarray(p, jnp.float32), jnp.asarray(z, jnp.float32))
    ref = np.mean(np.sum((_normalize(p) - _normalize(z)) ** 2, axis=-1))
    np.testing.assert_allclose(float(loss), ref, rtol=1e-6, atol=1e-7)
    assert bool(jnp.isfinite(grad).all())


@probe("value", "losses.simsiam_loss", "losses.byol_loss")
def test_siamese_empty_batch_is_zero():
    e = jnp.zeros((0, 3))
    assert float(simsiam_loss(e, e, e, e)) == 0.0 and float(byol_loss(e, e)) == 0.0


@probe("error", "losses.byol_tau_schedule")
@pytest.mark.parametrize(
    "base,total,exc,fragments",
    [
        (1.5, 10, ValueError, ("base_tau", "[0.0, 1.0]", "1.5")),
        (-0.1, 10, ValueError, ("base_tau", "-0.1")),
        (NAN, 10, ValueError, ("base_tau", "NaN")),
        (INF, 10, ValueError, ("base_tau", "finite")),
        (jnp.array(2.0), 10, ValueError, ("base_tau", "[0.0, 1.0]")),
        (jnp.array(NAN), 10, ValueError, ("base_tau", "NaN")),
        (jnp.ones(2), 10, ValueError, ("base_tau", "scalar", "(2,)")),
        ("0.9", 10, TypeError, ("base_tau", "'0.9'")),
        (0.99, 0, ValueError, ("total_steps", "positive", "0")),
        (0.99, -5, ValueError, ("total_steps", "-5")),
        (0.99, 10.0, TypeError, ("total_steps", "10.0")),
        (0.99, True, TypeError, ("total_steps", "True")),
        (0.99, None, TypeError, ("total_steps", "None")),
    ],
)
def test_byol_tau_schedule_bad_arguments(base, total, exc, fragments):
    with raises(exc, *fragments):
        byol_tau_schedule(base, total)


@probe("value", "losses.byol_tau_schedule")
@pytest.mark.parametrize("base", [0.0, 0.996, 1.0])
def test_byol_tau_schedule_ends_and_beyond(base):
    # tau_k = 1 - (1 - tau_0)(cos(pi min(k, K) / K) + 1) / 2, steps below 0 counted as 0.
    steps = np.array([-5, 0, 1, 5, 10, 11, 10**9])
    got = np.asarray(jax.jit(byol_tau_schedule(base, 10))(jnp.asarray(steps)), np.float64)
    k = np.clip(steps, 0, 10)
    ref = 1 - (1 - base) * (np.cos(np.pi * k / 10) + 1) / 2
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------- k-NN entropy


@probe("error", "losses.knn_entropy")
@pytest.mark.parametrize(
    "shape,k,exc,fragments",
    [
        ((6, 2), 0, ValueError, ("k", "positive", "0")),
        ((6, 2), -1, ValueError, ("k", "-1")),
        ((6, 2), 6, ValueError, ("k", "< n = 6", "(6, 2)")),
        ((6, 2), 1.5, TypeError, ("k", "1.5")),
        ((6, 2), True, TypeError, ("k", "True")),
        ((6,), 1, ValueError, ("z", "(any, any)", "(6,)")),
        ((2, 6, 2), 1, ValueError, ("z", "(2, 6, 2)")),
        ((0, 2), 1, ValueError, ("k", "n = 0", "(0, 2)")),
        ((1, 2), 1, ValueError, ("k", "n = 1")),
    ],
)
def test_knn_entropy_bad_arguments(shape, k, exc, fragments):
    with raises(exc, *fragments):
        knn_entropy(jnp.ones(shape), k=k)


@probe("error", "losses.knn_entropy")
@pytest.mark.parametrize("dtype", [jnp.complex64, jnp.bool_])
def test_knn_entropy_bad_dtype(dtype):
    with raises(TypeError, "z", jnp.dtype(dtype).name):
        knn_entropy(jnp.ones((4, 2), dtype))


_knn_vg = jax.jit(jax.value_and_grad(knn_entropy))
_POINTS = np.array([[0.1, 0.3], [0.7, -0.2], [-0.4, 0.9], [1.3, 0.4], [0.2, -1.1], [-0.8, -0.5]])


@probe("value", "losses.knn_entropy")
@pytest.mark.parametrize("c", [1e-30, 1e-10, 1e10, 1e30])
def test_knn_entropy_scale_law_at_extreme_scales(c):
    # H(cz) = H(z) + d log c exactly (float64 for the reference shift); the squares of 1e30
    # overflow float32 and those of 1e-30 underflow, had the points not been rescaled.
    base, _ = _knn_vg(jnp.asarray(_POINTS, jnp.float32))
    scaled, grad = _knn_vg(jnp.asarray(c * _POINTS, jnp.float32))
    np.testing.assert_allclose(float(scaled) - float(base), 2 * math.log(c), rtol=1e-5)
    assert bool(jnp.isfinite(grad).all())


@probe("value", "losses.knn_entropy")
@pytest.mark.parametrize("copies", [2, 6])
def test_knn_entropy_duplicates_finite_with_finite_gradient(copies):
    z = _POINTS.copy()
    z[1:copies] = z[0]  # copies identical points (all six: every distance is 0)
    value, grad = _knn_vg(jnp.asarray(z, jnp.float32))
    assert np.isfinite(float(value)) and bool(jnp.isfinite(grad).all())
    # The floored distances (relative to the largest |z|) enter as log of the floor:
    # tiny = 2^-126, the points scaled by 2^-e with e from frexp of max |z|.
    _, e = np.frexp(np.abs(z).max())
    log_eps = np.log(
        np.maximum(
            np.sort(np.linalg.norm(z[:, None] - z[None], axis=-1))[:, 1] * 2.0**-e,
            math.sqrt(np.finfo(np.float32).tiny),
        )
    ) + e * math.log(2)
    n, d = z.shape
    digamma_n = -np.euler_gamma + sum(1 / i for i in range(1, n))
    ref = d * log_eps.mean() + math.log(math.pi) + digamma_n + np.euler_gamma
    np.testing.assert_allclose(float(value), ref, rtol=1e-5)


# ----------------------------------------------------------------------------- capsule margin


@probe("error", "losses.capsule_margin_loss")
@pytest.mark.parametrize(
    "kwargs,exc,fragments",
    [
        ({"m_plus": 1.5}, ValueError, ("m_plus", "[0.0, 1.0]", "1.5")),
        ({"m_plus": NAN}, ValueError, ("m_plus", "NaN")),
        ({"m_plus": jnp.array(-0.1)}, ValueError, ("m_plus", "[0.0, 1.0]")),
        ({"m_minus": -0.1}, ValueError, ("m_minus", "-0.1")),
        ({"m_minus": INF}, ValueError, ("m_minus", "finite")),
        ({"m_minus": 0.95}, ValueError, ("m_minus", "m_plus", "0.95", "0.9")),
        ({"lam": -0.5}, ValueError, ("lam", ">= 0", "-0.5")),
        ({"lam": INF}, ValueError, ("lam", "finite")),
        ({"lam": jnp.array(NAN)}, ValueError, ("lam", "NaN")),
        ({"lam": jnp.ones(2)}, ValueError, ("lam", "scalar", "(2,)")),
        ({"m_plus": None}, TypeError, ("m_plus", "None")),
        ({"m_plus": "0.9"}, TypeError, ("m_plus", "'0.9'")),
    ],
)
def test_capsule_margin_bad_hyperparameters(kwargs, exc, fragments):
    with raises(exc, *fragments):
        capsule_margin_loss(jnp.full((2, 3), 0.5), jnp.array([0, 1]), **kwargs)


@probe("error", "losses.capsule_margin_loss")
@pytest.mark.parametrize(
    "lengths,labels,exc,fragments",
    [
        (np.full((2, 3), 0.5), np.array([0, 3]), ValueError, ("labels", "[0, 3)", "3")),
        (np.full((2, 3), 0.5), np.array([0.0, 1.0]), TypeError, ("labels", "integer", "float")),
        (np.full((2, 3), 0.5), np.zeros(4, int), ValueError, ("labels", "(2,)", "(2, 3)", "(4,)")),
        (np.full((2, 3), 0.5), np.full((2, 3), 2.0), ValueError, ("labels", "[0, 1]", "2.0")),
        (np.full((2, 3), 0.5), np.full((2, 3), NAN), ValueError, ("labels", "NaN")),
        (np.full((2, 3), 0.5), np.zeros((2, 3), np.complex64), TypeError, ("labels", "complex")),
        (np.float32(0.5), np.array(0), ValueError, ("lengths", "class axis")),
        (np.zeros((2, 3), np.complex64), np.array([0, 1]), TypeError, ("lengths", "complex")),
    ],
)
def test_capsule_margin_bad_inputs(lengths, labels, exc, fragments):
    with raises(exc, *fragments):
        capsule_margin_loss(lengths, labels)


_capsule_vg = jax.jit(jax.value_and_grad(lambda v, t: capsule_margin_loss(v, t)[0]))


@probe("value", "losses.capsule_margin_loss")
@pytest.mark.parametrize(
    "lengths,label",
    [
        ([INF, 0.2, 0.05], 0),  # a present class with infinite length: its term is 0
        ([0.0, 0.0, 0.0], 1),  # all capsules silent: m+^2 for the present class
        ([1.0, 1.0, 1.0], 2),  # all saturated: lam (1 - m-)^2 per absent class
    ],
)
def test_capsule_margin_degenerate_lengths(lengths, label):
    x = np.asarray(lengths, np.float64)
    t = np.eye(3)[label]
    with np.errstate(invalid="ignore"):
        present = np.where(t > 0, np.maximum(0.9 - x, 0.0) ** 2, 0.0)
        absent = np.where(t < 1, 0.5 * np.maximum(x - 0.1, 0.0) ** 2, 0.0)
    loss, grad = _capsule_vg(jnp.asarray([lengths], jnp.float32), jnp.array([label]))
    np.testing.assert_allclose(float(loss), np.sum(present + absent), rtol=1e-6)
    assert bool(jnp.isfinite(grad).all())


@probe("value", "losses.capsule_margin_loss")
def test_capsule_margin_empty_batch():
    assert capsule_margin_loss(jnp.zeros((0, 3)), jnp.zeros((0,), jnp.int32)).shape == (0,)
    assert capsule_margin_loss(jnp.zeros((0, 3)), jnp.zeros((0, 3))).shape == (0,)


# ----------------------------------------------------------------------------- VAE clustering


def _vae_inputs(batch=2):
    rng = np.random.default_rng(0)
    return dict(
        x=rng.normal(size=(batch, 3)),
        x_recon=rng.normal(size=(batch, 3)),
        z_mean=rng.normal(size=(batch, 2)),
        z_log_var=rng.normal(size=(batch, 2)),
        y_logits=rng.normal(size=(batch, 4)),
        class_means=rng.normal(size=(4, 2)),
    )


@probe("error", "losses.vae_cluster_loss")
@pytest.mark.parametrize(
    "change,exc,fragments",
    [
        ({"x_recon": np.ones((2, 4))}, ValueError, ("x_recon", "(2, 3)", "(2, 4)")),
        ({"z_mean": np.ones((3, 2))}, ValueError, ("z_mean", "(2, any)", "(3, 2)")),
        ({"z_log_var": np.ones((2, 3))}, ValueError, ("z_log_var", "(2, 2)", "(2, 3)")),
        ({"y_logits": np.ones((2,))}, ValueError, ("y_logits", "(2, any)", "(2,)")),
        ({"y_logits": np.ones((2, 0))}, ValueError, ("y_logits", "at least one cluster")),
        ({"class_means": np.ones((3, 2))}, ValueError, ("class_means", "(4, 2)", "(3, 2)")),
        ({"x": np.float32(1.0), "x_recon": np.float32(1.0)}, ValueError, ("x", "batch axis")),
        ({"recon": "l1"}, ValueError, ("recon", "'l1'", "mse")),
        ({"recon": None}, ValueError, ("recon", "None")),
        ({"recon_weight": -1.0}, ValueError, ("recon_weight", ">= 0", "-1.0")),
        ({"recon_weight": NAN}, ValueError, ("recon_weight", "NaN")),
        ({"recon_weight": INF}, ValueError, ("recon_weight", "finite")),
        ({"recon_weight": jnp.array(-2.0)}, ValueError, ("recon_weight", ">= 0")),
        ({"recon_weight": np.ones(2)}, ValueError, ("recon_weight", "scalar", "(2,)")),
        ({"recon_weight": "5"}, TypeError, ("recon_weight", "'5'")),
        ({"z_mean": np.ones((2, 2), np.complex64)}, TypeError, ("z_mean", "complex64")),
        ({"y_logits": np.ones((2, 4), bool)}, TypeError, ("y_logits", "bool")),
    ],
)
def test_vae_cluster_bad_arguments(change, exc, fragments):
    kwargs = _vae_inputs()
    kwargs.update(change)
    with raises(exc, *fragments):
        vae_cluster_loss(**kwargs)


def _vae_ref(x, x_recon, z_mean, z_log_var, y_logits, class_means, recon_weight=1.0):
    """float64, with 0 log 0 = 0 and masked clusters (p = 0) contributing nothing."""
    rec = 0.5 * np.sum((x - x_recon) ** 2, axis=1)
    gap = np.sum((z_mean[:, None] - class_means[None]) ** 2, axis=-1)
    gauss = 0.5 * (gap + np.sum(np.exp(z_log_var) - z_log_var - 1, axis=-1)[:, None])
    y = np.where(np.all(np.isneginf(y_logits), -1, keepdims=True), 0.0, y_logits)
    p = np.exp(y - _lse(y)[:, None])
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(p > 0, p * np.log(p), 0.0)
    cluster = np.sum(np.where(p > 0, p * gauss, 0.0), axis=-1)
    prior = np.sum(plogp, axis=-1) + np.log(y_logits.shape[1])
    return recon_weight * rec + cluster + prior, rec, cluster, prior


@jax.jit
def _vae_and_grad(**kwargs):
    def total(y):
        out = vae_cluster_loss(**{**kwargs, "y_logits": y})
        return out.loss.sum(), out

    (_, out), grad = jax.value_and_grad(total, has_aux=True)(kwargs["y_logits"])
    return out, grad


@probe("value", "losses.vae_cluster_loss", "losses.VAEClusterLoss")
@pytest.mark.parametrize(
    "y_logits",
    [
        [[0.5, -INF, 2.0, -INF], [-INF, 1.0, -INF, -INF]],  # masked clusters
        [[-INF] * 4, [3.0, 3.0, 3.0, 3.0]],  # all masked: uniform, like equal logits
        [[80.0, -80.0, 0.0, 1.0], [-1e30, 1e30, 0.0, 0.0]],  # confident: p log p -> 0
    ],
)
def test_vae_cluster_degenerate_assignments(y_logits):
    kwargs = _vae_inputs()
    kwargs["y_logits"] = np.asarray(y_logits)
    out, grad = _vae_and_grad(**{k: jnp.asarray(v, jnp.float32) for k, v in kwargs.items()})
    assert isinstance(out, VAEClusterLoss)
    for got, ref in zip(out, _vae_ref(**kwargs)):
        np.testing.assert_allclose(np.asarray(got, np.float64), ref, rtol=1e-5, atol=1e-6)
    assert bool(jnp.isfinite(grad).all())


@probe("value", "losses.vae_cluster_loss", "losses.VAEClusterLoss")
def test_vae_cluster_infinite_log_variance_and_empty_batch():
    kwargs = {k: jnp.asarray(v, jnp.float32) for k, v in _vae_inputs().items()}
    kwargs["z_log_var"] = jnp.array([[INF, 0.0], [-INF, 0.0]])
    out, _ = _vae_and_grad(**kwargs)  # KL(N(mu, sigma^2) || N(mu_y, I)) -> inf both ways
    np.testing.assert_array_equal(out.cluster_kl, [INF, INF])
    assert not np.isnan(np.asarray(out.loss)).any()  # (its gradient is undefined there)
    empty, _ = _vae_and_grad(
        **{k: jnp.asarray(v, jnp.float32) for k, v in _vae_inputs(batch=0).items()}
    )
    assert isinstance(empty, VAEClusterLoss) and all(t.shape == (0,) for t in empty)


# ----------------------------------------------------------------------------- TeaForN

_B, _T, _D, _V = 2, 4, 3, 5


def _toy_decoder(x):
    return jnp.cumsum(x, axis=1) * 0.5


_teaforn_jit = jax.jit(teaforn_loss, static_argnames=("decode_fn", "num_passes"))


def _teaforn_args(**change):
    rng = np.random.default_rng(1)
    args = dict(
        decode_fn=_toy_decoder,
        embedding=jnp.asarray(rng.normal(size=(_V, _D)), jnp.float32),
        targets=jnp.asarray(rng.integers(0, _V, (_B, _T))),
        start_embedding=jnp.asarray(rng.normal(size=_D), jnp.float32),
    )
    args.update(change)
    return args


@probe("error", "losses.teaforn_loss")
@pytest.mark.parametrize(
    "change,exc,fragments",
    [
        ({"decode_fn": None}, TypeError, ("decode_fn", "callable", "None")),
        ({"decode_fn": jnp.ones(3)}, TypeError, ("decode_fn", "callable")),
        ({"decode_fn": lambda x: x[:, :-1]}, ValueError, ("decode_fn", "(2, 4, 3)", "(2, 3, 3)")),
        ({"num_passes": 0}, ValueError, ("num_passes", "positive", "0")),
        ({"num_passes": -1}, ValueError, ("num_passes", "-1")),
        ({"num_passes": 2.5}, TypeError, ("num_passes", "2.5")),
        ({"num_passes": True}, TypeError, ("num_passes", "True")),
        ({"weights": (1.0, 1.0, 1.0)}, ValueError, ("weights", "(2)", "(3,)")),
        ({"weights": (1.0, -1.0)}, ValueError, ("weights", ">= 0")),
        ({"weights": (1.0, NAN)}, ValueError, ("weights", "NaN")),
        ({"weights": (1.0, INF)}, ValueError, ("weights", "finite")),
        ({"embedding": jnp.ones((_V, _D), jnp.int32)}, TypeError, ("embedding", "int32")),
        ({"embedding": jnp.ones(_D)}, ValueError, ("embedding", "(any, any)", "(3,)")),
        ({"start_embedding": jnp.ones(_D + 1)}, ValueError, ("start_embedding", "(3)", "(4,)")),
        ({"targets": jnp.zeros((_B, _T))}, TypeError, ("targets", "integer", "float32")),
        ({"targets": jnp.zeros(_T, jnp.int32)}, ValueError, ("targets", "(any, any)", "(4,)")),
        ({"targets": jnp.full((_B, _T), _V)}, ValueError, ("targets", "[0, 5)", "5")),
        ({"mask": jnp.ones((_B, _T + 1))}, ValueError, ("mask", "(2, 4)", "(2, 5)")),
        ({"mask": -jnp.ones((_B, _T))}, ValueError, ("mask", ">= 0")),
        ({"mask": jnp.ones((_B, _T), jnp.complex64)}, TypeError, ("mask", "complex64")),
        ({"output_bias": jnp.zeros(_V + 1)}, ValueError, ("output_bias", "(5)", "(6,)")),
        ({"output_bias": jnp.zeros(_V, jnp.int32)}, TypeError, ("output_bias", "int32")),
    ],
)
def test_teaforn_bad_arguments(change, exc, fragments):
    kwargs = {"num_passes": 2, **change}
    args = _teaforn_args(**{k: kwargs.pop(k) for k in list(kwargs) if k in _teaforn_args()})
    with raises(exc, *fragments):
        teaforn_loss(**args, **kwargs)


def _teaforn_ref(embedding, targets, start, mask, bias):
    """float64 teacher forcing (num_passes=1) through the same toy decoder."""
    emb = np.asarray(embedding, np.float64)
    inputs = np.concatenate(
        [np.broadcast_to(start, (len(targets), 1, emb.shape[1])), emb[targets[:, :-1]]], axis=1
    )
    logits = np.cumsum(inputs, axis=1) * 0.5 @ emb.T + bias
    z = np.take_along_axis(logits, targets[..., None], -1)[..., 0]
    with np.errstate(invalid="ignore"):
        nll = np.where(mask > 0, _lse(logits) - z, 0.0)
    return nll.sum() / max(mask.sum(), 1.0)


@probe("value", "losses.teaforn_loss")
def test_teaforn_forbidden_token_under_the_mask():
    # output_bias -inf forbids token 0; positions whose target is 0 are masked out: finite.
    args = _teaforn_args()
    targets = np.array(args["targets"])
    targets[:, -1] = 0
    mask = np.ones((_B, _T))
    mask[:, -1] = 0
    bias = np.zeros(_V)
    bias[0] = -INF
    fn = jax.jit(
        jax.value_and_grad(
            lambda e: teaforn_loss(
                args["decode_fn"],
                e,
                jnp.asarray(targets),
                args["start_embedding"],
                num_passes=1,
                mask=mask,
                output_bias=jnp.asarray(bias, jnp.float32),
            )
        )
    )
    loss, grad = fn(args["embedding"])
    ref = _teaforn_ref(args["embedding"], targets, np.asarray(args["start_embedding"]), mask, bias)
    np.testing.assert_allclose(float(loss), ref, rtol=1e-5)
    assert bool(jnp.isfinite(grad).all())


@probe("value", "losses.teaforn_loss")
@pytest.mark.parametrize(
    "targets,mask",
    [
        (np.zeros((0, _T), np.int32), None),  # empty batch
        (np.zeros((_B, 0), np.int32), None),  # empty sequences
        (np.zeros((_B, _T), np.int32), np.zeros((_B, _T))),  # fully masked
        (np.zeros((_B, _T), np.int32), np.zeros((_B, _T), bool)),
    ],
)
def test_teaforn_nothing_to_predict_gives_zero(targets, mask):
    args = _teaforn_args(targets=jnp.asarray(targets))
    assert float(_teaforn_jit(**args, num_passes=2, mask=mask)) == 0.0


_rows = arrays(np.float64, (4,), elements=st.floats(-20.0, 20.0))


@probe("value", "losses.topk_softmax_cross_entropy")
@given(row=_rows, k=st.sampled_from([1, 2, 4]), t=st.integers(0, 3))
def test_topk_property_nonnegative_and_post_formula(row, k, t):
    loss, _ = _topk_loss_and_grad(row, t, k)
    assert loss >= 0.0
    ref = _lse(-np.sort(-row)[:k]) - row[t]
    np.testing.assert_allclose(loss, ref, rtol=1e-4, atol=1e-4)
