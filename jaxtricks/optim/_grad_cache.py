"""Gradient caching: the exact large-batch gradient of a contrastive loss, one chunk at a time."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax import tree_util as jtu

from jaxtricks._src import checks

from . import _validate
from ._batching import merge_slices, split_slices


def grad_cache(
    encode_fn: Callable[..., Any],
    loss_fn: Callable[[Any], jax.Array],
    num_chunks: int,
    *,
    with_key: bool = False,
) -> Callable[..., tuple[jax.Array, Any]]:
    r"""Full-batch loss and gradient of a batch-coupled loss, encoding one chunk at a time.

    A contrastive loss (InfoNCE, in-batch negatives) couples every sample to every other
    one, so the mean of per-chunk gradients is *not* the large-batch gradient. Gradient
    caching splits the chain rule at the embeddings :math:`h_i = E_\theta(x_i)`:

    .. math::

        \tilde h_i = \frac{\partial L(h_1, \dots, h_B)}{\partial h_i}, \qquad
        \nabla_\theta L = \sum_{c=1}^{n} \nabla_\theta
            \sum_{i \in c} \big\langle E_\theta(x_i), \operatorname{sg}(\tilde h_i) \big\rangle .

    Pass 1 encodes every chunk without keeping any activation for the backward pass and
    puts the embeddings back in batch order; :math:`L` and :math:`\tilde h` come from one
    ``jax.value_and_grad(loss_fn)`` over the whole batch of embeddings. Pass 2 runs, chunk
    by chunk inside a ``lax.scan``, the vector-Jacobian product of ``encode_fn`` with the
    cached :math:`\tilde h` of that chunk and sums the results. Encoder activations of only
    one chunk are alive at a time; the price is one extra forward pass of the encoder.

    Conventions: "chunk ``i``" is the *strided* slice of the batch, rows
    ``i, i + num_chunks, i + 2 num_chunks, …`` (not a contiguous block), so that a batch
    sharded over a data axis keeps every device busy in each chunk. ``loss_fn`` sees the
    embeddings in the original batch order. Parameters of the loss itself (e.g. a learned
    temperature) are not differentiated: close over them or fold them into the encoder.
    With ``with_key=True`` chunk ``i`` is encoded with ``jax.random.fold_in(key, i)`` in both
    passes, so dropout masks agree between them and the gradient is exact for the
    stochastic encoder that uses those per-chunk keys.

    Args:
      encode_fn: ``encode_fn(params, chunk) -> embeddings`` (with ``with_key=True``:
        ``encode_fn(params, chunk, key)``). ``chunk`` is ``batch`` with leading axis
        ``B // num_chunks``; ``embeddings`` is an array or pytree whose every leaf has that
        same leading axis.
      loss_fn: ``loss_fn(embeddings) -> scalar``, the loss of the whole batch; its argument
        has the structure of ``encode_fn``'s output with leading axis ``B``.
      num_chunks: number of chunks ``n`` (static, a positive int dividing ``B``).
      with_key: whether ``encode_fn`` and the returned function take a PRNG key.

    Returns:
      ``f(params, batch) -> (loss, grads)`` (with ``with_key=True``:
      ``f(params, batch, key)``), where ``batch`` is a pytree whose leaves share the leading
      axis ``B``, ``loss = loss_fn(encode_fn(params, batch))`` and ``grads`` has the
      structure and dtypes of ``params``.

    Raises:
      ValueError: if ``num_chunks < 1``; when ``f`` is called, if ``batch`` has no leaves, a
        scalar leaf or leaves that disagree on ``B``, if ``B`` is not divisible by
        ``num_chunks``, if an embedding leaf lacks the chunk's leading axis, or if
        ``loss_fn`` does not return a scalar.
      TypeError: if ``encode_fn`` or ``loss_fn`` is not callable, ``num_chunks`` is not an
        int or ``with_key`` not a bool; when ``f`` is called, if a ``params`` leaf is not
        floating or complex, ``key`` is not a PRNG key, or ``loss_fn`` returns a scalar that
        is not real floating.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jaxtricks.optim import grad_cache
      >>> def encode(w, x):
      ...     return jnp.tanh(x @ w)
      >>> def loss(h):  # every row's loss depends on all rows
      ...     logits = h @ h.T
      ...     return jnp.mean(jax.nn.logsumexp(logits, axis=1) - jnp.diag(logits))
      >>> w = jax.random.normal(jax.random.key(0), (3, 4))
      >>> x = jax.random.normal(jax.random.key(1), (8, 3))
      >>> value, grads = grad_cache(encode, loss, num_chunks=4)(w, x)
      >>> ref_value, ref_grads = jax.value_and_grad(lambda w: loss(encode(w, x)))(w)
      >>> bool(jnp.allclose(value, ref_value)), bool(jnp.allclose(grads, ref_grads, atol=1e-6))
      (True, True)

    References:
      Gao, Zhang, Han and Callan, "Scaling Deep Contrastive Learning Batch Size under
      Memory Limited Setup", RepL4NLP 2021, arXiv:2101.06983 (GradCache).

      Su Jianlin, 对比学习可以使用梯度累积吗？ https://kexue.fm/archives/8471
    """
    checks.callable_arg("encode_fn", encode_fn, where="grad_cache")
    checks.callable_arg("loss_fn", loss_fn, where="grad_cache")
    num_chunks = checks.positive_int("num_chunks", num_chunks)
    if not isinstance(with_key, bool):
        raise TypeError(f"with_key must be a bool, got {with_key!r}.")

    def encode(params, chunk, index, key):
        if key is None:
            return encode_fn(params, chunk)
        return encode_fn(params, chunk, jax.random.fold_in(key, index))

    def check_embeddings(params, chunks, key):
        first = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), chunks)
        size = jtu.tree_leaves(first)[0].shape[0]
        out = jax.eval_shape(encode, params, first, 0, key)
        bad = {
            jtu.keystr(path): leaf.shape
            for path, leaf in jtu.tree_leaves_with_path(out)
            if leaf.ndim == 0 or leaf.shape[0] != size
        }
        if bad or not jtu.tree_leaves(out):
            raise ValueError(
                f"encode_fn must return embeddings whose every leaf has the chunk's leading "
                f"axis {size} (batch / num_chunks={num_chunks}); got shapes {bad or out}."
            )

    def run(params, batch, key):
        _validate.inexact_leaves("params", params, where="grad_cache")
        if key is not None:
            checks.prng_key("key", key, where="grad_cache")
        chunks = split_slices(batch, num_chunks, "batch", "num_chunks")
        check_embeddings(params, chunks, key)
        indices = jnp.arange(num_chunks)

        # Pass 1: embeddings only. Nothing here is differentiated, so the scan keeps no
        # activations; stop_gradient keeps it that way if f itself is differentiated.
        frozen = lax.stop_gradient(params)
        embeddings = lax.map(lambda xs: encode(frozen, xs[0], xs[1], key), (chunks, indices))
        embeddings = merge_slices(embeddings)

        out = jax.eval_shape(loss_fn, embeddings)
        if not hasattr(out, "shape") or out.shape != ():
            raise ValueError(
                f"grad_cache: loss_fn must return a scalar, got "
                f"{jax.tree.map(lambda s: s.shape, out)!r}, expected shape ()."
            )
        if not jnp.issubdtype(out.dtype, jnp.floating):
            raise TypeError(
                f"grad_cache: loss_fn must return a real floating scalar (it is "
                f"differentiated), got {out.dtype.name}."
            )
        loss, cotangents = jax.value_and_grad(loss_fn)(embeddings)
        cotangents = split_slices(cotangents, num_chunks, "embeddings", "num_chunks")

        # Pass 2: re-encode each chunk and pull its cached cotangent back to the params;
        # the scan body holds one chunk's residuals at a time.
        def step(total, xs):
            chunk, cotangent, index = xs
            _, pullback = jax.vjp(lambda p: encode(p, chunk, index, key), params)
            (grads,) = pullback(cotangent)
            return jax.tree.map(jnp.add, total, grads), None

        zeros = jax.tree.map(jnp.zeros_like, params)
        grads, _ = lax.scan(step, zeros, (chunks, cotangents, indices))
        return loss, grads

    if with_key:

        def value_and_grad_with_key(params, batch, key):
            return run(params, batch, key)

        return value_and_grad_with_key

    def value_and_grad(params, batch):
        return run(params, batch, None)

    return value_and_grad
