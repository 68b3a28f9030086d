"""Capsules: the squash nonlinearity, dynamic routing (Hinton's and Su's K-means) and a layer."""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn import dtypes

from jaxtricks._src import checks
from jaxtricks._src.checks import positive_int
from jaxtricks._src.numerics import l2_normalize, safe_norm

from ._vq import _check_bool

_METHODS = ("hinton", "kmeans")
# Squash offset each routing uses: the paper's 1, and 0.5 in Su's K-means code (post 5112).
_ROUTING_OFFSET = {"hinton": 1.0, "kmeans": 0.5}


def _compute_dtype(x: jax.Array, name: str) -> jnp.dtype:
    """float32 for half precision and integers, float64 for float64; bool/complex rejected."""
    # Lengths and agreements are real: complex capsules would silently lose their imaginary part.
    checks.array_dtype_kind(name, x, ("integer", "floating"))
    if not jnp.issubdtype(x.dtype, jnp.floating):
        return jnp.dtype(jnp.float32)
    return jnp.promote_types(x.dtype, jnp.float32)


def _out_dtype(x: jax.Array) -> jnp.dtype:
    return x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.dtype(jnp.float32)


def _check_axis(axis: int, ndim: int) -> int:
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"axis must be an int, got {axis!r} of type {type(axis).__name__}.")
    if not -ndim <= axis < ndim:
        raise ValueError(
            f"axis must lie in [{-ndim}, {ndim}) for an input of rank {ndim}, got {axis}."
        )
    return axis % ndim


def _squash(s: jax.Array, axis: int, offset: float | jax.Array) -> jax.Array:
    """``s ||s|| / (c + ||s||²)`` that neither overflows nor divides 0 by 0.

    With ``m = max|s_i|`` held constant (the result does not depend on it), ``u = s / m`` and
    ``r = ||u|| ∈ [1, √d]``: ``u / (r + c / (m² r))`` for ``m >= 1`` (no ``||s||²`` to
    overflow: ``||s|| = 1e20`` in float32 gives the unit direction) and ``u m n / (c + n²)``
    with ``n = m r`` for ``m < 1`` (no ``c / m²`` to overflow). The zero vector maps to 0
    with gradient 0, its exact Jacobian; a vector with infinite components maps to its limit
    ``lim_{t→∞} squash(t v) = v / ||v||``, ``v`` the signs of those components.
    """
    inf = jnp.isinf(s)
    any_inf = jnp.any(inf, axis=axis, keepdims=True)
    s = jnp.where(any_inf, jnp.where(inf, jnp.sign(s), 0.0), s)
    m = jax.lax.stop_gradient(jnp.max(jnp.abs(s), axis=axis, keepdims=True))
    pos, big = m > 0, m >= 1
    # Two products with 1/sqrt(m), not s / m: XLA's CPU divides by multiplying with the
    # reciprocal, which is subnormal (flushed to 0) for m above about 8.5e37 in float32, and
    # it folds s / a / a into s / (a * a). The scale need not be exact: u is s times a constant.
    inv = jax.lax.rsqrt(jnp.where(pos, m, 1.0))
    u = s * inv * inv
    r = jnp.where(pos, safe_norm(u, axis=axis, keepdims=True), 1.0)
    # Each branch sees only its own range of m (double where): no inf, hence no NaN gradient.
    m_big, m_small = jnp.where(big, m, 1.0), jnp.where(big, 0.0, m)
    # Should XLA fold the divisions into one by m² r, m² overflows to inf: the term's limit 0.
    large = u / (r + offset / m_big / m_big / r)
    n = m_small * r
    small = u * (m_small * n / (offset + n * n))
    return jnp.where(any_inf, u / r, jnp.where(big, large, small))


