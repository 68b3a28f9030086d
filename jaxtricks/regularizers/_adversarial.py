"""Adversarial perturbations: FGM (supervised) and virtual adversarial training (VAT).

FGM moves the input (in NLP: the embeddings) by ε along the normalised gradient of the loss.
VAT needs no label: it looks for the unit direction along which the model's prediction changes
most, the top eigenvector of the Hessian of :math:`r \\mapsto \\mathrm{KL}(p(x) \\| p(x + r))` at
:math:`r = 0`, by power iteration, and penalises the KL at ε along it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxtricks._src import checks
from jaxtricks._src.checks import prng_key
from jaxtricks._src.numerics import compute_dtype, inverse_pow2_scale, safe_norm
from jaxtricks.regularizers._common import scalar


def _check_epsilon(epsilon: Any) -> None:
    # Concrete values (numbers or arrays) are checked; a traced one passes as it is.
    checks.number("epsilon", epsilon, low=0)
    scalar("epsilon", epsilon)


def fgm_perturbation(grad: Any, epsilon: jax.typing.ArrayLike) -> Any:
    r"""Fast gradient method perturbation :math:`\epsilon\, g / \|g\|` (global L2 norm).

    .. math::

        r = \epsilon \frac{g}{\|g\|_2}, \qquad
        \|g\|_2 = \Big(\sum_{\text{leaves}} \sum_{\text{entries}} g^2\Big)^{1/2}, \qquad
        r = 0 \ \text{when}\ g = 0

    The norm is taken over the **whole** input: every leaf of a pytree and every entry of an
    array, batch axis included, like bert4keras's FGM, which normalises the gradient of the
    whole embedding table at once. For the per-example normalisation of Miyato et al. apply it
    per example (``jax.vmap(fgm_perturbation, (0, None))(grads, epsilon)``).

    The gradient is divided by its largest magnitude before the norm is taken, so gradients
    of any finite scale (1e20 and 1e-30 alike in float32) give a perturbation of norm
    :math:`\epsilon`. A zero gradient gives a zero perturbation (bert4keras adds ``1e-8`` to
    the norm instead); the derivative with respect to ``grad`` is finite there too. Infinite
    entries give the limit, :math:`\epsilon` times the unit vector of their signs (finite
    entries get 0); a NaN entry makes every entry NaN.

    Args:
      grad: array or pytree of floating arrays, the gradient of the loss with respect to the
        input (or embeddings).
      epsilon: the perturbation's L2 norm, a finite scalar :math:`\epsilon \ge 0` (bert4keras
        uses 1). May be traced: a traced value is not checked, and a negative one flips the
        direction.

    Returns:
      Pytree like ``grad``, each leaf in its own dtype (the norm is accumulated in float32 at
      least).

    Raises:
      TypeError: if a leaf is not floating or ``epsilon`` is not a real number.
      ValueError: if a concrete ``epsilon`` (number or array) is negative, NaN or infinite,
        or ``epsilon`` is not 0-D.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxtricks.regularizers import fgm_perturbation
      >>> print(fgm_perturbation(jnp.array([3.0, 4.0]), 0.5))
      [0.3 0.4]
      >>> print(fgm_perturbation({"a": jnp.array([3.0]), "b": jnp.array([4.0])}, 1.0))
      {'a': Array([0.6], dtype=float32), 'b': Array([0.8], dtype=float32)}
      >>> print(fgm_perturbation(jnp.zeros(2), 1.0))
      [0. 0.]

    References:
      Takeru Miyato, Andrew M. Dai, Ian Goodfellow, "Adversarial Training Methods for
      Semi-Supervised Text Classification", ICLR 2017, arXiv:1605.07725.
      bert4keras / keras_adversarial_training, ``adversarial_training`` (FGM on the embedding
      table), https://github.com/bojone/keras_adversarial_training
      Su Jianlin, "对抗训练浅谈：意义、方法和思考（附Keras实现）", https://kexue.fm/archives/7234
      Su Jianlin, "泛化性乱弹：从随机噪声、梯度惩罚到虚拟对抗训练",
      https://kexue.fm/archives/7466
    """
    _check_epsilon(epsilon)
    leaves = jax.tree.leaves(grad)
    for leaf in leaves:
        checks.array_dtype_kind("grad", leaf, ("floating",), where="fgm_perturbation")
    if not leaves:
        return grad
    acc = compute_dtype(*leaves)
    gs = [jnp.asarray(g, acc) for g in leaves]
    # Scale first by the largest magnitude of the whole pytree: neither the norm nor g / ||g||
    # can then overflow (a gradient of 1e20 squares to inf in float32) or underflow. The
    # result does not depend on the scale, hence no gradient through it.
    peak = functools.reduce(jnp.maximum, [jnp.max(jnp.abs(g), initial=0) for g in gs])
    peak = jax.lax.stop_gradient(peak)
    # Infinite entries: the limit of g / ||g|| is the direction of the infinite part alone.
    infinite = jnp.isinf(peak)
    gs = [jnp.where(infinite, jnp.where(jnp.isinf(g), jnp.sign(g), 0), g) for g in gs]
    peak = jnp.where(infinite, 1, peak)
    nonzero = peak != 0  # NaN counts as nonzero: it propagates instead of giving zeros
    scale = inverse_pow2_scale(peak)
    scaled = [g * scale for g in gs]
    # The norm of the per-leaf norms is the norm over every entry (empty leaves add nothing).
    leaf_norms = [safe_norm(g.ravel()) for g in scaled if g.size]
    norm = safe_norm(jnp.stack(leaf_norms)) if leaf_norms else jnp.zeros((), acc)
    # A nonzero peak makes norm >= 1/2; the zero gradient takes the other branch (value and
    # derivative 0).
    factor = jnp.where(nonzero, jnp.asarray(epsilon, acc) / jnp.where(nonzero, norm, 1), 0)
    factor = jnp.where(jnp.isnan(peak), jnp.nan, factor)  # safe_norm maps NaN entries to 0
    out = [(g * factor).astype(jnp.asarray(leaf).dtype) for g, leaf in zip(scaled, leaves)]
    return jax.tree.unflatten(jax.tree.structure(grad), out)


def _direction_and_logits(
    apply_fn: Callable[[jax.Array], jax.Array], x: jax.Array, key: jax.Array, num_iters: int
) -> tuple[jax.Array, jax.Array]:
    """The VAT unit direction (gradient stopped) and ``apply_fn(x)``."""
    checks.callable_arg("apply_fn", apply_fn)
    num_iters = checks.nonnegative_int("num_iters", num_iters)
    prng_key("key", key)
    checks.array_dtype_kind("x", x, ("floating",))
    logits, jvp_fn = jax.linearize(apply_fn, x)
    if not isinstance(logits, jax.Array) or logits.ndim < 1:
        shape = getattr(logits, "shape", type(logits).__name__)
        raise ValueError(f"apply_fn(x) must return logits of shape (..., K), got {shape}.")
    checks.array_dtype_kind("apply_fn(x)", logits, ("floating",))
    vjp_fn = jax.linear_transpose(jvp_fn, x)
    acc = jnp.promote_types(logits.dtype, jnp.float32)
    p = jax.nn.softmax(jax.lax.stop_gradient(logits).astype(acc), axis=-1)

    def hessian_times(d: jax.Array) -> jax.Array:
        # At r = 0 the Hessian of KL(p || softmax(z(x + r))) is exactly J^T (diag p - p p^T) J:
        # the other term multiplies the logits' second derivatives by p - p = 0.
        jd = jvp_fn(d).astype(acc)
        fisher_jd = p * (jd - jnp.sum(p * jd, axis=-1, keepdims=True))
        (hd,) = vjp_fn(fisher_jd.astype(logits.dtype))
        return hd

    # Drawn in float32 at least, so a bf16 input starts from the same direction as float32.
    start = jax.random.normal(key, x.shape, jnp.promote_types(x.dtype, jnp.float32))
    d = fgm_perturbation(start.astype(x.dtype), 1.0)
    d = jax.lax.fori_loop(0, num_iters, lambda _, d: fgm_perturbation(hessian_times(d), 1.0), d)
    return jax.lax.stop_gradient(d), logits


def vat_direction(
    apply_fn: Callable[[jax.Array], jax.Array],
    x: jax.typing.ArrayLike,
    key: jax.Array,
    *,
    num_iters: int = 1,
) -> jax.Array:
    r"""The unit direction of virtual adversarial training, by power iteration.

    With :math:`p = \operatorname{softmax}(z(x))` held fixed, the divergence
    :math:`D(r) = \mathrm{KL}(p \,\|\, \operatorname{softmax}(z(x + r)))` has value and
    gradient 0 at :math:`r = 0`, so for small :math:`r`,
    :math:`D(r) \approx \tfrac12 r^\top H r`. The most damaging unit direction is the top
    eigenvector of :math:`H`, found by power iteration from a Gaussian start:

    .. math::

        d_0 = \frac{u}{\|u\|},\ u \sim \mathcal{N}(0, I), \qquad
        d_{k+1} = \frac{H d_k}{\|H d_k\|}, \qquad
        H = J^\top \big(\operatorname{diag}(p) - p p^\top\big) J

    where :math:`J = \partial z / \partial x`. The Hessian-vector products are **exact**: at
    :math:`r = 0` the Hessian of :math:`D` is exactly the Gauss-Newton form above (the term
    with the second derivatives of the logits is multiplied by :math:`p - p = 0`), computed
    with one Jacobian-vector and one vector-Jacobian product of ``apply_fn`` per iteration
    (one linearisation shared by all iterations). The paper and bert4keras instead use the
    finite difference :math:`H d \approx \nabla_r D(r)|_{r = \xi d} / \xi`, of which this is
    the :math:`\xi \to 0` limit; in float32 the difference of two nearby softmaxes loses
    digits, the exact product does not.

    The norms are over the whole ``x`` (every entry, like :func:`fgm_perturbation`); if
    ``apply_fn`` takes a batch, the KL of every row is summed and one direction of unit norm
    is shared by the batch (bert4keras's embedding-level VAT). For the paper's per-example
    directions, ``vmap`` over examples. With ``num_iters=0`` the direction is random (plain
    Gaussian-noise regularisation); the paper finds one iteration enough.

    Args:
      apply_fn: maps ``x`` to floating logits ``(..., K)`` (parameters closed over).
      x: the input, any shape, floating (e.g. embeddings).
      key: one PRNG key (``jax.random.key(seed)``, or a legacy raw ``uint32`` key) for the
        start :math:`u` = ``jax.random.normal(key, x.shape, dtype)`` with ``dtype`` float32,
        or float64 for float64 ``x``, cast to ``x``'s dtype.
      num_iters: number of power iterations, a Python int >= 0 (static).

    Returns:
      Unit-norm array like ``x``, with its gradient stopped. Where :math:`H d_k = 0` (a model
      constant in ``x``, saturated softmaxes) the direction is the zero array, finite.

    Raises:
      TypeError: if ``apply_fn`` is not callable, ``x`` or the logits are not floating,
        ``num_iters`` is not an int, or ``key`` is not a PRNG key.
      ValueError: if ``num_iters < 0``, ``key`` is a batch of keys, or the logits are 0-D.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jaxtricks.regularizers import vat_direction
      >>> w = jnp.array([[3.0, 0.1], [-3.0, 0.1], [0.0, -0.2]])  # 3 classes, 2 features
      >>> d = vat_direction(lambda x: w @ x, jnp.zeros(2), jax.random.key(0), num_iters=5)
      >>> print(jnp.round(jnp.abs(d), 3))  # feature 0 moves the prediction most
      [1. 0.]

    References:
      Takeru Miyato, Shin-ichi Maeda, Masanori Koyama, Shin Ishii, "Virtual Adversarial
      Training: A Regularization Method for Supervised and Semi-Supervised Learning", IEEE
      TPAMI 2018, arXiv:1704.03976.
      Su Jianlin, "泛化性乱弹：从随机噪声、梯度惩罚到虚拟对抗训练",
      https://kexue.fm/archives/7466
    """
    d, _ = _direction_and_logits(apply_fn, jnp.asarray(x), key, num_iters)
    return d


def vat_loss(
    apply_fn: Callable[[jax.Array], jax.Array],
    x: jax.typing.ArrayLike,
    key: jax.Array,
    *,
    epsilon: jax.typing.ArrayLike = 1.0,
    xi: float = 1e-6,
    num_iters: int = 1,
) -> jax.Array:
    r"""Virtual adversarial loss :math:`\mathrm{KL}(\operatorname{sg} p(x) \| p(x + \epsilon d))`.

    .. math::

        \mathcal{L} = \operatorname{mean}_{\text{rows}} \sum_k
            \operatorname{sg}(p_k(x)) \big(\log \operatorname{sg}(p_k(x))
            - \log p_k(x + \epsilon\, \operatorname{sg}(d))\big)

    where :math:`p = \operatorname{softmax}(\text{apply\_fn}(\cdot))` over the last axis and
    :math:`d` is :func:`vat_direction` (power iteration with exact Hessian-vector products).
    Both the clean prediction and the direction are constants for differentiation, as in the
    paper; gradients reach the parameters ``apply_fn`` closes over (and ``x``) through
    :math:`p(x + \epsilon d)` only. It needs no labels: add it, weighted, to the supervised
    loss, on labelled and unlabelled inputs alike.

    Args:
      apply_fn: maps ``x`` to floating logits ``(..., K)``; leading axes are rows (a batch),
        averaged.
      x: the input, any shape, floating (e.g. embeddings). See :func:`vat_direction` for the
        norm: over the whole ``x``; ``vmap`` for per-example directions.
      key: one PRNG key for the power iteration's random start.
      epsilon: the perturbation's L2 norm, a finite scalar :math:`\epsilon \ge 0`. May be
        traced: a traced value is not checked (a negative one perturbs along :math:`-d`).
      xi: the finite-difference step :math:`\xi` of the paper (1e-6) and bert4keras (10), a
        finite number > 0. Accepted so that code written for them runs unchanged, checked,
        and otherwise **ignored**: the Hessian-vector product is computed exactly, which is
        the :math:`\xi \to 0` limit.
      num_iters: power iterations, a Python int >= 0 (static).

    Returns:
      Scalar in the logits' dtype (softmaxes computed in float32 at least). A model whose
      prediction does not move (zero direction) gives 0.

    Raises:
      TypeError: as :func:`vat_direction`, or ``epsilon`` / ``xi`` not real numbers.
      ValueError: as :func:`vat_direction`, or a concrete ``epsilon`` negative, NaN or
        infinite (or not 0-D), or a concrete ``xi`` not a finite number > 0.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jaxtricks.regularizers import vat_loss
      >>> w = jnp.array([[1.0, 0.0], [0.0, 1.0]])
      >>> loss = vat_loss(lambda x: x @ w.T, jnp.zeros((3, 2)), jax.random.key(0), epsilon=0.0)
      >>> print(loss)  # no perturbation, no divergence
      0.0
      >>> print(f"{vat_loss(lambda x: 4.0 * x, jnp.zeros(2), jax.random.key(0)):.4f}")
      2.1388

    References:
      Takeru Miyato, Shin-ichi Maeda, Masanori Koyama, Shin Ishii, "Virtual Adversarial
      Training: A Regularization Method for Supervised and Semi-Supervised Learning", IEEE
      TPAMI 2018, arXiv:1704.03976.
      Su Jianlin, "泛化性乱弹：从随机噪声、梯度惩罚到虚拟对抗训练",
      https://kexue.fm/archives/7466
    """
    # xi is checked, then unused: the exact product is the xi -> 0 limit of the paper's formula.
    checks.number("xi", xi, low=0, low_open=True)
    _check_epsilon(epsilon)
    x = jnp.asarray(x)
    d, logits = _direction_and_logits(apply_fn, x, key, num_iters)
    acc = jnp.promote_types(logits.dtype, jnp.float32)
    log_p = jax.nn.log_softmax(jax.lax.stop_gradient(logits).astype(acc), axis=-1)
    r_adv = (jnp.asarray(epsilon, acc) * d.astype(acc)).astype(x.dtype)
    log_q = jax.nn.log_softmax(apply_fn(x + r_adv).astype(acc), axis=-1)
    kl = jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)
    return jnp.mean(kl).astype(logits.dtype)
