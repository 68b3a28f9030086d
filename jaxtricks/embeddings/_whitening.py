"""BERT-whitening: a linear map that gives sentence embeddings zero mean and identity covariance.

Cosine similarity is only meaningful in an orthonormal basis; pre-trained encoders (BERT)
produce anisotropic embeddings with a large common offset, so their cosine similarities are
all high and poorly ranked. Whitening, :math:`\\tilde x = (x - \\mu) U \\Lambda^{-1/2}`, fixes
both, matches BERT-flow on semantic similarity, and keeping the leading :math:`k` columns of
the kernel reduces the dimension as well (a PCA whitening).

The statistics are kept as a count, a mean and a *centred* second moment, merged with the
pairwise update of Chan, Golub and LeVeque, so batches, devices and hosts can each hold partial
statistics that combine exactly; the naive :math:`E[xx^\\top] - \\mu\\mu^\\top` loses every digit to
cancellation when the offset is large, which is the very situation whitening is for.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxtricks._src import checks
from jaxtricks._src.numerics import l2_normalize

# Covariances are computed once and feed an eigendecomposition: on TPU/GPU the default matmul
# precision (bf16 / tf32 passes) would cost ~3 digits, so ask for full float32.
_HIGHEST = jax.lax.Precision.HIGHEST


def _check_dim(dim: int | None, features: int) -> int:
    if dim is None:
        return features
    dim = checks.positive_int("dim", dim)
    if dim > features:
        raise ValueError(f"dim must satisfy 1 <= dim <= {features} (the features), got {dim}.")
    return dim


def _check_rtol(rtol: float | None, features: int, dtype: jnp.dtype) -> float:
    if rtol is None:
        return features * float(jnp.finfo(dtype).eps)
    if checks.is_traced(rtol):
        raise TypeError("rtol must be a Python number (static) or None, got a traced value.")
    checks.number("rtol", rtol, low=0, high=1, high_open=True)
    if np.ndim(rtol) != 0:
        raise ValueError(f"rtol must be a scalar or None, got shape {np.shape(rtol)}.")
    return float(rtol)


def _check_embeddings(name: str, x: jax.Array, *, integers: bool = False) -> None:
    """Floating embeddings (integers too where ``integers``); booleans and complex refused."""
    kinds = ("floating", "integer") if integers else ("floating",)
    checks.array_dtype_kind(name, x, kinds)


def _check_mask(mask: Any, rows: tuple[int, ...]) -> jax.Array:
    mask = jnp.asarray(mask)
    checks.array_dtype_kind("mask", mask, ("bool",))
    if mask.shape != rows:
        raise ValueError(f"mask must have shape x.shape[:-1] = {rows}, got {mask.shape}.")
    return mask


def _check_precision(precision: Any) -> Any:
    """A ``jax.lax.Precision``, its name, a pair of them, or None (the default precision)."""
    pair = precision if isinstance(precision, tuple) and len(precision) == 2 else (precision,)
    for p in pair:
        if p is None or isinstance(p, jax.lax.Precision):
            continue
        try:
            jax.lax.Precision(p)
        except (ValueError, TypeError):
            names = [m.name.lower() for m in jax.lax.Precision]
            raise ValueError(
                f"precision must be None, a jax.lax.Precision or one of {names} (or a pair), "
                f"got {precision!r}."
            ) from None
    return precision


def _float_dtype(dtype: jnp.dtype) -> jnp.dtype:
    """Float32 at least (bf16/fp16/int statistics lose too much), float64 when given."""
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.float32
    return jnp.promote_types(dtype, jnp.float32)


class Whitening(NamedTuple):
    """A fitted whitening, ``mean`` ``(D,)`` and ``kernel`` ``(D, dim)``: ``(x - mean) @ kernel``.

    A pytree (NamedTuple), so it passes through ``jit``, can be saved, sharded or replicated.
    ``mean`` is the negative of the ``bias`` in the reference code (which adds its bias).
    """

    mean: jax.Array
    kernel: jax.Array


class WhiteningStats(NamedTuple):
    """Streaming mean and covariance: ``count`` ``()``, ``mean`` ``(D,)``, ``m2`` ``(D, D)``.

    ``m2`` is the centred second moment :math:`\\sum_i (x_i - \\mu)(x_i - \\mu)^\\top`, so the
    covariance is ``m2 / count``. All three leaves share one floating dtype (float32 by default;
    ``count`` is kept as a float so that it psums with the rest and is exact below
    :math:`2^{24}` rows in float32, :math:`2^{53}` in float64). A pytree: carry it through
    ``lax.scan``, return it from ``jit``.

    Build it with :meth:`create` (empty) or :meth:`from_batch`; grow it with :meth:`update`;
    combine partial statistics with :meth:`merge` (two of them, in any order and grouping) or
    :meth:`merge_over` (inside ``shard_map``/``pmap``: all devices along a named mesh axis);
    finish with :meth:`covariance` or :meth:`to_whitening`. Under ``jit`` with the batch sharded
    over a mesh axis (``NamedSharding(mesh, P("data"))``), :meth:`from_batch` needs nothing
    more: XLA inserts the cross-device reductions.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jaxtricks.embeddings import WhiteningStats
      >>> x = jax.random.normal(jax.random.key(0), (100, 4)) + 10.0
      >>> stats = WhiteningStats.create(4)
      >>> for batch in (x[:7], x[7:60], x[60:]):  # uneven batches
      ...     stats = stats.update(batch)
      >>> print(stats.count, bool(jnp.allclose(stats.mean, x.mean(0), atol=1e-5)))
      100.0 True
      >>> left, right = WhiteningStats.from_batch(x[:30]), WhiteningStats.from_batch(x[30:])
      >>> cov = right.merge(left).covariance()
      >>> print(bool(jnp.allclose(cov, jnp.cov(x.T, bias=True), atol=1e-4)))
      True

    References:
      Tony F. Chan, Gene H. Golub, Randall J. LeVeque, "Updating Formulae and a Pairwise
      Algorithm for Computing Sample Variances", Stanford CS report STAN-CS-79-773, 1979
      (the pairwise merge of counts, means and centred sums of squares).
      Jianlin Su, Jiarun Cao, Weijie Liu, Yangyiwen Ou, "Whitening Sentence Representations for
      Better Semantics and Faster Retrieval", 2021, arXiv:2103.15316.
      Su Jianlin, "你可能不需要BERT-flow：一个线性变换媲美BERT-flow",
      https://kexue.fm/archives/8069
    """

    count: jax.Array
    mean: jax.Array
    m2: jax.Array

    @classmethod
    def create(cls, features: int, dtype: jax.typing.DTypeLike = jnp.float32) -> WhiteningStats:
        """Empty statistics (count 0) for ``features``-dimensional vectors, in ``dtype``.

        Args:
          features: ``D``, the embedding size (static, ``>= 1``).
          dtype: a floating dtype for all three leaves (float32 default; float64 needs x64).

        Returns:
          ``WhiteningStats`` with ``count = 0``, zero ``mean`` ``(D,)`` and ``m2`` ``(D, D)``.

        Raises:
          TypeError: if ``features`` is not an int or ``dtype`` is not a real floating dtype.
          ValueError: if ``features < 1``.
        """
        features = checks.positive_int("features", features)
        dtype = checks.float_dtype("dtype", dtype, allow_none=False, complex_ok=False)
        return cls(
            jnp.zeros((), dtype), jnp.zeros((features,), dtype), jnp.zeros((features,) * 2, dtype)
        )

    @classmethod
    def from_batch(
        cls,
        x: jax.typing.ArrayLike,
        *,
        mask: jax.typing.ArrayLike | None = None,
        dtype: jax.typing.DTypeLike | None = None,
    ) -> WhiteningStats:
        """Statistics of one batch, centred on its own mean (two passes, no cancellation).

        Args:
          x: ``(..., D)`` floating vectors, ``D >= 1``; all leading axes are rows (e.g.
            ``(B, T, D)`` tokens). No rows (``(0, D)``) gives count 0.
          mask: optional boolean ``x.shape[:-1]``; rows where it is False are ignored (padding,
            the ragged last batch of a fixed-shape ``jit``). An all-False mask gives count 0.
          dtype: real floating dtype of the statistics; default ``x``'s dtype promoted to at
            least float32.

        Returns:
          ``WhiteningStats`` of the (unmasked) rows; with count 0, zero mean and ``m2``.

        Raises:
          TypeError: if ``x`` is not floating, ``mask`` not boolean or ``dtype`` not a real
            floating dtype.
          ValueError: if ``x`` has no (or an empty) feature axis or ``mask``'s shape is not
            ``x.shape[:-1]``.
        """
        x = jnp.asarray(x)
        _check_embeddings("x", x)
        if x.ndim < 1 or x.shape[-1] < 1:
            raise ValueError(f"x must have shape (..., D) with D >= 1, got shape {x.shape}.")
        dtype = checks.float_dtype("dtype", dtype, complex_ok=False)
        dtype = _float_dtype(x.dtype if dtype is None else dtype)
        rows = x.shape[:-1]
        x = x.reshape(-1, x.shape[-1]).astype(dtype)
        if mask is None:
            n = jnp.asarray(x.shape[0], dtype)
            mean = jnp.sum(x, axis=0) / jnp.maximum(n, 1)  # an empty batch has mean 0, not NaN
            xc = x - mean[None, :]
            return cls(n, mean, jnp.matmul(xc.T, xc, precision=_HIGHEST))
        mask = _check_mask(mask, rows)
        w = mask.reshape(-1).astype(dtype)
        n = jnp.sum(w)
        mean = jnp.matmul(w, x, precision=_HIGHEST) / jnp.maximum(n, 1)
        xc = (x - mean[None, :]) * w[:, None]  # masked rows contribute exactly zero
        return cls(n, mean, jnp.matmul(xc.T, xc, precision=_HIGHEST))

    def update(
        self, x: jax.typing.ArrayLike, *, mask: jax.typing.ArrayLike | None = None
    ) -> WhiteningStats:
        """Adds a batch ``x`` ``(..., D)`` (optionally masked); see :meth:`from_batch`.

        Raises:
          TypeError: if ``x`` is not floating or ``mask`` not boolean.
          ValueError: if ``x``'s last axis is not ``D`` or ``mask``'s shape is not
            ``x.shape[:-1]``.
        """
        x = jnp.asarray(x)
        _check_embeddings("x", x)
        if x.ndim < 1 or x.shape[-1] != self.mean.shape[-1]:
            raise ValueError(
                f"x must have shape (..., {self.mean.shape[-1]}) to match the statistics, "
                f"got {x.shape}."
            )
        return self.merge(WhiteningStats.from_batch(x, mask=mask, dtype=self.mean.dtype))

    def merge(self, other: WhiteningStats) -> WhiteningStats:
        r"""Combines two partial statistics exactly (Chan et al.'s pairwise update).

        .. math::

            n = n_a + n_b,\quad \delta = \mu_b - \mu_a,\quad
            \mu = \mu_a + \delta\,\frac{n_b}{n},\quad
            M_2 = M_{2,a} + M_{2,b} + \delta\delta^\top \frac{n_a n_b}{n}

        Empty statistics (``n = 0``) are the identity. Commutative and associative up to
        rounding. Result in ``self``'s dtype.

        Raises:
          TypeError: if ``other`` is not a :class:`WhiteningStats`.
          ValueError: if the feature sizes differ.
        """
        if not isinstance(other, WhiteningStats):
            raise TypeError(
                f"other must be a WhiteningStats (count, mean, m2), got {checks._short(other)} "
                f"of type {type(other).__name__}."
            )
        if other.mean.shape != self.mean.shape:
            raise ValueError(
                f"other must have the feature size of these statistics: other has mean of shape "
                f"{other.mean.shape}, expected {self.mean.shape}."
            )
        dtype = self.mean.dtype
        nb, mb, m2b = (jnp.asarray(leaf).astype(dtype) for leaf in other)
        n = self.count + nb
        frac = jnp.where(n > 0, nb / jnp.where(n > 0, n, 1), 0)
        delta = mb - self.mean
        mean = self.mean + delta * frac
        m2 = self.m2 + m2b + (self.count * frac) * (delta[:, None] * delta[None, :])
        return WhiteningStats(n, mean, m2)

    def merge_over(self, axis_name: str | tuple[str, ...]) -> WhiteningStats:
        r"""Merges the statistics held by every device along ``axis_name`` (``psum``-based).

        Call inside ``jax.shard_map`` (or ``pmap``) after each device computed the statistics
        of its shard; every device gets the statistics of the whole batch. With per-device
        :math:`(n_k, \mu_k, M_{2,k})`:

        .. math::

            n = \sum_k n_k,\quad \mu = \frac{1}{n}\sum_k n_k \mu_k,\quad
            M_2 = \sum_k \big[M_{2,k} + n_k (\mu_k - \mu)(\mu_k - \mu)^\top\big]

        (the pairwise update applied to all shards at once; two ``psum``\ s of ``D + 1`` and
        ``D^2`` numbers).

        Args:
          axis_name: a mesh axis name (or a tuple of them) bound by the caller.

        Returns:
          The merged statistics, identical on every device.

        Raises:
          TypeError: if ``axis_name`` is not a string or a tuple of strings.
        """
        names = axis_name if isinstance(axis_name, tuple) else (axis_name,)
        if not names or not all(isinstance(a, str) for a in names):
            raise TypeError(
                f"axis_name must be a mesh axis name or a tuple of them, got {axis_name!r}."
            )
        n = jax.lax.psum(self.count, axis_name)
        mean = jax.lax.psum(self.count * self.mean, axis_name) / jnp.maximum(n, 1)
        delta = self.mean - mean
        m2 = jax.lax.psum(self.m2 + self.count * (delta[:, None] * delta[None, :]), axis_name)
        return WhiteningStats(n, mean, m2)

    def covariance(self) -> jax.Array:
        """The covariance ``m2 / count`` ``(D, D)`` (1/N, as in the post; zero when empty)."""
        return self.m2 / jnp.maximum(self.count, 1)

    def to_whitening(self, dim: int | None = None, *, rtol: float | None = None) -> Whitening:
        """The whitening of these statistics; same conventions as :func:`whitening_fit`.

        Args:
          dim: number of leading components to keep (static), ``1 <= dim <= D``; None keeps D.
          rtol: eigenvalue floor relative to the largest; None means ``D * eps(dtype)``.

        Returns:
          ``Whitening(mean (D,), kernel (D, dim))`` in the statistics' dtype. With fewer than 2
          rows the kernel is finite but meaningless (the count may be traced, so this is not
          checked).

        Raises:
          ValueError, TypeError: for a bad ``dim`` or ``rtol``.
        """
        features = self.mean.shape[-1]
        dim = _check_dim(dim, features)
        rtol = _check_rtol(rtol, features, self.mean.dtype)
        return Whitening(self.mean, _kernel(self.covariance(), dim, rtol))


def _kernel(cov: jax.Array, dim: int, rtol: float) -> jax.Array:
    """``U[:, :dim] Λ[:dim]^{-1/2}`` with descending, floored eigenvalues and fixed signs."""
    cov = 0.5 * (cov + cov.T)  # eigh reads one triangle; rounding may have left asymmetry
    lam, u = jnp.linalg.eigh(cov)
    lam, u = lam[::-1], u[:, ::-1]  # descending
    # Null directions (N < D, collinear features) have eigenvalues ~ eps * lam_max of either
    # sign; floor them so the kernel stays finite. `tiny` covers all-constant data.
    floor = jnp.maximum(rtol * lam[0], jnp.finfo(cov.dtype).tiny)
    lam = jnp.maximum(lam, floor)
    # eigh's eigenvector signs are arbitrary (backend dependent): make each column's
    # largest-magnitude entry positive so kernels are reproducible.
    pivot = jnp.take_along_axis(u, jnp.argmax(jnp.abs(u), axis=0)[None, :], axis=0)
    u = u * jnp.where(pivot < 0, -1, 1).astype(u.dtype)
    return u[:, :dim] * jax.lax.rsqrt(lam[:dim])[None, :]


def whitening_fit(
    x: jax.typing.ArrayLike, *, dim: int | None = None, rtol: float | None = None
) -> Whitening:
    r"""Fits the BERT-whitening map of the rows of ``x``: zero mean, identity covariance.

    .. math::

        \mu = \frac{1}{N}\sum_i x_i,\qquad
        \Sigma = \frac{1}{N}\sum_i (x_i - \mu)(x_i - \mu)^\top = U \Lambda U^\top,\qquad
        W = U \Lambda^{-1/2}

    with the eigenvalues :math:`\Lambda` in descending order, and ``kernel = W[:, :dim]`` (the
    leading ``dim`` principal directions: dimension reduction). Conventions:

    - covariance normalised by :math:`1/N`, as in the post (the reference code's ``np.cov``
      uses :math:`1/(N-1)`, which scales the kernel by :math:`\sqrt{N/(N-1)}` and changes
      nothing after the L2 normalisation of :func:`whitening_apply`);
    - computed in ``x``'s dtype promoted to at least float32 (float64 inputs with x64 stay
      float64), by the two-pass centred formula and ``jnp.linalg.eigh``;
    - eigenvalues are floored at ``max(rtol * λ_max, tiny)``, ``rtol = D * eps(dtype)`` by
      default (the usual rank tolerance), so rank-deficient data (``N <= D``, collinear or
      constant features) yields a finite kernel: its null directions are scaled by at most
      ``1 / sqrt(rtol * λ_max)`` instead of infinity;
    - each eigenvector's sign is fixed (largest-magnitude entry positive) so kernels are
      reproducible across backends. The kernel is unique only up to rotations within
      repeated eigenvalues; the whitened covariance is not affected.

    Equivalent to ``WhiteningStats.from_batch(x).to_whitening(dim)``; use
    :class:`WhiteningStats` when the embeddings do not fit in memory at once.

    The statistics are matrix products at ``jax.lax.Precision.HIGHEST`` (full float32 on
    TPU and TF32 GPUs too).

    Args:
      x: ``(N, D)`` floating embeddings, one per row, ``N >= 2``, ``D >= 1``.
      dim: number of components to keep (static), an int with ``1 <= dim <= D``; default
        ``D``.
      rtol: eigenvalue floor relative to the largest (a static number in ``[0, 1)``); see
        above.

    Returns:
      ``Whitening(mean (D,), kernel (D, dim))`` in the compute dtype.

    Raises:
      ValueError: if ``x`` is not 2-D, ``N < 2``, ``D < 1``, ``dim`` is outside ``[1, D]``
        or ``rtol`` outside ``[0, 1)`` (or NaN).
      TypeError: if ``x`` is not floating (integer, boolean, complex), ``dim`` is not an int
        or ``rtol`` not a number.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jaxtricks.embeddings import whitening_fit, whitening_apply
      >>> a = jnp.array([[3.0, 0.0, 0.0], [1.0, 0.5, 0.0], [0.0, 0.2, 0.1]])
      >>> x = jax.random.normal(jax.random.key(0), (500, 3)) @ a + 5.0  # anisotropic, offset
      >>> w = whitening_fit(x, dim=2)
      >>> print(w.mean.shape, w.kernel.shape)
      (3,) (3, 2)
      >>> y = whitening_apply(x, w, normalize=False)
      >>> cov = y.T @ y / x.shape[0]  # the whitened data is centred
      >>> print(bool(jnp.abs(cov - jnp.eye(2)).max() < 1e-4))
      True

    References:
      Jianlin Su, Jiarun Cao, Weijie Liu, Yangyiwen Ou, "Whitening Sentence Representations for
      Better Semantics and Faster Retrieval", 2021, arXiv:2103.15316 (code:
      github.com/bojone/BERT-whitening).
      Bohan Li, Hao Zhou, Junxian He, Mingxuan Wang, Yiming Yang, Lei Li, "On the Sentence
      Embeddings from Pre-trained Language Models" (BERT-flow), EMNLP 2020, arXiv:2011.05864.
      Su Jianlin, "你可能不需要BERT-flow：一个线性变换媲美BERT-flow",
      https://kexue.fm/archives/8069
    """
    x = jnp.asarray(x)
    _check_embeddings("x", x)
    if x.ndim != 2 or x.shape[1] < 1:
        raise ValueError(f"x must be 2-D (N, D) with D >= 1, got shape {x.shape}.")
    if x.shape[0] < 2:
        raise ValueError(f"x needs N >= 2 rows to estimate a covariance, got N = {x.shape[0]}.")
    _check_dim(dim, x.shape[1])  # fail before any computation
    _check_rtol(rtol, x.shape[1], jnp.float32)
    return WhiteningStats.from_batch(x).to_whitening(dim, rtol=rtol)


def whitening_apply(
    x: jax.typing.ArrayLike,
    w: Whitening,
    *,
    normalize: bool = True,
    precision: Any = jax.lax.Precision.HIGHEST,
) -> jax.Array:
    r"""Applies a fitted whitening: :math:`y = (x - \mu) W`, then optionally :math:`y / \|y\|`.

    .. math::

        y = (x - \mu)\,W,\qquad \hat y = \frac{y}{\|y\|}

    The norm is the library's safe norm (scaled before squaring): every nonzero vector, however
    small or large, comes out with unit norm, and the zero vector stays 0 with a finite
    gradient. Computed in the promotion of ``x``'s dtype and the kernel's (at least float32),
    returned in ``x``'s dtype (floating inputs; integer inputs return the kernel's dtype).
    With ``normalize=True`` the dot product of two outputs is their cosine similarity in the
    whitened space. The projection runs at ``precision``, full float32 by default (TPUs and
    TF32 GPUs included); ``precision="default"`` trades about three significant digits for
    speed there, usually enough to rank similarities.

    Args:
      x: ``(..., D)`` embeddings, floating or integer.
      w: a :class:`Whitening` (``mean (D,)``, ``kernel (D, dim)``, floating), or a plain
        ``(mean, kernel)`` tuple.
      normalize: L2-normalise the output along the last axis (the post's recipe).
      precision: the ``precision`` of the projection's matrix product: a
        ``jax.lax.Precision``, its name (``"highest"``, ``"high"``, ``"default"``), a pair, or
        None (the ambient default).

    Returns:
      ``(..., dim)``.

    Raises:
      TypeError: if ``w`` is not a :class:`Whitening` (or a pair of arrays), ``x`` is boolean
        or complex, or ``w``'s arrays are not floating.
      ValueError: if ``x``'s last axis does not match ``w``, ``w`` has the wrong shapes, or
        ``precision`` is not a precision.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jaxtricks.embeddings import whitening_fit, whitening_apply
      >>> x = jax.random.normal(jax.random.key(1), (200, 8)) + 3.0
      >>> w = whitening_fit(x, dim=4)
      >>> y = whitening_apply(x[:5].astype(jnp.bfloat16), w)
      >>> print(y.shape, y.dtype)
      (5, 4) bfloat16
      >>> print(jnp.linalg.norm(y.astype(jnp.float32), axis=-1).round(2))
      [1. 1. 1. 1. 1.]

    References:
      Jianlin Su, Jiarun Cao, Weijie Liu, Yangyiwen Ou, "Whitening Sentence Representations for
      Better Semantics and Faster Retrieval", 2021, arXiv:2103.15316.
      Su Jianlin, "你可能不需要BERT-flow：一个线性变换媲美BERT-flow",
      https://kexue.fm/archives/8069
    """
    if not isinstance(w, tuple) or len(w) != 2:
        raise TypeError(
            f"w must be a Whitening(mean, kernel) (from whitening_fit), got {checks._short(w)}"
            f" of type {type(w).__name__}."
        )
    _check_precision(precision)
    x = jnp.asarray(x)
    _check_embeddings("x", x, integers=True)
    mean, kernel = jnp.asarray(w[0]), jnp.asarray(w[1])
    checks.array_dtype_kind("w.mean", mean, ("floating",))
    checks.array_dtype_kind("w.kernel", kernel, ("floating",))
    if mean.ndim != 1 or kernel.ndim != 2 or kernel.shape[0] != mean.shape[0]:
        raise ValueError(
            f"w must hold mean (D,) and kernel (D, dim), got {mean.shape} and {kernel.shape}."
        )
    if x.ndim < 1 or x.shape[-1] != mean.shape[0]:
        raise ValueError(f"x must have shape (..., {mean.shape[0]}) to match w, got {x.shape}.")
    out_dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else kernel.dtype
    dtype = jnp.promote_types(_float_dtype(x.dtype), kernel.dtype)
    expand = (1,) * (x.ndim - 1)
    centred = x.astype(dtype) - mean.astype(dtype).reshape(expand + mean.shape)
    y = jnp.matmul(centred, kernel.astype(dtype), precision=precision)
    if normalize:
        y = l2_normalize(y, axis=-1)
    return y.astype(out_dtype)
