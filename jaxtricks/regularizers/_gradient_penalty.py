"""Gradient penalties on the input: the Rademacher estimate and the zero-centred (R1) penalty.

Adding Gaussian noise of variance :math:`\\sigma^2` to the input of a model trained with a
smooth loss that is minimal at "prediction = target" amounts, to second order, to a penalty
:math:`\\tfrac12\\sigma^2\\sum_i \\lambda_i \\|\\nabla_x f_i(x)\\|^2` on the input gradients of
every output (``λ = 2`` for the squared error). Computing every :math:`\\nabla_x f_i` costs one
backward pass per output; one backward pass of a random sign combination of the outputs
estimates the sum without bias.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxtricks._src import checks
from jaxtricks._src.checks import prng_key
from jaxtricks._src.numerics import compute_dtype


def _check_floating(name: str, x: jax.Array) -> None:
    checks.array_dtype_kind(name, x, ("floating",))


def _squared_norms(grad: jax.Array, rows: int | None) -> jax.Array:
    """Sums of squares (of all entries, or per row), in float32 at least.

    A plain sum of squares, not the scaled safe norm squared: it is exact (its overflow is
    the true value's), and its second derivative, which double backpropagation needs, is
    right at the zero gradient too (2, where the safe norm's would be 0).
    """
    sq = jnp.square(grad.astype(compute_dtype(grad)))
    return (
        jnp.sum(sq) if rows is None else jnp.sum(sq.reshape(rows, math.prod(sq.shape[1:])), axis=1)
    )


def gradient_penalty(
    f: Callable[[jax.Array], jax.Array],
    x: jax.typing.ArrayLike,
    key: jax.Array,
) -> jax.Array:
    r"""Unbiased one-sample estimate of :math:`\sum_i \|\nabla_x f_i(x)\|^2` for one example.

    With :math:`J = \partial f / \partial x` the Jacobian (one row per output) and :math:`\eta`
    a vector of independent Rademacher signs (:math:`\pm 1` with probability ½ each), drawn
    with the shape of ``f(x)``:

    .. math::

        \hat G = \big\|\nabla_x\, (\eta \cdot f(x))\big\|^2 = \|J^\top \eta\|^2, \qquad
        \mathbb{E}_\eta\, \hat G = \operatorname{Tr}(J J^\top)
            = \sum_i \|\nabla_x f_i(x)\|^2

    because :math:`\mathbb{E}[\eta_i \eta_j] = \delta_{ij}` (Hutchinson's trace estimator
    applied to :math:`A = J J^\top`). One call costs one forward and one backward pass of ``f``
    whatever the number of outputs. Its variance is

    .. math::

        \operatorname{Var}\hat G = 2 \sum_{i \ne j} A_{ij}^2
            = 2 \sum_{i \ne j} \big(\nabla_x f_i \cdot \nabla_x f_j\big)^2,

    the smallest among i.i.d. zero-mean unit-variance noises (any other has
    :math:`\mathbb{E}\eta^4 > 1`, which adds :math:`(\mathbb{E}\eta^4 - 1)\sum_i A_{ii}^2`,
    e.g. :math:`2\sum_i A_{ii}^2` for Gaussian noise): it is 0 when the output gradients are
    mutually orthogonal, and grows with their overlaps. Average several calls
    (``vmap`` over keys) to reduce it. The result is differentiable with respect to whatever
    ``f`` closes over (double backpropagation), so it can be added to a training loss.

    Args:
      f: maps one example ``x`` to an array of outputs (any shape; each element is an
        :math:`f_i`), e.g. the logits or probabilities of the model with its parameters closed
        over. Must not mix examples: ``vmap`` this function over a batch.
      x: one example, any shape, floating dtype.
      key: one PRNG key (``jax.random.key(seed)`` or a legacy raw key); one Rademacher sign
        per output is drawn from it.

    Returns:
      Scalar in ``x``'s dtype (squares are summed in float32 at least); 0 when ``f`` does not
      depend on ``x`` (zero gradient).

    Raises:
      TypeError: if ``f`` is not callable, ``key`` is not a PRNG key, ``x`` or ``f(x)`` is
        not floating, or ``f(x)`` is not a single array.
      ValueError: if ``key`` is a batch of keys (``vmap`` over them instead).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jaxtricks.regularizers import gradient_penalty
      >>> # Output gradients 2*e_0 and 3*e_1 are orthogonal: every sample is exact, 4 + 9.
      >>> f = lambda x: jnp.array([2.0 * x[0], 3.0 * x[1]])
      >>> print(gradient_penalty(f, jnp.ones(2), jax.random.key(0)))
      13.0
      >>> # A batch: vmap over the examples with one key each.
      >>> keys = jax.random.split(jax.random.key(1), 4)
      >>> print(jax.vmap(gradient_penalty, (None, 0, 0))(f, jnp.ones((4, 2)), keys))
      [13. 13. 13. 13.]

    References:
      Harris Drucker, Yann LeCun, "Improving generalization performance using double
      backpropagation", IEEE Transactions on Neural Networks 3(6), 1992.
      M. F. Hutchinson, "A stochastic estimator of the trace of the influence matrix for
      Laplacian smoothing splines", Communications in Statistics - Simulation and
      Computation 18(3), 1989.
      Su Jianlin, "泛化性乱弹：从随机噪声、梯度惩罚到虚拟对抗训练",
      https://kexue.fm/archives/7466
    """
    checks.callable_arg("f", f)
    prng_key("key", key)
    x = jnp.asarray(x)
    _check_floating("x", x)
    y, pullback = jax.vjp(f, x)
    if not isinstance(y, jax.Array):
        raise TypeError(f"f must return a single array, got {type(y).__name__}.")
    _check_floating("f(x)", y)
    eta = jax.random.rademacher(key, y.shape, dtype=y.dtype)
    (grad,) = pullback(eta)
    return _squared_norms(grad, None).astype(x.dtype)


def zero_centered_gradient_penalty(
    d_fn: Callable[[jax.Array], jax.Array],
    x: jax.typing.ArrayLike,
) -> jax.Array:
    r"""Zero-centred gradient penalty :math:`\mathbb{E}_x \|\nabla_x D(x)\|^2` over a batch.

    .. math::

        \mathcal{R}(x_{1..B}) = \frac{1}{B} \sum_{b=1}^{B}
            \big\|\nabla_x D(x)\big|_{x = x_b}\big\|^2

    Evaluated at real samples and weighted by :math:`\gamma / 2`, this is Mescheder et al.'s
    :math:`R_1` regulariser; at generated samples it is their :math:`R_2`. Unlike WGAN-GP's
    :math:`(\|\nabla D\| - 1)^2` it pulls the gradient towards 0, which damps the rotation of
    simultaneous gradient descent around the equilibrium (the Dirac-GAN analysis of the post).
    The weight :math:`\gamma / 2` is left to the caller.

    All per-example gradients come from one backward pass of :math:`\sum_b D(x)_b`: this
    requires that score :math:`b` depends on example :math:`b` only (no batch statistics such
    as BatchNorm in training mode, no attention across the batch). The result is
    differentiable with respect to the parameters ``d_fn`` closes over.

    Args:
      d_fn: maps a batch ``x`` ``(B, ...)`` to scores ``(B,)`` (the discriminator's logits).
      x: ``(B, ...)`` floating, the points where the gradient is penalised.

    Returns:
      Scalar in ``x``'s dtype, the mean over the batch of the squared gradient norms, 0 for
      an empty batch (``B = 0``) or a critic constant in ``x`` (squares
      summed in float32 at least).

    Raises:
      TypeError: if ``d_fn`` is not callable, or ``x`` or the scores are not floating.
      ValueError: if ``x`` is 0-D or ``d_fn(x)`` does not have shape ``(B,)``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxtricks.regularizers import zero_centered_gradient_penalty
      >>> w = jnp.array([3.0, 4.0])
      >>> d_fn = lambda x: x @ w  # linear critic: gradient w everywhere, |w|^2 = 25
      >>> print(zero_centered_gradient_penalty(d_fn, jnp.zeros((5, 2))))
      25.0

    References:
      Lars Mescheder, Andreas Geiger, Sebastian Nowozin, "Which Training Methods for GANs do
      actually Converge?", ICML 2018, arXiv:1801.04406.
      Su Jianlin, "从动力学角度看优化算法（四）：GAN的第三个阶段",
      https://kexue.fm/archives/6583
    """
    checks.callable_arg("d_fn", d_fn)
    x = jnp.asarray(x)
    _check_floating("x", x)
    if x.ndim < 1:
        raise ValueError(f"x must be a batch (B, ...), got a 0-D array of shape {x.shape}.")
    scores, pullback = jax.vjp(d_fn, x)
    if not isinstance(scores, jax.Array) or scores.shape != x.shape[:1]:
        shape = getattr(scores, "shape", type(scores).__name__)
        raise ValueError(f"d_fn(x) must have shape (B,) = {x.shape[:1]}, got {shape}.")
    _check_floating("d_fn(x)", scores)
    (grad,) = pullback(jnp.ones_like(scores))
    per_example = _squared_norms(grad, x.shape[0])
    # The mean over an empty batch is 0 (nothing to penalise), not 0/0.
    return (jnp.sum(per_example) / max(x.shape[0], 1)).astype(x.dtype)
