"""Additive-margin softmax (AM-Softmax) cross-entropy on cosine logits."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ._topk_ce import _integer_labels, _loss_dtype


def _check_scalar(name: str, value: object, *, positive: bool) -> None:
    """Checks a concrete scalar hyperparameter; traced values pass unchecked."""
    if isinstance(value, jax.core.Tracer):
        return
    host = np.asarray(value)
    if host.ndim != 0 or not np.issubdtype(host.dtype, np.number):
        raise ValueError(f"{name} must be a real scalar, got {value!r}.")
    ok = host > 0 if positive else host >= 0
    if not (ok and np.isfinite(host)):
        expected = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be finite and {expected}, got {value!r}.")


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

    Args:
      cos_logits: ``(..., K)`` cosines, classes on the last axis (``(B, K)`` typically).
      labels: ``(...)`` integer class indices in ``[0, K)`` (``(B,)`` typically).
      scale: :math:`s > 0`; may be traced (e.g. under ``optax.inject_hyperparams``).
      margin: :math:`m \ge 0`; may be traced.

    Returns:
      ``(...)`` per-example losses in ``cos_logits``' dtype. Under ``jit`` (or any trace)
      labels cannot be checked, and an out-of-range label gives NaN for its example.

    Raises:
      TypeError: if ``labels`` is not of integer dtype.
      ValueError: if ``labels``' shape is not ``cos_logits.shape[:-1]``, concrete labels fall
        outside ``[0, K)``, or a concrete ``scale`` is not a finite positive scalar or a
        concrete ``margin`` not a finite non-negative scalar.

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
    cos_logits = jnp.asarray(cos_logits)
    safe, valid = _integer_labels(cos_logits, labels)
    _check_scalar("scale", scale, positive=True)
    _check_scalar("margin", margin, positive=False)
    compute = jnp.promote_types(_loss_dtype(cos_logits), jnp.float32)
    cos = cos_logits.astype(compute)
    target_mask = jax.nn.one_hot(safe, cos.shape[-1], dtype=compute)
    z = jnp.asarray(scale, compute) * (cos - jnp.asarray(margin, compute) * target_mask)
    target = jnp.take_along_axis(z, safe[..., None], axis=-1)[..., 0]
    loss = jax.nn.logsumexp(z, axis=-1) - target
    return jnp.where(valid, loss, jnp.nan).astype(_loss_dtype(cos_logits))
