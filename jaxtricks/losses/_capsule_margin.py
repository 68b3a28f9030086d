"""The margin loss on capsule lengths (one binary decision per class)."""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np


def _targets(lengths: jax.Array, labels: jax.typing.ArrayLike) -> jax.Array:
    """``T`` of shape ``lengths.shape`` from integer labels ``(...)`` or multi-hot ``(..., K)``."""
    num_classes = lengths.shape[-1]
    labels = labels if isinstance(labels, jax.core.Tracer) else np.asarray(labels)
    if labels.shape == lengths.shape:  # multi-hot (or soft) targets
        if not isinstance(labels, jax.core.Tracer) and labels.size:
            host = labels.astype(np.float64)
            if host.min() < 0 or host.max() > 1:
                raise ValueError(
                    "multi-hot labels (shape lengths.shape) must lie in [0, 1], got values in "
                    f"[{host.min()}, {host.max()}]."
                )
        return jnp.asarray(labels)
    if labels.shape != lengths.shape[:-1]:
        raise ValueError(
            f"labels must be integer classes of shape lengths.shape[:-1] = {lengths.shape[:-1]} "
            f"or multi-hot targets of shape lengths.shape = {lengths.shape}, got {labels.shape}."
        )
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(
            f"labels of shape lengths.shape[:-1] = {labels.shape} must be integer class indices, "
            f"got dtype {labels.dtype}."
        )
    if not isinstance(labels, jax.core.Tracer) and labels.size:
        if labels.min() < 0 or labels.max() >= num_classes:
            raise ValueError(
                f"labels must lie in [0, {num_classes}) (lengths.shape[-1] = {num_classes}), got "
                f"values in [{labels.min()}, {labels.max()}]."
            )
    # Out-of-range traced labels give an all-zero row (no positive class), not an error.
    return jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)


def _check_number(name: str, value: float, *, nonnegative: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{name} must be a real Python number, got {value!r} of type {type(value).__name__}."
        )
    if not math.isfinite(value) or (nonnegative and value < 0):
        raise ValueError(
            f"{name} must be a finite number{' >= 0' if nonnegative else ''}, got {value}."
        )
    return float(value)


def capsule_margin_loss(
    lengths: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    m_plus: float = 0.9,
    m_minus: float = 0.1,
    lam: float = 0.5,
) -> jax.Array:
    r"""Margin loss of capsule networks: each class is its own binary decision on a length.

    With :math:`\ell_k = \lVert v_k\rVert` the length of class capsule :math:`k` and
    :math:`T_k \in \{0, 1\}` whether class :math:`k` is present,

    .. math::

        L = \sum_k T_k \max(0, m^+ - \ell_k)^2
            + \lambda\,(1 - T_k) \max(0, \ell_k - m^-)^2 .

    Present classes are pushed above :math:`m^+`, absent ones below :math:`m^-`;
    :math:`\lambda` down-weights the absent classes (the paper uses 0.5, Su's
    ``capsule_test.py`` 0.25). Because classes are not normalised against each other, a
    model trained on single digits can report two present classes at once (post 4819's
    experiment). The sum runs over classes; the result is **per example, not reduced** over
    the batch (take ``.mean()`` for the usual batch loss). It also applies to any scores in
    [0, 1], e.g. sigmoid outputs, as in Su's CNN baseline. Computed in float32 (float64 for
    float64 input) and cast back to ``lengths``' dtype.

    Args:
      lengths: ``(B, K)`` capsule lengths (or scores), any leading axes ``(..., K)``.
      labels: either integer class indices ``(B,)`` (``(...)``, one present class each, in
        ``[0, K)``), or multi-hot targets ``(B, K)`` (``lengths``' shape; bool, integer or
        float in [0, 1]: several present classes, soft targets allowed). The two are told
        apart by shape.
      m_plus: :math:`m^+`, Python number.
      m_minus: :math:`m^-`, Python number.
      lam: :math:`\lambda \ge 0`, Python number.

    Returns:
      ``(B,)`` (``(...)``) per-example losses in ``lengths``' dtype (float32 for integer
      ``lengths``). Under a trace, integer labels cannot be range-checked: an out-of-range
      label counts as no present class.

    Raises:
      TypeError: if labels of shape ``lengths.shape[:-1]`` are not integers, or a
        hyperparameter is not a real number.
      ValueError: if ``labels`` has neither accepted shape, concrete labels are out of range,
        multi-hot values leave [0, 1], a margin is not finite or ``lam < 0``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxtricks.losses import capsule_margin_loss
      >>> lengths = jnp.array([[0.95, 0.3, 0.05], [0.5, 0.6, 0.0]])
      >>> loss = capsule_margin_loss(lengths, jnp.array([0, 1]))
      >>> [round(float(x), 4) for x in loss]  # 0.5*0.2**2; 0.3**2 + 0.5*0.4**2
      [0.02, 0.17]
      >>> multi = jnp.array([[1, 1, 0], [0, 1, 0]])  # two present classes in the first
      >>> [round(float(x), 4) for x in capsule_margin_loss(lengths, multi)]
      [0.36, 0.17]

    References:
      Sara Sabour, Nicholas Frosst, Geoffrey E. Hinton, "Dynamic Routing Between Capsules",
      NeurIPS 2017, arXiv:1710.09829 (equation 4).
      Su Jianlin, "揭开迷雾，来一顿美味的Capsule盛宴", 2018, https://kexue.fm/archives/4819
    """
    lengths = jnp.asarray(lengths)
    if lengths.ndim < 1:
        raise ValueError("lengths must have a class axis (shape (..., K)), got a scalar.")
    m_plus = _check_number("m_plus", m_plus)
    m_minus = _check_number("m_minus", m_minus)
    lam = _check_number("lam", lam, nonnegative=True)
    out_dtype = lengths.dtype if jnp.issubdtype(lengths.dtype, jnp.floating) else jnp.float32
    compute = jnp.promote_types(out_dtype, jnp.float32)
    t = _targets(lengths, labels).astype(compute)
    x = lengths.astype(compute)
    present = t * jnp.square(jnp.maximum(m_plus - x, 0.0))
    absent = lam * (1.0 - t) * jnp.square(jnp.maximum(x - m_minus, 0.0))
    return jnp.sum(present + absent, axis=-1).astype(out_dtype)
