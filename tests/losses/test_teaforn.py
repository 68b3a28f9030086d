"""Tests of the TeaForN loss against float64 NumPy references and a causal toy decoder."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax.test_util import check_grads

from jaxtricks.losses import teaforn_loss
from jaxtricks.losses._teaforn import _nested_passes

B, T, D, V = 2, 5, 4, 7


def _params(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return {
        "wq": rng.standard_normal((D, D)) / 2,
        "wk": rng.standard_normal((D, D)) / 2,
        "wv": rng.standard_normal((D, D)) / 2,
        "w1": rng.standard_normal((D, D)) / 2,
        "emb": rng.standard_normal((V, D)),
        "e0": rng.standard_normal(D),
    }


def _decoder(p):
    """One causal self-attention layer with a residual tanh MLP, in JAX."""

    def decode(x):
        q, k, v = x @ p["wq"], x @ p["wk"], x @ p["wv"]
        n = x.shape[1]
        s = jnp.einsum("btd,bsd->bts", q, k) / jnp.sqrt(x.shape[-1])
        causal = jnp.tril(jnp.ones((n, n), bool))
        att = jax.nn.softmax(s, axis=-1, where=causal[None]) @ v
        y = x + att
        return y + jnp.tanh(y @ p["w1"])

    return decode


def _np_decoder(p, x):
    """The same decoder in float64 NumPy, causal mask written out."""
    q, k, v = x @ p["wq"], x @ p["wk"], x @ p["wv"]
    s = q @ np.swapaxes(k, 1, 2) / np.sqrt(D)
    s = np.where(np.tril(np.ones((x.shape[1], x.shape[1]), bool)), s, -np.inf)
    a = np.exp(s - s.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    y = x + a @ v
    return y + np.tanh(y @ p["w1"])


def _np_teaforn(p, targets, weights, mask):
    """The post's recursion, one pass at a time, in float64 NumPy."""
    emb, e0 = p["emb"], p["e0"]
    start = np.broadcast_to(e0, (targets.shape[0], 1, D))
    x = np.concatenate([start, emb[targets[:, :-1]]], axis=1)
    total = 0.0
    for lam in weights:
        h = _np_decoder(p, x)
        logits = h @ emb.T
        logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
        nll = logz - np.take_along_axis(logits, targets[..., None], -1)[..., 0]
        total += lam * (nll * mask).sum() / mask.sum()
        x = np.concatenate([start, h[:, :-1]], axis=1)
    return total


@functools.partial(jax.jit, static_argnames="num_passes")
def _jloss(p, targets, weights, mask, num_passes):
    """TeaForN of the toy decoder, compiled once per (num_passes, dtype) for all values."""
    return teaforn_loss(
        _decoder(p), p["emb"], targets, p["e0"], num_passes=num_passes, weights=weights, mask=mask
    )


def _targets(seed=1):
    return np.random.default_rng(seed).integers(0, V, (B, T))


def test_n1_equals_teacher_forcing(x64):
    p = _params()
    targets = _targets()
    mask = np.ones((B, T))
    ours = _jloss(p, targets, np.ones(1), mask, num_passes=1)
    np.testing.assert_allclose(float(ours), _np_teaforn(p, targets, [1.0], mask), rtol=1e-12)


@given(
    seed=st.integers(0, 2**16),
    w2=st.floats(0.0, 2.0),
    w3=st.floats(0.0, 2.0),
)
def test_matches_reference_with_mask(seed, w2, w3):
    with jax.enable_x64(True):
        p = _params(seed)
        targets = _targets(seed + 1)
        mask = np.ones((B, T))
        mask[1, 3:] = 0.0
        weights = np.array([1.0, w2, w3])
        ours = _jloss(p, targets, weights, mask, num_passes=3)
        ref = _np_teaforn(p, targets, weights, mask)
        np.testing.assert_allclose(float(ours), ref, rtol=1e-10)


