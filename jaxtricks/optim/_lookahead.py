"""Lookahead on plain parameters: k fast steps, then one step of the slow weights."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxtricks._src import checks

from . import _validate


class LookaheadState(NamedTuple):
    """State of :func:`lookahead`.

    Attributes:
      steps_since_sync: fast steps taken since the last synchronisation (int32 scalar,
        in ``[0, sync_period)``).
      slow: the slow weights, same tree, dtypes and shardings as the params.
      inner_state: the fast optimizer's state.
    """

    steps_since_sync: jax.Array
    slow: optax.Params
    inner_state: optax.OptState


def _check_sync_period(sync_period: Any) -> None:
    """A positive int; an integer array (inject_hyperparams makes one) when not traced."""
    if isinstance(sync_period, (jax.Array, np.ndarray)):
        checks.array_dtype_kind("sync_period", sync_period, ("integer",), where="lookahead")
        checks.shape("sync_period", sync_period, (), where="lookahead")
        checks.number("sync_period", sync_period, low=1, where="lookahead")
    else:
        checks.positive_int("sync_period", sync_period, where="lookahead")


def lookahead(
    inner: optax.GradientTransformation,
    sync_period: jax.typing.ArrayLike = 5,
    slow_step_size: jax.typing.ArrayLike = 0.5,
) -> optax.GradientTransformationExtraArgs:
    r"""Lookahead around ``inner``: every ``sync_period`` steps, pull the params to slow weights.

    Works on the params themselves (unlike :func:`optax.lookahead`, no ``LookaheadParams``
    wrapper): the slow weights live in the state, start equal to the params given to
    ``init`` (:math:`\phi_0 = \theta_0`, as in the paper; bert4keras starts them at zero),
    and at every step :math:`t` that is a multiple of :math:`k`, after ``inner``'s step,

    .. math::

        \phi \leftarrow \phi + \alpha(\theta - \phi), \qquad \theta \leftarrow \phi.

    The returned update moves the params to :math:`\phi` on those steps and is ``inner``'s
    update otherwise, so it must reach the params unchanged: put ``lookahead`` last in the
    chain (only :func:`jaxtricks.optim.ema_params` may follow). Between synchronisations
    the params are the fast weights; after a synchronisation they equal the slow weights,
    which is the point to evaluate. ``inner``'s state is kept across synchronisations.

    Traced hyperparameters (``optax.inject_hyperparams`` under ``jit``) are not checked: a
    traced ``sync_period < 1`` synchronises at every step, and a ``slow_step_size`` outside
    [0, 1] extrapolates past the fast (or behind the slow) weights.

    Args:
      inner: the fast optimizer (learning rate included).
      sync_period: :math:`k`, a positive int (or an integer array, e.g. from
        ``optax.inject_hyperparams``): fast steps per synchronisation.
      slow_step_size: :math:`\alpha \in [0, 1]`; :math:`\alpha = 1` is ``inner`` alone,
        :math:`\alpha = 0` keeps the slow weights at :math:`\theta_0`, so every period ends
        back at the initial params (defined, if rarely useful).

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` with state :class:`LookaheadState`;
      ``update`` requires ``params``; extra arguments are passed on to ``inner``.

    Raises:
      TypeError: if ``inner`` is not an optax ``GradientTransformation``, or ``sync_period``
        is not an int (floats and bools included) or an integer array.
      ValueError: if ``sync_period < 1``, ``slow_step_size`` is NaN or outside ``[0, 1]``
        (numbers and concrete arrays); if ``update`` gets no params, or params or updates
        whose tree or shapes differ from the params given to ``init``.

    Examples:
      >>> import jax.numpy as jnp, optax
      >>> from jaxtricks.optim import lookahead
      >>> tx = lookahead(optax.sgd(1.0), sync_period=2, slow_step_size=0.5)
      >>> params = jnp.array([0.0])
      >>> state = tx.init(params)
      >>> for _ in range(2):  # fast: 0 -> 1 -> 2, then slow 0 + 0.5 * (2 - 0)
      ...     updates, state = tx.update(jnp.array([-1.0]), state, params)
      ...     params = optax.apply_updates(params, updates)
      >>> params, state.slow
      (Array([1.], dtype=float32), Array([1.], dtype=float32))

    References:
      Zhang, Lucas, Hinton and Ba, "Lookahead Optimizer: k steps forward, 1 step back",
      NeurIPS 2019, arXiv:1907.08610. bert4keras, ``extend_with_lookahead``.
      https://kexue.fm/archives/7094
    """
    checks.gradient_transformation("inner", inner, where="lookahead")
    _check_sync_period(sync_period)
    checks.number("slow_step_size", slow_step_size, low=0, high=1, where="lookahead")
    inner = optax.with_extra_args_support(inner)

    def init_fn(params):
        return LookaheadState(
            steps_since_sync=jnp.zeros([], jnp.int32),
            slow=jax.tree.map(jnp.copy, params),
            inner_state=inner.init(params),
        )

    def update_fn(updates, state, params=None, **extra_args):
        if params is None:
            raise ValueError("lookahead.update: params (the fast weights) must be given, got None.")
        what = "the params given to init"
        _validate.tree_like("params", params, state.slow, what=what, where="lookahead.update")
        _validate.tree_like("updates", updates, state.slow, what=what, where="lookahead.update")
        updates, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
        steps = state.steps_since_sync + 1
        sync = steps >= sync_period

        def pull(p, u, s):
            fast = jnp.asarray(p + u).astype(p.dtype)
            return jnp.where(sync, s + slow_step_size * (fast - s), s).astype(s.dtype)

        slow = jax.tree.map(pull, params, updates, state.slow)
        new_updates = jax.tree.map(
            lambda p, u, s: jnp.where(sync, s - p, u).astype(u.dtype), params, updates, slow
        )
        state = LookaheadState(jnp.where(sync, 0, steps).astype(jnp.int32), slow, inner_state)
        return new_updates, state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
