"""Cosine classification heads (AM-Softmax) and cascading rejection scores."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn import dtypes

from jaxtricks._src import checks
from jaxtricks._src.checks import positive_int
from jaxtricks._src.numerics import l2_normalize

from ._vq import _check_bool, _check_precision

_DEFAULT_EPS = 1e-12
_LECUN = nnx.initializers.lecun_normal()
_LECUN_ROWS = nnx.initializers.lecun_normal(in_axis=-1, out_axis=-2)  # (S, D): fan-in D


def _float_dtype(names: tuple[str, ...], *arrays: jax.Array) -> jnp.dtype:
    """The arrays' common dtype when floating, else float32; bool and complex rejected."""
    for name, a in zip(names, arrays):
        # Cosines and projections are real: complex inputs would lose their imaginary part.
        checks.array_dtype_kind(name, a, ("integer", "floating"))
    dtype = jnp.result_type(*arrays)
    return dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.dtype("float32")


def _compute_dtype(dtype: jnp.dtype) -> jnp.dtype:
    """float32 for half precisions, the dtype itself for float32/float64."""
    return jnp.promote_types(dtype, jnp.float32)


def _normalize(x: jax.Array, axis: int, eps: float | jax.Array) -> jax.Array:
    # x / max(|x|, sqrt(eps)) = x / sqrt(max(|x|^2, eps)) without forming |x|^2 (the scaled
    # safe norm: no overflow); the zero vector maps to 0 with a finite gradient.
    return l2_normalize(x, axis=axis, min_norm=jnp.sqrt(jnp.asarray(eps, x.dtype)))


def _check_eps(eps: object) -> None:
    checks.number("eps", eps, low=0.0)


def _module_dtypes(dtype, param_dtype, kernel_init) -> tuple[jnp.dtype | None, jnp.dtype]:
    """The heads' shared construction checks: real dtypes and a callable initializer."""
    checks.callable_arg("kernel_init", kernel_init)
    return (
        checks.float_dtype("dtype", dtype, complex_ok=False),
        checks.float_dtype("param_dtype", param_dtype, allow_none=False, complex_ok=False),
    )


def cosine_logits(
    x: jax.typing.ArrayLike,
    kernel: jax.typing.ArrayLike,
    *,
    eps: float = _DEFAULT_EPS,
    precision: jax.lax.PrecisionLike = None,
) -> jax.Array:
    r"""Cosines between feature vectors and the columns of a weight matrix.

    .. math::

        \cos\theta_{\ldots k} = \frac{\langle x, w_k\rangle}{\|x\|\,\|w_k\|}, \qquad
        \|u\| := \sqrt{\max(\textstyle\sum_i u_i^2,\ \varepsilon)},

    where :math:`w_k` is column ``k`` of ``kernel``. Both sides are L2-normalised before
    the matmul, so the result lies in :math:`[-1, 1]` up to rounding (it is not clipped).
    ``eps`` bounds the *squared* norm from below (as Keras' ``l2_normalize``, which the
    post uses): a zero feature vector or a zero column gives cosine 0 and a finite
    gradient. The norms are the library's scaled safe norm, so large features (``1e30`` in
    float32, where :math:`\sum_i u_i^2` overflows beyond ``1.8e19``) give their exact
    cosines. Computed in float32 (float64 for float64 inputs) and returned in
    the inputs' common dtype (float32 for integer inputs). These are the logits of
    :func:`jaxtricks.losses.am_softmax_cross_entropy`. The matmul follows ``precision``
    (default: the caller's ``jax.default_matmul_precision``, as a training matmul).

    Args:
      x: ``(..., D)`` features, real (integer or floating).
      kernel: ``(D, K)`` weights, one class per column, real.
      eps: lower bound on each squared norm, ``>= 0`` and finite (checked when a number or
        a concrete array; a traced value is used as given).
      precision: passed to the matmul (``jax.lax.PrecisionLike``).

    Returns:
      ``(..., K)`` cosines.

    Raises:
      ValueError: if ``kernel`` is not 2-D, ``x`` is a scalar, ``x.shape[-1]`` differs
        from ``kernel.shape[0]``, ``eps`` is negative, NaN or infinite, or ``precision`` is
        not a matmul precision.
      TypeError: if ``x`` or ``kernel`` is boolean or complex, or ``eps`` is not a real
        number.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxtricks.nn import cosine_logits
      >>> x = jnp.array([[3.0, 4.0], [0.0, 0.0]])
      >>> kernel = jnp.array([[2.0, 0.0], [0.0, -5.0]])
      >>> cosine_logits(x, kernel)
      Array([[ 0.6, -0.8],
             [ 0. ,  0. ]], dtype=float32)

    References:
      Feng Wang, Jian Cheng, Weiyang Liu, Haijun Liu, "Additive Margin Softmax for Face
      Verification", 2018, arXiv:1801.05599.
      Su Jianlin, "基于GRU和AM-Softmax的句子相似度模型", 2018, https://kexue.fm/archives/5743
    """
    x, kernel = jnp.asarray(x), jnp.asarray(kernel)
    if kernel.ndim != 2:
        raise ValueError(f"kernel must have shape (D, K), got shape {kernel.shape}.")
    if x.ndim == 0 or x.shape[-1] != kernel.shape[0]:
        raise ValueError(
            f"x must have shape (..., {kernel.shape[0]}) to match kernel of shape "
            f"{kernel.shape} (D, K), got shape {x.shape}."
        )
    _check_eps(eps)
    _check_precision(precision)
    out_dtype = _float_dtype(("x", "kernel"), x, kernel)
    compute = _compute_dtype(out_dtype)
    xn = _normalize(x.astype(compute), -1, eps)
    kn = _normalize(kernel.astype(compute), 0, eps)
    return jnp.matmul(xn, kn, precision=precision).astype(out_dtype)


