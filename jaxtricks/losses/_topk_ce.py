"""The top-k (sparse softmax) cross-entropy of SPACES."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxtricks._src import checks

from . import _common


def topk_softmax_cross_entropy(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    k: int,
    *,
    include_target: bool = False,
) -> jax.Array:
    r"""Sparse-softmax cross-entropy: the log-partition runs over the ``k`` largest logits only.

    With :math:`s` the logits, :math:`t` the label and :math:`\Omega_k` the indices of the
    ``k`` largest logits, the post's formula (the default) is

    .. math::

        \ell = \log \sum_{i \in \Omega_k} e^{s_i} - s_t ,

    the ``logsumexp`` of the top ``k`` logits minus the target logit, as in the SPACES
    training code (``tf.nn.top_k(logits, k)``). When the target is not among the top ``k``
    its logit is still subtracted but not in the sum, so the target's gradient is a constant
    :math:`-1` however far it has fallen. ``include_target=True`` is a variant (the default
    of jaxtricks 0.1.0) that sums over :math:`\Omega_k \cup \{t\}` instead: then
    :math:`\ell = -\log q_t` for :math:`q` the softmax over that set, a proper distribution
    over :math:`k + 1` classes, with target gradient :math:`q_t - 1`; the two agree when the
    target is in the top ``k``. Either way :math:`\ell \ge 0` (the sum contains the largest
    logit, which is :math:`\ge s_t`), the gradient is zero outside :math:`\Omega_k \cup \{t\}`
    (the top-k set is treated as constant), and with ``k`` equal to the number of classes the
    loss is the usual softmax cross-entropy
    (``optax.softmax_cross_entropy_with_integer_labels``). The post uses ``k = 10`` and
    reports gains when fine-tuning pre-trained models but losses when training from scratch
    (only ``k`` classes learn per step). Computed in float32 (float64 for float64 logits) and
    cast back to ``logits``' dtype (float32 for integer logits).

    **Infinite logits.** ``-inf`` marks a masked class: it never helps the sum, and a
    ``-inf`` target gives ``+inf``. A row whose largest logit is ``+inf`` gives
    :math:`\log m` when the target is one of the :math:`m` ``+inf`` logits in the sum and
    ``+inf`` otherwise; a row of all ``-inf`` (everything masked) gives :math:`\log k`
    (:math:`\log |\Omega|` with ``include_target``), the limit of equal logits. Those rows have
    zero gradient; the result is never NaN for non-NaN logits. An empty batch gives an empty
    result.

    Args:
      logits: ``(..., K)`` unnormalised scores, classes on the last axis; integer or
        floating dtype.
      labels: ``(...)`` integer class indices in ``[0, K)``.
      k: static Python int, ``1 <= k <= K``.
      include_target: whether the target always enters the log-partition (see above); a
        static Python bool, default ``False`` (the post's formula).

    Returns:
      ``(...)`` losses, in ``logits``' dtype. Under ``jit`` (or any trace) labels cannot be
      checked, and an out-of-range label gives NaN for its example (zero gradient).

    Raises:
      TypeError: if ``k`` is not an int (bool included), ``include_target`` is not a bool,
        ``labels`` is not of integer dtype, or ``logits`` is bool or complex.
      ValueError: if ``logits`` is a scalar, ``k`` is outside ``[1, K]``, ``labels``' shape
        is not ``logits.shape[:-1]``, or concrete ``labels`` fall outside ``[0, K)``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxtricks.losses import topk_softmax_cross_entropy
      >>> logits = jnp.array([[4.0, 3.0, 0.0, -1.0], [4.0, 3.0, 0.0, -1.0]])
      >>> labels = jnp.array([0, 2])
      >>> loss = topk_softmax_cross_entropy(logits, labels, k=2)
      >>> [round(float(v), 4) for v in loss]  # log(e^4 + e^3) - 4, log(e^4 + e^3) - 0
      [0.3133, 4.3133]
      >>> loss = topk_softmax_cross_entropy(logits, labels, k=2, include_target=True)
      >>> [round(float(v), 4) for v in loss]  # the variant: log(e^4 + e^3 + e^0) - 0
      [0.3133, 4.3266]

    References:
      Su Jianlin, "SPACES：“抽取-生成”式长文本摘要（法研杯总结）",
      https://kexue.fm/archives/8046
      SPACES code (the sparse cross-entropy in ``seq2seq_model.py``),
      https://github.com/bojone/SPACES
      André F. T. Martins, Ramón F. Astudillo, "From Softmax to Sparsemax: A Sparse Model of
      Attention and Multi-Label Classification", ICML 2016, arXiv:1602.02068 (related work).
    """
    where = "topk_softmax_cross_entropy"
    logits = _common.logits("logits", logits, where=where)
    num_classes = logits.shape[-1]
    k = checks.positive_int("k", k, where=where)
    if k > num_classes:
        raise ValueError(
            f"{where}: k must satisfy 1 <= k <= {num_classes} (logits.shape[-1], the number "
            f"of classes), got {k}."
        )
    if not isinstance(include_target, bool):
        raise TypeError(f"{where}: include_target must be a bool, got {include_target!r}.")
    safe, valid = _common.integer_labels(logits, labels, where=where)
    s = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    if k == num_classes:  # no sort needed
        top = jnp.max(s, axis=-1, keepdims=True, initial=-jnp.inf)
        log_partition = jax.nn.logsumexp(_common.saturate(s, top=top), axis=-1)
    else:
        # Saturation is monotone, so top_k of the raw logits picks the same entries; saturating
        # only the k values and the target keeps the (B, K) logits from being materialised.
        # The barrier keeps XLA:CPU from fusing top_k into the elementwise saturate below,
        # which recomputes the selection per element (~60x slower).
        values, indices = jax.lax.optimization_barrier(jax.lax.top_k(s, k))
        top = values[..., :1]
        values = _common.saturate(values, top=top)
        log_partition = jax.nn.logsumexp(values, axis=-1)
    target = jnp.take_along_axis(s, safe[..., None], axis=-1)
    target = _common.saturate(target, top=top)[..., 0]
    if include_target and k < num_classes:
        in_top = jnp.any(indices == safe[..., None], axis=-1)
        log_partition = jnp.where(in_top, log_partition, jnp.logaddexp(log_partition, target))
    loss = jnp.where(valid, log_partition - target, jnp.nan)
    return loss.astype(_common.loss_dtype(logits))
