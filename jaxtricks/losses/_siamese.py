"""Non-contrastive Siamese losses: SimSiam, BYOL, and BYOL's target-decay schedule.

Both losses compare a prediction with a target whose gradient is stopped: the target
branch only follows, it is never pulled towards the prediction. Post 7980 shows on a
two-parameter toy why that asymmetry, under gradient dynamics, keeps the model from
collapsing to a constant.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxtricks._src import checks
from jaxtricks._src.numerics import compute_dtype, l2_normalize

from . import _common
from ._contrastive import _MIN_NORM


def _same_shape(where: str, **arrays: jax.typing.ArrayLike) -> list[jax.Array]:
    """The arrays, real with a feature axis and all of the first one's shape."""
    out = [_common.real_array(name, x, where=where) for name, x in arrays.items()]
    (first, ref), *rest = zip(arrays, out)
    checks.min_ndim(first, ref, 1, "(a feature axis, shape (..., D))", where=where)
    for name, x in rest:
        if x.shape != ref.shape:
            raise ValueError(
                f"{where}: {name} must have {first}'s shape {ref.shape}, got {x.shape}."
            )
    return out


def _unit(x: jax.Array, dt: jnp.dtype) -> jax.Array:
    return l2_normalize(x.astype(dt), min_norm=_MIN_NORM)


def _cosine_to_target(p: jax.Array, z: jax.Array) -> jax.Array:
    """Row-wise cos(p, sg(z)) in float32 or wider, shape ``p.shape[:-1]``."""
    dt = compute_dtype(p, z)
    return jnp.sum(_unit(p, dt) * jax.lax.stop_gradient(_unit(z, dt)), axis=-1)


def simsiam_loss(
    p1: jax.typing.ArrayLike,
    p2: jax.typing.ArrayLike,
    z1: jax.typing.ArrayLike,
    z2: jax.typing.ArrayLike,
) -> jax.Array:
    r"""SimSiam's symmetrised negative cosine with stop-gradient on the targets.

    With :math:`z_v = f(x_v)` the projection of view :math:`v` and :math:`p_v = h(z_v)` the
    predictor's output,

    .. math::

        \mathcal{D}(p, z) = -\frac{p}{\max(\|p\|, 10^{-12})} \cdot
            \frac{\operatorname{sg}(z)}{\max(\|\operatorname{sg}(z)\|, 10^{-12})}, \qquad
        \mathcal{L} = \tfrac12 \mathcal{D}(p_1, z_2) + \tfrac12 \mathcal{D}(p_2, z_1)

    averaged over the batch, where :math:`\operatorname{sg}` is ``jax.lax.stop_gradient``:
    no gradient flows into ``z1`` or ``z2`` through this loss (the encoder still learns
    through ``p1 = h(z1)`` and ``p2 = h(z2)``). The value lies in [-1, 1]; -1 is perfect
    agreement. Without the stop-gradient the model collapses to a constant (SimSiam, Fig. 2);
    post 7980 traces this to the gradient dynamics of the asymmetric loss.

    Norms are computed scaled (rows of any finite magnitude normalise exactly), and a zero row
    normalises to 0, so it contributes :math:`\mathcal{D} = 0` with a finite gradient
    (:math:`10^{12}` times the target direction at exactly 0, the floor's inverse). An empty
    batch gives 0.

    Args:
      p1: ``(..., D)`` predictions for view 1, typically ``(B, D)``; integer or floating.
      p2: ``(..., D)`` predictions for view 2.
      z1: ``(..., D)`` projections of view 1 (the targets of ``p2``).
      z2: ``(..., D)`` projections of view 2 (the targets of ``p1``).

    Returns:
      Scalar, the loss averaged over all leading axes, in the promoted input dtype (bf16 is
      computed in float32 and cast back).

    Raises:
      TypeError: if an input is bool or complex.
      ValueError: if the four arrays differ in shape or are scalars.

    Examples:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> from jaxtricks.losses import simsiam_loss
      >>> p = jnp.array([[1.0, 0.0], [0.0, 3.0]])
      >>> print(float(simsiam_loss(p, p, p, p)))  # perfect agreement
      -1.0
      >>> grad_z = jax.grad(lambda z: simsiam_loss(p, p, z, z))(p + 1.0)
      >>> print(grad_z)  # the targets receive no gradient
      [[0. 0.]
       [0. 0.]]

    References:
      Xinlei Chen, Kaiming He, "Exploring Simple Siamese Representation Learning", 2020,
      arXiv:2011.10566.
      Su Jianlin, "从动力学角度看优化算法：为什么SimSiam不退化？",
      https://kexue.fm/archives/7980
    """
    p1, p2, z1, z2 = _same_shape("simsiam_loss", p1=p1, p2=p2, z1=z1, z2=z2)
    out_dtype = jnp.result_type(p1, p2, z1, z2, float)
    cos_12 = _common.mean_or_zero(_cosine_to_target(p1, z2))
    cos_21 = _common.mean_or_zero(_cosine_to_target(p2, z1))
    return (-0.5 * (cos_12 + cos_21)).astype(out_dtype)


