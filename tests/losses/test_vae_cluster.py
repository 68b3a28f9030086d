"""Tests of vae_cluster_loss: each term against float64 NumPy, the Gaussian term by Monte Carlo."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from jax.test_util import check_grads

from jaxtricks.losses import VAEClusterLoss, vae_cluster_loss
from jaxtricks.reproduce.post_5887_vae_cluster import _cluster_accuracy

B, F, LAT, K = 3, 5, 2, 4
_vals = st.floats(-3, 3, allow_nan=False, width=64)


def _reference(x, x_recon, mu, log_var, logits, means, recon, weight):
    """Float64 NumPy: every term written out per example and per cluster."""
    x, x_recon, mu, log_var, logits, means = (
        np.asarray(a, np.float64) for a in (x, x_recon, mu, log_var, logits, means)
    )
    out = {"reconstruction": [], "cluster_kl": [], "prior_kl": []}
    for i in range(x.shape[0]):
        xi, ri = x[i].ravel(), x_recon[i].ravel()
        if recon == "mse":
            rec = 0.5 * np.sum((xi - ri) ** 2)
        else:  # Bernoulli with logits: -x log sigmoid(r) - (1 - x) log(1 - sigmoid(r))
            s = 1 / (1 + np.exp(-ri))
            rec = -np.sum(xi * np.log(s) + (1 - xi) * np.log(1 - s))
        shifted = logits[i] - logits[i].max()
        p = np.exp(shifted) / np.exp(shifted).sum()
        var = np.exp(log_var[i])
        kl_y = [0.5 * np.sum((mu[i] - means[y]) ** 2 + var - log_var[i] - 1) for y in range(len(p))]
        out["reconstruction"].append(rec)
        out["cluster_kl"].append(np.dot(p, kl_y))
        out["prior_kl"].append(np.sum(p * np.log(p * len(p))))
    out = {k: np.array(v) for k, v in out.items()}
    out["loss"] = weight * out["reconstruction"] + out["cluster_kl"] + out["prior_kl"]
    return out


def _inputs(rng, x_shape=(B, F)):
    return (
        rng.normal(size=x_shape),
        rng.normal(size=x_shape),
        rng.normal(size=(B, LAT)),
        rng.normal(size=(B, LAT)) * 0.5,
        rng.normal(size=(B, K)) * 2,
        rng.normal(size=(K, LAT)) * 2,
    )


def _check(got: VAEClusterLoss, ref, rtol=1e-10):
    for name in ("loss", "reconstruction", "cluster_kl", "prior_kl"):
        np.testing.assert_allclose(getattr(got, name), ref[name], rtol=rtol, atol=1e-10)


@given(
    x=arrays(np.float64, (B, F), elements=_vals),
    xr=arrays(np.float64, (B, F), elements=_vals),
    mu=arrays(np.float64, (B, LAT), elements=_vals),
    lv=arrays(np.float64, (B, LAT), elements=st.floats(-2, 2, width=64)),
    logits=arrays(np.float64, (B, K), elements=st.floats(-20, 20, width=64)),
    means=arrays(np.float64, (K, LAT), elements=_vals),
    weight=st.floats(0, 10),
)
def test_mse_matches_numpy(x64, x, xr, mu, lv, logits, means, weight):
    got = vae_cluster_loss(x, xr, mu, lv, logits, means, recon_weight=weight)
    _check(got, _reference(x, xr, mu, lv, logits, means, "mse", weight))


@given(
    x=arrays(np.float64, (B, F), elements=st.floats(0, 1, width=64)),
    xr=arrays(np.float64, (B, F), elements=st.floats(-10, 10, width=64)),
)
def test_bernoulli_matches_numpy(x64, x, xr):
    _, _, mu, lv, logits, means = _inputs(np.random.default_rng(0))
    got = vae_cluster_loss(x, xr, mu, lv, logits, means, recon="bernoulli", recon_weight=2.0)
    _check(got, _reference(x, xr, mu, lv, logits, means, "bernoulli", 2.0), rtol=1e-9)


def test_gaussian_term_equals_monte_carlo_of_log_ratio(x64):
    # The post's Eq. 7, E_{z ~ p(z|x)}[log p(z|x) - log q(z|y)], averaged over samples of z.
    rng = np.random.default_rng(1)
    mu, log_var, mean_y = rng.normal(size=3), rng.normal(size=3) * 0.5, rng.normal(size=3)
    sigma = np.exp(0.5 * log_var)
    z = mu + sigma * rng.normal(size=(400_000, 3))
    log_p = -0.5 * np.sum(np.log(2 * np.pi * sigma**2) + ((z - mu) / sigma) ** 2, axis=1)
    log_q = -0.5 * np.sum(np.log(2 * np.pi) + (z - mean_y) ** 2, axis=1)
    monte_carlo = np.mean(log_p - log_q)
    # A one-hot classifier on cluster 0 isolates KL(p(z|x) || N(mean_y, I)).
    logits = np.array([[60.0, 0.0]])
    means = np.stack([mean_y, mean_y + 5])
    got = vae_cluster_loss(
        np.zeros((1, 1)), np.zeros((1, 1)), mu[None], log_var[None], logits, means
    )
    np.testing.assert_allclose(got.cluster_kl[0], monte_carlo, rtol=0, atol=2e-2)


def test_terms_are_nonnegative_and_vanish_at_the_optimum(x64):
    rng = np.random.default_rng(2)
    out = vae_cluster_loss(*_inputs(rng))
    assert (out.cluster_kl >= 0).all() and (out.prior_kl >= 0).all()
    # Uniform assignments: no prior KL. Code equal to every cluster mean with unit variance
    # (all means equal): no cluster KL. Exact reconstruction: no reconstruction loss.
    x = rng.normal(size=(B, F))
    means = np.zeros((K, LAT))
    out = vae_cluster_loss(x, x, np.zeros((B, LAT)), np.zeros((B, LAT)), np.zeros((B, K)), means)
    np.testing.assert_allclose(out.loss, 0.0, atol=1e-12)


def test_multi_axis_features_are_summed(x64):
    rng = np.random.default_rng(3)
    x, xr, mu, lv, logits, means = _inputs(rng, x_shape=(B, 2, 3, 2))
    flat = vae_cluster_loss(x.reshape(B, -1), xr.reshape(B, -1), mu, lv, logits, means)
    _check(vae_cluster_loss(x, xr, mu, lv, logits, means), flat._asdict())


def test_extreme_logits_finite_gradients():
    rng = np.random.default_rng(4)
    x, xr, mu, lv, _, means = (jnp.asarray(a, jnp.float32) for a in _inputs(rng))
    logits = jnp.array([[1e4, -1e4, 0.0, 0.0]] * B)  # probabilities that underflow to 0

    def total(args):
        return vae_cluster_loss(*args).loss.mean()

    value, grads = jax.jit(jax.value_and_grad(total))((x, xr, mu, lv, logits, means))
    assert np.isfinite(value)
    assert all(np.isfinite(g).all() for g in grads)


def test_gradients(x64):
    rng = np.random.default_rng(5)
    x, xr, mu, lv, logits, means = _inputs(rng)

    def total(xr, mu, lv, logits, means):
        return vae_cluster_loss(x, xr, mu, lv, logits, means, recon_weight=3.0).loss.sum()

    check_grads(jax.jit(total), (xr, mu, lv, logits, means), order=2, modes=["rev"])


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_dtype_kept(dtype):
    rng = np.random.default_rng(6)
    args = [jnp.asarray(a, dtype) for a in _inputs(rng)]
    out = vae_cluster_loss(*args)
    assert all(t.dtype == dtype and t.shape == (B,) for t in out)
    ref = _reference(*[np.asarray(a, np.float64) for a in args], "mse", 1.0)
    np.testing.assert_allclose(
        np.asarray(out.loss, np.float64), ref["loss"], rtol=1e-2 if dtype == jnp.bfloat16 else 1e-5
    )
    grads = jax.jit(jax.grad(lambda a: vae_cluster_loss(*a).loss.sum()))(args)
    assert all(g.dtype == dtype for g in grads)


def test_jit_equals_eager_and_vmap_equals_loop():
    rng = np.random.default_rng(7)
    args = [jnp.asarray(a, jnp.float32) for a in _inputs(rng)]
    eager = vae_cluster_loss(*args, recon_weight=0.5)
    jitted = jax.jit(lambda *a: vae_cluster_loss(*a, recon_weight=0.5))(*args)
    for e, j in zip(eager, jitted):
        np.testing.assert_allclose(j, e, rtol=1e-6)
    # Per-example terms: one example at a time gives the same rows.
    x, xr, mu, lv, logits, means = args
    one = jax.vmap(
        lambda *a: vae_cluster_loss(*(t[None] for t in a), means, recon_weight=0.5).loss[0]
    )(x, xr, mu, lv, logits)
    np.testing.assert_allclose(one, eager.loss, rtol=1e-6)


def test_cluster_accuracy_helper():
    pytest.importorskip("scipy")
    labels = np.array([0, 0, 1, 1, 2, 2])
    hungarian, majority = _cluster_accuracy(np.array([2, 2, 0, 0, 1, 1]), labels, 3)
    assert hungarian == 1.0 and majority == 1.0  # a relabelling is a perfect clustering
    # Two clusters both mostly label 0: majority counts both, Hungarian only one.
    hungarian, majority = _cluster_accuracy(
        np.array([0, 0, 1, 1, 1, 1]), np.array([0, 0, 0, 0, 1, 2]), 3
    )
    assert hungarian == pytest.approx(3 / 6) and majority == pytest.approx(4 / 6)


@pytest.mark.parametrize(
    "change,match",
    [
        ({"x_recon": np.ones((B, F + 1))}, "x_recon must have x's shape"),
        ({"z_log_var": np.ones((B, LAT + 1))}, r"z_log_var must have shape \(3, 2\)"),
        ({"y_logits": np.ones((B,))}, r"y_logits must have shape \(3, any\)"),
        ({"y_logits": np.ones((B + 1, K))}, r"y_logits must have shape \(3, any\), got \(4, 4\)"),
        ({"class_means": np.ones((K + 1, LAT))}, r"class_means must have shape \(4, 2\)"),
        ({"recon": "l1"}, "recon must be one of"),
        ({"recon_weight": -1.0}, "recon_weight must be >= 0"),
    ],
)
def test_errors(change, match):
    x, xr, mu, lv, logits, means = _inputs(np.random.default_rng(8))
    kwargs = dict(x=x, x_recon=xr, z_mean=mu, z_log_var=lv, y_logits=logits, class_means=means)
    kwargs.update(change)
    with pytest.raises(ValueError, match=match):
        vae_cluster_loss(**kwargs)
