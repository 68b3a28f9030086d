"""The loss of a VAE whose latent prior is a uniform mixture of unit Gaussians: clustering.

Post 5887 adds a discrete latent ``y`` (the cluster) to the VAE: the encoder gives
``p(z|x) = N(mu(x), sigma^2(x))``, a classifier gives ``p(y|z)``, and the prior is
``q(z|y) q(y)`` with ``q(z|y) = N(mu_y, I)`` and uniform ``q(y)``. Training encodes, clusters
and generates in one step; the classifier's argmax is the cluster of ``x``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxtricks._src import checks
from jaxtricks._src.numerics import compute_dtype

from . import _common


class VAEClusterLoss(NamedTuple):
    """The terms of :func:`vae_cluster_loss`, each per example, shape ``(B,)``.

    Attributes:
      loss: ``recon_weight * reconstruction + cluster_kl + prior_kl``.
      reconstruction: :math:`-\\log q(x|z)` up to a constant (unweighted).
      cluster_kl: :math:`\\sum_y p(y|z)\\, \\mathrm{KL}(p(z|x) \\| N(\\mu_y, I))`.
      prior_kl: :math:`\\mathrm{KL}(p(y|z) \\| \\mathrm{Uniform}(K))`.
    """

    loss: jax.Array
    reconstruction: jax.Array
    cluster_kl: jax.Array
    prior_kl: jax.Array


_RECON = ("mse", "bernoulli")


def vae_cluster_loss(
    x: jax.typing.ArrayLike,
    x_recon: jax.typing.ArrayLike,
    z_mean: jax.typing.ArrayLike,
    z_log_var: jax.typing.ArrayLike,
    y_logits: jax.typing.ArrayLike,
    class_means: jax.typing.ArrayLike,
    *,
    recon: str = "mse",
    recon_weight: jax.typing.ArrayLike = 1.0,
) -> VAEClusterLoss:
    r"""Per-example loss of the one-step VAE clustering model (Gaussian-mixture prior).

    The model: encoder :math:`p(z|x) = N(\mu(x), \operatorname{diag}\sigma^2(x))`, a
    reparameterised sample :math:`z = \mu + \sigma \odot \epsilon`, decoder
    :math:`q(x|z)`, classifier :math:`p(y|z) = \operatorname{softmax}(\ell(z))` over
    :math:`K` clusters, prior :math:`q(z|y) = N(\mu_y, I)` and :math:`q(y) = 1/K`. The loss
    is :math:`\mathrm{KL}(p(x,z,y) \| q(x,z,y))` up to constants (post 5887, Eq. 5), with the
    Gaussian term taken in closed form over :math:`z \sim p(z|x)` as in the post's code:

    .. math::

        \mathcal{L} &= \lambda\, R(x, \hat x)
            + \sum_{y=1}^{K} p(y|z)\, \mathrm{KL}\big(p(z|x) \,\|\, N(\mu_y, I)\big)
            + \sum_{y=1}^{K} p(y|z) \log \frac{p(y|z)}{1/K} \\
        \mathrm{KL}\big(p(z|x) \,\|\, N(\mu_y, I)\big) &= \frac12 \sum_{i=1}^{d}
            \Big( (\mu_i - \mu_{y,i})^2 + \sigma_i^2 - \log \sigma_i^2 - 1 \Big)

    with :math:`R` summed over all non-batch axes of ``x``:

    - ``recon="mse"``: :math:`R = \tfrac12 \|x - \hat x\|^2`, i.e. :math:`-\log q(x|z)` for
      :math:`q(x|z) = N(\hat x, I)` without its constant; ``recon_weight`` :math:`\lambda`
      is then an inverse variance (the post's code uses :math:`\lambda = 5` on pixels in
      [0, 1]).
    - ``recon="bernoulli"``: ``x_recon`` holds **logits**, :math:`x \in [0, 1]`, and
      :math:`R = \sum \big(\operatorname{softplus}(\hat x) - x \hat x\big)`, the binary
      cross-entropy computed stably.

    The second term pulls each code towards the mean of the cluster the classifier assigns
    it to (this does the clustering); the third keeps the assignments from all collapsing
    onto one cluster (to drop it, train on ``loss - prior_kl``). All three terms are
    non-negative. The post's Eq. 8 is a one-sample estimate of the same Gaussian term (it
    differs by a zero-mean noise and a constant).

    Degenerate inputs give the limits, never NaN: a ``-inf`` logit in ``y_logits`` masks its
    cluster (:math:`p(y|z) = 0`, contributing :math:`0 \log 0 = 0` and no Gaussian term),
    a row whose largest logit is infinite is uniform over its largest entries (zero gradient
    there), and :math:`\log \sigma^2 = \pm\infty` gives ``cluster_kl = +inf`` (the KL
    diverges both ways). An empty batch gives empty terms.

    Args:
      x: ``(B, ...)`` data.
      x_recon: decoder output for the sampled ``z``, same shape as ``x`` (logits for
        ``"bernoulli"``).
      z_mean: ``(B, d)`` encoder means :math:`\mu(x)`.
      z_log_var: ``(B, d)`` encoder log-variances :math:`\log \sigma^2(x)`.
      y_logits: ``(B, K)`` classifier logits at the sampled ``z`` (log-probabilities are
        taken with ``log_softmax``: no ``log(0)``, and the gradient is finite everywhere).
      class_means: ``(K, d)`` cluster means :math:`\mu_y`, trainable (the post initialises
        them at zero).
      recon: ``"mse"`` or ``"bernoulli"``. Static.
      recon_weight: :math:`\lambda \ge 0`, the finite scalar weight of the reconstruction
        term. Python, NumPy and concrete JAX values are checked; a traced one is not.

    Returns:
      A :class:`VAEClusterLoss` of ``(B,)`` arrays (take ``.loss.mean()`` to train), in the
      promoted dtype of the inputs (bf16 is computed in float32 and cast back).

    Raises:
      TypeError: if an input is complex (or bool, ``x`` aside: binary data may be bool),
        or ``recon_weight`` is not a real number.
      ValueError: if shapes disagree (the message names the argument and both shapes),
        ``y_logits`` has no cluster (``K = 0``), ``recon`` is not one of the two names,
        ``recon_weight`` is not a scalar, or a concrete ``recon_weight`` is negative or not
        finite.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxtricks.losses import vae_cluster_loss
      >>> x = jnp.zeros((1, 3))
      >>> means = jnp.array([[0.0, 0.0], [4.0, 0.0]])
      >>> # The code sits on cluster 0's mean with unit variance, confidently assigned to it.
      >>> out = vae_cluster_loss(x, x, jnp.zeros((1, 2)), jnp.zeros((1, 2)),
      ...                        jnp.array([[50.0, 0.0]]), means)
      >>> print(f"{float(out.cluster_kl[0]):.4f} {float(out.prior_kl[0]):.4f}")
      0.0000 0.6931
      >>> # Assigned to the far cluster instead: KL = |mu - mu_1|^2 / 2 = 8.
      >>> out = vae_cluster_loss(x, x, jnp.zeros((1, 2)), jnp.zeros((1, 2)),
      ...                        jnp.array([[0.0, 50.0]]), means)
      >>> print(f"{float(out.cluster_kl[0]):.4f}")
      8.0000

    References:
      Diederik P. Kingma, Max Welling, "Auto-Encoding Variational Bayes", 2013,
      arXiv:1312.6114.
      Su Jianlin, peer Keras code ``vae_keras_cluster.py``, https://github.com/bojone/vae
      Su Jianlin, "变分自编码器（四）：一步到位的聚类方案", https://kexue.fm/archives/5887
    """
    where = "vae_cluster_loss"
    checks.choice("recon", recon, _RECON, where=where)
    if np.ndim(recon_weight) != 0:
        raise ValueError(
            f"{where}: recon_weight must be a scalar, got shape {np.shape(recon_weight)}."
        )
    checks.number("recon_weight", recon_weight, low=0.0, where=where)
    names = ("x", "x_recon", "z_mean", "z_log_var", "y_logits", "class_means")
    arrays = [
        _common.real_array(
            name,
            a,
            where=where,
            kinds=("bool", "integer", "floating") if name == "x" else ("integer", "floating"),
        )
        for name, a in zip(names, (x, x_recon, z_mean, z_log_var, y_logits, class_means))
    ]
    _check_shapes(*arrays)

    out_dtype = jnp.result_type(*arrays, float)
    dt = compute_dtype(*arrays)
    x, x_recon, z_mean, z_log_var, y_logits, class_means = (a.astype(dt) for a in arrays)
    feature_axes = tuple(range(1, x.ndim))

    if recon == "mse":
        reconstruction = 0.5 * jnp.sum(jnp.square(x - x_recon), axis=feature_axes)
    else:
        bce = jax.nn.softplus(x_recon) - x * x_recon
        reconstruction = jnp.sum(bce, axis=feature_axes)

    # (B, K): closed-form KL of N(mu, sigma^2) from each N(mu_y, I), summed over d.
    mean_gap = jnp.sum(jnp.square(z_mean[:, None, :] - class_means[None, :, :]), axis=-1)
    # e^v - v - 1 as expm1(v) - v (accurate near v = 0); +inf at v = +inf, where the
    # difference would be inf - inf (the formula sees 0 there, for a finite gradient).
    pos_inf = jnp.isposinf(z_log_var)
    v = jnp.where(pos_inf, 0.0, z_log_var)
    spread = jnp.sum(jnp.where(pos_inf, jnp.inf, jnp.expm1(v) - v), axis=-1)
    gauss_kl = 0.5 * (mean_gap + spread[:, None])

    log_p = jax.nn.log_softmax(_common.saturate(y_logits), axis=-1)
    p = jnp.exp(log_p)
    # Masked clusters (p = 0) contribute nothing: 0 * inf and 0 * log 0 are taken as 0.
    live = p > 0
    cluster_kl = jnp.sum(jnp.where(live, p * jnp.where(live, gauss_kl, 0.0), 0.0), axis=-1)
    num_classes = y_logits.shape[-1]
    neg_entropy = jnp.sum(jnp.where(live, p * jnp.where(live, log_p, 0.0), 0.0), axis=-1)
    prior_kl = neg_entropy + jnp.log(jnp.asarray(num_classes, dt))

    loss = jnp.asarray(recon_weight, dt) * reconstruction + cluster_kl + prior_kl
    return VAEClusterLoss(
        *(t.astype(out_dtype) for t in (loss, reconstruction, cluster_kl, prior_kl))
    )


def _check_shapes(x, x_recon, z_mean, z_log_var, y_logits, class_means) -> None:
    where = "vae_cluster_loss"
    checks.min_ndim("x", x, 1, "(a batch axis, shape (B, ...))", where=where)
    if x_recon.shape != x.shape:
        raise ValueError(f"{where}: x_recon must have x's shape {x.shape}, got {x_recon.shape}.")
    batch = x.shape[0]
    checks.shape("z_mean", z_mean, (batch, None), where=where)
    d = z_mean.shape[1]
    checks.shape("z_log_var", z_log_var, (batch, d), where=where)
    checks.shape("y_logits", y_logits, (batch, None), where=where)
    num_classes = y_logits.shape[1]
    if num_classes == 0:
        raise ValueError(
            f"{where}: y_logits must have at least one cluster (shape (B, K), K >= 1), got "
            f"shape {y_logits.shape}."
        )
    checks.shape("class_means", class_means, (num_classes, d), where=where)
