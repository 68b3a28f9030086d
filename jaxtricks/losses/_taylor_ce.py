"""Cross-entropy of the Taylor softmax (exp replaced by an even-order Taylor polynomial)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxtricks.activations import log_taylor_softmax

from . import _common


def taylor_softmax_cross_entropy(
    logits: jax.typing.ArrayLike, labels: jax.typing.ArrayLike, *, order: int = 2
) -> jax.Array:
    r"""Cross-entropy of the Taylor softmax at integer labels.

    With :math:`f_n(x) = \sum_{k=0}^{n} x^k/k!` (positive for even :math:`n`),

    .. math::

        \ell = -\log \frac{f_n(s_t)}{\sum_j f_n(s_j)}
             = \operatorname{logsumexp}_j \log f_n(s_j) - \log f_n(s_t)

    i.e. ``-log_taylor_softmax(logits, order=order)`` at the label (see
    :func:`jaxtricks.activations.log_taylor_softmax` for the numerics: no max-shift, since
    the map is not shift-invariant, and finite for logits of any finite magnitude). Because
    :math:`f_n` grows only polynomially, the loss decays only like :math:`\log(1 +
    \sum_{j \ne t} (s_j/s_t)^n)` as the target logit grows: confident predictions keep
    a gradient longer than with softmax. Computed in float32 (float64 for float64 logits) and
    cast back to ``logits``' dtype (float32 for integer logits).

    **Infinite logits.** :math:`f_n(\pm\infty) = +\infty` for even :math:`n`, so a logit of
    either sign that is infinite takes the mass and ``-inf`` does *not* mask a class: in a
    row holding :math:`m \ge 1` infinite logits the loss is :math:`\log m` when the target is
    one of them and ``+inf`` when it is finite (zero gradient in both cases); a row of all
    infinite logits gives :math:`\log K`. Never NaN for non-NaN logits. An empty batch gives
    an empty result.

    Args:
      logits: ``(..., K)`` unnormalised scores, classes on the last axis; integer or
        floating dtype.
      labels: ``(...)`` integer class indices in ``[0, K)``.
      order: the degree :math:`n`, a static even Python int >= 2.

    Returns:
      ``(...)`` non-negative losses in ``logits``' dtype. Under ``jit`` (or any trace) labels
      cannot be checked, and an out-of-range label gives NaN for its example (zero gradient).

    Raises:
      TypeError: if ``order`` is not an int, ``labels`` is not of integer dtype, or
        ``logits`` is bool or complex.
      ValueError: if ``order`` is odd or below 2, ``logits`` is a scalar, ``labels``' shape
        is not ``logits.shape[:-1]``, or concrete ``labels`` fall outside ``[0, K)``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxtricks.losses import taylor_softmax_cross_entropy
      >>> # f_2 = 1, 0.5, 5 at logits 0, -1, 2: -log(5/6.5) and -log(1/6.5)
      >>> logits = jnp.array([[0.0, -1.0, 2.0], [0.0, -1.0, 2.0]])
      >>> loss = taylor_softmax_cross_entropy(logits, jnp.array([2, 0]))
      >>> [round(float(v), 4) for v in loss]
      [0.2624, 1.8718]

    References:
      Alexandre de Brébisson, Pascal Vincent, "An Exploration of Softmax Alternatives
      Belonging to the Spherical Loss Family", ICLR 2016, arXiv:1511.05042.
      Kunal Banerjee et al., "Exploring Alternatives to Softmax Function", 2020,
      arXiv:2011.11538.
      Su Jianlin, "exp(x)的偶次泰勒展开式总是正的", https://kexue.fm/archives/7919
    """
    where = "taylor_softmax_cross_entropy"
    logits = _common.logits("logits", logits, where=where)
    safe, valid = _common.integer_labels(logits, labels, where=where)
    compute = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    # log_taylor_softmax checks order (its messages name it).
    log_p = log_taylor_softmax(compute, order=order, axis=-1)
    loss = -jnp.take_along_axis(log_p, safe[..., None], axis=-1)[..., 0]
    return jnp.where(valid, loss, jnp.nan).astype(_common.loss_dtype(logits))
