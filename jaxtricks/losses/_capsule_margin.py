"""The margin loss on capsule lengths (one binary decision per class)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxtricks._src import checks

from . import _common

_WHERE = "capsule_margin_loss"


def _targets(lengths: jax.Array, labels: jax.typing.ArrayLike) -> jax.Array:
    """``T`` of shape ``lengths.shape`` from integer labels ``(...)`` or multi-hot ``(..., K)``."""
    num_classes = lengths.shape[-1]
    kinds = ("bool", "integer", "floating")
    labels = _common.real_array("labels", labels, where=_WHERE, kinds=kinds)
    if labels.shape == lengths.shape:  # multi-hot (or soft) targets
        host = checks.concrete(labels)
        if host is not None and host.size:
            host = host.astype(np.float64)
            if np.isnan(host).any():
                raise ValueError(
                    f"{_WHERE}: multi-hot labels (shape lengths.shape = {lengths.shape}) must lie "
                    "in [0, 1], got NaN."
                )
            if host.min() < 0 or host.max() > 1:
                raise ValueError(
                    f"{_WHERE}: multi-hot labels (shape lengths.shape = {lengths.shape}) must lie "
                    f"in [0, 1], got values in [{host.min()}, {host.max()}]."
                )
        return labels
    if labels.shape != lengths.shape[:-1]:
        raise ValueError(
            f"{_WHERE}: labels must be integer classes of shape lengths.shape[:-1] = "
            f"{lengths.shape[:-1]} or multi-hot targets of shape lengths.shape = "
            f"{lengths.shape}, got {labels.shape}."
        )
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(
            f"{_WHERE}: labels of shape lengths.shape[:-1] = {labels.shape} must be integer "
            f"class indices, got dtype {labels.dtype}."
        )
    host = checks.concrete(labels)
    if host is not None and host.size:
        if host.min() < 0 or host.max() >= num_classes:
            raise ValueError(
                f"{_WHERE}: labels must lie in [0, {num_classes}) (lengths.shape[-1] = "
                f"{num_classes}), got values in [{host.min()}, {host.max()}]."
            )
    # Out-of-range traced labels give an all-zero row (no positive class), not an error.
    return jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)


def _margin(name: str, value: jax.typing.ArrayLike, **bounds) -> jax.typing.ArrayLike:
    if np.ndim(value) != 0:
        raise ValueError(f"{_WHERE}: {name} must be a scalar, got shape {np.shape(value)}.")
    return checks.number(name, value, where=_WHERE, **bounds)


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

    The hyperparameters may be Python, NumPy or JAX scalars; concrete ones are checked,
    traced ones are not (out of range they give a loss without the meaning above). An
    infinite length gives the limit: 0 for a present class, ``+inf`` for an absent one, with
    finite gradients where the loss is finite. An empty batch gives an empty result.

    Args:
      lengths: ``(B, K)`` capsule lengths (or scores), any leading axes ``(..., K)``.
      labels: either integer class indices ``(B,)`` (``(...)``, one present class each, in
        ``[0, K)``), or multi-hot targets ``(B, K)`` (``lengths``' shape; bool, integer or
        float in [0, 1]: several present classes, soft targets allowed). The two are told
        apart by shape.
      m_plus: :math:`m^+ \in [0, 1]`, a scalar.
      m_minus: :math:`m^- \in [0, m^+]`, a scalar: absent classes are pushed below it,
        present ones above :math:`m^+`.
      lam: :math:`\lambda \ge 0`, a finite scalar.

    Returns:
      ``(B,)`` (``(...)``) per-example losses in ``lengths``' dtype (float32 for integer
      ``lengths``). Under a trace, labels cannot be checked: an out-of-range integer label
      counts as no present class, and multi-hot values outside [0, 1] enter the formula as
      they are.

    Raises:
      TypeError: if labels of shape ``lengths.shape[:-1]`` are not integers, ``lengths`` or
        ``labels`` is complex (or ``lengths`` bool), or a hyperparameter is not a real number.
      ValueError: if ``lengths`` is a scalar, ``labels`` has neither accepted shape, concrete
        labels are out of range, multi-hot values leave [0, 1] (or are NaN), a hyperparameter
        is not a finite scalar, ``m_plus`` or ``m_minus`` is outside [0, 1], ``m_minus >
        m_plus``, or ``lam < 0``.

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
    lengths = _common.logits("lengths", lengths, where=_WHERE)
    m_plus = _margin("m_plus", m_plus, low=0.0, high=1.0)
    m_minus = _margin("m_minus", m_minus, low=0.0, high=1.0)
    lam = _margin("lam", lam, low=0.0)
    if not checks.is_traced((m_plus, m_minus)) and m_minus > m_plus:
        raise ValueError(
            f"{_WHERE}: m_minus must be <= m_plus, got m_minus = {m_minus!r} > m_plus = {m_plus!r}."
        )
    out_dtype = _common.loss_dtype(lengths)
    compute = jnp.promote_types(out_dtype, jnp.float32)
    t = _targets(lengths, labels).astype(compute)
    x = lengths.astype(compute)
    m_plus, m_minus, lam = (jnp.asarray(v, compute) for v in (m_plus, m_minus, lam))
    # Each hinge only where its weight is nonzero: an infinite length then gives 0 (not
    # 0 * inf) in the term that does not apply, and no NaN in its gradient.
    below = jnp.where(t > 0, jnp.maximum(m_plus - x, 0.0), 0.0)
    above = jnp.where(t < 1, jnp.maximum(x - m_minus, 0.0), 0.0)
    loss = t * jnp.square(below) + lam * (1.0 - t) * jnp.square(above)
    return jnp.sum(loss, axis=-1).astype(out_dtype)
