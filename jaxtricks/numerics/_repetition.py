"""The repetition rate of a bigram (Markov) decoder, from Su's analysis of repeated decoding.

A decoder whose next token depends only on the previous one is a transition matrix
:math:`P`. The subsequence :math:`[w_1, \\dots, w_k]` followed by itself and :math:`w_1` has
probability :math:`\\prod P_{w_i w_{i+1}}^2`; summed over all cycles of all lengths this is
:math:`\\sum_k \\operatorname{Tr}\\,(P \\odot P)^k`, a geometric series of matrices.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxtricks._src import checks


def repetition_rate(P: jax.typing.ArrayLike) -> jax.Array:
    r"""Total probability of repeated subsequences of a bigram decoder with transitions ``P``.

    With :math:`Q = P \odot P` (elementwise square) and :math:`\lambda_i` its eigenvalues:

    .. math::

        R = \sum_{k=1}^{\infty} \operatorname{Tr}\, Q^k
          = \operatorname{Tr}\big[(I - Q)^{-1} - I\big]
          = \sum_i \frac{\lambda_i}{1 - \lambda_i}

    computed as :math:`\operatorname{Tr}[(I - Q)^{-1} Q]` (one linear solve, no
    cancellation when :math:`R` is small). The series converges iff the spectral radius
    :math:`\rho(Q) < 1`. For a row-stochastic :math:`P` (rows sum to 1), the rows of
    :math:`Q` sum to :math:`\sum_j P_{ij}^2 \le 1`, so :math:`\rho(Q) \le 1`; it is
    :math:`< 1` unless some set of rows is one-hot and closed (a deterministic cycle, which
    repeats forever). By the Perron-Frobenius bounds :math:`\min_i \sum_j P_{ij}^2 \le
    \rho(Q) \le \max_i \sum_j P_{ij}^2`: flatter rows (less peaked next-token
    distributions) lower the top eigenvalue, which dominates :math:`R`. The post drops the
    end-of-sequence column, so its rows sum to less than 1; any real :math:`P` is accepted.

    **Divergence gives inf.** Every term :math:`\operatorname{Tr} Q^k` is :math:`\ge 0`, so
    when :math:`\rho(Q) \ge 1` (a singular :math:`I - Q` included) the sum is
    :math:`R = \infty`, and that is what is returned. It is detected without an eigenvalue
    solve, under ``jit`` too: since :math:`Q \ge 0`, :math:`\rho(Q) < 1` exactly when
    :math:`(I - Q)^{-1}` exists and is entrywise :math:`\ge 0` (a nonsingular M-matrix), so
    a solution with a non-finite entry or an entry below :math:`-\sqrt{\text{eps}}` times
    its largest magnitude means divergence. Within about :math:`\sqrt{\text{eps}}` of
    :math:`\rho(Q) = 1` rounding can go either way (:math:`R` is then above
    :math:`10^3`-ish in float32 anyway). NaN entries in ``P`` give NaN.

    Args:
      P: ``(..., n, n)`` floating, ``n >= 1``, ``P[i, j]`` the probability that token ``j``
        follows token ``i``; leading axes are a batch of matrices.

    Returns:
      ``(...)``, in ``P``'s dtype (bf16 and float16 are computed in float32); ``inf`` where
      the series diverges.

    Raises:
      ValueError: if ``P`` is not a (batch of) square matrices with ``n >= 1``.
      TypeError: if ``P`` is not floating (integer, boolean or complex).

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxtricks.numerics import repetition_rate
      >>> # Uniform over 2 tokens: Q = P/2 has eigenvalues 1/2 and 0, so R = 1.
      >>> print(repetition_rate(jnp.full((2, 2), 0.5)))
      1.0

    References:
      Zihao Fu, Wai Lam, Anthony Man-Cho So, Bei Shi, "A Theoretical Analysis of the
      Repetition Problem in Text Generation", AAAI 2021, arXiv:2012.14660 (its bound uses
      :math:`P^{2k}` where the exact sum needs :math:`(P \odot P)^k`, as the post notes).
      Su Jianlin, "Seq2Seq重复解码现象的理论分析尝试", https://kexue.fm/archives/8128
    """
    P = jnp.asarray(P)
    checks.array_dtype_kind("P", P, ("floating",))
    if P.ndim < 2 or P.shape[-1] != P.shape[-2] or P.shape[-1] < 1:
        raise ValueError(f"P must be (..., n, n) square matrices with n >= 1, got shape {P.shape}.")
    dtype = jnp.promote_types(P.dtype, jnp.float32)
    q = jnp.square(P.astype(dtype))
    eye = jnp.broadcast_to(jnp.eye(P.shape[-1], dtype=dtype), q.shape)
    x = jnp.linalg.solve(eye - q, q)  # (I - Q)^-1 Q = sum_k Q^k when the series converges
    # Converging, x = sum_k Q^k >= 0. With rho(Q) >= 1 (Q >= 0), I + x = (I - Q)^-1 is not
    # entrywise >= 0 (M-matrix theory), so x has a negative entry, or the solve a non-finite.
    peak = jnp.max(jnp.abs(x), axis=(-2, -1))
    tol = jnp.sqrt(jnp.finfo(dtype).eps) * peak
    converges = jnp.all(jnp.isfinite(x), axis=(-2, -1)) & (jnp.min(x, axis=(-2, -1)) >= -tol)
    r = jnp.where(converges, jnp.trace(x, axis1=-2, axis2=-1), jnp.inf)
    r = jnp.where(jnp.any(jnp.isnan(q), axis=(-2, -1)), jnp.nan, r)
    return r.astype(P.dtype)
