"""Piecewise-linear learning-rate schedules (warm-up from zero, then decay)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
import optax

from jaxtricks._src import checks


def piecewise_linear_schedule(points: Mapping[int, float], scale: Any = 1.0) -> optax.Schedule:
    r"""A schedule linear between given ``step: multiplier`` points, starting from zero.

    With the points :math:`(x_i, y_i)` sorted by step, and :math:`(0, 0)` put first when
    step 0 is not a key (bert4keras's convention, so ``{1000: 1.0, 2000: 0.1}`` warms up
    from 0 over 1000 steps, decays to 0.1 at step 2000 and stays there):

    .. math::

        \eta(t) = \text{scale} \cdot \operatorname{interp}(t;\ x, y),

    linear between consecutive points and held at :math:`y_{\text{last}}` after the last
    (``np.interp``). :func:`optax.piecewise_interpolate_schedule` cannot express this: its
    points multiply the previous value, so a schedule starting at 0 stays 0. The step is
    optax's count, which starts at 0, so the first update uses :math:`\eta(0)` (0 unless
    step 0 is a key); bert4keras also evaluates its schedule at the 0-based iteration.

    Args:
      points: a non-empty mapping ``step -> multiplier``; steps are ints >= 0 (optax's
        count is an int), multipliers finite real scalars.
      scale: the multiplier's scale, usually the peak learning rate; a finite real number
        (a traced value, when the schedule is built inside ``jit``, is used unchecked).

    Returns:
      An optax schedule ``step -> scale * interp(step)``, a float scalar array (the default
      float dtype) for an int or float ``step`` (scalar or array).

    Raises:
      TypeError: if ``points`` is not a mapping, a step is not an int (floats and bools
        included), or a multiplier or ``scale`` is not a real number.
      ValueError: if ``points`` is empty, a step is negative, or a multiplier or ``scale``
        is NaN, infinite or not a scalar.

    Examples:
      >>> from jaxtricks.optim import piecewise_linear_schedule
      >>> schedule = piecewise_linear_schedule({1000: 1.0, 2000: 0.1}, scale=1e-3)
      >>> [round(float(schedule(t)), 8) for t in (0, 500, 1000, 1500, 5000)]
      [0.0, 0.0005, 0.001, 0.00055, 0.0001]
      >>> import optax
      >>> tx = optax.adam(schedule)

    References:
      Goyal et al., "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour",
      arXiv:1706.02677 (linear warm-up). bert4keras, ``piecewise_linear`` and
      ``extend_with_piecewise_linear_lr``.
      https://kexue.fm/archives/7094
    """
    if not isinstance(points, Mapping):
        raise TypeError(
            f"piecewise_linear_schedule: points must be a mapping step -> multiplier, "
            f"got {type(points).__name__}."
        )
    if not points:
        raise ValueError("piecewise_linear_schedule: points must not be empty, got {}.")
    for step, value in points.items():
        checks.nonnegative_int("points: step", step, where="piecewise_linear_schedule")
        checks.number(f"points[{step}]", value, where="piecewise_linear_schedule")
        if np.ndim(value) != 0:
            raise ValueError(
                f"piecewise_linear_schedule: points[{step}] must be a scalar, got shape "
                f"{np.shape(value)}."
            )
    checks.number("scale", scale, where="piecewise_linear_schedule")

    pairs = sorted((int(k), float(v)) for k, v in points.items())
    if pairs[0][0] != 0:
        pairs.insert(0, (0, 0.0))
    xs, ys = (np.asarray(a, np.float64) for a in zip(*pairs))
    # A traced scale (the schedule built inside jit) is used as given.
    scale = scale if checks.is_traced(scale) else float(scale)

    def schedule(count):
        t = jnp.asarray(count, dtype=float)
        return scale * jnp.interp(t, jnp.asarray(xs, t.dtype), jnp.asarray(ys, t.dtype))

    return schedule
