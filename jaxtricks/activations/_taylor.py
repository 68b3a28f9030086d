"""Taylor softmax: softmax with exp replaced by its even-order Taylor polynomial.

:math:`f_n(x) = \\sum_{k=0}^n x^k/k!` is positive on the whole real line when :math:`n` is
even: at a stationary point :math:`f_n' = f_{n-1} = 0`, so :math:`f_n = x^n/n! > 0` there, and
the minimum is a stationary point. Normalising :math:`f_n` over classes therefore gives a
probability vector. Unlike softmax it is not invariant to a shift of the inputs, so the usual
max-subtraction is wrong here; large inputs are instead handled by working with
:math:`\\log f_n`, which grows only like :math:`n \\log|x|`. Since :math:`f_n(x) \\to +\\infty`
as :math:`x \\to \\pm\\infty`, a ``-inf`` logit does not mask its entry: it takes the mass.
"""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from . import _checks


def _check_order(order: object, where: str) -> int:
    if isinstance(order, (bool, np.bool_)) or not isinstance(order, numbers.Integral):
        raise TypeError(
            f"{where}: order must be a static Python int, got {order!r} of type "
            f"{type(order).__name__}."
        )
    if order < 2 or order % 2:
        raise ValueError(
            f"{where}: order must be an even integer >= 2 (odd-order Taylor polynomials of exp "
            f"take negative values), got {order}."
        )
    return int(order)


def _log_weights(x: jax.typing.ArrayLike, order: object, axis: object, where: str):
    """Checked arguments and the logits of the Taylor softmax, :math:`\\log f_n(x)`, in the
    compute dtype, with rows holding an infinite logit replaced by their limit.

    :math:`\\log f_n(\\pm\\infty) = +\\infty`, and a softmax over a row holding ``+inf`` is
    NaN. Along :math:`x_i = \\pm t` (for the infinite entries), :math:`t \\to \\infty`, the
    infinite entries share the mass equally and the finite ones get 0: those rows become 0 at
    the infinite entries and -inf elsewhere, which the softmax maps to exactly that.
    """
    order = _check_order(order, where)
    x = _checks.logits("x", x, where=where)
    axis = _checks.axis(x, axis, where=where)
    log_f = _log_taylor_exp(x, order)
    infinite = jnp.isinf(log_f)  # +inf only: log f_n >= log min f_n > -inf
    saturated = jnp.any(infinite, axis=axis, keepdims=True)
    # (a NaN stays NaN, so that the row's result is NaN)
    limit = jnp.where(infinite, 0.0, jnp.where(jnp.isnan(log_f), log_f, -jnp.inf))
    log_f = jnp.where(saturated, limit, log_f)
    return x, axis, log_f


def _log_taylor_exp(x: jax.Array, order: int) -> jax.Array:
    """:math:`\\log f_n(x)` elementwise, in float32 or wider (``x``'s dtype if wider).

    For :math:`|x| \\le n` the nested form :math:`1 + x(1 + \\tfrac{x}{2}(1 + \\dots(1 +
    \\tfrac{x}{n})))` is evaluated directly: it stays below :math:`e^n`. Beyond, the leading
    term is factored out, :math:`f_n(x) = \\tfrac{x^n}{n!}\\sum_j \\tfrac{n!}{(n-j)!} x^{-j}`,
    whose sum lies in :math:`(0, n+1]` there, so nothing overflows for any finite ``x``.
    """
    dtype = jnp.promote_types(x.dtype, jnp.float32)
    x = x.astype(dtype)
    near = jnp.abs(x) <= order
    # Each branch gets a harmless input where the other is used, so that neither produces
    # inf or NaN values or gradients that the final `where` would have to mask.
    x_near = jnp.where(near, x, 0.0)
    x_far = jnp.where(near, 2.0 * order, x)

    acc = jnp.ones_like(x)
    for k in range(order, 0, -1):
        acc = 1.0 + (x_near / k) * acc
    log_near = jnp.log(acc)

    y = 1.0 / x_far
    acc = jnp.ones_like(x)
    for i in range(1, order + 1):
        acc = 1.0 + (i * y) * acc
    log_far = order * jnp.log(jnp.abs(x_far)) - math.lgamma(order + 1) + jnp.log(acc)
    return jnp.where(near, log_near, log_far)