def squash(
    s: jax.typing.ArrayLike, *, axis: int = -1, offset: float | jax.Array = 1.0
) -> jax.Array:
    r"""The capsule nonlinearity: keeps a vector's direction and maps its length into [0, 1).

    .. math::

        \mathrm{squash}(s) = \frac{\lVert s\rVert^2}{c + \lVert s\rVert^2}
        \frac{s}{\lVert s\rVert} = \frac{\lVert s\rVert}{c + \lVert s\rVert^2}\, s

    with :math:`c` = ``offset``: 1 in the paper, 0.5 in Su's experiments (post 4819 finds it
    slightly better: it amplifies short vectors instead of shrinking every length). The
    output length :math:`\lVert s\rVert^2/(c + \lVert s\rVert^2)` is read as the probability
    that the capsule's entity is present. It is computed as
    :math:`u / (r + c / (m^2 r))` with :math:`m = \max_i |s_i|`, :math:`u = s/m`,
    :math:`r = \lVert u\rVert` (the library's scaled safe norm), or for :math:`m < 1` as
    :math:`u\, m n / (c + n^2)` with :math:`n = m r`, so no
    :math:`\lVert s\rVert^2` is formed: lengths up to the dtype's largest number give the
    unit direction instead of overflowing (``||s|| = 1e20`` in float32), and
    ``squash(0) = 0`` with gradient 0, the exact Jacobian at 0 (no floor on the norm; the
    former ``sqrt(finfo.tiny)`` floor is gone). A vector with ``±inf`` components gives its
    limit, the unit vector of those components' signs; NaN propagates. Computed in float32
    (float64 for float64 input) and cast back.

    Args:
      s: ``(..., d, ...)`` capsule vectors, their components along ``axis``; real (integer
        or floating).
      axis: the capsule (vector) axis (static).
      offset: :math:`c > 0`, finite: a number or a concrete array, checked; a traced value is
        used as given (:math:`c \le 0` then gives lengths outside :math:`[0, 1)`).

    Returns:
      ``squash(s)``, shaped like ``s``, in ``s``'s dtype (float32 for integer ``s``).

    Raises:
      TypeError: if ``axis`` is not an int, ``offset`` is not a real number, or ``s`` is
        boolean or complex.
      ValueError: if ``axis`` is out of range or ``offset`` is not a finite number ``> 0``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxtricks.nn import squash
      >>> v = squash(jnp.array([[3.0, 4.0], [0.0, 0.0]]))  # length 5 -> 25/26
      >>> [round(float(x), 4) for x in jnp.linalg.norm(v, axis=-1)]
      [0.9615, 0.0]
      >>> round(float(jnp.linalg.norm(squash(jnp.array([0.6, 0.8]), offset=0.5))), 4)
      0.6667

    References:
      Sara Sabour, Nicholas Frosst, Geoffrey E. Hinton, "Dynamic Routing Between Capsules",
      NeurIPS 2017, arXiv:1710.09829 (equation 1).
      Su Jianlin, "揭开迷雾，来一顿美味的Capsule盛宴", 2018, https://kexue.fm/archives/4819
    """
    s = jnp.asarray(s)
    checks.number("offset", offset, low=0.0, low_open=True)
    compute = _compute_dtype(s, "s")
    axis = _check_axis(axis, s.ndim)
    offset = jnp.asarray(offset, compute)
    if offset.ndim:
        raise ValueError(f"offset must be a scalar, got shape {offset.shape}.")
    return _squash(s.astype(compute), axis, offset).astype(_out_dtype(s))


def _check_routing(u_hat: jax.Array, num_iters: int, method: str) -> None:
    positive_int("num_iters", num_iters)
    checks.choice("method", method, _METHODS)
    if u_hat.ndim < 3:
        raise ValueError(
            f"u_hat must have shape (..., n_in, n_out, d_out) (rank >= 3), got shape {u_hat.shape}."
        )


