"""An exponential moving average of the parameters, kept in the optimizer state."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import tree_util as jtu

from jaxtricks._src import checks

from . import _validate


class EmaParamsState(NamedTuple):
    """State of :func:`ema_params`.

    Attributes:
      count: number of updates seen (int32 scalar).
      ema: the averaged parameters (already bias-corrected when ``debias=True``), same tree
        as the params, in ``ema_dtype`` or the params' dtype.
    """

    count: jax.Array
    ema: optax.Params


def ema_params(
    decay: jax.typing.ArrayLike,
    *,
    debias: bool = True,
    ema_dtype: jax.typing.DTypeLike | None = None,
) -> optax.GradientTransformation:
    r"""Keeps an exponential moving average (EMA) of the parameters in the optimizer state.

    The updates pass through unchanged. The averaged parameters are the new parameters
    :math:`\theta_t = \theta_{t-1} + u_t` (what :func:`optax.apply_updates` gives), so this
    transform must come **last** in the chain, after the learning rate and anything else
    that changes the update (put it outside :func:`jaxtricks.optim.lookahead`, not inside).
    Read the average with :func:`ema_weights`.

    With ``debias=True`` (bert4keras: a zero-initialised average corrected at evaluation):

    .. math::

        \hat e_T = \frac{\sum_{t=1}^{T} (1-d)\, d^{T-t}\, \theta_t}{1 - d^T},

    kept directly in its corrected form, :math:`\hat e_t = \hat e_{t-1} + c_t(\theta_t -
    \hat e_{t-1})` with :math:`c_t = (1-d)/(1-d^t)` (so :math:`c_1 = 1`), the denominator
    computed as ``-expm1(t * log(d))`` (accurate for ``d`` close to 1). With
    ``debias=False``: :math:`e_0 = \theta_0` (the params given to ``init``) and
    :math:`e_t = d\, e_{t-1} + (1-d)\, \theta_t`. Before the first update both give
    :math:`\theta_0`. ``decay = 1`` is the limit :math:`d \to 1`: with ``debias=True``
    :math:`c_t = 1/t`, the plain running mean of :math:`\theta_1 \dots \theta_T` (Polyak
    averaging); with ``debias=False`` the average stays :math:`\theta_0`. A float32 ``d``
    that rounds to 1 takes that limit too.

    Precision: with ``decay=0.999`` each step moves the average by 0.1% of the gap, less
    than the 0.4% resolution of bfloat16, so a bfloat16 average stalls. For bfloat16
    params pass ``ema_dtype=jnp.float32``.

    Args:
      decay: the decay :math:`d \in [0, 1]` (0 keeps the latest params, 1 see above). A
        traced value (``optax.inject_hyperparams`` under ``jit``) is not checked: outside
        [0, 1] it gives what the formulas give (NaN for ``d < 0`` with ``debias``).
      debias: whether to bias-correct (see above), a bool.
      ema_dtype: a floating or complex dtype for the stored average; ``None`` keeps each
        param's dtype (integer params then need a floating ``ema_dtype``).

    Returns:
      An :class:`optax.GradientTransformation` whose state is :class:`EmaParamsState`; its
      ``update`` requires ``params``.

    Raises:
      ValueError: if ``decay`` (a number or concrete array) is NaN or outside ``[0, 1]``;
        if ``update`` gets no params, or params or updates whose tree or shapes differ from
        the params given to ``init``.
      TypeError: if ``debias`` is not a bool, ``ema_dtype`` is not a floating or complex
        dtype, or (at ``init``) the average of a leaf would be integer, or real for a
        complex leaf.

    Examples:
      >>> import jax.numpy as jnp, optax
      >>> from jaxtricks.optim import ema_params, ema_weights
      >>> tx = optax.chain(optax.sgd(1.0), ema_params(0.5))
      >>> params = jnp.array([0.0])
      >>> state = tx.init(params)
      >>> for g in (-1.0, -1.0):  # params go 0 -> 1 -> 2
      ...     updates, state = tx.update(jnp.array([g]), state, params)
      ...     params = optax.apply_updates(params, updates)
      >>> round(float(ema_weights(state)[0]), 5)  # (0.25 * 1 + 0.5 * 2) / (1 - 0.25)
      1.66667

    References:
      Polyak and Juditsky, "Acceleration of stochastic approximation by averaging",
      SIAM J. Control Optim. 30(4), 1992 (parameter averaging).
      bert4keras, ``extend_with_exponential_moving_average`` (bojone/bert4keras).
      https://kexue.fm/archives/7094
    """
    checks.number("decay", decay, low=0, high=1, where="ema_params")
    if not isinstance(debias, bool):
        raise TypeError(f"ema_params: debias must be a bool, got {debias!r}.")
    ema_dtype = checks.float_dtype("ema_dtype", ema_dtype, where="ema_params")

    def average_dtype(path, p):
        dt = jnp.result_type(p) if ema_dtype is None else ema_dtype
        ok = jnp.issubdtype(dt, jnp.inexact) and (
            jnp.issubdtype(dt, jnp.complexfloating)
            or not jnp.issubdtype(jnp.result_type(p), jnp.complexfloating)
        )
        if not ok:
            raise TypeError(
                f"ema_params.init: params{jtu.keystr(path)} of dtype "
                f"{jnp.result_type(p).name} cannot be averaged in {jnp.dtype(dt).name}; pass "
                "a floating (complex for complex params) ema_dtype."
            )
        return dt

    def init_fn(params):
        # A copy, not an alias of the params' buffers (donation would otherwise fail).
        ema = jtu.tree_map_with_path(
            lambda path, p: jnp.array(p, dtype=average_dtype(path, p), copy=True), params
        )
        return EmaParamsState(count=jnp.zeros([], jnp.int32), ema=ema)

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(
                "ema_params.update: params must be given (the average is of the params), got None."
            )
        what = "the params given to init"
        _validate.tree_like("params", params, state.ema, what=what, where="ema_params.update")
        _validate.tree_like("updates", updates, state.ema, what=what, where="ema_params.update")
        count = optax.safe_increment(state.count)
        d = jnp.asarray(decay, dtype=float)
        if debias:
            # c_t = (1 - d) / (1 - d^t), both through expm1 so that c_1 = 1 exactly
            # (also for d = 0, where log 0 = -inf). At d = 1 that is 0/0; its limit is 1/t.
            log_d = jnp.log(d)
            t = count.astype(d.dtype)
            at_one = d == 1
            c = jnp.where(
                at_one, 1 / t, jnp.expm1(log_d) / jnp.expm1(t * jnp.where(at_one, -1.0, log_d))
            )
        else:
            c = 1.0 - d

        def average(e, p, u):
            new = jnp.asarray(p + u).astype(jnp.asarray(p).dtype).astype(e.dtype)
            return e + c.astype(e.dtype) * (new - e)

        ema = jax.tree.map(average, state.ema, params, updates)
        return updates, EmaParamsState(count=count, ema=ema)

    return optax.GradientTransformation(init_fn, update_fn)


def ema_weights(opt_state: Any) -> optax.Params:
    r"""Returns the averaged parameters kept by :func:`ema_params` inside an optimizer state.

    Searches the whole state tree (``optax.chain`` tuples, ``optax.inject_hyperparams``,
    ``optax.MultiSteps``, :func:`jaxtricks.optim.lookahead`, masked wrappers…) for the one
    :class:`EmaParamsState` and returns its average, which needs no further correction:

    .. math::

        \hat e_T = \frac{\sum_{t=1}^{T} (1-d)\, d^{T-t}\, \theta_t}{1 - d^T}
        \quad (\texttt{debias=True}), \qquad e_T = d^T \theta_0 + \sum_{t=1}^{T} (1-d)\,
        d^{T-t}\, \theta_t \quad (\texttt{debias=False}).

    With ``flax.nnx.Optimizer`` the state's leaves are wrapped in NNX variables: pass
    ``nnx.as_pure(optimizer.opt_state)`` to get plain arrays, e.g. for
    ``nnx.update(model, ema_weights(nnx.as_pure(optimizer.opt_state)))``.

    Args:
      opt_state: any optimizer state holding exactly one :class:`EmaParamsState`.

    Returns:
      The averaged params (the tree given to ``init``), in the average's dtype.

    Raises:
      ValueError: if ``opt_state`` holds no :class:`EmaParamsState` (no ``ema_params`` in
        the chain, or something that is not an optimizer state), or more than one.

    Examples:
      >>> import jax.numpy as jnp, optax
      >>> from jaxtricks.optim import ema_params, ema_weights
      >>> tx = optax.inject_hyperparams(optax.adam)(1e-3)
      >>> tx = optax.chain(tx, ema_params(0.999))
      >>> state = tx.init({"w": jnp.ones(2)})
      >>> ema_weights(state)
      {'w': Array([1., 1.], dtype=float32)}

    References:
      bert4keras, ``apply_ema_weights`` of ``extend_with_exponential_moving_average``.
      https://kexue.fm/archives/7094
    """
    found = [
        node
        for node in jtu.tree_leaves(opt_state, is_leaf=lambda x: isinstance(x, EmaParamsState))
        if isinstance(node, EmaParamsState)
    ]
    if len(found) != 1:
        raise ValueError(
            f"ema_weights: opt_state must hold exactly one ema_params state, found "
            f"{len(found)} in {type(opt_state).__name__}; add "
            "jaxtricks.optim.ema_params(decay) as the last transform."
        )
    return found[0].ema
