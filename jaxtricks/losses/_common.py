"""Checks and numerics shared by the losses (private): labels, logits, limits, empty means."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxtricks._src import checks


def real_array(
    name: str, x: jax.typing.ArrayLike, *, where: str, kinds=("integer", "floating")
) -> jax.Array:
    """``x`` as an array whose dtype is one of ``kinds`` (bool and complex refused by default)."""
    x = jnp.asarray(x)
    checks.array_dtype_kind(name, x, kinds, where=where)
    return x


def logits(name: str, x: jax.typing.ArrayLike, *, where: str) -> jax.Array:
    """``x`` as real logits with a class axis, shape ``(..., K)``."""
    x = real_array(name, x, where=where)
    checks.min_ndim(name, x, 1, "(a class axis, shape (..., K))", where=where)
    return x


def integer_labels(
    logits: jax.Array,
    labels: jax.typing.ArrayLike,
    *,
    where: str,
    name: str = "labels",
    logits_name: str = "logits",
) -> tuple[jax.Array, jax.Array]:
    """Validates ``labels`` against ``logits`` (..., K); returns (safe labels, valid mask).

    Concrete labels out of ``[0, K)`` raise; traced ones cannot be inspected, so they are
    reported through ``valid`` (the caller returns its documented value there). ``safe``
    replaces invalid labels by 0 so that gathers stay in bounds.
    """
    num_classes = logits.shape[-1]
    checks.array_dtype_kind(name, labels, ("integer",), where=where)
    labels = labels if checks.is_traced(labels) else np.asarray(labels)
    expected = logits.shape[:-1]
    if labels.shape != expected:
        raise ValueError(
            f"{where}: {name} must have shape {logits_name}.shape[:-1] = {expected}, "
            f"got {labels.shape}."
        )
    host = checks.concrete(labels)
    if host is not None and host.size and (host.min() < 0 or host.max() >= num_classes):
        bad = host[(host < 0) | (host >= num_classes)]
        raise ValueError(
            f"{where}: {name} must lie in [0, {num_classes}) ({logits_name}.shape[-1] = "
            f"{num_classes}), got out-of-range values such as {bad.flat[0]}."
        )
    labels = jnp.asarray(labels)
    valid = (labels >= 0) & (labels < num_classes)
    return jnp.where(valid, labels, 0), valid


def loss_dtype(x: jax.Array) -> jnp.dtype:
    """``x``'s dtype when floating, else float32."""
    return x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.dtype("float32")


def saturate(z: jax.Array, axis: int = -1, top: jax.Array | None = None) -> jax.Array:
    """Rows of ``z`` whose largest entry is infinite, replaced by their softmax limit.

    Such a row becomes 0 at the entries equal to its maximum and -inf elsewhere: a softmax
    then shares the mass equally among the ``+inf`` entries (or, for an all ``-inf`` row,
    among all entries), the limit of equal-rate growth, instead of NaN from ``inf - inf``.
    Rows with a finite maximum (and NaN rows) are unchanged; the replaced rows are
    constants, so their gradient is 0.
    """
    if top is None:  # the row maximum; callers pass it when z holds part of a row (top k)
        top = jnp.max(z, axis=axis, keepdims=True, initial=-jnp.inf)  # empty rows too
    infinite = jnp.isinf(top)
    limit = jnp.where(z == top, 0.0, -jnp.inf).astype(z.dtype)
    return jnp.where(infinite, limit, z)


def cross_entropy(z: jax.Array, labels: jax.Array) -> jax.Array:
    """``logsumexp(z) - z[label]`` over the last axis, at its limit where ``z`` is infinite.

    ``-inf`` entries are masked classes; a ``-inf`` target gives ``+inf``; a row whose largest
    entry is ``+inf`` gives ``log m`` when the target is one of its ``m`` ``+inf`` entries and
    ``+inf`` otherwise; an all ``-inf`` row gives ``log K``. Never NaN for non-NaN input.
    """
    z = saturate(z)
    target = jnp.take_along_axis(z, labels[..., None], axis=-1)[..., 0]
    return jax.nn.logsumexp(z, axis=-1) - target


def mean_or_zero(x: jax.Array, axis=None) -> jax.Array:
    """The mean of ``x`` over ``axis``, 0 (not NaN) over an empty axis."""
    count = np.prod([x.shape[a] for a in np.atleast_1d(axis)]) if axis is not None else x.size
    return jnp.sum(x, axis=axis) / max(int(count), 1)