class CosineDense(nnx.Module):
    r"""Dense layer without bias whose outputs are cosines: normalised inputs × normalised columns.

    .. math::

        y_k = \frac{\langle x, w_k\rangle}{\|x\|\,\|w_k\|} \in [-1, 1]

    (see :func:`cosine_logits` for the safe norms). Feed ``y`` to
    :func:`jaxtricks.losses.am_softmax_cross_entropy`; the scale :math:`s` lives in the
    loss, not here. After training, the classes are discarded and the normalised input
    features serve as embeddings compared by cosine (the post's retrieval use).

    Parameters: ``kernel`` ``(in_features, out_features)`` (``nnx.Param``), one class per
    column, as in ``nnx.Linear``. Column norms do not matter, so no weight constraint is
    needed (the post's Keras code uses ``unit_norm`` on the kernel; here the normalisation
    is in the forward pass).

    Args:
      in_features: ``D``, a positive int.
      out_features: ``K``, the number of classes, a positive int.
      eps: lower bound on each squared norm, ``>= 0`` and finite.
      kernel_init: initializer of ``kernel`` (default LeCun normal), a callable.
      rngs: parameter initialisation.
      dtype: floating computation dtype (``None``: inferred from inputs and params); cosines
        are computed in at least float32 and returned in this dtype.
      param_dtype: floating parameter dtype.

    Raises:
      TypeError: non-int sizes (bools included), a non-real ``eps``, a non-callable
        ``kernel_init``, integer or complex ``dtype``/``param_dtype``; at call time a
        boolean or complex ``x``.
      ValueError: sizes < 1, ``eps`` negative, NaN or infinite; at call time,
        ``x.shape[-1] != in_features``.

    Call ``(x)``: ``x`` ``(..., in_features)``. Returns ``(..., out_features)`` cosines.

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxtricks.nn import CosineDense
      >>> layer = CosineDense(4, 3, rngs=nnx.Rngs(0))
      >>> y = layer(jnp.ones((2, 4)))
      >>> y.shape, bool(jnp.all(jnp.abs(y) <= 1.0 + 1e-6))
      ((2, 3), True)

    References:
      Feng Wang, Jian Cheng, Weiyang Liu, Haijun Liu, "Additive Margin Softmax for Face
      Verification", 2018, arXiv:1801.05599.
      Su Jianlin, "基于GRU和AM-Softmax的句子相似度模型", 2018, https://kexue.fm/archives/5743
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        eps: float = _DEFAULT_EPS,
        kernel_init: nnx.Initializer = _LECUN,
        rngs: nnx.Rngs,
        dtype: jnp.dtype | None = None,
        param_dtype: jnp.dtype = jnp.float32,
    ) -> None:
        positive_int("in_features", in_features)
        positive_int("out_features", out_features)
        _check_eps(eps)
        self.in_features, self.out_features, self.eps = in_features, out_features, eps
        self.dtype, self.param_dtype = _module_dtypes(dtype, param_dtype, kernel_init)
        self.kernel = nnx.Param(
            kernel_init(rngs.params(), (in_features, out_features), self.param_dtype)
        )

    def __call__(self, x: jax.typing.ArrayLike) -> jax.Array:
        x = jnp.asarray(x)
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"x must have shape (..., {self.in_features}), got {x.shape}.")
        x, kernel = dtypes.promote_dtype((x, self.kernel[...]), dtype=self.dtype)
        return cosine_logits(x, kernel, eps=self.eps)


def _cascade(v: jax.Array, ws: jax.Array) -> tuple[jax.Array, jax.Array, jnp.dtype]:
    """Validates; returns (scores (..., S), residuals (..., S + 1, D)) in the compute dtype."""
    v, ws = jnp.asarray(v), jnp.asarray(ws)
    if ws.ndim != 2 or ws.shape[0] < 1 or ws.shape[1] < 1:
        raise ValueError(
            f"ws must have shape (S, D) with at least one stage and one feature (S, D >= 1), "
            f"got shape {ws.shape}."
        )
    if v.ndim == 0 or v.shape[-1] != ws.shape[1]:
        raise ValueError(
            f"v must have shape (..., {ws.shape[1]}) to match ws of shape {ws.shape} (S, D), "
            f"got shape {v.shape}."
        )
    out_dtype = _float_dtype(("v", "ws"), v, ws)
    compute = _compute_dtype(out_dtype)

    v_k, ws = v.astype(compute), ws.astype(compute)
    shape = (1,) * (v_k.ndim - 1) + ws.shape[1:]  # explicit rank for broadcasting
    scores, residuals = [], [v_k]
    # A Python loop: S is static and small, and unrolled stages run fast outside jit too.
    for w in ws:
        w = w.reshape(shape)
        score = jnp.sum(v_k * w, axis=-1)
        # The projection does not depend on |w|: project on w / max|w_i| so that |w|^2
        # neither underflows nor overflows (stop_gradient: the scale's gradient is zero).
        big = jax.lax.stop_gradient(jnp.max(jnp.abs(w)))
        # Two products with 1/sqrt(big), not w / big: XLA's CPU divides by multiplying with
        # the reciprocal, which is subnormal (flushed to 0) for big above about 8.5e37 in
        # float32, and folds w / a / a into w / (a * a). Any positive scale gives the same
        # projection, so it need not be exact.
        inv = jax.lax.rsqrt(jnp.where(big > 0, big, 1.0))
        u = w * inv * inv
        sq = jnp.sum(jnp.square(u))
        # Double where: a zero w projects nothing, with zero (not NaN) gradients.
        coef = jnp.where(sq > 0, jnp.sum(v_k * u, axis=-1) / jnp.where(sq > 0, sq, 1.0), 0.0)
        v_k = v_k - coef[..., None] * u
        scores.append(score)
        residuals.append(v_k)
    return jnp.stack(scores, axis=-1), jnp.stack(residuals, axis=-2), out_dtype


def cascade_scores(v: jax.typing.ArrayLike, ws: jax.typing.ArrayLike) -> jax.Array:
    r"""Cascading-rejection scores: each stage scores the residual orthogonal to earlier stages.

    .. math::

        v_1 = v, \qquad D_k = \langle v_k, w_k\rangle, \qquad
        v_{k+1} = v_k - \frac{\langle v_k, w_k\rangle}{\|w_k\|^2}\, w_k
        \quad (k = 1, \dots, S),

    so :math:`v_{k+1}` is the part of :math:`v_k` orthogonal to :math:`w_k`
    (:math:`\langle v_{k+1}, w_k\rangle = 0`) and each stage scores what the previous stages
    could not see. A stage with :math:`w_k = 0` scores 0 and passes :math:`v_k` on unchanged
    (zero gradients there, no NaN); the projection is computed on :math:`w_k / \max_i |w_{k,i}|`
    (the same projection), so :math:`\|w_k\|^2` neither underflows nor overflows.
    :math:`D_1` is the usual linear score
    :math:`\langle v, w_1\rangle`. In the paper each :math:`D_k` is a discriminator output:
    the discriminator loss (hinge, or sigmoid cross-entropy) is applied to every stage and
    the :math:`S` losses are averaged with weights. Without biases; add them to the scores
    if wanted (:class:`CascadingRejection` has ``use_bias``). The scores are linear in
    :math:`v`; with :math:`S = D` linearly independent stages the map
    :math:`v \mapsto (D_1, \dots, D_S)` is invertible. Computed in float32 (float64 for
    float64 inputs), unrolled over the stages (``S`` is static: the compiled graph grows
    with ``S``); returned in the inputs' common dtype.

    Args:
      v: ``(..., D)`` feature vectors.
      ws: ``(S, D)`` stage weights :math:`w_1, \dots, w_S` (rows), in cascade order.

    Returns:
      ``(..., S)`` scores :math:`D_1, \dots, D_S`.

    Raises:
      ValueError: if ``ws`` is not ``(S, D)`` with ``S, D >= 1``, ``v`` is a scalar, or
        ``v.shape[-1] != ws.shape[1]`` (the message gives both shapes).
      TypeError: if ``v`` or ``ws`` is boolean or complex.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxtricks.nn import cascade_scores
      >>> v = jnp.array([3.0, 4.0])
      >>> ws = jnp.array([[1.0, 1.0], [0.0, 2.0]])
      >>> cascade_scores(v, ws)  # v_2 = v - 3.5 (1, 1) = (-0.5, 0.5); D_2 = 2 * 0.5
      Array([7., 1.], dtype=float32)

    References:
      Yong-Goo Shin, Yoon-Jae Yeo, Min-Cheol Sagong, Cheol-Hwan Yoo, Sung-Jea Ko, "A Simple
      yet Effective Way for Improving the Performance of GANs", 2019, arXiv:1911.10979.
      Su Jianlin, "级联抑制：提升GAN表现的一种简单有效的方法", 2019,
      https://kexue.fm/archives/7105
    """
    scores, _, out_dtype = _cascade(v, ws)
    return scores.astype(out_dtype)


def cascade_residuals(v: jax.typing.ArrayLike, ws: jax.typing.ArrayLike) -> jax.Array:
    r"""The residual vectors :math:`v_1, \dots, v_{S+1}` of the cascade in :func:`cascade_scores`.

    .. math::

        v_1 = v, \qquad
        v_{k+1} = v_k - \frac{\langle v_k, w_k\rangle}{\|w_k\|^2}\, w_k
        \quad (k = 1, \dots, S),

    with :math:`\langle v_{k+1}, w_k\rangle = 0` and the Pythagorean split
    :math:`\|v_k\|^2 = D_k^2 / \|w_k\|^2 + \|v_{k+1}\|^2`; a zero :math:`w_k` leaves
    :math:`v_{k+1} = v_k`. Same conventions and dtypes as :func:`cascade_scores`.

    Args:
      v: ``(..., D)`` feature vectors.
      ws: ``(S, D)`` stage weights (rows), in cascade order.

    Returns:
      ``(..., S + 1, D)``: index ``k - 1`` holds :math:`v_k`; the last entry is the part of
      :math:`v` that no stage scored.

    Raises:
      ValueError: if ``ws`` is not ``(S, D)`` with ``S, D >= 1``, ``v`` is a scalar, or
        ``v.shape[-1] != ws.shape[1]`` (the message gives both shapes).
      TypeError: if ``v`` or ``ws`` is boolean or complex.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxtricks.nn import cascade_residuals
      >>> cascade_residuals(jnp.array([3.0, 4.0]), jnp.array([[1.0, 1.0], [0.0, 2.0]]))
      Array([[ 3. ,  4. ],
             [-0.5,  0.5],
             [-0.5,  0. ]], dtype=float32)

    References:
      Yong-Goo Shin, Yoon-Jae Yeo, Min-Cheol Sagong, Cheol-Hwan Yoo, Sung-Jea Ko, "A Simple
      yet Effective Way for Improving the Performance of GANs", 2019, arXiv:1911.10979.
      Su Jianlin, "级联抑制：提升GAN表现的一种简单有效的方法", 2019,
      https://kexue.fm/archives/7105
    """
    _, residuals, out_dtype = _cascade(v, ws)
    return residuals.astype(out_dtype)


class CascadingRejection(nnx.Module):
    r"""Cascading-rejection output head: ``S`` stage scores of successive orthogonal residuals.

    .. math::

        D_k = \langle v_k, w_k\rangle\ (+\, b_k), \qquad v_1 = v, \qquad
        v_{k+1} = v_k - \frac{\langle v_k, w_k\rangle}{\|w_k\|^2}\, w_k,

    computed by :func:`cascade_scores`. Replaces the final ``Dense(1)`` of a discriminator
    (or a binary classifier): apply the loss to every stage's score and average the stage
    losses (the paper and the post use a weighted mean; equal weights are the simple
    choice). ``D_1`` alone is an ordinary linear head.

    Parameters: ``kernel`` ``(num_stages, in_features)`` (row ``k`` is :math:`w_k`) and,
    with ``use_bias``, ``bias`` ``(num_stages,)``.

    Args:
      in_features: ``D``, a positive int.
      num_stages: ``S``, a positive int.
      use_bias: add a learned bias per stage to the scores (not to the projections), a
        Python bool.
      kernel_init: initializer of ``kernel`` (default LeCun normal over ``in_features``).
      rngs: parameter initialisation.
      dtype: floating computation dtype (``None``: inferred from inputs and params); the
        cascade runs in at least float32 and the scores are returned in this dtype.
      param_dtype: floating parameter dtype.

    Raises:
      TypeError: non-int sizes (bools included), a non-bool ``use_bias``, a non-callable
        ``kernel_init``, integer or complex ``dtype``/``param_dtype``; at call time a
        boolean or complex ``v``.
      ValueError: sizes < 1; at call time, ``v.shape[-1] != in_features``.

    Call ``(v)``: ``v`` ``(..., in_features)``. Returns ``(..., num_stages)`` scores.

    Examples:
      >>> import jax.numpy as jnp
      >>> import optax
      >>> from flax import nnx
      >>> from jaxtricks.nn import CascadingRejection
      >>> head = CascadingRejection(8, 3, rngs=nnx.Rngs(0))
      >>> scores = head(jnp.ones((4, 8)))
      >>> scores.shape
      (4, 3)
      >>> is_real = jnp.array([1.0, 0.0, 1.0, 0.0])
      >>> loss = optax.sigmoid_binary_cross_entropy(scores, is_real[:, None]).mean()
      >>> loss.shape
      ()

    References:
      Yong-Goo Shin, Yoon-Jae Yeo, Min-Cheol Sagong, Cheol-Hwan Yoo, Sung-Jea Ko, "A Simple
      yet Effective Way for Improving the Performance of GANs", 2019, arXiv:1911.10979.
      Su Jianlin, "级联抑制：提升GAN表现的一种简单有效的方法", 2019,
      https://kexue.fm/archives/7105
    """

    def __init__(
        self,
        in_features: int,
        num_stages: int,
        *,
        use_bias: bool = False,
        kernel_init: nnx.Initializer = _LECUN_ROWS,
        rngs: nnx.Rngs,
        dtype: jnp.dtype | None = None,
        param_dtype: jnp.dtype = jnp.float32,
    ) -> None:
        positive_int("in_features", in_features)
        positive_int("num_stages", num_stages)
        _check_bool("use_bias", use_bias)
        self.in_features, self.num_stages, self.use_bias = in_features, num_stages, use_bias
        self.dtype, self.param_dtype = _module_dtypes(dtype, param_dtype, kernel_init)
        param_dtype = self.param_dtype
        self.kernel = nnx.Param(kernel_init(rngs.params(), (num_stages, in_features), param_dtype))
        self.bias = nnx.Param(jnp.zeros((num_stages,), param_dtype)) if use_bias else None

    def __call__(self, v: jax.typing.ArrayLike) -> jax.Array:
        v = jnp.asarray(v)
        if v.ndim == 0 or v.shape[-1] != self.in_features:
            raise ValueError(f"v must have shape (..., {self.in_features}), got {v.shape}.")
        bias = None if self.bias is None else self.bias[...]
        v, kernel, bias = dtypes.promote_dtype((v, self.kernel[...], bias), dtype=self.dtype)
        scores = cascade_scores(v, kernel)
        if bias is None:
            return scores
        return scores + bias.reshape((1,) * (scores.ndim - 1) + bias.shape)
