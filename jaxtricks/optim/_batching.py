"""Splitting a batch pytree into slices along its leading axis, and putting it back.

Slice ``i`` holds rows ``i, i + n, i + 2n, …`` (strided), not a contiguous block. When the
batch is sharded over a data axis of a mesh, every slice then keeps rows on every device,
so a ``lax.scan`` over slices keeps all devices busy; contiguous blocks would put each
slice on a subset of the devices. Sums over all rows do not depend on the split.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import tree_util as jtu


def leading_size(tree, name: str) -> int:
    """The common leading-axis size of every leaf of ``tree``."""
    leaves = jtu.tree_leaves_with_path(tree)
    if not leaves:
        raise ValueError(f"{name} has no array leaves.")
    sizes = {}
    for path, leaf in leaves:
        if jnp.ndim(leaf) == 0:
            raise ValueError(
                f"{name}{jtu.keystr(path)} is a scalar; every leaf needs a leading batch axis."
            )
        sizes[jtu.keystr(path)] = jnp.shape(leaf)[0]
    if len(set(sizes.values())) != 1:
        raise ValueError(f"Leaves of {name} disagree on the leading (batch) axis: {sizes}.")
    return next(iter(sizes.values()))


def split_slices(tree, num_slices: int, name: str, arg_name: str):
    """Reshapes every leaf ``(B, ...)`` of ``tree`` to ``(num_slices, B // num_slices, ...)``.

    Slice ``i`` holds rows ``i, i + num_slices, …`` (see the module docstring).

    Raises:
      ValueError: if ``B`` is not divisible by ``num_slices``; the message names
        ``arg_name`` and both numbers.
    """
    size = leading_size(tree, name)
    if size % num_slices:
        raise ValueError(
            f"The leading axis of {name} ({size}) must be divisible by {arg_name}={num_slices}."
        )

    def split(x):
        x = jnp.asarray(x)
        x = x.reshape((size // num_slices, num_slices) + x.shape[1:])
        return jnp.swapaxes(x, 0, 1)

    return jax.tree.map(split, tree)


def merge_slices(tree):
    """Inverse of :func:`split_slices`: ``(n, B // n, ...)`` back to ``(B, ...)``."""

    def merge(x):
        x = jnp.swapaxes(x, 0, 1)
        return x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:])

    return jax.tree.map(merge, tree)
