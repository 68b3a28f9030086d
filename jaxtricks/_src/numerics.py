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


def _scaled(x: jax.Array, axis) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """``(y, scale, sum_sq, nonzero)`` with ``y = x / scale`` (entries of magnitude <= ~1).

    The division is two multiplications by ``rsqrt(scale)``: XLA:CPU turns ``x / s`` into
    ``x * (1 / s)``, and ``1 / s`` is subnormal (flushed to 0) for ``s`` above ~8.5e37 in
    float32, while ``rsqrt(s)`` and each partial product stay normal. A vector with infinite
    entries has ``scale = inf`` and ``y`` the signs of those entries (its limit direction); a
    NaN entry makes everything NaN. ``sum_sq`` is at least ~1 wherever ``nonzero``; the scale
    carries no gradient (the results do not depend on it).
    """
    x = jnp.asarray(x)
    mag = jnp.abs(x)
    scale = jax.lax.stop_gradient(jnp.max(mag, axis=axis, keepdims=True))
    nonzero = scale != 0  # True for NaN, so NaN propagates
    infinite = jnp.isinf(scale)
    safe_scale = jnp.where(nonzero & ~infinite, scale, 1)
    inv_root = jax.lax.rsqrt(safe_scale)
    y = x * inv_root * inv_root
    y = jnp.where(infinite, jnp.where(jnp.isinf(x), jnp.sign(x), 0), y)
    sum_sq = jnp.sum(jnp.square(jnp.abs(y)), axis=axis, keepdims=True)
    return y, jnp.where(infinite, scale, safe_scale), jnp.where(nonzero, sum_sq, 1), nonzero


def safe_norm(
    x: jax.typing.ArrayLike, *, axis: int | tuple[int, ...] = -1, keepdims: bool = False
) -> jax.Array:
    """Euclidean norm of real or complex ``x`` along ``axis``: no overflow, finite gradient at 0.

    The gradient is ``x / ||x||`` where ``x != 0`` and 0 at the zero vector (a subgradient).
    A norm beyond the dtype's range is ``inf``, as it must be.
    """
    _, scale, sum_sq, nonzero = _scaled(x, axis)
    norm = jnp.where(nonzero, scale * jnp.sqrt(sum_sq), 0)
    return norm if keepdims else jnp.squeeze(norm, axis=axis)


def l2_normalize(
    x: jax.typing.ArrayLike, *, axis: int | tuple[int, ...] = -1, min_norm: float = 0.0
) -> jax.Array:
    """``x / max(||x||, min_norm)`` along ``axis``; the zero vector maps to 0, gradient finite.

    With ``min_norm = 0`` the result is unit-norm for every nonzero finite ``x``, however
    large or small its entries.
    """
    x = jnp.asarray(x)
    y, scale, sum_sq, nonzero = _scaled(x, axis)
    root = jnp.sqrt(sum_sq)
    # Normalise the scaled vector: dividing x itself by a norm near the float range would
    # meet the flushed reciprocal again.
    unit = y / root
    if min_norm > 0:
        below = scale * root < min_norm
        unit = jnp.where(below, x / jnp.asarray(min_norm, unit.dtype), unit)
    return jnp.where(nonzero, unit, 0).astype(x.dtype)
