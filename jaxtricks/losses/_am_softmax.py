"""Additive-margin softmax (AM-Softmax) cross-entropy on cosine logits."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxtricks._src import checks

from . import _common


def _scalar(name: str, value: object, *, where: str, **bounds) -> None:
    """A finite scalar hyperparameter inside ``bounds`` when concrete; traced ones pass."""
    if np.ndim(value) != 0:
        raise ValueError(f"{where}: {name} must be a scalar, got shape {np.shape(value)}.")
    checks.number(name, value, where=where, **bounds)


def am_softmax_cross_entropy(
    cos_logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    scale: jax.typing.ArrayLike = 30.0,
    margin: jax.typing.ArrayLike = 0.35,
) -> jax.Array:
    r"""Additive-margin softmax cross-entropy: the target's cosine is lowered by ``margin``.

    With :math:`\cos\theta_i` the cosine logits, :math:`t` the label, :math:`s` the scale
    and :math:`m` the margin,

    .. math::

        \ell = -\log \frac{e^{s(\cos\theta_t - m)}}
                           {e^{s(\cos\theta_t - m)} + \sum_{i \ne t} e^{s \cos\theta_i}}
             = \operatorname{logsumexp}_i\big(s\cos\theta_i - s\,m\,[i = t]\big)
               - s(\cos\theta_t - m).

    The margin makes the target win only by :math:`m` in cosine, which tightens classes
    and widens the gaps between them (what retrieval by cosine similarity needs); the scale
    lets probabilities approach 1 although cosines lie in :math:`[-1, 1]`. With
    :math:`m = 0, s = 1` this is the softmax cross-entropy of the cosines
    (``optax.softmax_cross_entropy_with_integer_labels(cos_logits, labels)``). The paper and
    the post use :math:`s = 30, m = 0.35`. The cosines usually come from
    :class:`jaxtricks.nn.CosineDense` (or :func:`jaxtricks.nn.cosine_logits`); the function
    does not check that they lie in :math:`[-1, 1]`. Computed in float32 (float64 for
    float64 inputs) with a log-sum-exp and cast back to ``cos_logits``' dtype (float32 for
    integer inputs). No reduction: average the result yourself.

    A ``-inf`` cosine masks its class (a ``-inf`` target gives ``+inf``); rows whose
    largest scaled logit is infinite give the softmax limit (see
    :func:`jaxtricks.losses.topk_softmax_cross_entropy`; zero gradient there), never NaN. An
    empty batch gives an empty result.

    Args:
      cos_logits: ``(..., K)`` cosines, classes on the last axis (``(B, K)`` typically);
        integer or floating dtype.
      labels: ``(...)`` integer class indices in ``[0, K)`` (``(B,)`` typically).
      scale: :math:`s > 0`, a finite scalar; may be traced (e.g. under
        ``optax.inject_hyperparams``), and a traced value is not checked (:math:`s \le 0`
        then gives a meaningless loss, NaN or inf for a non-finite one).
      margin: :math:`m \ge 0`, a finite scalar; may be traced (unchecked then, likewise).

    Returns:
      ``(...)`` per-example losses in ``cos_logits``' dtype. Under ``jit`` (or any trace)
      labels cannot be checked, and an out-of-range label gives NaN for its example.

    Raises:
      TypeError: if ``labels`` is not of integer dtype, ``cos_logits`` is bool or complex,
        or ``scale`` or ``margin`` is not a real number.
      ValueError: if ``cos_logits`` is a scalar, ``labels``' shape is not
        ``cos_logits.shape[:-1]``, concrete labels fall outside ``[0, K)``, ``scale`` or
        ``margin`` is not a scalar, or a concrete (Python, NumPy or JAX) ``scale`` is not
        finite and positive or a concrete ``margin`` not finite and non-negative.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxtricks.losses import am_softmax_cross_entropy
      >>> cos = jnp.array([[0.9, 0.1, -0.3], [0.2, 0.5, 0.4]])
      >>> labels = jnp.array([0, 2])
      >>> loss = am_softmax_cross_entropy(cos, labels, scale=10.0, margin=0.3)
      >>> # first: -log(e^6 / (e^6 + e^1 + e^-3)); second: target 10 * (0.4 - 0.3) = 1
      >>> [round(float(v), 4) for v in loss]
      [0.0068, 4.0659]

    References:
      Feng Wang, Jian Cheng, Weiyang Liu, Haijun Liu, "Additive Margin Softmax for Face
      Verification", 2018, arXiv:1801.05599.
      Su Jianlin, "基于GRU和AM-Softmax的句子相似度模型", 2018, https://kexue.fm/archives/5743
    """
    where = "am_softmax_cross_entropy"
    cos_logits = _common.logits("cos_logits", cos_logits, where=where)
    safe, valid = _common.integer_labels(cos_logits, labels, where=where, logits_name="cos_logits")
    _scalar("scale", scale, where=where, low=0.0, low_open=True)
    _scalar("margin", margin, where=where, low=0.0)
    compute = jnp.promote_types(_common.loss_dtype(cos_logits), jnp.float32)
    cos = cos_logits.astype(compute)
    target_mask = jax.nn.one_hot(safe, cos.shape[-1], dtype=compute)
    z = jnp.asarray(scale, compute) * (cos - jnp.asarray(margin, compute) * target_mask)
    loss = _common.cross_entropy(z, safe)
    return jnp.where(valid, loss, jnp.nan).astype(_common.loss_dtype(cos_logits))