def dynamic_routing(
    u_hat: jax.typing.ArrayLike, num_iters: int = 3, *, method: str = "hinton"
) -> jax.Array:
    r"""Routing by agreement: output capsules as soft clusters of the input capsules' votes.

    ``u_hat[..., i, j, :]`` is :math:`\hat u_{j|i}`, input capsule :math:`i`'s prediction
    (vote) for output capsule :math:`j`. Coupling coefficients are a softmax over the
    **output** capsules, :math:`c_{ij} = \mathrm{softmax}_j(b_{ij})`, starting from
    :math:`b = 0` (uniform :math:`c_{ij} = 1/n_\mathrm{out}`); ``num_iters`` = :math:`r`
    weighted sums are computed.

    ``method="hinton"`` (the paper's Procedure 1; squash offset 1):

    .. math::

        s_j = \sum_i c_{ij}\hat u_{j|i},\quad v_j = \mathrm{squash}(s_j),\quad
        b_{ij} \leftarrow b_{ij} + \langle \hat u_{j|i}, v_j\rangle,

    returning the last :math:`v`. The logits accumulate, so :math:`b` holds the sum of the
    agreements with every earlier :math:`v`; post 4819 notes that this sharpens :math:`c`
    towards one-hot as :math:`r` grows.

    ``method="kmeans"`` (Su's variant, post 5112: K-means with the distance
    :math:`-\langle \hat u, v/\lVert v\rVert\rangle`; squash offset 0.5 as in his code):

    .. math::

        o_j = \sum_i c_{ij}\hat u_{j|i},\quad
        b_{ij} \leftarrow \Big\langle \hat u_{j|i}, \frac{o_j}{\lVert o_j\rVert}\Big\rangle
        \ (\text{replaced, not accumulated}),

    returning :math:`\mathrm{squash}(o)` of the last :math:`o`: iterations use the
    normalised centre, squash is applied once at the end. The first sum, with uniform
    :math:`c`, is the post's initialisation :math:`v^{(0)}_j = \frac1k\sum_i \hat u_{j|i}`,
    so ``num_iters = r`` is the post's algorithm with :math:`r - 1` iterations (and Su's
    ``Capsule_Keras.py`` with ``routings = r``).

    Both use sums, not means, over input capsules (more supporting votes, a longer output);
    both are invariant to permutations of the input capsules. Computed in float32 (float64
    for float64 input) and cast back; the loop is unrolled (``num_iters`` is static) and
    differentiable.

    Degenerate votes: all-zero votes give zero capsules with finite gradients (a zero centre
    has no direction, so its K-means agreements are 0); huge finite votes give unit-length
    capsules (the squash does not overflow; agreements grow with the votes' scale, so votes
    beyond about the square root of the dtype's largest number overflow the logits).

    Args:
      u_hat: ``(B, n_in, n_out, d_out)`` votes, real (integer or floating); any number of
        leading batch axes (or none) is accepted, ``(..., n_in, n_out, d_out)``.
      num_iters: static positive Python int, the number of weighted sums (the paper uses 3).
      method: ``"hinton"`` or ``"kmeans"``.

    Returns:
      ``(B, n_out, d_out)`` output capsules (``(..., n_out, d_out)``), lengths in [0, 1), in
      ``u_hat``'s dtype.

    Raises:
      TypeError: if ``num_iters`` is not an int (bools included), or ``u_hat`` is boolean or
        complex.
      ValueError: if ``num_iters < 1``, ``method`` is unknown, or ``u_hat`` has rank < 3.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxtricks.nn import dynamic_routing
      >>> votes = jnp.zeros((1, 3, 2, 2)).at[:, :, 0].set(1.0)  # all vote (1, 1) for capsule 0
      >>> v = dynamic_routing(votes, num_iters=1)  # c = 1/2: s_0 = (1.5, 1.5), s_1 = 0
      >>> [round(float(x), 4) for x in jnp.linalg.norm(v[0], axis=-1)]  # 4.5 / 5.5
      [0.8182, 0.0]
      >>> v = dynamic_routing(votes, num_iters=3, method="kmeans")  # c_i0 = 1/(1 + e^-sqrt2)
      >>> [round(float(x), 4) for x in jnp.linalg.norm(v[0], axis=-1)]
      [0.9588, 0.0]

    References:
      Sara Sabour, Nicholas Frosst, Geoffrey E. Hinton, "Dynamic Routing Between Capsules",
      NeurIPS 2017, arXiv:1710.09829 (Procedure 1).
      Su Jianlin, "揭开迷雾，来一顿美味的Capsule盛宴", 2018, https://kexue.fm/archives/4819
      Su Jianlin, "再来一顿贺岁宴：从K-Means到Capsule", 2018, https://kexue.fm/archives/5112
      Su Jianlin, Capsule (Keras), https://github.com/bojone/Capsule
    """
    u_hat = jnp.asarray(u_hat)
    _check_routing(u_hat, num_iters, method)
    out_dtype = _out_dtype(u_hat)
    u = u_hat.astype(_compute_dtype(u_hat, "u_hat"))
    offset = _ROUTING_OFFSET[method]
    logits = jnp.zeros(u.shape[:-1], u.dtype)  # b: (..., n_in, n_out)
    for it in range(num_iters):
        c = jax.nn.softmax(logits, axis=-1)
        s = jnp.einsum("...ij,...ijd->...jd", c, u)
        if method == "hinton":
            out = _squash(s, -1, offset)
            if it < num_iters - 1:
                logits = logits + jnp.einsum("...ijd,...jd->...ij", u, out)
        else:
            out = s
            if it < num_iters - 1:
                # A zero centre has no direction: l2_normalize maps it to 0 (finite gradient).
                logits = jnp.einsum("...ijd,...jd->...ij", u, l2_normalize(s, axis=-1))
    if method == "kmeans":
        out = _squash(out, -1, offset)
    return out.astype(out_dtype)


