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


def _pow2_exponent(peak: jax.Array) -> jax.Array:
    """``e`` with ``peak / 2^e`` in [0.5, 4), clipped so that ``2^e`` and ``2^-e`` are normal."""
    finfo = jnp.finfo(peak.dtype)
    _, exponent = jnp.frexp(peak)  # peak = m 2^e, m in [0.5, 1)
    return jnp.clip(exponent, finfo.minexp + 1, finfo.maxexp - 2)


def inverse_pow2_scale(peak: jax.typing.ArrayLike) -> jax.Array:
    """A power of two ``s`` with ``peak * s`` in [0.5, 4), normal and exact (1 for 0, inf, NaN).

    Multiplying by an exact power of two changes no digit, so it keeps squares of values near
    the float range from overflowing (or underflowing) at no cost in accuracy. Dividing by
    ``peak`` would not do: XLA turns ``x / c`` into ``x * (1 / c)``, and ``1 / c`` is
    subnormal, flushed to 0, for ``c`` above ~8.5e37 in float32. No gradient flows through it.
    """
    peak = jnp.asarray(peak)
    ok = jnp.isfinite(peak) & (peak != 0)
    exponent = _pow2_exponent(jnp.where(ok, peak, 1))
    return jax.lax.stop_gradient(jnp.ldexp(jnp.ones((), peak.dtype), -exponent))


def _scaled(x: jax.Array, axis) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """``(y, scale, sum_sq, nonzero)`` with ``y = x / scale`` exactly (entries below ~4).

    ``scale`` is a power of two near the largest magnitude, so the scaling changes no digit
    and ``sum_sq`` neither overflows nor underflows. A vector with infinite entries has
    ``scale = inf`` and ``y`` the signs of those entries (its limit direction); a NaN entry
    makes everything NaN. ``sum_sq`` is at least ~0.25 wherever ``nonzero``; the scale carries
    no gradient (the results do not depend on it).
    """
    x = jnp.asarray(x)
    mag = jnp.abs(x)
    peak = jax.lax.stop_gradient(jnp.max(mag, axis=axis, keepdims=True))
    nonzero = peak != 0  # True for NaN, so NaN propagates
    infinite = jnp.isinf(peak)
    exponent = _pow2_exponent(jnp.where(nonzero & ~infinite, peak, 1))
    one = jnp.ones((), mag.dtype)
    y = x * jnp.ldexp(one, -exponent).astype(x.dtype)
    y = jnp.where(infinite, jnp.where(jnp.isinf(x), jnp.sign(x), 0), y)
    sum_sq = jnp.sum(jnp.square(jnp.abs(y)), axis=axis, keepdims=True)
    scale = jnp.where(infinite, peak, jnp.ldexp(one, exponent))
    return y, scale, jnp.where(nonzero, sum_sq, 1), nonzero


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
    # min_norm may be traced (a module's eps): one where, whose untaken branch divides by 1.
    floor = jnp.asarray(min_norm, unit.real.dtype)
    below = scale * root < floor
    unit = jnp.where(below, x / jnp.where(below, floor, 1), unit)
    return jnp.where(nonzero, unit, 0).astype(x.dtype)
