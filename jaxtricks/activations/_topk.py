"""Top-k sparse softmax: softmax over the k largest entries, exact zeros elsewhere."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxtricks._src import checks

from . import _checks


def topk_softmax(x: jax.typing.ArrayLike, k: int, *, axis: int = -1) -> jax.Array:
    r"""Softmax restricted to the ``k`` largest entries along ``axis``; the rest are exactly 0.

    .. math::

        p_i = \begin{cases}
            \dfrac{e^{x_i}}{\sum_{j \in \Omega_k} e^{x_j}} & i \in \Omega_k \\
            0 & i \notin \Omega_k
        \end{cases}

    where :math:`\Omega_k` holds the indices of the ``k`` largest entries. Exactly ``k``
    entries are nonzero for finite ``x``: ties at the boundary go to the lower index
    (``jax.lax.top_k``'s order). The gradient is zero outside :math:`\Omega_k`, and
    :math:`\Omega_k` itself is treated as constant (a piecewise-smooth map, like ``max``).
    ``k`` equal to the axis size gives ``jax.nn.softmax``. SPACES (the post) uses ``k = 10``,
    at decoding time through this map and in training through
    :func:`jaxtricks.losses.topk_softmax_cross_entropy`.
    Unlike sparsemax, whose support is set by a threshold, the support size here is fixed.
    Computed in float32 (float64 for float64 inputs) and cast back to ``x``'s dtype
    (float32 for integer ``x``).

    **Infinite logits** (``-inf`` marks a masked entry) give the softmax limits, never NaN:
    ``-inf`` entries get probability 0 (so fewer than ``k`` entries may be nonzero), a row
    whose largest entry is ``+inf`` gives equal parts to its ``+inf`` entries in
    :math:`\Omega_k` and 0 elsewhere, and a row of all ``-inf`` (everything masked) gives
    :math:`1/k` to the ``k`` entries ``top_k`` selects (the lowest indices), the limit of
    equal logits :math:`-t`, :math:`t \to \infty`. Gradients there are finite (zero at the
    infinite entries). Internally the infinities are the dtype's finite extremes.

    Args:
      x: logits of any shape with at least one dimension, integer or floating dtype.
      k: static Python int, the number of entries kept, ``1 <= k <= x.shape[axis]``.
      axis: the axis to normalise over, a Python int.

    Returns:
      Probabilities with ``x``'s shape and dtype (float32 for integer ``x``): at most ``k``
      nonzero entries (exactly ``k`` for finite ``x``), summing to 1 along ``axis``.

    Raises:
      TypeError: if ``k`` or ``axis`` is not an int (bool included), or ``x`` is bool or
        complex.
      ValueError: if ``x`` is a scalar, ``axis`` is out of range or ``k`` is outside
        ``[1, x.shape[axis]]``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxtricks.activations import topk_softmax
      >>> p = topk_softmax(jnp.array([1.0, 3.0, 0.0, 2.0]), k=2)
      >>> [round(float(v), 4) for v in p]  # softmax of [3, 2] placed back, zeros elsewhere
      [0.0, 0.7311, 0.0, 0.2689]
      >>> # -inf masks an entry; a fully masked row is uniform over the k kept entries
      >>> [float(v) for v in topk_softmax(jnp.array([-jnp.inf, 1.0, -jnp.inf]), k=2)]
      [0.0, 1.0, 0.0]
      >>> [float(v) for v in topk_softmax(jnp.full(3, -jnp.inf), k=2)]
      [0.5, 0.5, 0.0]

    References:
      André F. T. Martins, Ramón F. Astudillo, "From Softmax to Sparsemax: A Sparse Model of
      Attention and Multi-Label Classification", ICML 2016, arXiv:1602.02068 (related work:
      a threshold-based sparse softmax).
      Su Jianlin, "SPACES：“抽取-生成”式长文本摘要（法研杯总结）",
      https://kexue.fm/archives/8046
    """
    where = "topk_softmax"
    x = _checks.logits("x", x, where=where)
    axis = _checks.axis(x, axis, where=where)
    size = x.shape[axis]
    k = checks.positive_int("k", k, where=where)
    if k > size:
        raise ValueError(
            f"{where}: k must satisfy 1 <= k <= {size} (x.shape[{axis}] for x of shape "
            f"{x.shape}), got {k}."
        )
    dtype = jnp.promote_types(x.dtype, jnp.float32)
    out_dtype = _checks.out_dtype(x)
    # Infinities become the finite extremes: +inf entries then share the mass, -inf entries
    # get none, and an all -inf row is uniform over its k selected entries (the limits of
    # equal-rate growth), where a plain softmax would give NaN.
    info = jnp.finfo(dtype)
    last = jnp.clip(jnp.moveaxis(x, axis, -1).astype(dtype), info.min, info.max)
    if k == size:  # no sort needed
        return jnp.moveaxis(jax.nn.softmax(last, axis=-1), -1, axis).astype(out_dtype)
    top1, kth, cutoff = _top_and_kth(last, k)
    # The mask is built from comparisons, not by scattering top_k's indices, so that it
    # shards like `x` (scatters need explicit output shardings under explicit meshes).
    # Entries tied with the k-th largest are admitted lowest index first, as top_k orders
    # them: up to the index of the k-th entry top_k chose.
    position = jax.lax.broadcasted_iota(jnp.int32, last.shape, last.ndim - 1).astype(dtype)
    keep = (last > kth) | ((last == kth) & (position <= cutoff))
    # exp only of finite arguments: XLA's CPU exp is slow on the -inf a masked softmax
    # would feed it.
    weights = jnp.where(keep, jnp.exp(jnp.where(keep, last - top1, 0.0)), 0.0)
    out = weights / jnp.sum(weights, axis=-1, keepdims=True)
    return jnp.moveaxis(out, -1, axis).astype(out_dtype)


def _top_and_kth(last: jax.Array, k: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The largest and k-th largest values along the last axis and the k-th one's index.

    Each is ``(..., 1)`` in ``last``'s dtype. They come out of ``lax.top_k`` through an
    exact product with a 0/1 selection matrix: XLA (CPU at least) otherwise fuses ``top_k``
    into the elementwise consumers of its output and recomputes it per element, ~100x slower
    over a 32k vocabulary; a dot is never fused into its consumers. ``last`` must be finite
    (the caller clips infinities) so that ``0 * inf`` cannot make a NaN.
    """
    values, indices = jax.lax.top_k(last, k)
    stacked = jnp.concatenate([values, indices.astype(last.dtype)], axis=-1)  # (..., 2k)
    select = jnp.zeros((2 * k, 3), last.dtype).at[[0, k - 1, 2 * k - 1], [0, 1, 2]].set(1)
    picked = jnp.matmul(stacked, select, precision=jax.lax.Precision.HIGHEST)
    return picked[..., 0:1], picked[..., 1:2], picked[..., 2:3]