def log_taylor_softmax(x: jax.typing.ArrayLike, *, order: int = 2, axis: int = -1) -> jax.Array:
    r"""Log of the Taylor softmax: exp replaced by its ``order``-th Taylor polynomial.

    .. math::

        f_n(x) = \sum_{k=0}^{n} \frac{x^k}{k!}, \qquad
        \log p_i = \log f_n(x_i) - \operatorname{logsumexp}_j \log f_n(x_j)

    For even :math:`n`, :math:`f_n > 0` everywhere: its minimum sits where
    :math:`f_{n-1}(x) = 0` and equals :math:`x^n/n!` there (0.5 at :math:`x=-1` for
    :math:`n=2`). The map is **not** shift-invariant (:math:`f_n(x+c) \ne e^c f_n(x)`), so the
    inputs are never shifted by their maximum; instead :math:`\log f_n` is computed without
    forming :math:`f_n` where it is large, so inputs of any finite magnitude (1e4 in bfloat16,
    1e30 in float32) give finite results. Large inputs win only polynomially:
    :math:`p_i/p_j \to (x_i/x_j)^n`. The computation runs in float32 (float64 for float64
    inputs) and is cast back to ``x``'s dtype. In float32, the error of :math:`\log f_n` (absolute,
    or relative where :math:`|\log f_n| > 1`) is about 1e-6 for ``order`` up to 6 and 5e-6
    for ``order=10``; higher orders lose accuracy near the negative minimum, where the
    alternating sum cancels (6e-4 for ``order=20``): use float64 there.

    **Infinite logits.** :math:`f_n(x) \to +\infty` as :math:`x \to +\infty` *and* as
    :math:`x \to -\infty` (the leading term :math:`x^n/n!` has an even power), so ``-inf``
    does **not** mask an entry, unlike in a softmax: it takes the mass. A row holding ``m >= 1``
    infinite logits (of either sign) gives :math:`\log p = -\log m` at those entries and
    ``-inf`` at the finite ones, the limit along :math:`x_i = \pm t`, :math:`t \to \infty`
    (all infinite entries growing alike); a row of all-infinite logits is uniform, as is a
    row of equal values. Such rows have zero gradient. To mask classes, drop them from ``x``.
    NaN gives NaN.

    Args:
      x: logits of any shape with at least one axis, integer or floating dtype.
      order: the degree :math:`n` of the Taylor polynomial, a static even Python int >= 2.
      axis: the axis to normalise over, a Python int.

    Returns:
      :math:`\log p` with ``x``'s shape and dtype (float32 for integer ``x``); ``exp`` of
      it sums to 1 along ``axis``.

    Raises:
      TypeError: if ``order`` or ``axis`` is not an int, or ``x`` is bool or complex.
      ValueError: if ``order`` is odd or below 2 (:math:`f_n` then takes negative values),
        ``x`` is a scalar, or ``axis`` is out of range.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxtricks.activations import log_taylor_softmax
      >>> # f_2(0) = 1, f_2(-1) = 0.5, f_2(2) = 5: probabilities 1/6.5, 0.5/6.5, 5/6.5
      >>> logp = log_taylor_softmax(jnp.array([0.0, -1.0, 2.0]))
      >>> [round(float(v), 4) for v in jnp.exp(logp)]
      [0.1538, 0.0769, 0.7692]
      >>> # finite for huge logits, where f_2 itself would overflow float32
      >>> bool(jnp.isfinite(log_taylor_softmax(jnp.array([1e30, -1e30, 0.0]))).all())
      True

    References:
      Alexandre de Brébisson, Pascal Vincent, "An Exploration of Softmax Alternatives
      Belonging to the Spherical Loss Family", ICLR 2016, arXiv:1511.05042.
      Kunal Banerjee et al., "Exploring Alternatives to Softmax Function", 2020,
      arXiv:2011.11538.
      Su Jianlin, "exp(x)的偶次泰勒展开式总是正的", https://kexue.fm/archives/7919
    """
    x, axis, log_f = _log_weights(x, order, axis, "log_taylor_softmax")
    return jax.nn.log_softmax(log_f, axis=axis).astype(_checks.out_dtype(x))


