"""Orthogonal matrices that carry one unit vector onto another.

All three maps of the post are built from one unit vector :math:`u` and a reflection
:math:`I - 2uu^\\top`: Householder reflects along :math:`u \\propto a - b`; the rotation reflects
``a`` onto ``-b`` along :math:`u \\propto a + b` and then reflects ``-b`` onto ``b``; the symmetric
map is minus the reflection along :math:`u \\propto a + b`. When :math:`a - b` (resp.
:math:`a + b`) vanishes, any :math:`u \\perp a` works; one is picked deterministically.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxtricks._src import checks
from jaxtricks._src.numerics import l2_normalize

_KINDS = ("householder", "rotation", "symmetric")


def _direction(v: jax.Array) -> jax.Array:
    """``v / ||v||``, 0 for ``v = 0``; with infinite entries, the limit: their signs, normalised."""
    infinite = jnp.isinf(v)
    v = jnp.where(jnp.any(infinite), jnp.where(infinite, jnp.sign(v), 0), v)
    return l2_normalize(v)


def _unit_or_perpendicular(v: jax.Array, a: jax.Array) -> jax.Array:
    """``v / ||v||``, or a unit vector orthogonal to the unit ``a`` when ``v`` is negligible.

    ``v`` is ``a - b`` or ``a + b``. With norms off by rounding (``| ||a||² - ||b||² | ≈ eps``),
    reflecting along ``v`` misses ``b`` by about ``eps / ||v||``, while ``u ⟂ a`` misses it by
    ``||v||``: switching at ``||v||² = eps`` bounds the error by about ``sqrt(eps)``.
    """
    # The coordinate where a is smallest gives e_k - a_k a, of norm sqrt(1 - a_k^2) >= sqrt(1/2).
    k = jnp.argmin(jnp.abs(a))
    perpendicular = l2_normalize(jax.nn.one_hot(k, a.shape[0], dtype=a.dtype) - a[k] * a)
    negligible = jnp.sum(v * v) <= jnp.finfo(v.dtype).eps  # |v| <= 2: no overflow
    return jnp.where(negligible, perpendicular, l2_normalize(v))


def orthogonal_map(
    a: jax.typing.ArrayLike, b: jax.typing.ArrayLike, *, kind: str = "householder"
) -> jax.Array:
    r"""An orthogonal matrix :math:`T` with :math:`T a = b` for unit vectors :math:`a, b`.

    .. math::

        \text{householder:}\quad & T = I - 2uu^\top, \quad u = \frac{a - b}{\|a - b\|},
            \quad \det T = -1 \\
        \text{rotation:}\quad & T = I + 2ba^\top - \frac{(a + b)(a + b)^\top}{1 + a^\top b},
            \quad \det T = +1 \\
        \text{symmetric:}\quad & T = \frac{(a + b)(a + b)^\top}{1 + a^\top b} - I,
            \quad \det T = (-1)^{D + 1}

    Householder is the reflection in the hyperplane bisecting :math:`a` and :math:`b`; it is
    symmetric, so it also maps :math:`b` to :math:`a`. The rotation turns :math:`a` to
    :math:`b` in their plane and fixes its orthogonal complement. The symmetric map (the
    post's preferred answer) also swaps :math:`a` and :math:`b`. Since
    :math:`1 + a^\top b = \|a + b\|^2 / 2`, the fractions are computed as :math:`2uu^\top` with
    :math:`u = (a + b)/\|a + b\|`, which has no cancellation when :math:`b \approx -a`, and the
    rotation as the product :math:`(I - 2bb^\top)(I - 2uu^\top)` (reflect :math:`a` to
    :math:`-b`, then :math:`-b` to :math:`b`), equal to the formula above and orthogonal to
    rounding error however close :math:`b` is to :math:`-a`.

    Degenerate pairs are handled, not rejected: for ``"householder"`` with :math:`a = b` the
    result is a reflection :math:`I - 2uu^\top` with :math:`u \perp a` (it fixes :math:`a`,
    :math:`\det = -1`); for ``"rotation"`` with :math:`a = -b` it is the rotation by
    :math:`\pi` in the plane of :math:`a` and such a :math:`u` (:math:`\det = +1`); for
    ``"symmetric"`` with :math:`a = -b` it is :math:`2uu^\top - I` with :math:`u \perp a`.
    Here :math:`u = (e_k - a_k a)/\|e_k - a_k a\|` with :math:`k` the coordinate where
    :math:`|a_k|` is smallest, and "equal" means :math:`\|a \mp b\|^2 \le` the dtype's
    machine epsilon. Near these pairs :math:`T a = b` holds to about
    :math:`\sqrt{\text{eps}}` (3e-4 in float32), elsewhere to a few eps.

    Inputs need not have unit norm: both are normalised first (by the scaled safe norm, so
    any finite scale works), so :math:`T a = (\|a\| / \|b\|)\, b` points along :math:`b`.
    An input with infinite entries points along their signs (the limit of the normalisation;
    its finite entries count as 0). A zero input has no direction: a concrete one is an
    error; a traced one (under ``jit``/``vmap``) cannot be checked and is taken as the zero
    vector, so the result is still orthogonal (finite) but maps nothing in particular.

    Args:
      a: ``(D,)`` floating, ``D >= 2``, nonzero; ``vmap`` for many pairs.
      b: ``(D,)`` floating, nonzero.
      kind: ``"householder"`` (default), ``"rotation"`` or ``"symmetric"``.

    Returns:
      ``(D, D)`` orthogonal matrix in the promoted dtype of ``a`` and ``b`` (bf16 and float16
      are computed in float32).

    Raises:
      ValueError: if ``kind`` is unknown, ``a`` and ``b`` are not 1-D of the same length,
        ``D < 2``, or a concrete ``a`` or ``b`` is the zero vector.
      TypeError: if ``a`` or ``b`` is not floating (integer, boolean or complex).

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxtricks.numerics import orthogonal_map
      >>> a, b = jnp.array([1.0, 0.0, 0.0]), jnp.array([0.0, 1.0, 0.0])
      >>> print(orthogonal_map(a, b).round(6))  # swaps the first two axes
      [[0. 1. 0.]
       [1. 0. 0.]
       [0. 0. 1.]]
      >>> t = orthogonal_map(a, b, kind="rotation")  # quarter turn: a -> b -> -a
      >>> print(jnp.allclose(t @ a, b, atol=1e-6), jnp.allclose(t @ b, -a, atol=1e-6))
      True True
      >>> print(f"{float(jnp.linalg.det(t)):.4f}")
      1.0000
      >>> t = orthogonal_map(a, b, kind="symmetric")
      >>> print(jnp.allclose(t @ a, b, atol=1e-6), jnp.allclose(t @ b, a, atol=1e-6))
      True True

    References:
      Alston S. Householder, "Unitary Triangularization of a Nonsymmetric Matrix", Journal of
      the ACM 5(4), 1958.
      Su Jianlin, "从一个单位向量变换到另一个单位向量的正交矩阵",
      https://kexue.fm/archives/8453
    """
    checks.choice("kind", kind, _KINDS)
    a, b = jnp.asarray(a), jnp.asarray(b)
    for name, v in (("a", a), ("b", b)):
        checks.array_dtype_kind(name, v, ("floating",))
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(
            f"a and b must be 1-D of the same length, got a of shape {a.shape} and b of shape "
            f"{b.shape}."
        )
    if a.shape[0] < 2:
        raise ValueError(f"a and b: the dimension D must be >= 2, got D = {a.shape[0]}.")
    for name, v in (("a", a), ("b", b)):
        if not checks.is_traced(v) and not np.any(np.asarray(v)):
            raise ValueError(f"{name} must be nonzero (the zero vector has no direction).")
    out_dtype = jnp.result_type(a, b)
    dtype = jnp.promote_types(out_dtype, jnp.float32)
    a, b = _direction(a.astype(dtype)), _direction(b.astype(dtype))
    u = _unit_or_perpendicular(a - b if kind == "householder" else a + b, a)
    eye = jnp.eye(a.shape[0], dtype=dtype)
    reflection = eye - 2 * jnp.outer(u, u)
    if kind == "householder":
        t = reflection
    elif kind == "rotation":
        # (I - 2bb^T)(I - 2uu^T): a product of two reflections stays orthogonal to rounding
        # even when a + b is tiny; it equals the post's formula since b^T u = ||a + b|| / 2.
        t = reflection - 2 * jnp.outer(b, b) + 4 * jnp.dot(b, u) * jnp.outer(b, u)
    else:
        t = -reflection
    return t.astype(out_dtype)
