"""Exact gradient accumulation: an optax wrapper and a micro-batched ``value_and_grad``.

Post: 用时间换取效果:Keras梯度累积优化器 (https://kexue.fm/archives/6794).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from jaxtricks._src import checks

from . import _validate
from ._batching import split_slices


class AccumulateState(NamedTuple):
    """State of :func:`accumulate`.

    Attributes:
      mini_step: int32 scalar, the number of calls since the last emitted update. It is 0
        right after a call that ran the inner optimizer (and at initialisation).
      acc_grads: ``Σ wᵢ gᵢ`` over the calls of the current cycle, a pytree like the params in
        the accumulator dtype (at least float32, see :func:`accumulate`).
      acc_weight: float32 scalar (float64 under x64), ``Σ wᵢ`` over the current cycle.
      inner_state: the state of the wrapped optimizer; it changes only when it runs.
    """

    mini_step: jax.Array
    acc_grads: optax.Updates
    acc_weight: jax.Array
    inner_state: optax.OptState


def _accumulator_dtype(dtype: jnp.dtype) -> jnp.dtype:
    """Float leaves accumulate in at least float32 (bf16 sums of many terms lose bits)."""
    if jnp.issubdtype(dtype, jnp.floating):
        return jnp.promote_types(dtype, jnp.float32)
    return dtype


def accumulate(
    inner: optax.GradientTransformation, every_k: int
) -> optax.GradientTransformationExtraArgs:
    r"""Accumulates ``every_k`` gradients, then runs ``inner`` once on their weighted mean.

    Call ``update`` once per micro-batch. Call ``i`` of a cycle adds ``wᵢ gᵢ`` to an
    accumulator; the ``every_k``-th call hands the weighted mean to ``inner`` and emits its
    update, the other calls emit zeros:

    .. math::

        \bar g = \frac{\sum_{i=1}^{k} w_i g_i}{\sum_{i=1}^{k} w_i},\qquad
        u = \begin{cases} \mathrm{inner}(\bar g) & \text{call } k \text{ of the cycle}\\
        0 & \text{otherwise.}\end{cases}

    With ``gᵢ`` the mean-over-tokens gradient of micro-batch ``i`` and ``wᵢ`` its number of
    valid tokens, ``ḡ`` is exactly the gradient of the mean loss over all tokens of the k
    micro-batches, however unevenly the tokens fall.

    Conventions:

    * The non-emitting calls do **not** run ``inner``: they cost one ``acc += w * g`` and
      writing zeros. ``inner`` sits in a ``lax.while_loop`` that runs once on the emitting
      call and zero times otherwise (a branch that passes the state through a ``lax.cond``
      makes XLA copy it; a loop carry is updated in place). ``optax.MultiSteps`` (optax
      0.2.8) runs the inner update on every micro-step and keeps its result with
      ``jnp.where`` only at the last one, so each of its micro-steps costs a full optimizer
      pass.
    * Under ``jax.jit``, donate the gradients with the state (``donate_argnums`` covering
      both), or jit the whole training step with params and state donated. JAX pairs donated
      inputs with outputs of the same shape in order; with only the state donated, the
      emitted update (the first output) takes the accumulator's buffer and every state
      buffer shifts by one, which costs a copy of each.
    * The inner optimizer's count, and so any schedule inside ``inner``, advances once per
      emitted update, i.e. it counts large-batch steps. bert4keras' accumulating optimizer
      counts micro-steps in its schedules and applies the previous k gradients at the update
      step; to port its schedules, divide their step numbers by ``every_k``.
    * Extra arguments other than ``weight`` are forwarded to ``inner`` at the emitting call
      (their values from that last micro-batch); ``inner`` without extra-argument support is
      wrapped with ``optax.with_extra_args_support``.
    * Float gradients accumulate in at least float32 (float64 stays float64); the mean is cast
      back to the gradient's dtype before ``inner``, so bf16 params get bf16 updates. Weights
      accumulate in float32 (float64 under x64).
    * Weights must be finite and non-negative. A micro-batch of weight 0 is left out entirely,
      even if its gradient is NaN or infinite (the 0/0 of a mean over no valid token). A
      cycle whose weights sum to 0 hands ``inner`` a zero gradient (``inner`` still runs, e.g.
      Adam's momentum still moves). A concrete weight is checked; a traced one (inside
      ``jit``) cannot be: a negative traced weight enters both sums as given, so the mean is
      still ``Σ wᵢ gᵢ / Σ wᵢ`` (with the zero-sum rule above) but no longer an average, and a
      NaN weight gives NaN.
    * The last call emitted exactly when ``state.mini_step == 0`` afterwards; inside a chain,
      ``optax.tree_utils.tree_get(opt_state, "mini_step")`` finds it.
    * It only averages gradients: layers whose forward pass depends on the batch (BatchNorm
      statistics) still see each micro-batch separately.

    Args:
      inner: the optimizer to run on the mean gradient, e.g. ``optax.adam(1e-3)``.
      every_k: the number of calls per emitted update, a positive Python int (static).

    Returns:
      An ``optax.GradientTransformationExtraArgs``; its ``update(grads, state, params=None,
      *, weight=1.0, **extra_args)`` takes ``weight`` as a real scalar (shape ``()``), and its
      state is an :class:`AccumulateState`.

    Raises:
      TypeError: if ``inner`` is not an optax ``GradientTransformation``, ``every_k`` is not
        an int (``bool`` included), or (in ``update``) ``weight`` is complex or not a number.
      ValueError: if ``every_k < 1``; in ``update``, if ``weight`` is not a scalar, or is a
        concrete negative, NaN or infinite value, or if ``grads`` does not have the tree and
        shapes of the params given to ``init``.

    Examples:
      >>> import jax.numpy as jnp
      >>> import optax
      >>> from jaxtricks.optim import accumulate
      >>> tx = accumulate(optax.sgd(1.0), every_k=2)
      >>> params = jnp.zeros(2)
      >>> state = tx.init(params)
      >>> u, state = tx.update(jnp.array([1.0, 3.0]), state, params, weight=1.0)
      >>> print(u, int(state.mini_step))
      [0. 0.] 1
      >>> u, state = tx.update(jnp.array([4.0, 0.0]), state, params, weight=3.0)
      >>> print(u, int(state.mini_step))  # -(1*[1, 3] + 3*[4, 0]) / (1 + 3)
      [-3.25 -0.75] 0

    References:
      Su Jianlin, 用时间换取效果:Keras梯度累积优化器 (2019),
      https://kexue.fm/archives/6794.
      Peer code: ``optax.MultiSteps`` (DeepMind optax), which runs the inner optimizer on every
      micro-step.
    """
    checks.gradient_transformation("inner", inner, where="accumulate")
    every_k = checks.positive_int("every_k", every_k)
    inner = optax.with_extra_args_support(inner)

    def init_fn(params):
        acc_grads = jax.tree.map(
            lambda p: jnp.zeros_like(p, dtype=_accumulator_dtype(jnp.result_type(p))), params
        )
        return AccumulateState(
            mini_step=jnp.zeros([], jnp.int32),
            acc_grads=acc_grads,
            acc_weight=jnp.zeros([], jnp.result_type(float)),
            inner_state=inner.init(params),
        )

    def update_fn(updates, state, params=None, *, weight=None, **extra_args):
        if weight is None:
            weight = 1.0
        if jnp.ndim(weight) != 0:
            raise ValueError(
                f"weight must be a scalar (one number per micro-batch), got shape "
                f"{jnp.shape(weight)}, expected ()."
            )
        checks.array_dtype_kind("weight", weight, ("integer", "floating"))
        checks.number("weight", weight, low=0)  # concrete values only; tracers pass
        _validate.tree_like(
            "grads", updates, state.acc_grads, what="the params given to init", where="accumulate"
        )
        weight = jnp.asarray(weight, state.acc_weight.dtype)
        acc_weight = state.acc_weight + weight
        # A weight-0 micro-batch contributes nothing, not 0 * NaN (empty-mean gradients).
        acc_grads = jax.tree.map(
            lambda a, g: a + jnp.where(weight == 0, 0, weight.astype(a.dtype) * g.astype(a.dtype)),
            state.acc_grads,
            updates,
        )
        mini_step = state.mini_step + 1
        emit = mini_step == every_k

        def run_inner(carry):
            _, _, acc_grads, acc_weight, inner_state = carry
            # An all-zero-weight cycle averages nothing: a zero gradient, not 0/0.
            denom = jnp.where(acc_weight != 0, acc_weight, 1)
            mean = jax.tree.map(
                lambda a, g: (a / denom.astype(a.dtype)).astype(g.dtype), acc_grads, updates
            )
            new_updates, new_inner = inner.update(mean, inner_state, params, **extra_args)
            # The loop carry must keep its types; keep the state's own dtypes.
            new_inner = jax.tree.map(
                lambda n, o: jnp.asarray(n, jnp.result_type(o)), new_inner, inner_state
            )
            zero_grads = jax.tree.map(jnp.zeros_like, acc_grads)
            return False, new_updates, zero_grads, jnp.zeros_like(acc_weight), new_inner

        out_shapes = jax.eval_shape(
            run_inner, (emit, updates, acc_grads, acc_weight, state.inner_state)
        )[1]
        # zeros_like of the shapes keeps their sharding type (explicit-sharding meshes).
        zeros = jax.tree.map(jnp.zeros_like, out_shapes)
        # A loop that runs once when emitting and never otherwise: unlike the branches of
        # lax.cond, a while loop updates its carry in place, so the held inner state is not
        # copied on the calls that do not emit.
        _, new_updates, acc_grads, acc_weight, inner_state = lax.while_loop(
            lambda carry: carry[0],
            run_inner,
            (emit, zeros, acc_grads, acc_weight, state.inner_state),
        )
        mini_step = jnp.where(emit, 0, mini_step).astype(jnp.int32)
        return new_updates, AccumulateState(mini_step, acc_grads, acc_weight, inner_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def microbatch_value_and_grad(
    loss_fn: Callable[[Any, Any], tuple[jax.Array, jax.Array]], num_microbatches: int
) -> Callable[[Any, Any], tuple[jax.Array, Any]]:
    r"""The full-batch weighted-mean loss and its gradient, computed one micro-batch at a time.

    ``loss_fn(params, batch)`` returns ``(loss_sum, weight)``: the summed loss of the rows it
    is given and their weight (e.g. the number of valid tokens). The batch is cut into
    ``num_microbatches`` slices ``S_j`` along every leaf's leading axis and

    .. math::

        L = \frac{\sum_j \mathrm{loss\_sum}(S_j)}{\sum_j \mathrm{weight}(S_j)},\qquad
        \nabla L = \frac{\sum_j \nabla\,\mathrm{loss\_sum}(S_j)}{\sum_j \mathrm{weight}(S_j)},

    with a ``lax.scan`` over the slices, so the activations of one slice are alive at a time.

    Conventions:

    * ``weight`` is a constant: it is not differentiated (it is the auxiliary output of
      ``jax.value_and_grad``), as if wrapped in ``lax.stop_gradient``.
    * Slice ``j`` holds rows ``j, j + n, j + 2n, …`` (strided), so a batch sharded over a data
      axis keeps every device busy in every slice. The sums do not depend on the split, so the
      result is the full-batch value up to float rounding. ``loss_fn`` must treat rows
      independently (no BatchNorm over the batch, no in-batch negatives: see ``grad_cache``).
    * Gradients, loss and weight accumulate in at least float32 and the gradient is returned
      in the params' dtype. A batch whose weights sum to 0 (every token masked, or an empty
      batch, ``B = 0``) gives loss and gradient 0. The weights come from ``loss_fn`` and are
      traced, so they are not checked: a negative weight enters the sum as given.

    Args:
      loss_fn: ``(params, batch) -> (loss_sum, weight)``, both scalars.
      num_microbatches: the number of slices, a positive Python int (static); it must divide
        the leading axis ``B`` of every leaf of ``batch``.

    Returns:
      ``f(params, batch) -> (loss, grads)``: ``loss`` a scalar, ``grads`` shaped like
      ``params``. ``batch`` is a pytree whose leaves all have leading axis ``B``.

    Raises:
      TypeError: if ``loss_fn`` is not callable or ``num_microbatches`` is not an int; when
        ``f`` is called, if a leaf of ``params`` is not floating or complex, or ``loss_fn``
        does not return a pair whose ``loss_sum`` is a real floating scalar.
      ValueError: if ``num_microbatches < 1``, or (when ``f`` is called) if ``batch`` has no
        leaves, a scalar leaf, leaves that disagree on ``B``, ``B`` not divisible by
        ``num_microbatches``, or ``loss_fn`` does not return two scalars.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxtricks.optim import microbatch_value_and_grad
      >>> def loss_fn(w, batch):
      ...     err = (batch["x"] * w - batch["y"]) ** 2 * batch["mask"]
      ...     return err.sum(), batch["mask"].sum()
      >>> batch = {"x": jnp.arange(4.0), "y": jnp.ones(4), "mask": jnp.array([1.0, 1, 0, 1])}
      >>> loss, grad = microbatch_value_and_grad(loss_fn, 2)(jnp.float32(1.0), batch)
      >>> print(f"{loss:.4f} {grad:.4f}")
      1.6667 4.0000

    References:
      Su Jianlin, 用时间换取效果:Keras梯度累积优化器 (2019),
      https://kexue.fm/archives/6794.
      Peer code: T5X ``t5x.trainer.accumulate_grads_microbatched`` (Google Research), which
      scans over ``num_microbatches`` slices of the batch inside one training step.
    """
    checks.callable_arg("loss_fn", loss_fn, where="microbatch_value_and_grad")
    num_microbatches = checks.positive_int("num_microbatches", num_microbatches)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def f(params, batch):
        where = "microbatch_value_and_grad"
        _validate.inexact_leaves("params", params, where=where)
        slices = split_slices(batch, num_microbatches, "batch", "num_microbatches")
        first = jax.tree.map(lambda x: x[0], slices)
        out = jax.eval_shape(loss_fn, params, first)
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise TypeError(
                f"{where}: loss_fn must return a pair (loss_sum, weight), got "
                f"{jax.tree.map(lambda s: s.shape, out)}."
            )
        loss_shape, weight_shape = out
        for name, s in (("loss_sum", loss_shape), ("weight", weight_shape)):
            if getattr(s, "shape", None) != ():
                raise ValueError(
                    f"{where}: loss_fn must return a scalar {name}, got shape "
                    f"{getattr(s, 'shape', s)}, expected ()."
                )
        if not jnp.issubdtype(loss_shape.dtype, jnp.floating):
            raise TypeError(
                f"{where}: loss_fn must return a real floating loss_sum (it is differentiated), "
                f"got {loss_shape.dtype.name}."
            )
        scalar_dtype = _accumulator_dtype(jnp.result_type(loss_shape.dtype, float))
        carry = (
            jax.tree.map(
                lambda p: jnp.zeros_like(p, _accumulator_dtype(jnp.result_type(p))), params
            ),
            jnp.zeros([], scalar_dtype),
            jnp.zeros([], scalar_dtype),
        )

        def body(carry, batch_slice):
            grads, loss, weight = carry
            (loss_j, weight_j), grads_j = grad_fn(params, batch_slice)
            grads = jax.tree.map(lambda a, g: a + g.astype(a.dtype), grads, grads_j)
            loss, weight = (
                loss + loss_j.astype(scalar_dtype),
                weight + weight_j.astype(scalar_dtype),
            )
            return (grads, loss, weight), None

        (grads, loss, weight), _ = lax.scan(body, carry, slices)
        # A batch without weight (every token masked, or B = 0) gives zeros, not 0/0, and
        # not the unnormalised sums of a loss_fn that does not mask its loss_sum.
        empty = weight == 0
        weight = jnp.where(empty, 1, weight)

        def mean(total, like):
            return jnp.where(empty, 0, total / weight.astype(total.dtype)).astype(like)

        grads = jax.tree.map(lambda g, p: mean(g, jnp.result_type(p)), grads, params)
        return mean(loss, loss.dtype), grads

    return f
