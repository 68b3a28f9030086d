"""Argument checks shared by the activations (private)."""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp

from jaxtricks._src import checks


def logits(name: str, x: jax.typing.ArrayLike, *, where: str) -> jax.Array:
    """``x`` as an array of real numbers (integer or floating) with at least one axis."""
    x = jnp.asarray(x)
    checks.array_dtype_kind(name, x, ("integer", "floating"), where=where)
    checks.min_ndim(name, x, 1, "(the axis to normalise over)", where=where)
    return x


def axis(x: jax.Array, value: object, *, where: str) -> int:
    """``value`` as a non-negative axis index of ``x``, or a named error."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{where}: axis must be an int, got {value!r}.")
    if not -x.ndim <= value < x.ndim:
        raise ValueError(
            f"{where}: axis must be in [-{x.ndim}, {x.ndim}) for x of shape {x.shape}, got {value}."
        )
    return int(value) % x.ndim


def out_dtype(x: jax.Array) -> jnp.dtype:
    """``x``'s dtype when floating, else float32 (integer logits give float probabilities)."""
    return x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.dtype(jnp.float32)
