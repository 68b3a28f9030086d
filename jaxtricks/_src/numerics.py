"""The one safe norm of the library, normalisation and compute dtypes (private).

``safe_norm`` is exact for every finite input: it divides by the largest magnitude before
squaring, so ``||x||`` of entries near 1e20 (float32) or 1e200 (float64) does not overflow
and entries near the smallest normal do not underflow to 0. At the zero vector it returns 0
with gradient 0 (the double-``where`` form: the square root never sees 0 on either branch).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def compute_dtype(*arrays: jax.typing.ArrayLike) -> jnp.dtype:
    """At least float32 (16-bit inputs compute in float32); float64 when given float64."""
    return jnp.promote_types(jnp.result_type(*arrays, float), jnp.float32)


def safe_norm(
    x: jax.typing.ArrayLike, *, axis: int | tuple[int, ...] = -1, keepdims: bool = False
) -> jax.Array:
    """Euclidean norm of real or complex ``x`` along ``axis``: no overflow, finite gradient at 0.

    The gradient is ``x / ||x||`` where ``x != 0`` and 0 at the zero vector (a subgradient).
    """
    x = jnp.asarray(x)
    mag = jnp.abs(x)
    # The scale only conditions the sum; the result does not depend on it, hence no gradient.
    scale = jax.lax.stop_gradient(jnp.max(mag, axis=axis, keepdims=True))
    nonzero = scale > 0
    safe_scale = jnp.where(nonzero, scale, 1)
    sum_sq = jnp.sum(jnp.square(mag / safe_scale), axis=axis, keepdims=True)
    # sum_sq >= 1 wherever scale > 0, so only the zero vector needs the inner where.
    norm = jnp.where(nonzero, safe_scale * jnp.sqrt(jnp.where(nonzero, sum_sq, 1)), 0)
    return norm if keepdims else jnp.squeeze(norm, axis=axis)


def l2_normalize(
    x: jax.typing.ArrayLike, *, axis: int | tuple[int, ...] = -1, min_norm: float = 0.0
) -> jax.Array:
    """``x / max(||x||, min_norm)`` along ``axis``; the zero vector maps to 0, gradient finite.

    With ``min_norm = 0`` the result is exactly unit-norm for every nonzero finite ``x``.
    """
    x = jnp.asarray(x)
    norm = safe_norm(x, axis=axis, keepdims=True)
    denom = jnp.maximum(norm, jnp.asarray(min_norm, norm.dtype))
    nonzero = denom > 0
    return jnp.where(nonzero, x / jnp.where(nonzero, denom, 1), 0).astype(x.dtype)