class Capsule(nnx.Module):
    r"""A capsule layer: per-class linear votes, then :func:`dynamic_routing`.

    Each input capsule :math:`u_i \in \mathbb{R}^{F}` votes for output capsule :math:`j`
    with :math:`\hat u_{j|i} = W_j u_i` (``share_weights=True``: one matrix per output
    capsule, Su's shared version, any number of input capsules, e.g. every position of a
    convolutional feature map) or :math:`\hat u_{j|i} = W_{ji} u_i` (``share_weights=False``:
    the paper's fully connected version, a fixed number ``num_inputs`` of input capsules).
    The outputs are

    .. math::

        v = \mathrm{dynamic\_routing}(\hat u, r, \mathrm{method}), \qquad
        \hat u \in \mathbb{R}^{B \times n_\mathrm{in} \times K \times D},

    whose lengths :math:`\lVert v_j\rVert \in [0, 1)` score the presence of class :math:`j`
    (train them with :func:`jaxtricks.losses.capsule_margin_loss`). With shared weights the
    layer is invariant to permutations of the input capsules. No bias (as in the paper and
    in Su's code); the kernel is Glorot-uniform initialised (fan-in ``in_features``, fan-out
    ``num_capsules * capsule_dim``), like Su's Keras layer.

    Args:
      in_features: ``F``, the dimension of each input capsule.
      num_capsules: ``K``, the number of output capsules.
      capsule_dim: ``D``, the dimension of each output capsule.
      routings: static int ``>= 1``, the ``num_iters`` of :func:`dynamic_routing`.
      share_weights: one matrix per output capsule (``True``) or per (input, output) pair.
      method: ``"hinton"`` or ``"kmeans"``, see :func:`dynamic_routing`.
      num_inputs: the number of input capsules, required (and only allowed) with
        ``share_weights=False``.
      rngs: the ``nnx.Rngs`` whose ``params`` stream initialises the kernel.
      dtype: computation dtype (``None``: promoted from the input and the kernel).
      param_dtype: kernel dtype.

    Attributes:
      kernel: ``nnx.Param`` of shape ``(F, K * D)`` (shared) or ``(num_inputs, F, K * D)``.

    Raises:
      TypeError: non-int sizes (``in_features``, ``num_capsules``, ``capsule_dim``,
        ``routings``, ``num_inputs``; bools included), a non-bool ``share_weights``, integer
        or complex ``dtype``/``param_dtype``; when called, a boolean or complex ``u``.
      ValueError: sizes < 1, an unknown ``method``, a missing or superfluous ``num_inputs``;
        when called, an input whose last axis is not ``in_features`` or (per-input weights)
        whose number of capsules is not ``num_inputs``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxtricks.nn import Capsule
      >>> layer = Capsule(8, num_capsules=10, capsule_dim=16, rngs=nnx.Rngs(0))
      >>> u = jax.random.normal(jax.random.key(1), (2, 36, 8))  # 36 input capsules
      >>> v = layer(u)
      >>> v.shape, jax.eval_shape(layer, u[:, :5]).shape  # shared weights: any n_in
      ((2, 10, 16), (2, 10, 16))
      >>> bool(jnp.all(jnp.linalg.norm(v, axis=-1) < 1))
      True
      >>> fc = Capsule(8, 10, 16, share_weights=False, num_inputs=36, rngs=nnx.Rngs(0))
      >>> fc.kernel[...].shape
      (36, 8, 160)

    References:
      Sara Sabour, Nicholas Frosst, Geoffrey E. Hinton, "Dynamic Routing Between Capsules",
      NeurIPS 2017, arXiv:1710.09829.
      Su Jianlin, "揭开迷雾，来一顿美味的Capsule盛宴", 2018, https://kexue.fm/archives/4819
      (the shared-weight version); "再来一顿贺岁宴：从K-Means到Capsule", 2018,
      https://kexue.fm/archives/5112
    """

    def __init__(
        self,
        in_features: int,
        num_capsules: int,
        capsule_dim: int,
        *,
        routings: int = 3,
        share_weights: bool = True,
        method: str = "hinton",
        num_inputs: int | None = None,
        rngs: nnx.Rngs,
        dtype: jnp.dtype | None = None,
        param_dtype: jnp.dtype = jnp.float32,
    ):
        self.in_features = positive_int("in_features", in_features)
        self.num_capsules = positive_int("num_capsules", num_capsules)
        self.capsule_dim = positive_int("capsule_dim", capsule_dim)
        self.routings = positive_int("routings", routings)
        checks.choice("method", method, _METHODS)
        _check_bool("share_weights", share_weights)
        checks.float_dtype("dtype", dtype, complex_ok=False)
        param_dtype = checks.float_dtype(
            "param_dtype", param_dtype, allow_none=False, complex_ok=False
        )
        if share_weights:
            if num_inputs is not None:
                raise ValueError(
                    "num_inputs is only used with share_weights=False (shared weights accept "
                    f"any number of input capsules), got num_inputs={num_inputs!r}."
                )
            shape: tuple[int, ...] = (self.in_features, self.num_capsules * self.capsule_dim)
            init = jax.nn.initializers.glorot_uniform()
        else:
            if num_inputs is None:
                raise ValueError(
                    "share_weights=False needs num_inputs=<number of input capsules>, got None."
                )
            num_inputs = positive_int("num_inputs", num_inputs)
            shape = (num_inputs, self.in_features, self.num_capsules * self.capsule_dim)
            init = jax.nn.initializers.glorot_uniform(in_axis=-2, out_axis=-1, batch_axis=(0,))
        self.share_weights = bool(share_weights)
        self.num_inputs = num_inputs
        self.method = method
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.kernel = nnx.Param(init(rngs.params(), shape, param_dtype))

    def __call__(self, u: jax.Array) -> jax.Array:
        """Output capsules ``(B, num_capsules, capsule_dim)`` of input capsules ``u``.

        Args:
          u: ``(B, n_in, in_features)`` (any leading batch axes: ``(..., n_in, F)``).

        Returns:
          ``(B, num_capsules, capsule_dim)`` in the computation dtype.
        """
        u = jnp.asarray(u)
        checks.array_dtype_kind("u", u, ("integer", "floating"))
        if u.ndim < 2 or u.shape[-1] != self.in_features:
            raise ValueError(
                f"u must have shape (B, n_in, {self.in_features}) (in_features = "
                f"{self.in_features}), got {u.shape}."
            )
        if not self.share_weights and u.shape[-2] != self.num_inputs:
            raise ValueError(
                f"u has {u.shape[-2]} input capsules but this layer has per-input weights for "
                f"num_inputs = {self.num_inputs} (shape {u.shape})."
            )
        u, kernel = dtypes.promote_dtype((u, self.kernel[...]), dtype=self.dtype)
        if self.share_weights:
            votes = jnp.einsum("...if,fo->...io", u, kernel)
        else:
            votes = jnp.einsum("...if,ifo->...io", u, kernel)
        votes = votes.reshape(*votes.shape[:-1], self.num_capsules, self.capsule_dim)
        return dynamic_routing(votes, self.routings, method=self.method)