def byol_loss(p: jax.typing.ArrayLike, z: jax.typing.ArrayLike) -> jax.Array:
    r"""BYOL's normalised squared error between a prediction and a stopped target.

    .. math::

        \mathcal{L} = \Big\| \frac{p}{\max(\|p\|, 10^{-12})} -
            \frac{\operatorname{sg}(z)}{\max(\|\operatorname{sg}(z)\|, 10^{-12})} \Big\|^2
            = 2 - 2 \cos(p, \operatorname{sg}(z))

    averaged over the batch (the right-hand form holds for rows of norm at least
    :math:`10^{-12}`; the left-hand one is computed, so a zero ``p`` row against a non-zero
    target gives 1, and two zero rows give 0, with finite gradients). ``p`` is the
    online network's prediction, ``z`` the target (EMA) network's projection of the other
    view; no gradient reaches ``z``. BYOL symmetrises by adding the loss with the views
    swapped: ``byol_loss(p1, z2_target) + byol_loss(p2, z1_target)``. The target network
    follows the online one by ``target ← τ target + (1 − τ) online`` with ``τ`` from
    :func:`byol_tau_schedule` (e.g. ``optax.incremental_update(online, target, 1 - tau)``).

    Norms are computed scaled, so rows of any finite magnitude normalise exactly. An empty
    batch gives 0.

    Args:
      p: ``(..., D)`` predictions, typically ``(B, D)``; integer or floating dtype.
      z: ``(..., D)`` targets, same shape.

    Returns:
      Scalar in [0, 4], averaged over the leading axes, in the promoted input dtype.

    Raises:
      TypeError: if ``p`` or ``z`` is bool or complex.
      ValueError: if ``p`` and ``z`` differ in shape or are scalars.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxtricks.losses import byol_loss
      >>> p = jnp.array([[1.0, 0.0], [0.0, 1.0]])
      >>> z = jnp.array([[2.0, 0.0], [1.0, 0.0]])  # same direction, then orthogonal
      >>> print(float(byol_loss(p, z)))  # mean of 0 and 2
      1.0

    References:
      Jean-Bastien Grill et al., "Bootstrap Your Own Latent: A New Approach to
      Self-Supervised Learning", 2020, arXiv:2006.07733.
      Su Jianlin, "从动力学角度看优化算法：为什么SimSiam不退化？",
      https://kexue.fm/archives/7980
    """
    p, z = _same_shape("byol_loss", p=p, z=z)
    out_dtype = jnp.result_type(p, z, float)
    dt = compute_dtype(p, z)
    # The difference form, not 2 - 2 cos: exact at zero rows and free of cancellation there.
    diff = _unit(p, dt) - jax.lax.stop_gradient(_unit(z, dt))
    return _common.mean_or_zero(jnp.sum(jnp.square(diff), axis=-1)).astype(out_dtype)


def byol_tau_schedule(base_tau: float, total_steps: int) -> optax.Schedule:
    r"""BYOL's cosine schedule for the target network's EMA decay :math:`\tau`.

    .. math::

        \tau_k = 1 - (1 - \tau_0)\,\frac{\cos(\pi \min(k, K) / K) + 1}{2}

    :math:`\tau` rises from :math:`\tau_0` at step 0 to 1 at step :math:`K` and stays 1
    afterwards (the target freezes). It equals ``1 - optax.cosine_decay_schedule(1 - base_tau,
    total_steps)``. SimSiam is the case :math:`\tau = 0` (the target is the online network).

    Args:
      base_tau: :math:`\tau_0 \in [0, 1]`; BYOL uses 0.996. A Python, NumPy or concrete JAX
        scalar (checked); a traced one is not checked (outside [0, 1] the schedule leaves
        [0, 1] too).
      total_steps: :math:`K \ge 1`, the number of training steps, a Python int.

    Returns:
      An ``optax.Schedule``: ``step -> tau`` (a float32 scalar, float64 under x64). Steps
      below 0 count as 0.

    Raises:
      TypeError: if ``total_steps`` is not an int (bool included) or ``base_tau`` is not a
        real number.
      ValueError: if ``base_tau`` is NaN, outside [0, 1] or not a scalar, or
        ``total_steps < 1``.

    Examples:
      >>> from jaxtricks.losses import byol_tau_schedule
      >>> tau = byol_tau_schedule(0.996, total_steps=1000)
      >>> print([round(float(tau(k)), 4) for k in (0, 500, 1000, 2000)])
      [0.996, 0.998, 1.0, 1.0]

    References:
      Jean-Bastien Grill et al., "Bootstrap Your Own Latent: A New Approach to
      Self-Supervised Learning", 2020, arXiv:2006.07733 (Sec. 3.2).
      Su Jianlin, "从动力学角度看优化算法：为什么SimSiam不退化？",
      https://kexue.fm/archives/7980
    """
    where = "byol_tau_schedule"
    if np.ndim(base_tau) != 0:
        raise ValueError(f"{where}: base_tau must be a scalar, got shape {np.shape(base_tau)}.")
    checks.number("base_tau", base_tau, low=0.0, high=1.0, where=where)
    total_steps = checks.positive_int("total_steps", total_steps, where=where)

    def schedule(step: jax.typing.ArrayLike) -> jax.Array:
        dt = jnp.result_type(float)
        progress = jnp.clip(jnp.asarray(step, dt), 0, total_steps) / total_steps
        return 1 - (1 - jnp.asarray(base_tau, dt)) * (jnp.cos(jnp.pi * progress) + 1) / 2

    return schedule
