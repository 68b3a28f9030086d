"""MLE-guided parameter search: a search direction from loss values at random perturbations.

The direction is the mean of ``p(ε) ∝ exp(−(L(θ + ε) − L(θ)) / α)`` estimated by
self-normalised importance sampling with a two-component Gaussian proposal, one component at
the current parameters and one at a gradient step. Only loss *values* enter the weights, so
``L`` may be a non-differentiable task loss (0-1 error, BLEU); the gradient only shapes the
proposal.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from jaxtricks._src import checks


def mle_guided_update(
    key: jax.Array,
    params: optax.Params,
    grad: optax.Updates,
    loss_fn: Callable[[optax.Params], jax.typing.ArrayLike],
    *,
    num_samples: int = 4,
    noise_scale: float | jax.Array = 1.0,
    temperature: float | jax.Array = 1.0,
    mix: float | jax.Array = 0.5,
) -> optax.Updates:
    r"""The MLE-guided parameter search (MGS) direction, as a gradient for any optax chain.

    Perturbations :math:`\varepsilon_1 \dots \varepsilon_n` of the flattened parameter vector
    are drawn from a mixture of random search around :math:`\theta` and around a gradient step
    (:math:`g` is ``grad``, e.g. the maximum-likelihood / cross-entropy gradient, :math:`\sigma`
    is ``noise_scale``, :math:`\lambda` is ``mix``):

    .. math::

        q(\varepsilon) = \lambda\,\mathcal N(\varepsilon; 0, \sigma^2 I)
            + (1 - \lambda)\,\mathcal N(\varepsilon; -g, \sigma^2 I).

    Each is weighted by its improvement of ``loss_fn`` (:math:`\alpha` is ``temperature``)
    and the weights are self-normalised:

    .. math::

        w_i \propto \frac{\exp\!\big(-(L(\theta + \varepsilon_i) - L(\theta))/\alpha\big)}
            {q(\varepsilon_i)}, \qquad
        \Delta = \sum_i \tilde w_i\, \varepsilon_i \approx \mathbb E_p[\varepsilon], \quad
        p(\varepsilon) \propto e^{-(L(\theta + \varepsilon) - L(\theta))/\alpha}.

    On a quadratic :math:`L(\theta+\varepsilon) - L(\theta) = g^\top\varepsilon +
    \tfrac12\varepsilon^\top A\varepsilon`, :math:`p = \mathcal N(-A^{-1}g, \alpha A^{-1})`,
    so :math:`\Delta` estimates the Newton step.

    **Sign convention**: the function returns :math:`-\Delta`, a descent-style "gradient", so
    that an optax step ``params - lr * update`` (e.g. ``optax.sgd(lr)``) moves the parameters
    *along* :math:`\Delta`; ``optax.sgd(1.0)`` gives the paper's update
    :math:`\theta \leftarrow \theta + \Delta`.

    Computation: :math:`L(\theta)` and the Gaussian normalising constants are common to all
    samples and cancel in the self-normalisation, so ``loss_fn`` is evaluated only at the
    :math:`n` perturbed points (in one ``jax.vmap``); :math:`\log q` is the ``logsumexp`` of
    the two components (a component with weight 0 contributes :math:`-\infty`); the weights
    are a softmax in log space. Losses and weights are computed in (at least) float32; the
    output has the dtype of each parameter leaf.

    Degenerate losses: a sample whose loss is ``+inf`` or NaN gets weight 0; samples whose
    loss is ``-inf`` share the weight equally (the limit of the softmax); when every sample
    has weight 0 the direction is 0 (no step), never NaN. The losses are shifted by the
    smallest finite one before dividing by :math:`\alpha` (the shift cancels), so huge
    losses over a small temperature still give the best sample the weight instead of
    overflowing.

    Sampling (reproducible from ``key``): ``choice_key, noise_key = jax.random.split(key)``;
    sample :math:`i` comes from the zero-mean component when
    ``jax.random.bernoulli(choice_key, mix, (num_samples,))[i]`` is true (one choice shared by
    all leaves); each leaf draws ``jax.random.normal(k, (num_samples, *leaf.shape), dtype)``
    with its key from ``optax.tree.split_key_like(noise_key, params)`` and ``dtype`` the
    leaf's dtype promoted to at least float32, so the noise of a sharded leaf is generated
    where the leaf lives. The loss sees the perturbed parameters cast back to each leaf's dtype.

    Args:
      key: a PRNG key.
      params: the parameter pytree :math:`\theta` (float leaves of any shape).
      grad: a pytree with ``params``' structure and shapes: the guiding gradient :math:`g`.
      loss_fn: ``loss_fn(params) -> scalar``, the task loss; need not be differentiable.
      num_samples: :math:`n`, the number of perturbations (a static positive int).
      noise_scale: :math:`\sigma > 0`, the standard deviation of both proposal components.
      temperature: :math:`\alpha > 0`; small values concentrate the weight on the best sample.
      mix: :math:`\lambda \in [0, 1]`, the probability of the zero-mean (pure random search)
        component; ``mix=0`` samples only around the gradient step.

    Returns:
      :math:`-\Delta`, a pytree with ``params``' structure, shapes and dtypes.

    Traced hyperparameters (``noise_scale``, ``temperature``, ``mix`` as tracers under
    ``jit``) are not checked: a value out of range gives what the formulas give (NaN for a
    negative ``noise_scale`` or ``mix`` outside [0, 1]).

    Raises:
      TypeError: if ``key`` is not a PRNG key, ``loss_fn`` is not callable, ``num_samples``
        is not an int (bools included), a ``params`` leaf is not floating point or a ``grad``
        leaf is not real, or ``loss_fn`` does not return a real number.
      ValueError: if ``num_samples < 1``; if ``noise_scale`` or ``temperature`` (a number
        or a concrete array) is not positive and finite, or ``mix`` is NaN or outside
        [0, 1]; if ``params`` has no leaves or ``grad`` does not match it in structure or
        shapes; if ``loss_fn`` does not return a scalar.

    Examples:
      On a quadratic the direction approaches the Newton step :math:`-A^{-1}g`:

      >>> import jax, jax.numpy as jnp, optax
      >>> from jaxtricks.optim import mle_guided_update
      >>> a = jnp.array([[2.0, 0.5], [0.5, 1.0]])
      >>> b = jnp.array([1.0, -1.0])
      >>> loss = lambda p: 0.5 * p @ a @ p + b @ p
      >>> theta = jnp.array([0.5, 0.5])
      >>> g = jax.grad(loss)(theta)
      >>> update = mle_guided_update(jax.random.key(0), theta, g, loss, num_samples=4096,
      ...                            noise_scale=0.5, temperature=0.1)
      >>> newton = -jnp.linalg.solve(a, g)
      >>> bool(jnp.linalg.norm(-update - newton) < 0.1 * jnp.linalg.norm(newton))
      True

      As the gradient of an optax step (``params - lr * update`` moves along the direction):

      >>> opt = optax.sgd(1.0)
      >>> state = opt.init(theta)
      >>> step, state = opt.update(update, state)
      >>> bool(loss(optax.apply_updates(theta, step)) < loss(theta))
      True

    References:
      Sean Welleck and Kyunghyun Cho, "MLE-guided parameter search for task loss minimization
      in neural sequence modeling", AAAI 2021, arXiv:2006.03158.

      Su Jianlin, "从采样看优化:可导优化与不可导优化的统一视角" (2020),
      https://kexue.fm/archives/7521
    """
    checks.callable_arg("loss_fn", loss_fn, where="mle_guided_update")
    checks.prng_key("key", key, where="mle_guided_update")
    num_samples = checks.positive_int("num_samples", num_samples)
    checks.number("noise_scale", noise_scale, low=0, low_open=True)
    checks.number("temperature", temperature, low=0, low_open=True)
    checks.number("mix", mix, low=0, high=1)
    treedef = jax.tree.structure(params)
    if jax.tree.structure(grad) != treedef:
        raise ValueError(
            f"grad must have params' tree structure: got {jax.tree.structure(grad)}, "
            f"expected {treedef}."
        )
    leaves = jax.tree.leaves(params)
    if not leaves:
        raise ValueError("params has no array leaves.")
    not_float = [
        jnp.result_type(p) for p in leaves if not jnp.issubdtype(jnp.result_type(p), jnp.floating)
    ]
    if not_float:
        raise TypeError(f"params leaves must be floating point, got dtypes {not_float}.")
    p_shapes = [jnp.shape(p) for p in leaves]
    g_shapes = [jnp.shape(g) for g in jax.tree.leaves(grad)]
    if p_shapes != g_shapes:
        raise ValueError(f"grad leaf shapes {g_shapes} must equal params leaf shapes {p_shapes}.")
    for g in jax.tree.leaves(grad):
        checks.array_dtype_kind("grad", g, ("floating", "integer"), where="mle_guided_update")

    choice_key, noise_key = jax.random.split(key)
    from_zero = jax.random.bernoulli(choice_key, mix, (num_samples,))

    def perturbations(k, p, g):
        dtype = jnp.promote_types(jnp.result_type(p), jnp.float32)
        z = jax.random.normal(k, (num_samples,) + jnp.shape(p), dtype)
        shift = jnp.asarray(g, dtype)[None]
        keep = from_zero.reshape((num_samples,) + (1,) * jnp.ndim(p))
        return jnp.asarray(noise_scale, dtype) * z - jnp.where(keep, 0.0, shift)

    eps = jax.tree.map(perturbations, optax.tree.split_key_like(noise_key, params), params, grad)

    def perturbed_loss(e):
        moved = jax.tree.map(lambda p, d: (p + d).astype(jnp.result_type(p)), params, e)
        return loss_fn(moved)

    losses = jax.vmap(perturbed_loss)(eps)
    if not isinstance(losses, jax.Array):
        raise TypeError(
            f"mle_guided_update: loss_fn must return a scalar array, got {type(losses).__name__}."
        )
    if losses.shape != (num_samples,):
        raise ValueError(
            f"loss_fn must return a scalar, got shape {losses.shape[1:]} per perturbation."
        )
    checks.array_dtype_kind(
        "loss_fn's value", losses, ("floating", "integer", "bool"), where="mle_guided_update"
    )

    wdtype = jnp.result_type(jnp.float32, *jax.tree.leaves(eps))

    def sq_distances(e, g):
        """(2, n): ‖ε‖² and ‖ε + g‖², this leaf's share of the distances to both means."""
        flat = e.reshape(num_samples, -1)
        shifted = flat + jnp.asarray(g, e.dtype).reshape(1, -1)
        return jnp.stack([jnp.sum(flat**2, axis=1), jnp.sum(shifted**2, axis=1)]).astype(wdtype)

    sq = sum(sq_distances(e, g) for e, g in zip(jax.tree.leaves(eps), jax.tree.leaves(grad)))
    mix = jnp.asarray(mix, wdtype)
    log_mix = jnp.stack([jnp.log(mix), jnp.log1p(-mix)]).reshape(2, 1)
    log_q = jax.nn.logsumexp(log_mix - sq / (2.0 * jnp.asarray(noise_scale, wdtype) ** 2), axis=0)
    losses = losses.astype(wdtype)
    # Shifting by the smallest finite loss cancels in the self-normalisation and keeps
    # -(L - L_min) / alpha from overflowing at the best sample for huge losses.
    finite = jnp.isfinite(losses)
    shift = jnp.where(jnp.any(finite), jnp.min(jnp.where(finite, losses, jnp.inf)), 0.0)
    log_w = -(losses - shift) / jnp.asarray(temperature, wdtype) - log_q
    # A NaN loss (a failed evaluation) counts as +inf: weight 0. Samples at -inf loss (log
    # weight +inf) share all the weight, their limit; if every sample has weight 0 there is
    # no information and the direction is 0, not the NaN of a softmax over -inf.
    log_w = jnp.where(jnp.isnan(log_w), -jnp.inf, log_w)
    best = log_w == jnp.inf
    any_best = jnp.any(best)
    weights = jnp.where(
        any_best,
        best / jnp.maximum(jnp.sum(best), 1).astype(wdtype),
        jax.nn.softmax(jnp.where(any_best, 0.0, log_w)),
    )
    weights = jnp.where(jnp.all(log_w == -jnp.inf), 0.0, weights)

    def direction(p, e):
        return (-jnp.tensordot(weights.astype(e.dtype), e, axes=1)).astype(jnp.result_type(p))

    return jax.tree.map(direction, params, eps)