def test_output_bias_and_empty_mask(x64):
    p = _params()
    targets = _targets()
    bias = np.linspace(-1.0, 1.0, V)
    with_bias = teaforn_loss(
        _decoder(p), p["emb"], targets, p["e0"], num_passes=1, output_bias=bias
    )
    # Reference: the bias folded into an extra embedding column that the decoder ignores.
    h = _np_decoder(
        p, np.concatenate([np.broadcast_to(p["e0"], (B, 1, D)), p["emb"][targets[:, :-1]]], 1)
    )
    logits = h @ p["emb"].T + bias
    nll = (
        np.log(np.exp(logits).sum(-1)) - np.take_along_axis(logits, targets[..., None], -1)[..., 0]
    )
    np.testing.assert_allclose(float(with_bias), nll.mean(), rtol=1e-12)
    empty = teaforn_loss(_decoder(p), p["emb"], targets, p["e0"], mask=np.zeros((B, T)))
    assert float(empty) == 0.0


def _dependence(num_passes):
    """max |d h^(i)_t / d x_s| for every (pass i, output t, input s), float64."""
    p = _params()
    x = jnp.asarray(np.random.default_rng(3).standard_normal((1, T, D)))
    jac = jax.jit(jax.jacrev(lambda x: _nested_passes(_decoder(p), x, num_passes)))(x)
    # jac: (N, 1, T, D, 1, T, D) -> (N, T_out, T_in)
    return np.abs(np.asarray(jac))[:, 0, :, :, 0].max(axis=(2, 4))


def test_causality(x64):
    """h^(i)_t (1-indexed t, input position s carrying w_s) depends on w_{<= t-i} only."""
    num_passes = 3
    dep = _dependence(num_passes)
    for i in range(1, num_passes + 1):
        for j in range(T):  # output index j is h_{t}, t = j + 1
            t = j + 1
            for s in range(1, T):  # input position s carries w_s
                if s > t - i:
                    assert dep[i - 1, j, s] == 0.0, (i, t, s)
                elif s == t - i:  # the last token it may see: really used
                    assert dep[i - 1, j, s] > 1e-6, (i, t, s)


def test_gradients(x64):
    p = _params()
    targets = _targets()

    weights, mask = np.array([1.0, 0.5, 0.25]), np.ones((B, T))

    @jax.jit
    def loss(emb, e0, wq):
        return _jloss(dict(p, emb=emb, e0=e0, wq=wq), targets, weights, mask, num_passes=3)

    check_grads(loss, (p["emb"], p["e0"], p["wq"]), order=1, modes=["rev"], eps=1e-5)


def test_jit_equals_eager_and_dtypes():
    p = {k: jnp.asarray(v, jnp.float32) for k, v in _params().items()}
    targets = _targets()

    weights, mask = jnp.ones(2), jnp.ones((B, T))
    eager = teaforn_loss(_decoder(p), p["emb"], targets, p["e0"], num_passes=2)
    jitted = _jloss(p, targets, weights, mask, num_passes=2)
    np.testing.assert_allclose(eager, jitted, rtol=1e-5)
    assert eager.dtype == jnp.float32
    pb = {k: v.astype(jnp.bfloat16) for k, v in p.items()}
    out = _jloss(pb, targets, weights, mask, num_passes=2)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(float(out), float(eager), rtol=5e-2)


def test_errors():
    p = _params(dtype=np.float32)
    targets = _targets()
    dec = _decoder(p)
    with pytest.raises(ValueError, match="num_passes must be a positive int, got 0"):
        teaforn_loss(dec, p["emb"], targets, p["e0"], num_passes=0)
    with pytest.raises(TypeError, match="num_passes must be a positive int"):
        teaforn_loss(dec, p["emb"], targets, p["e0"], num_passes=2.0)
    with pytest.raises(ValueError, match=r"weights must have shape \(2\), got \(3,\)"):
        teaforn_loss(dec, p["emb"], targets, p["e0"], num_passes=2, weights=(1, 1, 1))
    with pytest.raises(TypeError, match="targets must have a.? integer dtype"):
        teaforn_loss(dec, p["emb"], targets.astype(float), p["e0"])
    with pytest.raises(ValueError, match="start_embedding must have shape"):
        teaforn_loss(dec, p["emb"], targets, p["e0"][:2])
    with pytest.raises(ValueError, match=r"mask must have shape \(2, 5\)"):
        teaforn_loss(dec, p["emb"], targets, p["e0"], mask=np.ones((B, T + 1)))
    with pytest.raises(ValueError, match="decode_fn must map"):
        teaforn_loss(lambda x: x[:, :-1], p["emb"], targets, p["e0"])