def taylor_softmax(x: jax.typing.ArrayLike, *, order: int = 2, axis: int = -1) -> jax.Array:
    r"""Taylor softmax: softmax with exp replaced by its ``order``-th Taylor polynomial.

    .. math::

        f_n(x) = \sum_{k=0}^{n} \frac{x^k}{k!}, \qquad
        p_i = \frac{f_n(x_i)}{\sum_j f_n(x_j)}

    :math:`f_n > 0` for even :math:`n`, so :math:`p` is a probability vector with no zero
    entries. It is **not** shift-invariant, and it is computed as the softmax of
    :math:`\log f_n(x)`, stable for inputs of any finite magnitude; see
    :func:`log_taylor_softmax` for the numerics and accuracy. Computed in float32 (float64
    for float64 inputs) and cast back to ``x``'s dtype.

    Infinite logits of either sign take the mass, since :math:`f_n(\pm\infty) = +\infty`: a
    row holding ``m >= 1`` of them gives :math:`1/m` to each and 0 to the finite entries (with
    zero gradient), so ``-inf`` does not mask an entry; see :func:`log_taylor_softmax`.

    Args:
      x: logits of any shape with at least one axis, integer or floating dtype.
      order: the degree :math:`n` of the Taylor polynomial, a static even Python int >= 2.
      axis: the axis to normalise over, a Python int.

    Returns:
      Probabilities :math:`p` with ``x``'s shape and dtype (float32 for integer ``x``),
      positive for finite rows (barring underflow) and summing to 1 along ``axis``.

    Raises:
      TypeError: if ``order`` or ``axis`` is not an int, or ``x`` is bool or complex.
      ValueError: if ``order`` is odd or below 2 (:math:`f_n` then takes negative values),
        ``x`` is a scalar, or ``axis`` is out of range.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxtricks.activations import taylor_softmax
      >>> # f_2(0) = 1, f_2(-1) = 0.5, f_2(2) = 5: probabilities 1/6.5, 0.5/6.5, 5/6.5
      >>> p = taylor_softmax(jnp.array([0.0, -1.0, 2.0]))
      >>> [round(float(v), 4) for v in p]
      [0.1538, 0.0769, 0.7692]
      >>> # not shift-invariant, unlike jax.nn.softmax
      >>> [round(float(v), 4) for v in taylor_softmax(jnp.array([0.0, -1.0, 2.0]) + 3.0)]
      [0.2656, 0.1562, 0.5781]
      >>> # -inf does not mask: f_2(-inf) = +inf, the two infinite entries share the mass
      >>> [float(v) for v in taylor_softmax(jnp.array([-jnp.inf, 0.0, jnp.inf]))]
      [0.5, 0.0, 0.5]

    References:
      Alexandre de Brébisson, Pascal Vincent, "An Exploration of Softmax Alternatives
      Belonging to the Spherical Loss Family", ICLR 2016, arXiv:1511.05042.
      Kunal Banerjee et al., "Exploring Alternatives to Softmax Function", 2020,
      arXiv:2011.11538.
      Su Jianlin, "exp(x)的偶次泰勒展开式总是正的", https://kexue.fm/archives/7919
    """
    x, axis, log_f = _log_weights(x, order, axis, "taylor_softmax")
    return jax.nn.softmax(log_f, axis=axis).astype(_checks.out_dtype(x))
