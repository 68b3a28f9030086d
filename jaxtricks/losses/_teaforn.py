"""TeaForN: teacher forcing with N nested decoder passes (look-ahead training loss)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxtricks._src import checks

from . import _common

_WHERE = "teaforn_loss"


def _nested_passes(
    decode_fn: Callable[[jax.Array], jax.Array], inputs: jax.Array, num_passes: int
) -> jax.Array:
    """Hidden states of every pass, ``(num_passes, B, T, D)``.

    ``inputs`` ``(B, T, D)`` is the teacher-forcing input ``[e_0, e(w_1), ..., e(w_{T-1})]``;
    pass ``i + 1`` reads ``[e_0, h^(i)_1, ..., h^(i)_{T-1}]`` (its predecessor's outputs,
    shifted right by one position, behind the same start embedding).
    """
    start = inputs[:, :1]
    hidden = []
    current = inputs
    for _ in range(num_passes):
        h = decode_fn(current)
        if np.shape(h) != inputs.shape:
            raise ValueError(
                f"{_WHERE}: decode_fn must map (B, T, D) = {inputs.shape} inputs to hidden "
                f"states of the same shape, got {np.shape(h)}."
            )
        h = jnp.asarray(h)
        hidden.append(h)
        current = jnp.concatenate([start, h[:, :-1].astype(inputs.dtype)], axis=1)
    return jnp.stack(hidden)


def teaforn_loss(
    decode_fn: Callable[[jax.Array], jax.Array],
    embedding: jax.typing.ArrayLike,
    targets: jax.typing.ArrayLike,
    start_embedding: jax.typing.ArrayLike,
    *,
    num_passes: int = 2,
    weights: jax.typing.ArrayLike | None = None,
    mask: jax.typing.ArrayLike | None = None,
    output_bias: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    r"""TeaForN loss: teacher forcing plus ``num_passes - 1`` nested passes that look ahead.

    The decoder is split, as in the post, into the embedding :math:`E` (the rows of
    ``embedding``) and the rest :math:`M` (``decode_fn``). With gold tokens
    :math:`w_1, \dots, w_T` (``targets``) and the start embedding :math:`e_0`,

    .. math::

        [h^{(1)}_1, \dots, h^{(1)}_T] &= M([e_0, E w_1, \dots, E w_{T-1}]) \\
        [h^{(i+1)}_1, \dots, h^{(i+1)}_T] &= M([e_0, h^{(i)}_1, \dots, h^{(i)}_{T-1}]) \\
        \ell &= \sum_{i=1}^{N} \lambda_i \,
            \frac{\sum_t m_t \, \bigl(-\log \operatorname{softmax}(E h^{(i)}_t + b)[w_t]\bigr)}
                 {\sum_t m_t}

    (sum over the batch as well). Every pass predicts the same target :math:`w_t` at
    position :math:`t`; the look-ahead comes from the right shift of the inputs:
    :math:`h^{(i)}_t` depends on the gold tokens :math:`w_{\le t-i}` only, so pass :math:`i`
    predicts :math:`w_t` from a prefix that ends :math:`i` tokens earlier (equivalently,
    :math:`h^{(1)}_s` is trained to predict :math:`w_{s}, \dots, w_{s+N-1}`). Positions whose
    target lies beyond the sequence are simply not there, as the post notes. The hidden
    state is fed back as it is, in place of the next token's embedding (the paper's default;
    its top-k embedding average was no better in its experiments). This is possible because
    logits are the product with the tied embedding, :math:`h` and :math:`e` sharing the
    width :math:`D`. :math:`M` is shared by all passes; gradients flow through the nested
    passes. At inference time only pass 1 (ordinary decoding) is used, and with
    ``num_passes=1`` this is exactly the teacher-forcing cross-entropy. Cross-entropies are
    computed in float32 (float64 for float64 hidden states); the result has the hidden
    states' dtype.

    Args:
      decode_fn: :math:`M`, a causal decoder mapping input embeddings ``(B, T, D)`` to hidden
        states ``(B, T, D)`` (position ``t`` may only read inputs ``<= t``; a closure over the
        encoder output for a seq2seq model).
      embedding: ``(V, D)`` token embedding :math:`E`, also the output projection (logits
        ``h @ embedding.T``); floating dtype.
      targets: ``(B, T)`` integer gold tokens :math:`w_1, \dots, w_T` in ``[0, V)``, without
        the start token.
      start_embedding: ``(D,)`` embedding :math:`e_0` of the start token; floating dtype.
      num_passes: static Python int :math:`N \ge 1`.
      weights: ``(num_passes,)`` weights :math:`\lambda_1, \dots, \lambda_N \ge 0`, finite
        (may be traced, and are then not checked); default all ones (the post's plain sum).
      mask: optional ``(B, T)`` 0/1 (or boolean) weights :math:`m_t \ge 0` of the target
        positions (padding 0; concrete values are checked, traced ones are not). Default all
        ones. A fully masked batch, an empty batch and ``T = 0`` give 0.
      output_bias: optional ``(V,)`` bias :math:`b` of the output softmax; ``-inf`` entries
        forbid tokens (a forbidden target gives ``+inf`` where it is not masked, nothing
        where it is).

    Returns:
      Scalar loss, in the hidden states' dtype. Under ``jit`` (or any trace) targets cannot
      be checked: an out-of-range target gives NaN.

    Raises:
      TypeError: if ``decode_fn`` is not callable, ``num_passes`` is not an int (bool
        included), ``targets`` is not of integer dtype, ``embedding``, ``start_embedding``
        or ``output_bias`` is not floating, or ``mask`` or ``weights`` is complex.
      ValueError: if ``num_passes < 1``, ``len(weights) != num_passes``, concrete weights or
        mask values are negative or not finite, concrete targets fall outside ``[0, V)``, or
        shapes disagree (``targets`` not 2-D, ``embedding`` not ``(V, D)``,
        ``start_embedding`` not ``(D,)``, ``mask`` not ``targets``' shape, ``output_bias``
        not ``(V,)``, ``decode_fn`` changing the shape); each message names the shapes.

    Examples:
      >>> import jax.numpy as jnp
      >>> import optax
      >>> from jaxtricks.losses import teaforn_loss
      >>> emb = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
      >>> targets = jnp.array([[0, 1, 2]])
      >>> e0 = jnp.array([0.5, -0.5])
      >>> decode = lambda x: jnp.cumsum(x, axis=1)  # a causal "decoder"
      >>> tf = teaforn_loss(decode, emb, targets, e0, num_passes=1)
      >>> inputs = jnp.stack([e0, emb[0], emb[1]])[None]
      >>> ref = optax.softmax_cross_entropy_with_integer_labels(decode(inputs) @ emb.T, targets)
      >>> bool(jnp.allclose(tf, ref.mean()))  # N = 1 is teacher forcing
      True
      >>> round(float(teaforn_loss(decode, emb, targets, e0, num_passes=2)), 4)
      2.8812

    References:
      Sebastian Goodman, Nan Ding, Radu Soricut, "TeaForN: Teacher-Forcing with N-grams",
      EMNLP 2020, arXiv:2010.03494.
      Su Jianlin, "TeaForN：让Teacher Forcing更有“远见”一些", https://kexue.fm/archives/7818
    """
    checks.callable_arg("decode_fn", decode_fn, where=_WHERE)
    num_passes = checks.positive_int("num_passes", num_passes, where=_WHERE)
    if weights is None:
        weights = jnp.ones(num_passes)
    weights = _common.real_array("weights", weights, where=_WHERE)
    checks.shape("weights", weights, (num_passes,), where=_WHERE)
    checks.number("weights", weights, low=0.0, where=_WHERE)
    floating = ("floating",)
    embedding = _common.real_array("embedding", embedding, where=_WHERE, kinds=floating)
    start_embedding = _common.real_array(
        "start_embedding", start_embedding, where=_WHERE, kinds=floating
    )
    checks.shape("embedding", embedding, (None, None), where=_WHERE)
    vocab, dim = embedding.shape
    checks.shape("start_embedding", start_embedding, (dim,), where=_WHERE)
    checks.array_dtype_kind("targets", targets, ("integer",), where=_WHERE)
    checks.shape("targets", targets, (None, None), where=_WHERE)
    if mask is None:
        mask = jnp.ones(np.shape(targets), jnp.float32)
    mask = _common.real_array("mask", mask, where=_WHERE, kinds=("bool", "integer", "floating"))
    checks.shape("mask", mask, np.shape(targets), where=_WHERE)
    if mask.dtype != jnp.bool_:
        checks.number("mask", mask, low=0.0, where=_WHERE)
    if output_bias is not None:
        output_bias = _common.real_array("output_bias", output_bias, where=_WHERE, kinds=floating)
        checks.shape("output_bias", output_bias, (vocab,), where=_WHERE)
    # labels against the (B, T, V) logits: integer dtype, shape and concrete range checked.
    batch, length = np.shape(targets)
    safe, valid = _common.integer_labels(
        jax.ShapeDtypeStruct((batch, length, vocab), embedding.dtype),
        targets,
        where=_WHERE,
        name="targets",
        logits_name="embedding",
    )

    gold = jnp.take(embedding, safe[:, :-1], axis=0)
    start = jnp.broadcast_to(start_embedding.astype(embedding.dtype), (batch, 1, dim))
    # [:length]: with T = 0 the inputs are empty too (no positions, loss 0).
    inputs = jnp.concatenate([start, gold], axis=1)[:, :length]
    hidden = _nested_passes(decode_fn, inputs, num_passes)

    compute = jnp.promote_types(hidden.dtype, jnp.float32)
    logits = hidden.astype(compute) @ embedding.astype(compute).T
    if output_bias is not None:
        logits = logits + output_bias.astype(compute)[None, None, None]
    nll = _common.cross_entropy(logits, jnp.broadcast_to(safe, logits.shape[:-1]))
    m = mask.astype(compute)
    # where, not nll * m alone: a masked position may hold a forbidden (inf-loss) target.
    weighted = jnp.where(m[None] > 0, nll * m[None], 0.0)
    per_pass = jnp.sum(weighted, axis=(1, 2)) / jnp.maximum(jnp.sum(m), 1.0)
    loss = jnp.sum(weights.astype(compute) * per_pass)
    loss = jnp.where(jnp.all(valid), loss, jnp.nan)
    return loss.astype(hidden.dtype)
