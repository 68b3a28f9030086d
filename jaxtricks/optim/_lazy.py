"""Lazy updates: rows of a table whose gradient is zero do not move."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxtricks._src import checks

from . import _validate


def lazy_rows(
    inner: optax.GradientTransformation,
    *,
    mask: Any | Callable[[optax.Params], Any] | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Zeroes ``inner``'s update on every row whose gradient is entirely zero.

    A row is a slice along axis 0 of a leaf with ``ndim >= 2`` (a token's vector in an
    embedding table ``(V, D)``); leaves with ``ndim < 2`` pass through. With :math:`g` the
    incoming gradient and :math:`u` the update ``inner`` computes from it:

    .. math::

        u'_{i\cdot} = u_{i\cdot}\, [\exists j: g_{ij} \ne 0].

    Only the update is masked: ``inner``'s state (e.g. Adam's moments) is updated as
    ``inner`` computes it, zero gradients included, so a row's moments keep decaying while
    it is frozen and its next update uses them. This is bert4keras's lazy optimization;
    TensorFlow Addons' ``LazyAdam`` also freezes the moments of untouched rows, so the two
    differ once a row comes back. Anything ``inner`` adds to the update (e.g. decoupled
    weight decay in ``optax.adamw``) is frozen with the row.

    Args:
      inner: the optimizer (or transform) whose updates are masked.
      mask: which leaves are lazy: a pytree of Python bools with the params' structure, or a
        callable ``params -> pytree of bools`` (e.g. :func:`jaxtricks.optim.name_mask`);
        ``None`` makes every leaf with ``ndim >= 2`` lazy. Leaves where it is False get
        ``inner``'s update unchanged. It decides while tracing, so it cannot be traced.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` whose state is ``inner``'s state
      (extra arguments are passed on to ``inner``).

    Raises:
      TypeError: if ``inner`` is not an optax ``GradientTransformation``; at ``init`` or
        ``update``, if a leaf of the mask is not a bool.
      ValueError: at ``init`` or ``update``, if the mask (or what it returns) does not have
        the params' tree structure, or if ``update`` gets no params for a callable mask.

    Examples:
      >>> import jax.numpy as jnp, optax
      >>> from jaxtricks.optim import lazy_rows
      >>> tx = lazy_rows(optax.sgd(0.1, momentum=0.9))
      >>> table = jnp.ones((3, 2))
      >>> state = tx.init(table)
      >>> _, state = tx.update(jnp.ones((3, 2)), state, table)  # momentum on every row
      >>> grad = jnp.array([[1.0, 0.0], [0.0, 0.0], [0.0, -1.0]])  # row 1 unused now
      >>> updates, state = tx.update(grad, state, table)
      >>> jnp.any(updates != 0, axis=1)  # plain momentum SGD would move row 1 too
      Array([ True, False,  True], dtype=bool)

    References:
      TensorFlow Addons, ``tfa.optimizers.LazyAdam`` (lazy moment updates for sparse
      gradients); Kingma and Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015,
      arXiv:1412.6980. bert4keras, ``extend_with_lazy_optimization``.
      https://kexue.fm/archives/7094
    """
    checks.gradient_transformation("inner", inner, where="lazy_rows")
    inner = optax.with_extra_args_support(inner)

    def mask_for(params, where):
        tree = mask(params) if callable(mask) else mask
        # Exact structure: the mask is zipped leaf by leaf with the updates.
        return _validate.mask_tree("mask", tree, params, prefix=False, where=where)

    def init_fn(params):
        if mask is not None:
            mask_for(params, "lazy_rows.init")
        return inner.init(params)

    def update_fn(updates, state, params=None, **extra_args):
        new_updates, state = inner.update(updates, state, params, **extra_args)
        if mask is None:
            lazy = jax.tree.map(lambda _: True, updates)
        elif callable(mask):
            if params is None:
                raise ValueError("lazy_rows.update: a callable mask needs params, got None.")
            lazy = mask_for(params, "lazy_rows.update")
        else:
            lazy = mask_for(updates, "lazy_rows.update")

        def freeze(u, g, is_lazy):
            if not is_lazy or jnp.ndim(g) < 2:
                return u
            touched = jnp.any(g != 0, axis=tuple(range(1, g.ndim)), keepdims=True)
            return jnp.where(touched, u, jnp.zeros_like(u))

        return jax.tree.map(freeze, new_updates, updates, lazy), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
