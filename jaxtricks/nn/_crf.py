"""Linear-chain conditional random field: log-likelihood, partition, Viterbi, marginals.

A path :math:`y_1, \\dots, y_T` of tags scores

.. math::

    s(y) = a_{y_1} + \\sum_{t=1}^{T} h_t(y_t) + \\sum_{t=1}^{T-1} g_{y_t y_{t+1}} + b_{y_T},

with emissions :math:`h`, transitions :math:`g` (``transitions[i, j]`` scores tag ``i``
followed by tag ``j``) and optional start/end scores :math:`a, b`. The partition function
sums over all :math:`K^T` paths by the forward recursion of the post,
:math:`\\alpha_{t+1}(j) = \\operatorname{logsumexp}_i(\\alpha_t(i) + g_{ij}) + h_{t+1}(j)`, in
``lax.scan`` (linear in T) or, with ``parallel=True``, as a product of :math:`(K, K)` matrices
in the log semiring under ``lax.associative_scan`` (log-depth in T).

Dtype policy (every function): scores are accumulated in the promotion of the inputs' dtypes
with float32, so bf16/float16 emissions give float32 results (a log-likelihood summed over
hundreds of steps in bf16 would be off by whole units) and float64 inputs give float64.

Degenerate scores (every function): ``-inf`` in emissions, transitions, start or end forbids
that tag or transition; NaN and ``+inf`` are rejected when the arrays are concrete (under
``jit`` they propagate). A sequence with no possible path has ``log Z = -inf``, log-likelihood
``-inf``, zero marginals and a Viterbi score of ``-inf``; no gradient is NaN.
Traced masks and tags (under ``jit``) cannot be checked: a mask is read as its leading run of
True values with the first step always valid, and a path with a tag outside ``[0, K)`` at a
valid step has log-likelihood ``-inf``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxtricks._src import checks
from jaxtricks._src.checks import positive_int

from ._vq import _check_bool

_REFS = """\
      John Lafferty, Andrew McCallum, Fernando Pereira, "Conditional Random Fields:
      Probabilistic Models for Segmenting and Labeling Sequence Data", ICML 2001.
      pytorch-crf, ``torchcrf.CRF`` (https://github.com/kmkurn/pytorch-crf); bert4keras,
      ``ConditionalRandomField`` (https://github.com/bojone/bert4keras, no start/end scores).
      Su Jianlin, "简明条件随机场CRF介绍（附带纯Keras实现）", https://kexue.fm/archives/5542"""


def _check_scores(name: str, v: jax.Array) -> None:
    """Floating scores; when concrete, no NaN and no +inf (-inf forbids a tag or transition)."""
    checks.array_dtype_kind(name, v, ("floating",))
    arr = checks.concrete(v)
    if arr is None:
        return
    for bad, what in ((np.isnan(arr), "NaN"), (np.isposinf(arr), "+inf")):
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"{name} must not contain {what} (-inf is allowed: it forbids a tag or "
                f"transition), got {what} at index {where} of shape {arr.shape}."
            )


def _prepare(emissions, transitions, mask, start, end, tags=None):
    """Checks shapes and dtypes (always) and values (when concrete); casts to the compute dtype.

    Returns ``(emissions, transitions, mask, start, end, tags, bad)`` with floats in the
    compute dtype, ``mask`` a ``(B, T)`` bool valid prefix, ``tags`` ``(B, T)`` int32 in
    ``[0, K)`` (or ``None``) and ``bad`` ``(B,)`` marking rows whose tags are out of range at
    a valid step (only possible when traced; ``None`` without tags).
    """
    emissions = jnp.asarray(emissions)
    transitions = jnp.asarray(transitions)
    if emissions.ndim != 3:
        raise ValueError(f"emissions must have shape (B, T, K), got {emissions.shape}.")
    b, t, k = emissions.shape
    if t < 1 or k < 1:
        raise ValueError(f"emissions must have T >= 1 and K >= 1, got shape {emissions.shape}.")
    if transitions.shape != (k, k):
        raise ValueError(
            f"transitions must have shape (K, K) = {(k, k)} to match emissions "
            f"{emissions.shape}, got {transitions.shape}."
        )
    floats = {"emissions": emissions, "transitions": transitions}
    for name, v in (("start", start), ("end", end)):
        if v is not None:
            v = jnp.asarray(v)
            if v.shape != (k,):
                raise ValueError(f"{name} must have shape (K,) = {(k,)}, got {v.shape}.")
            floats[name] = v
    for name, v in floats.items():
        _check_scores(name, v)
    dtype = jnp.promote_types(jnp.result_type(*floats.values()), jnp.float32)
    cast = lambda v: None if v is None else jnp.asarray(v).astype(dtype)  # noqa: E731

    if mask is None:
        mask = jnp.ones((b, t), bool)
    else:
        mask = jnp.asarray(mask)
        if mask.shape != (b, t):
            raise ValueError(f"mask must have shape (B, T) = {(b, t)}, got {mask.shape}.")
        if mask.dtype != bool:
            raise TypeError(f"mask must be boolean, got {mask.dtype}.")
        m = checks.concrete(mask)
        if m is not None:
            if not m[:, 0].all():
                rows = np.flatnonzero(~m[:, 0]).tolist()
                raise ValueError(
                    f"mask must give every sequence at least one valid step (mask[:, 0] True); "
                    f"rows {rows} are empty."
                )
            holes = (m[:, 1:] & ~m[:, :-1]).any(axis=1)
            if holes.any():
                raise ValueError(
                    "mask must be a left-aligned valid prefix (True then False, no holes); "
                    f"rows {np.flatnonzero(holes).tolist()} have holes."
                )
        else:
            # A traced mask cannot be checked: read it as its leading run of True values, the
            # first step always valid (a no-op on every mask the checks above accept).
            mask = jnp.cumprod(mask.at[:, 0].set(True), axis=1).astype(bool)
    bad = None
    if tags is not None:
        tags = jnp.asarray(tags)
        if tags.shape != (b, t):
            raise ValueError(f"tags must have shape (B, T) = {(b, t)}, got {tags.shape}.")
        if not jnp.issubdtype(tags.dtype, jnp.integer):
            raise TypeError(f"tags must have an integer dtype, got {tags.dtype}.")
        y, m = checks.concrete(tags), checks.concrete(mask)
        if y is not None and m is not None:
            valid = y[m]
            out = valid[(valid < 0) | (valid >= k)]
            if out.size:
                raise ValueError(
                    f"tags at valid steps must lie in [0, K) = [0, {k}), got {out[:5].tolist()}."
                )
        # Tags at padded steps are ignored (any value, e.g. the -1 fill of crf_viterbi); traced
        # tags out of range at a valid step make their row's path impossible (bad).
        in_range = (tags >= 0) & (tags < k)
        bad = jnp.any(mask & ~in_range, axis=1)
        tags = jnp.where(mask & in_range, tags, 0).astype(jnp.int32)
    return cast(emissions), cast(transitions), mask, cast(start), cast(end), tags, bad


def _logsumexp(x: jax.Array, axis: int) -> jax.Array:
    """``log(sum(exp(x)))`` along ``axis`` whose gradient stays finite (zero) where every term
    is ``-inf`` (forbidden transitions, the off-diagonal of the log identity), where
    ``jax.nn.logsumexp`` would give NaN."""
    m = jax.lax.stop_gradient(jnp.max(x, axis=axis, keepdims=True))
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    s = jnp.sum(jnp.exp(x - m), axis=axis)
    pos = s > 0
    return jnp.where(pos, jnp.log(jnp.where(pos, s, 1.0)) + jnp.squeeze(m, axis), -jnp.inf)


def _forward(emissions, transitions, mask, start):
    """Final forward scores :math:`\\alpha` ``(B, K)`` by a sequential scan over time."""
    alpha = emissions[:, 0] if start is None else emissions[:, 0] + start[None]
    if emissions.shape[1] == 1:
        return alpha

    def step(alpha, xs):
        e_t, m_t = xs
        nxt = _logsumexp(alpha[:, :, None] + transitions[None], axis=1) + e_t
        return jnp.where(m_t[:, None], nxt, alpha), None

    xs = (jnp.swapaxes(emissions[:, 1:], 0, 1), jnp.swapaxes(mask[:, 1:], 0, 1))
    return jax.lax.scan(step, alpha, xs)[0]


def _log_matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    """Matrix product in the log semiring, :math:`\\log(\\exp(a) \\exp(b))`, ``(..., K, K)``."""
    return _logsumexp(a[..., :, :, None] + b[..., None, :, :], axis=-2)


def _forward_parallel(emissions, transitions, mask, start):
    """Final forward scores ``(B, K)`` as a log-semiring matrix product (associative scan)."""
    alpha = emissions[:, 0] if start is None else emissions[:, 0] + start[None]
    if emissions.shape[1] == 1:
        return alpha
    k = transitions.shape[0]
    steps = transitions[None, None] + emissions[:, 1:, None, :]  # (B, T-1, K, K)
    # A padded step is the identity of the log semiring (0 on the diagonal, -inf off it).
    eye = jnp.where(jnp.eye(k, dtype=bool), 0.0, -jnp.inf).astype(steps.dtype)
    steps = jnp.where(mask[:, 1:, None, None], steps, eye[None, None])
    total = jax.lax.associative_scan(_log_matmul, steps, axis=1)[:, -1]
    return _logsumexp(alpha[:, :, None] + total, axis=1)


def _log_partition(emissions, transitions, mask, start, end, parallel):
    forward = _forward_parallel if parallel else _forward
    alpha = forward(emissions, transitions, mask, start)
    if end is not None:
        alpha = alpha + end[None]
    return _logsumexp(alpha, axis=-1)


def crf_log_partition(
    emissions: jax.typing.ArrayLike,
    transitions: jax.typing.ArrayLike,
    mask: jax.typing.ArrayLike | None = None,
    *,
    start: jax.typing.ArrayLike | None = None,
    end: jax.typing.ArrayLike | None = None,
    parallel: bool = False,
) -> jax.Array:
    r"""Log partition function :math:`\log Z` of a linear-chain CRF, one per sequence.

    .. math::

        \log Z = \log \sum_{y \in [K]^L} \exp s(y), \qquad
        s(y) = a_{y_1} + \sum_{t=1}^{L} h_t(y_t) + \sum_{t=1}^{L-1} g_{y_t y_{t+1}} + b_{y_L},

    over the :math:`L` valid steps of each sequence, computed by the forward recursion
    :math:`\alpha_1 = a + h_1`,
    :math:`\alpha_{t+1}(j) = \operatorname{logsumexp}_i(\alpha_t(i) + g_{ij}) + h_{t+1}(j)`,
    :math:`\log Z = \operatorname{logsumexp}_j(\alpha_L(j) + b_j)`. Conventions:
    ``transitions[i, j]`` is :math:`g_{ij}`, the score of tag ``i`` followed by tag ``j``;
    ``start``/``end`` (:math:`a, b`) default to zero (bert4keras has none, pytorch-crf has
    both).

    ``parallel=False`` runs the recursion in ``lax.scan`` (:math:`O(TK^2)` work, :math:`T`
    sequential steps). ``parallel=True`` multiplies the step matrices
    :math:`M_t = g + \mathbf{1} h_t^\top` in the log semiring with ``lax.associative_scan``
    (padded steps become the log identity): :math:`O(\log T)` depth but :math:`O(TK^3)` work
    and :math:`O(BTK^3)` temporaries, so it pays off only for long sequences with few tags
    on parallel hardware.

    Args:
      emissions: ``(B, T, K)`` scores :math:`h_t(k)`, floating.
      transitions: ``(K, K)``.
      mask: ``(B, T)`` bool, a left-aligned valid prefix with at least one valid step per
        row (default: all valid). Checked when concrete; a traced mask is read as its
        leading run of True values, its first step always valid.
      start: optional ``(K,)`` scores of the first tag.
      end: optional ``(K,)`` scores of the last valid tag.
      parallel: use the associative scan (static Python bool).

    Returns:
      ``(B,)`` in the compute dtype: float32 for bf16/float16/float32 inputs, float64 for
      float64 inputs. ``-inf`` for a sequence with no possible path (every path has a
      ``-inf`` score), with a zero (not NaN) gradient; ``(0,)`` for an empty batch.

    Raises:
      ValueError: shape mismatches among emissions, transitions, start, end and mask; a
        concrete mask with an empty row or holes; concrete scores with NaN or ``+inf``.
      TypeError: non-floating (integer, bool or complex) emissions, transitions, start or
        end; a non-boolean mask; a non-bool ``parallel``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxtricks.nn import crf_log_partition
      >>> em = jnp.zeros((1, 3, 2))  # 2 tags, 3 steps: 2**3 paths of score 0
      >>> print(crf_log_partition(em, jnp.zeros((2, 2))), jnp.log(8.0))
      [2.0794415] 2.0794415
      >>> mask = jnp.array([[True, True, False]])  # 2 valid steps: 4 paths
      >>> print(crf_log_partition(em, jnp.zeros((2, 2)), mask, parallel=True))
      [1.3862944]

    References:
    """
    e, g, mask, a, b, _, _ = _prepare(emissions, transitions, mask, start, end)
    return _log_partition(e, g, mask, a, b, _check_bool("parallel", parallel))


def crf_log_likelihood(
    emissions: jax.typing.ArrayLike,
    tags: jax.typing.ArrayLike,
    transitions: jax.typing.ArrayLike,
    mask: jax.typing.ArrayLike | None = None,
    *,
    start: jax.typing.ArrayLike | None = None,
    end: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    r"""Log-likelihood :math:`\log p(y \mid x) = s(y) - \log Z` of tag paths under a CRF.

    .. math::

        \log p(y \mid x) = a_{y_1} + \sum_{t=1}^{L} h_t(y_t)
        + \sum_{t=1}^{L-1} g_{y_t y_{t+1}} + b_{y_L} - \log Z,

    with :math:`L` the number of valid steps and :math:`\log Z` from
    :func:`crf_log_partition` (sequential scan). Negate and average for a training loss.
    Equals pytorch-crf's ``CRF.forward(..., reduction="none")`` with batch-first inputs.

    Args:
      emissions: ``(B, T, K)``, floating.
      tags: ``(B, T)`` integers in ``[0, K)`` at valid steps; values at padded steps are
        ignored (e.g. the ``-1`` fill of :func:`crf_viterbi`).
      transitions: ``(K, K)``; ``transitions[i, j]`` scores tag ``i`` followed by tag ``j``.
      mask: ``(B, T)`` bool left-aligned valid prefix, at least one valid step per row
        (a traced mask is read as its leading run of True values).
      start: optional ``(K,)`` scores of the first tag.
      end: optional ``(K,)`` scores of the last valid tag.

    Returns:
      ``(B,)`` log-likelihoods in the compute dtype (float32 for bf16 emissions). An
      impossible path (a ``-inf`` score on it, or a traced tag outside ``[0, K)`` at a
      valid step) has log-likelihood ``-inf``, also when no path at all is possible (where
      :math:`s(y) - \log Z` would be NaN); gradients stay finite.

    Raises:
      ValueError: shape mismatches; a concrete mask with an empty row or holes; concrete
        tags outside ``[0, K)`` at valid steps; concrete scores with NaN or ``+inf``.
      TypeError: non-floating emissions/transitions/start/end, non-integer tags,
        non-boolean mask.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxtricks.nn import crf_log_likelihood
      >>> em = jnp.zeros((1, 3, 2))
      >>> g = jnp.zeros((2, 2))
      >>> print(crf_log_likelihood(em, jnp.array([[0, 1, 1]]), g), -jnp.log(8.0))
      [-2.0794415] -2.0794415

    References:
    """
    e, g, mask, a, b, y, bad = _prepare(emissions, transitions, mask, start, end, tags)
    # where, not a product with the mask: a -inf score at a padded step times 0 would be NaN.
    emitted = jnp.take_along_axis(e, y[..., None], axis=-1)[..., 0]
    score = jnp.sum(jnp.where(mask, emitted, 0.0), axis=1)
    score = score + jnp.sum(jnp.where(mask[:, 1:], g[y[:, :-1], y[:, 1:]], 0.0), axis=1)
    if a is not None:
        score = score + a[y[:, 0]]
    if b is not None:
        last = jnp.sum(mask, axis=1) - 1
        score = score + b[jnp.take_along_axis(y, last[:, None], axis=1)[:, 0]]
    log_z = _log_partition(e, g, mask, a, b, parallel=False)
    # No possible path (log Z = -inf, hence s(y) = -inf) or a traced tag out of range: the
    # path's probability is 0, where s(y) - log Z would be -inf - (-inf) = NaN. The gradient
    # there is 0; elsewhere s(y) - log Z is -inf exactly when the path is impossible.
    return jnp.where(bad | jnp.isneginf(log_z), -jnp.inf, score - log_z)


def crf_viterbi(
    emissions: jax.typing.ArrayLike,
    transitions: jax.typing.ArrayLike,
    mask: jax.typing.ArrayLike | None = None,
    *,
    start: jax.typing.ArrayLike | None = None,
    end: jax.typing.ArrayLike | None = None,
) -> tuple[jax.Array, jax.Array]:
    r"""The highest-scoring tag path of each sequence (Viterbi) and its score.

    .. math::

        y^\star = \arg\max_{y \in [K]^L} s(y), \qquad
        \delta_{t+1}(j) = \max_i(\delta_t(i) + g_{ij}) + h_{t+1}(j),

    with :math:`\delta_1 = a + h_1`, back-pointers :math:`\arg\max_i`, and the best last tag
    :math:`\arg\max_j(\delta_L(j) + b_j)`; the path is read back in a reverse ``lax.scan``.
    Ties go to the lowest tag index (``jnp.argmax``).

    Args:
      emissions: ``(B, T, K)``, floating.
      transitions: ``(K, K)``; ``transitions[i, j]`` scores tag ``i`` followed by tag ``j``.
      mask: ``(B, T)`` bool left-aligned valid prefix, at least one valid step per row
        (a traced mask is read as its leading run of True values).
      start: optional ``(K,)`` scores of the first tag.
      end: optional ``(K,)`` scores of the last valid tag.

    Returns:
      ``(tags, scores)``: ``tags`` ``(B, T)`` int32 with **-1** at padded steps (never a
      valid tag; ``jax.nn.one_hot`` maps it to zeros and :func:`crf_log_likelihood` ignores
      it), and ``scores`` ``(B,)`` the best path scores :math:`s(y^\star)` in the compute
      dtype. A sequence with no possible path has score ``-inf`` and its ``tags`` are the
      tie-broken arg-maxes of ``-inf`` scores (lowest indices), not a possible path.

    Raises:
      ValueError: shape mismatches; a concrete mask with an empty row or holes; concrete
        scores with NaN or ``+inf``.
      TypeError: non-floating emissions/transitions/start/end, non-boolean mask.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxtricks.nn import crf_viterbi
      >>> em = jnp.array([[[1.0, 0.0], [0.0, 0.5], [0.0, 2.0]]])
      >>> g = jnp.array([[0.0, -3.0], [0.0, 0.0]])  # tag 0 -> tag 1 costs 3
      >>> tags, score = crf_viterbi(em, g)
      >>> print(tags, score)
      [[1 1 1]] [2.5]
      >>> crf_viterbi(em, g, jnp.array([[True, True, False]]))[0].tolist()
      [[0, 0, -1]]

    References:
    """
    e, g, mask, a, b, _, _ = _prepare(emissions, transitions, mask, start, end)
    bsz, t, k = e.shape
    delta = e[:, 0] if a is None else e[:, 0] + a[None]
    keep = jnp.broadcast_to(jnp.arange(k, dtype=jnp.int32)[None], (bsz, k))

    def step(delta, xs):
        e_t, m_t = xs
        cand = delta[:, :, None] + g[None]  # (B, K_prev, K_next)
        nxt = jnp.max(cand, axis=1) + e_t
        # Padded steps keep delta and point every tag to itself, so the back-trace passes
        # the last valid tag through them unchanged.
        back = jnp.where(m_t[:, None], jnp.argmax(cand, axis=1).astype(jnp.int32), keep)
        return jnp.where(m_t[:, None], nxt, delta), back

    xs = (jnp.swapaxes(e[:, 1:], 0, 1), jnp.swapaxes(mask[:, 1:], 0, 1))
    delta, backs = jax.lax.scan(step, delta, xs)  # backs: (T-1, B, K)
    if b is not None:
        delta = delta + b[None]
    scores = jnp.max(delta, axis=-1)
    last = jnp.argmax(delta, axis=-1).astype(jnp.int32)

    def trace(tag, back):
        return jnp.take_along_axis(back, tag[:, None], axis=1)[:, 0], tag

    first, rest = jax.lax.scan(trace, last, backs, reverse=True)  # rest[t-1] = tag at step t
    path = jnp.concatenate([first[:, None], jnp.swapaxes(rest, 0, 1)], axis=1)
    return jnp.where(mask, path, -1), scores


def crf_marginals(
    emissions: jax.typing.ArrayLike,
    transitions: jax.typing.ArrayLike,
    mask: jax.typing.ArrayLike | None = None,
    *,
    start: jax.typing.ArrayLike | None = None,
    end: jax.typing.ArrayLike | None = None,
    parallel: bool = False,
) -> jax.Array:
    r"""Posterior tag marginals :math:`p(y_t = k \mid x)` of a linear-chain CRF.

    .. math::

        p(y_t = k \mid x) = \frac{\partial \log Z}{\partial h_t(k)}
        = \exp(\alpha_t(k) + \beta_t(k) - \log Z),

    obtained exactly as the gradient of :func:`crf_log_partition` with respect to the
    emissions (reverse-mode differentiation of the forward recursion is the
    forward-backward algorithm). Rows at padded steps are zero; valid rows sum to one.

    Args:
      emissions: ``(B, T, K)``, floating.
      transitions: ``(K, K)``; ``transitions[i, j]`` scores tag ``i`` followed by tag ``j``.
      mask: ``(B, T)`` bool left-aligned valid prefix, at least one valid step per row
        (a traced mask is read as its leading run of True values).
      start: optional ``(K,)`` scores of the first tag.
      end: optional ``(K,)`` scores of the last valid tag.
      parallel: differentiate the associative-scan partition instead (static Python bool).

    Returns:
      ``(B, T, K)`` probabilities in the compute dtype (float32 for bf16 emissions). A
      sequence with no possible path (``log Z = -inf``) has all-zero marginals.

    Raises:
      ValueError: shape mismatches; a concrete mask with an empty row or holes; concrete
        scores with NaN or ``+inf``.
      TypeError: non-floating emissions/transitions/start/end, non-boolean mask, non-bool
        ``parallel``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxtricks.nn import crf_marginals
      >>> em = jnp.zeros((1, 2, 2))
      >>> g = jnp.array([[0.0, 0.0], [-jnp.inf, 0.0]])  # tag 1 never followed by tag 0
      >>> print(jnp.round(crf_marginals(em, g), 4))  # paths 00, 01, 11
      [[[0.6667 0.3333]
        [0.3333 0.6667]]]

    References:
    """
    e, g, mask, a, b, _, _ = _prepare(emissions, transitions, mask, start, end)
    _check_bool("parallel", parallel)

    def total(e):
        return jnp.sum(_log_partition(e, g, mask, a, b, parallel))

    return jax.grad(total)(e)


class CRF(nnx.Module):
    r"""A linear-chain CRF layer: learned transitions (and start/end scores) over emissions.

    .. math::

        \log p(y \mid x) = a_{y_1} + \sum_{t} h_t(y_t) + \sum_{t} g_{y_t y_{t+1}}
        + b_{y_L} - \log Z,

    with :math:`h` the emissions given to each call and parameters ``transitions``
    :math:`g` ``(K, K)`` (``[i, j]``: tag ``i`` followed by tag ``j``) and, when
    ``use_start_end``, ``start`` :math:`a` and ``end`` :math:`b` ``(K,)`` (pytorch-crf's
    layout; ``use_start_end=False`` is bert4keras' ``ConditionalRandomField``). All are
    initialised uniformly in :math:`[-0.1, 0.1]` as in pytorch-crf. The math lives in
    :func:`crf_log_likelihood`, :func:`crf_viterbi` and :func:`crf_marginals`.

    Args:
      num_tags: ``K``, a positive int.
      use_start_end: learn start and end scores (a Python bool).
      rngs: parameter initialisation (``rngs.params()``).
      param_dtype: parameter dtype, floating.

    Raises:
      TypeError: a non-int ``num_tags`` (e.g. 2.5 or True), a non-bool ``use_start_end``,
        a non-floating ``param_dtype``; at call time as the functions.
      ValueError: ``num_tags < 1``; at call time as the functions.

    Methods: ``log_likelihood(emissions, tags, mask=None)`` → ``(B,)`` (also ``__call__``);
    ``decode(emissions, mask=None)`` → ``(tags (B, T) int32, -1 at padded steps,
    scores (B,))``; ``marginals(emissions, mask=None)`` → ``(B, T, K)``. ``emissions``
    ``(B, T, K)``, ``mask`` ``(B, T)`` bool as in the functions.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxtricks.nn import CRF
      >>> crf = CRF(5, rngs=nnx.Rngs(0))
      >>> em = jax.random.normal(jax.random.key(1), (2, 7, 5))
      >>> mask = jnp.arange(7)[None] < jnp.array([[7], [4]])
      >>> ll = crf.log_likelihood(em, jnp.zeros((2, 7), jnp.int32), mask)
      >>> tags, scores = crf.decode(em, mask)
      >>> ll.shape, tags.shape, bool(jnp.all(ll < 0)), tags[1, 4:].tolist()
      ((2,), (2, 7), True, [-1, -1, -1])

    References:
    """

    def __init__(
        self,
        num_tags: int,
        *,
        use_start_end: bool = True,
        rngs: nnx.Rngs,
        param_dtype: jnp.dtype = jnp.float32,
    ) -> None:
        self.num_tags = positive_int("num_tags", num_tags)
        self.use_start_end = _check_bool("use_start_end", use_start_end)
        param_dtype = checks.float_dtype(
            "param_dtype", param_dtype, allow_none=False, complex_ok=False
        )
        init = jax.nn.initializers.uniform(scale=0.2)  # [0, 0.2), shifted to [-0.1, 0.1)

        def param(shape):
            return nnx.Param(init(rngs.params(), shape, param_dtype) - 0.1)

        self.transitions = param((num_tags, num_tags))
        self.start = param((num_tags,)) if use_start_end else None
        self.end = param((num_tags,)) if use_start_end else None

    def _scores(self) -> dict:
        out = {"transitions": self.transitions[...]}
        if self.use_start_end:
            out.update(start=self.start[...], end=self.end[...])
        return out

    def log_likelihood(
        self, emissions: jax.Array, tags: jax.Array, mask: jax.Array | None = None
    ) -> jax.Array:
        """``(B,)`` log-likelihoods of ``tags`` ``(B, T)``; see :func:`crf_log_likelihood`."""
        s = self._scores()
        return crf_log_likelihood(
            emissions, tags, s.pop("transitions"), mask, start=s.get("start"), end=s.get("end")
        )

    __call__ = log_likelihood

    def decode(
        self, emissions: jax.Array, mask: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array]:
        """Viterbi ``(tags (B, T), scores (B,))``; see :func:`crf_viterbi`."""
        s = self._scores()
        return crf_viterbi(emissions, s.pop("transitions"), mask, **s)

    def marginals(self, emissions: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """``(B, T, K)`` posterior marginals; see :func:`crf_marginals`."""
        s = self._scores()
        return crf_marginals(emissions, s.pop("transitions"), mask, **s)


for _fn in (crf_log_partition, crf_log_likelihood, crf_viterbi, crf_marginals, CRF):
    _fn.__doc__ = _fn.__doc__.replace("    References:\n", "    References:\n" + _REFS + "\n")
