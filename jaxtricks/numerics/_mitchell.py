"""Mitchell's logarithmic multiplication and division on float32 bit patterns.

A positive normal float32 :math:`2^n (1 + x)` has the bit pattern :math:`(n + 127) 2^{23} + x
2^{23}`, which read as an integer is :math:`2^{23}` times Mitchell's approximate logarithm
:math:`n + x \\approx \\log_2 (2^n (1 + x))` plus a constant. Adding two patterns and
subtracting the pattern of 1.0 (``0x3F800000``) therefore adds the approximate logarithms and
reads the sum back through the approximate exponential: a multiplication done by one integer
addition. Subtracting patterns divides.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxtricks._src import checks

_SIGN = np.uint32(0x80000000)
_MAGNITUDE = np.uint32(0x7FFFFFFF)
_INF = np.uint32(0x7F800000)
_QUIET_NAN = np.uint32(0x7FC00000)
_SMALLEST_NORMAL = np.uint32(0x00800000)
_MANTISSA = np.uint32(0x007FFFFF)
_MANTISSA_BITS = 23
_ONE = 1 << _MANTISSA_BITS  # the implicit leading 1 of the significand
_BIAS = 127
_MAX_EXPONENT = 254  # largest biased exponent of a finite float32


def _mitchell(a: jax.typing.ArrayLike, b: jax.typing.ArrayLike, *, divide: bool) -> jax.Array:
    a, b = jnp.asarray(a), jnp.asarray(b)
    for name, v in (("a", a), ("b", b)):
        checks.array_dtype_kind(name, v, ("floating",))
    try:
        np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(
            f"a and b must broadcast together, got a of shape {a.shape} and b of shape {b.shape}."
        ) from None
    out_dtype = jnp.result_type(a, b)
    ua = jax.lax.bitcast_convert_type(a.astype(jnp.float32), jnp.uint32)
    ub = jax.lax.bitcast_convert_type(b.astype(jnp.float32), jnp.uint32)
    ua, ub = jnp.broadcast_arrays(ua, ub)
    sign = (ua ^ ub) & _SIGN
    mag_a, mag_b = ua & _MAGNITUDE, ub & _MAGNITUDE
    nan_a, nan_b = mag_a > _INF, mag_b > _INF
    inf_a, inf_b = mag_a == _INF, mag_b == _INF
    # Subnormals count as zeros (flush to zero on input).
    zero_a, zero_b = mag_a < _SMALLEST_NORMAL, mag_b < _SMALLEST_NORMAL

    # Exponent and mantissa fields added separately, with the carry (borrow) from the
    # mantissa into the exponent: the same as adding the whole patterns as integers, without
    # overflowing int32.
    e_a = (mag_a >> _MANTISSA_BITS).astype(jnp.int32)
    e_b = (mag_b >> _MANTISSA_BITS).astype(jnp.int32)
    m_a = (mag_a & _MANTISSA).astype(jnp.int32)
    m_b = (mag_b & _MANTISSA).astype(jnp.int32)
    if divide:
        exponent, mantissa = e_a - e_b + _BIAS, m_a - m_b
        borrow = (mantissa < 0).astype(jnp.int32)
        exponent, mantissa = exponent - borrow, mantissa + borrow * _ONE
        nan = nan_a | nan_b | (zero_a & zero_b) | (inf_a & inf_b)
        special_inf, special_zero = inf_a | zero_b, zero_a | inf_b
    else:
        exponent, mantissa = e_a + e_b - _BIAS, m_a + m_b
        carry = (mantissa >= _ONE).astype(jnp.int32)
        exponent, mantissa = exponent + carry, mantissa - carry * _ONE
        nan = nan_a | nan_b | (inf_a & zero_b) | (zero_a & inf_b)
        special_inf, special_zero = inf_a | inf_b, zero_a | zero_b

    normal = (jnp.clip(exponent, 0, 255).astype(jnp.uint32) << _MANTISSA_BITS) | mantissa.astype(
        jnp.uint32
    )
    # Priority: NaN, then exact special values, then overflow to inf and underflow to zero.
    magnitude = jnp.where(
        special_inf | (~special_zero & (exponent > _MAX_EXPONENT)),
        _INF,
        jnp.where(special_zero | (exponent < 1), np.uint32(0), normal),
    )
    bits = jnp.where(nan, _QUIET_NAN, sign | magnitude)
    return jax.lax.bitcast_convert_type(bits, jnp.float32).astype(out_dtype)


def mitchell_multiply(a: jax.typing.ArrayLike, b: jax.typing.ArrayLike) -> jax.Array:
    r"""Mitchell's approximate product :math:`a b` by one integer addition of float32 bits.

    For positive normal inputs :math:`a = 2^{n_1}(1 + x_1)`, :math:`b = 2^{n_2}(1 + x_2)` with
    :math:`x_i \in [0, 1)`, with :math:`\mathrm{bits}(\cdot)` the float32 bit pattern read as
    an unsigned integer:

    .. math::

        \mathrm{bits}(\widetilde{ab}) = \mathrm{bits}(a) + \mathrm{bits}(b)
            - \mathtt{0x3F800000}, \qquad
        \widetilde{ab} = \begin{cases}
            2^{n_1 + n_2} (1 + x_1 + x_2) & x_1 + x_2 < 1 \\
            2^{n_1 + n_2 + 1} (x_1 + x_2) & x_1 + x_2 \ge 1
        \end{cases}

    The approximation never exceeds the exact product and its relative error
    :math:`(ab - \widetilde{ab}) / ab` lies in :math:`[0, 1/9]`, the maximum at
    :math:`x_1 = x_2 = \tfrac12` (e.g. :math:`1.5 \times 1.5 \to 2`).

    The sign is the exclusive or of the input signs; zeros, infinities and NaN follow IEEE 754
    exactly. Subnormal float32 inputs are treated as zeros of their sign, results below the
    smallest normal float32 (:math:`2^{-126}`) are flushed to zero and results above the
    largest finite one overflow to infinity (flush-to-zero, as on most accelerators). Other
    dtypes are converted to float32, computed there and cast back to the promoted input dtype:
    for normal bfloat16 and float16 inputs the result is Mitchell's method on their own bits
    (the mantissa sum stays exactly representable) except where it leaves their range; float64
    inputs get a float32-precision approximation. Bit manipulations have no derivative: JAX
    differentiates the result as a constant (zero gradient); for training, use a
    straight-through form such as
    ``a * b + jax.lax.stop_gradient(mitchell_multiply(a, b) - a * b)``.

    Args:
      a: floating array.
      b: floating array, broadcastable with ``a``.

    Returns:
      The broadcast shape, in the promoted dtype of ``a`` and ``b``.

    Raises:
      TypeError: if ``a`` or ``b`` is not floating (integer, boolean and complex inputs are
        refused; bfloat16, float16 and float64 are cast as described above).
      ValueError: if the shapes of ``a`` and ``b`` do not broadcast.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxtricks.numerics import mitchell_multiply
      >>> print(mitchell_multiply(12.3, 4.56))  # exact: 56.088
      53.68...
      >>> print(mitchell_multiply(jnp.array([1.5, -3.0, 0.0, jnp.inf]), 1.5))
      [ 2.  -4.   0.  inf]

    References:
      John N. Mitchell, "Computer Multiplication and Division Using Binary Logarithms", IRE
      Transactions on Electronic Computers EC-11(4), 1962.
      Su Jianlin, "Mitchell近似：乘法变为加法，误差不超过1/9",
      https://kexue.fm/archives/7991
    """
    return _mitchell(a, b, divide=False)


def mitchell_divide(a: jax.typing.ArrayLike, b: jax.typing.ArrayLike) -> jax.Array:
    r"""Mitchell's approximate quotient :math:`a / b` by one integer subtraction of float32 bits.

    With the notation of :func:`mitchell_multiply`:

    .. math::

        \mathrm{bits}(\widetilde{a/b}) = \mathrm{bits}(a) - \mathrm{bits}(b)
            + \mathtt{0x3F800000}, \qquad
        \widetilde{a/b} = \begin{cases}
            2^{n_1 - n_2} (1 + x_1 - x_2) & x_1 \ge x_2 \\
            2^{n_1 - n_2 - 1} (2 + x_1 - x_2) & x_1 < x_2
        \end{cases}

    The approximation never falls below the exact quotient and its relative error
    :math:`(\widetilde{a/b} - a/b) / (a/b)` lies in :math:`[0, 1/8]`, the maximum at
    :math:`x_1 = 0, x_2 = \tfrac12` (e.g. :math:`1 / 1.5 \to 0.75`). Division by zero gives a
    signed infinity, :math:`0/0` and :math:`\infty/\infty` give NaN. Other special values,
    subnormals, dtypes and gradients: as in :func:`mitchell_multiply`.

    Args:
      a: floating array, the dividend.
      b: floating array broadcastable with ``a``, the divisor.

    Returns:
      The broadcast shape, in the promoted dtype of ``a`` and ``b``.

    Raises:
      TypeError: if ``a`` or ``b`` is not floating.
      ValueError: if the shapes of ``a`` and ``b`` do not broadcast.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxtricks.numerics import mitchell_divide
      >>> print(mitchell_divide(jnp.array([1.0, 6.0, -1.0, 0.0]), jnp.array([1.5, 2.0, 0.0, 0.0])))
      [0.75 3. -inf nan]

    References:
      John N. Mitchell, "Computer Multiplication and Division Using Binary Logarithms", IRE
      Transactions on Electronic Computers EC-11(4), 1962.
      Su Jianlin, "Mitchell近似：乘法变为加法，误差不超过1/9",
      https://kexue.fm/archives/7991
    """
    return _mitchell(a, b, divide=True)
