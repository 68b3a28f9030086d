"""Vector quantization (VQ-VAE): nearest-code lookup, straight-through gradients, EMA codebooks."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from jaxtricks._src import checks
from jaxtricks._src.checks import positive_int

# The nearest-code choice depends on every digit of the distances: bf16 (TPU) or TF32 (GPU)
# matmuls flip near-ties, so the distance matmul runs at full float32 unless asked otherwise.
_HIGHEST = lax.Precision.HIGHEST


class VQOutput(NamedTuple):
    """What vector quantization returns.

    Attributes:
      quantized: ``(..., D)`` in ``z``'s dtype: the nearest codes in the forward pass, the
        identity on ``z`` in the backward pass (straight-through).
      indices: ``(...)`` int32, the index of each vector's nearest code.
      loss: scalar float32 (float64 for float64 inputs), the loss to add to the training objective.
      codebook_loss: scalar, ``mean((sg(z) - e)²)``; its gradient reaches only the
        codebook.
      commitment_loss: scalar, ``mean((z - sg(e))²)`` (unweighted); its gradient
        reaches only ``z``.
      perplexity: scalar, ``exp`` of the entropy of the batch's code frequencies
        (between 1 and ``K``).
      usage: scalar, the fraction of the ``K`` codes used at least once in the batch.
    """

    quantized: jax.Array
    indices: jax.Array
    loss: jax.Array
    codebook_loss: jax.Array
    commitment_loss: jax.Array
    perplexity: jax.Array
    usage: jax.Array


def _check_inputs(
    z: jax.Array, codebook: jax.Array, chunk_size: object, kinds: tuple[str, ...]
) -> None:
    """Named errors for the shapes and dtypes of ``z`` and ``codebook`` and for ``chunk_size``."""
    if codebook.ndim != 2:
        raise ValueError(f"codebook must have shape (K, D), got {codebook.shape}.")
    if codebook.shape[0] < 1:
        raise ValueError(f"codebook must hold at least one code (K >= 1), got {codebook.shape}.")
    if z.ndim < 1 or z.shape[-1] != codebook.shape[1]:
        raise ValueError(
            f"z must have shape (..., {codebook.shape[1]}) to match the codebook of shape "
            f"{codebook.shape} (K, D), got {z.shape}."
        )
    checks.array_dtype_kind("z", z, kinds)
    checks.array_dtype_kind("codebook", codebook, kinds)
    if chunk_size is not None:
        positive_int("chunk_size", chunk_size)


@functools.lru_cache(maxsize=64)
def _valid_precision(precision: object) -> bool:
    # JAX's own parser decides (names, enums, pairs, dot algorithms); a trace, no compile.
    one = jax.ShapeDtypeStruct((1, 1), jnp.float32)
    try:
        jax.eval_shape(functools.partial(jnp.matmul, precision=precision), one, one)
    except (TypeError, ValueError):
        return False
    return True


def _check_precision(precision: object) -> None:
    try:
        ok = _valid_precision(precision)
    except TypeError:  # unhashable: not a precision JAX accepts either
        ok = False
    if not ok:
        raise ValueError(
            "precision must be a matmul precision (None, a jax.lax.Precision, its name, a pair "
            f"of them or a dot algorithm), got {precision!r}."
        )


def _check_commitment_cost(commitment_cost: object) -> None:
    checks.number("commitment_cost", commitment_cost, low=0.0)


def _check_bool(name: str, value: object) -> bool:
    # A Python branch depends on it: a traced or array flag would fail deep inside JAX.
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a Python bool, got {value!r}.")
    return value


def nearest_codes(
    z: jax.typing.ArrayLike,
    codebook: jax.typing.ArrayLike,
    *,
    chunk_size: int | None = None,
    precision: jax.lax.PrecisionLike = _HIGHEST,
) -> jax.Array:
    r"""Index of the nearest code (squared Euclidean distance) of every vector.

    .. math::

        k(z) = \arg\min_k \; \lVert z\rVert^2 - 2\, z^\top e_k + \lVert e_k\rVert^2,

    the cross term for all codes being one matrix product. Distances are computed in float32, or
    float64 for float64 inputs (``bfloat16`` inputs are cast up), and the matmul runs at
    ``precision``, by default ``jax.lax.Precision.HIGHEST``: the default precision is bf16 on
    TPU and TF32 on many GPUs, whose rounding changes the choice between near codes. Ties go
    to the lowest index. With ``chunk_size`` the rows are processed ``chunk_size`` at a time
    (:func:`jax.lax.map`), so the ``(N, K)`` distance matrix never exists whole: peak memory
    is ``chunk_size × K`` floats; the indices are the same. Chunks that fit in cache are also
    faster on CPU (``chunk_size=2048``: about 0.75 of the unchunked time in ``benchmarks/vq.py``).
    No gradient flows through it. An empty batch (a zero-size axis in ``z``) gives empty
    indices.

    Args:
      z: ``(..., D)`` vectors, real (integer or floating).
      codebook: ``(K, D)`` codes, real.
      chunk_size: static; rows per chunk (a positive int), or ``None`` for a single matrix
        product.
      precision: static; the distance matmul's precision (``jax.lax.PrecisionLike``),
        default ``jax.lax.Precision.HIGHEST``.

    Returns:
      ``(...)`` int32 indices into the codebook.

    Raises:
      ValueError: if ``codebook`` is not ``(K, D)`` with ``K >= 1``, if ``z``'s last axis
        differs from ``D`` (the message gives both shapes), if ``chunk_size < 1`` or
        ``precision`` is not a matmul precision.
      TypeError: if ``chunk_size`` is not an int, or ``z`` or ``codebook`` is boolean or
        complex.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxtricks.nn import nearest_codes
      >>> codebook = jnp.array([[0.0, 0.0], [1.0, 1.0], [4.0, 0.0]])
      >>> nearest_codes(jnp.array([[0.9, 0.8], [3.0, 0.5], [0.1, -0.2]]), codebook)
      Array([1, 2, 0], dtype=int32)

    References:
      van den Oord, Vinyals and Kavukcuoglu, "Neural Discrete Representation Learning",
      2017, arXiv:1711.00937. Su Jianlin, https://kexue.fm/archives/6760.
    """
    z, codebook = jnp.asarray(z), jnp.asarray(codebook)
    _check_inputs(z, codebook, chunk_size, ("integer", "floating"))
    _check_precision(precision)
    return _nearest(z, codebook, chunk_size, precision)


def _nearest(z: jax.Array, codebook: jax.Array, chunk_size, precision) -> jax.Array:
    """:func:`nearest_codes` on checked inputs."""
    # The search is piecewise constant: stopping gradients keeps the distances out of autodiff.
    acc = _accumulation_dtype(z, codebook)
    flat = lax.stop_gradient(z.reshape(-1, z.shape[-1]).astype(acc))
    codes = lax.stop_gradient(codebook.astype(acc))
    codes_sq = jnp.sum(jnp.square(codes), axis=-1)

    def nearest(row: jax.Array) -> jax.Array:
        # ||z||^2 is the same for every code: the argmin needs only ||e||^2 - 2 z.e.
        cross = jnp.matmul(row, codes.T, precision=precision)
        return jnp.argmin(codes_sq - 2.0 * cross).astype(jnp.int32)

    if chunk_size is None:
        indices = jax.vmap(nearest)(flat)
    else:
        # lax.map vmaps `nearest` over chunk_size rows per step (and once over the remainder).
        indices = lax.map(nearest, flat, batch_size=chunk_size)
    return indices.reshape(z.shape[:-1])


def vector_quantize(
    z: jax.typing.ArrayLike,
    codebook: jax.typing.ArrayLike,
    *,
    commitment_cost: float | jax.Array = 0.25,
    chunk_size: int | None = None,
    precision: jax.lax.PrecisionLike = _HIGHEST,
) -> VQOutput:
    r"""Quantizes vectors to their nearest codes, with straight-through gradients and VQ losses.

    With :math:`e = e_{k(z)}` the nearest code (:func:`nearest_codes`) and :math:`\mathrm{sg}`
    the stop-gradient:

    .. math::

        z_q = z + \mathrm{sg}(e - z), \qquad
        \mathcal{L}_{\text{codebook}} = \overline{(\mathrm{sg}(z) - e)^2}, \qquad
        \mathcal{L}_{\text{commit}} = \overline{(z - \mathrm{sg}(e))^2},

    .. math::

        \mathcal{L} = \mathcal{L}_{\text{codebook}} + \beta\, \mathcal{L}_{\text{commit}},
        \qquad \text{perplexity} = \exp\Big(-\sum_k p_k \log p_k\Big),

    where the bars are means over all elements of ``z`` and :math:`p_k` is the fraction of
    the batch's vectors assigned to code :math:`k` (:math:`0 \log 0 = 0`). The forward value
    of ``quantized`` is the code; its gradient with respect to ``z`` is the identity
    (:math:`\partial L/\partial z = \partial L/\partial z_q`). The codebook loss moves only
    the codebook, the commitment loss only ``z``. This is dm-haiku's convention
    (``q_latent_loss`` is the codebook loss, ``e_latent_loss`` the commitment loss).

    An empty batch (``z`` with a zero-size axis) gives empty ``quantized`` and ``indices``,
    zero losses (a sum over no elements divided by ``max(size, 1)``, where a mean would be
    0/0), ``perplexity = 1`` (the entropy of no assignments is 0) and ``usage = 0``.

    Args:
      z: ``(..., D)`` encoder outputs, floating.
      codebook: ``(K, D)`` codes, floating.
      commitment_cost: :math:`\beta \ge 0`, finite, default 0.25. Checked when a number or a
        concrete array; a traced value is used as given (a NaN gives a NaN ``loss``).
      chunk_size: static; rows per chunk of the distance computation (see
        :func:`nearest_codes`), or ``None``.
      precision: static; the distance matmul's precision, default
        ``jax.lax.Precision.HIGHEST`` (see :func:`nearest_codes`).

    Returns:
      :class:`VQOutput`: ``quantized`` ``(..., D)`` in ``z``'s dtype, ``indices`` ``(...)``
      int32, and scalars (float32, or float64 for float64 inputs) ``loss``,
      ``codebook_loss``, ``commitment_loss``, ``perplexity``, ``usage``.

    Raises:
      ValueError: if ``codebook`` is not ``(K, D)`` with ``K >= 1``, ``z``'s last axis
        differs from the codebook's ``D`` (the message gives both shapes), ``chunk_size < 1``,
        ``commitment_cost`` is negative, NaN or infinite, or ``precision`` is not a matmul
        precision.
      TypeError: if ``chunk_size`` is not an int, ``commitment_cost`` not a real number, or
        ``z`` or ``codebook`` not floating.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxtricks.nn import vector_quantize
      >>> codebook = jnp.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
      >>> out = vector_quantize(jnp.array([[0.75, 0.25], [0.25, 1.5]]), codebook)
      >>> out.indices
      Array([0, 1], dtype=int32)
      >>> out.quantized
      Array([[1., 0.],
             [0., 1.]], dtype=float32)
      >>> print(out.codebook_loss, out.commitment_loss, round(float(out.perplexity), 4))
      0.109375 0.109375 2.0

    References:
      van den Oord, Vinyals and Kavukcuoglu, "Neural Discrete Representation Learning",
      2017, arXiv:1711.00937. Razavi, van den Oord and Vinyals, "Generating Diverse
      High-Fidelity Images with VQ-VAE-2", 2019, arXiv:1906.00446 (appendix: EMA updates).
      Su Jianlin, "VQ-VAE的简明介绍：量子化自编码器", https://kexue.fm/archives/6760.
      Peer code: dm-haiku ``hk.nets.VectorQuantizer`` and ``VectorQuantizerEMA``.
    """
    z, codebook = jnp.asarray(z), jnp.asarray(codebook)
    _check_inputs(z, codebook, chunk_size, ("floating",))
    _check_commitment_cost(commitment_cost)
    _check_precision(precision)
    indices = _nearest(z, codebook, chunk_size, precision)
    # argmin indices are in range: the gather needs no bounds handling.
    e = codebook.at[indices].get(mode="promise_in_bounds")
    acc = _accumulation_dtype(z, codebook)
    z32, e32 = z.astype(acc), e.astype(acc)
    # Sums over max(size, 1): the mean, and 0 (not 0/0) for an empty batch.
    size = max(z.size, 1)
    codebook_loss = jnp.sum(jnp.square(lax.stop_gradient(z32) - e32)) / size
    commitment_loss = jnp.sum(jnp.square(z32 - lax.stop_gradient(e32))) / size
    loss = codebook_loss + jnp.asarray(commitment_cost, acc) * commitment_loss
    quantized = z + lax.stop_gradient(e.astype(z.dtype) - z)
    counts = _code_counts(indices.reshape(-1), codebook.shape[0], acc)
    probs = counts / jnp.maximum(indices.size, 1)
    perplexity = jnp.exp(jnp.sum(jax.scipy.special.entr(probs)))
    usage = jnp.mean((counts > 0).astype(acc))
    return VQOutput(quantized, indices, loss, codebook_loss, commitment_loss, perplexity, usage)


def _accumulation_dtype(*arrays: jax.Array) -> jnp.dtype:
    # At least float32: bf16/f16 distances and sums lose too many digits; f64 stays f64.
    return jnp.promote_types(jnp.result_type(*arrays), jnp.float32)


def _code_counts(flat_indices: jax.Array, num_codes: int, dtype) -> jax.Array:
    # A scatter-add: O(N) memory, where a one-hot sum would build an (N, K) matrix.
    return jnp.zeros((num_codes,), dtype).at[flat_indices].add(1.0)


def _ema_statistics(
    cluster_size: jax.Array,
    code_sum: jax.Array,
    previous: jax.Array,
    z: jax.Array,
    indices: jax.Array,
    decay: float | jax.Array,
    epsilon: float | jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One EMA step of the cluster sizes and code sums, and the Laplace-smoothed codebook.

    A code whose smoothed size is 0 (``epsilon = 0`` and no vectors in its average, or no
    vectors at all) keeps its ``previous`` value instead of 0/0.
    """
    num_codes = cluster_size.shape[0]
    acc = _accumulation_dtype(z, code_sum)
    flat_z = lax.stop_gradient(z.reshape(-1, z.shape[-1]).astype(acc))
    flat_indices = indices.reshape(-1)
    # Plain (scatter-)sums over the batch: under jit with z sharded over a data axis the
    # partitioner adds up the shards, so the statistics are those of the global batch.
    counts = _code_counts(flat_indices, num_codes, acc)
    sums = jax.ops.segment_sum(flat_z, flat_indices, num_segments=num_codes)
    new_size = decay * cluster_size.astype(acc) + (1.0 - decay) * counts
    new_sum = decay * code_sum.astype(acc) + (1.0 - decay) * sums
    total = jnp.sum(new_size)
    # Double wheres: no 0/0 on either branch, so nothing NaN reaches the statistics.
    denom = total + num_codes * epsilon
    smoothed = jnp.where(denom > 0, (new_size + epsilon) / jnp.where(denom > 0, denom, 1.0), 0.0)
    smoothed = smoothed * total
    used = (smoothed > 0)[:, None]
    safe = jnp.where(used, smoothed[:, None], 1.0)
    codebook = jnp.where(used, new_sum / safe, previous.astype(acc))
    return new_size, new_sum, codebook


class VQStatistics(nnx.Variable):
    """State of :class:`VectorQuantizerEMA` learnt by moving averages, not by gradients.

    Its own variable kind, so ``nnx.Optimizer(model, tx, wrt=nnx.Param)`` and
    ``nnx.grad(..., argnums=nnx.DiffState(0, nnx.Param))`` leave it alone; select it with
    ``nnx.state(model, VQStatistics)``.

    Examples:
      >>> from flax import nnx
      >>> from jaxtricks.nn import VectorQuantizerEMA, VQStatistics
      >>> vq = VectorQuantizerEMA(8, 4, rngs=nnx.Rngs(0))
      >>> sorted(nnx.state(vq, VQStatistics).keys())
      ['cluster_size', 'code_sum', 'codebook']
      >>> len(nnx.state(vq, nnx.Param))
      0

    References:
      Razavi, van den Oord and Vinyals, "Generating Diverse High-Fidelity Images with
      VQ-VAE-2", 2019, arXiv:1906.00446. Su Jianlin, https://kexue.fm/archives/6760.
    """


def _codebook_init(key: jax.Array, shape: tuple[int, int], dtype) -> jax.Array:
    # dm-haiku's default: variance scaling 1/D per component, uniform.
    limit = jnp.sqrt(3.0 / shape[1])
    return jax.random.uniform(key, shape, dtype, -limit, limit)


def _setup(
    module,
    num_codes,
    dim,
    commitment_cost,
    chunk_size,
    precision,
    rngs,
    dtype,
    param_dtype,
    codebook_init,
) -> jax.Array:
    """The quantizers' shared checks and attributes; returns the initial ``(K, D)`` codebook."""
    module.num_codes = positive_int("num_codes", num_codes)
    module.dim = positive_int("dim", dim)
    _check_commitment_cost(commitment_cost)
    if chunk_size is not None:
        positive_int("chunk_size", chunk_size)
    _check_precision(precision)
    module.dtype = checks.float_dtype("dtype", dtype, complex_ok=False)
    module.param_dtype = checks.float_dtype(
        "param_dtype", param_dtype, allow_none=False, complex_ok=False
    )
    checks.callable_arg("codebook_init", codebook_init)
    module.commitment_cost, module.chunk_size, module.precision = (
        commitment_cost, chunk_size, precision
    )  # fmt: skip
    init = jnp.asarray(codebook_init(rngs.params(), (num_codes, dim), module.param_dtype))
    checks.shape("codebook_init(key, (K, D), dtype)", init, (num_codes, dim))
    return init


class VectorQuantizer(nnx.Module):
    r"""VQ-VAE quantizer whose codebook is a parameter trained by the codebook loss.

    Calls :func:`vector_quantize` with ``self.codebook`` (an ``nnx.Param`` of shape
    ``(K, D)``): ``loss = codebook_loss + commitment_cost · commitment_loss``, the first
    term pulling the chosen codes to the encoder outputs, the second the encoder outputs to
    their codes.

    .. math::

        \mathcal{L} = \overline{(\mathrm{sg}(z) - e)^2}
        + \beta\, \overline{(z - \mathrm{sg}(e))^2}

    Args:
      num_codes: ``K``, a positive int.
      dim: ``D``, a positive int.
      commitment_cost: :math:`\beta \ge 0`, finite, default 0.25.
      chunk_size: static rows per chunk of the distance computation, or ``None``.
      precision: the distance matmul's precision, default ``jax.lax.Precision.HIGHEST``.
      rngs: ``nnx.Rngs`` with a ``params`` stream.
      dtype: floating dtype ``z`` is cast to before quantizing (``None``: keep ``z``'s dtype).
      param_dtype: floating dtype of the codebook.
      codebook_init: ``init(key, (K, D), dtype)``; default uniform with variance ``1/D`` per
        component (dm-haiku's default).

    Raises:
      TypeError: non-int sizes or ``chunk_size``, a non-real ``commitment_cost``, integer or
        complex ``dtype``/``param_dtype``, a non-callable ``codebook_init``.
      ValueError: ``num_codes``, ``dim`` or ``chunk_size`` < 1, ``commitment_cost`` negative,
        NaN or infinite, a bad ``precision``, a ``codebook_init`` result not ``(K, D)``; and
        at call time as :func:`vector_quantize`.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxtricks.nn import VectorQuantizer
      >>> vq = VectorQuantizer(16, 4, rngs=nnx.Rngs(0))
      >>> out = vq(jnp.ones((2, 5, 4)))
      >>> out.quantized.shape, out.indices.shape, vq.codebook[...].shape
      ((2, 5, 4), (2, 5), (16, 4))

    References:
      van den Oord, Vinyals and Kavukcuoglu, "Neural Discrete Representation Learning",
      2017, arXiv:1711.00937. Razavi, van den Oord and Vinyals, "Generating Diverse
      High-Fidelity Images with VQ-VAE-2", 2019, arXiv:1906.00446 (appendix: EMA updates).
      Su Jianlin, "VQ-VAE的简明介绍：量子化自编码器", https://kexue.fm/archives/6760.
      Peer code: dm-haiku ``hk.nets.VectorQuantizer`` and ``VectorQuantizerEMA``.
    """

    def __init__(
        self,
        num_codes: int,
        dim: int,
        *,
        commitment_cost: float = 0.25,
        chunk_size: int | None = None,
        precision: jax.lax.PrecisionLike = _HIGHEST,
        rngs: nnx.Rngs,
        dtype: jnp.dtype | None = None,
        param_dtype: jnp.dtype = jnp.float32,
        codebook_init=_codebook_init,
    ):
        init = _setup(
            self, num_codes, dim, commitment_cost, chunk_size, precision, rngs, dtype,
            param_dtype, codebook_init,
        )  # fmt: skip
        self.codebook = nnx.Param(init)

    def __call__(self, z: jax.typing.ArrayLike) -> VQOutput:
        """Quantizes ``z`` ``(..., D)``; see :func:`vector_quantize`."""
        z = jnp.asarray(z) if self.dtype is None else jnp.asarray(z, self.dtype)
        return vector_quantize(
            z,
            self.codebook[...],
            commitment_cost=self.commitment_cost,
            chunk_size=self.chunk_size,
            precision=self.precision,
        )


class VectorQuantizerEMA(nnx.Module):
    r"""VQ-VAE quantizer whose codebook follows exponential moving averages (k-means style).

    In training mode each call updates, from the batch's assignments (:math:`n_k` vectors
    and their sum :math:`s_k` per code), the statistics (all :class:`VQStatistics`):

    .. math::

        N_k \leftarrow \gamma N_k + (1-\gamma)\, n_k, \qquad
        m_k \leftarrow \gamma m_k + (1-\gamma)\, s_k, \qquad
        e_k = \frac{m_k}{\hat N_k}, \quad
        \hat N_k = \frac{N_k + \epsilon}{n + K\epsilon}\, n, \quad n = \sum_k N_k

    (:math:`\hat N_k` is the Laplace-smoothed cluster size).

    The output is computed with the codebook *before* the update, which then recomputes
    ``codebook`` from ``code_sum`` and ``cluster_size`` (to set the codebook by hand with
    :math:`\gamma > 0`, set ``code_sum`` to it and ``cluster_size`` to ones). ``loss`` is
    ``commitment_cost · commitment_loss`` only: the codebook learns by the averages, not by
    gradients (``codebook_loss`` is still reported). With :math:`\gamma = 0` one call is one
    k-means (Lloyd) step on the batch. Statistics start as one pseudo-vector per code placed
    at the initial codebook (:math:`N_k = 1`, :math:`m_k = e_k`), so the codebook starts at
    its initial value and a code that receives no vectors fades only slowly
    (:math:`\gamma^t`) instead of jumping; with :math:`\gamma = 0` an unused code becomes 0.
    A code whose smoothed size :math:`\hat N_k` is 0 (with :math:`\epsilon = 0`, a zero
    count :math:`N_k`; or :math:`n = 0`) keeps its previous value instead of 0/0.

    After ``model.eval()`` (which sets ``use_running_average=True``, as for
    ``nnx.BatchNorm``) the statistics are frozen; ``model.train()`` resumes updates. Under
    ``jit`` with ``z`` sharded over a data axis the batch sums are over the global batch.

    Args:
      num_codes: ``K``, a positive int.
      dim: ``D``, a positive int.
      decay: :math:`\gamma \in [0, 1]`, default 0.99.
      epsilon: :math:`\epsilon \ge 0`, finite, of the Laplace smoothing, default 1e-5.
      commitment_cost: :math:`\beta \ge 0`, finite, default 0.25.
      chunk_size: static rows per chunk of the distance computation, or ``None``.
      precision: the distance matmul's precision, default ``jax.lax.Precision.HIGHEST``.
      use_running_average: ``True`` freezes the statistics (eval mode); default ``False``.
      rngs: ``nnx.Rngs`` with a ``params`` stream (initial codebook).
      dtype: floating dtype ``z`` is cast to before quantizing (``None``: keep ``z``'s dtype).
      param_dtype: floating dtype of the statistics and codebook.
      codebook_init: ``init(key, (K, D), dtype)``, as for :class:`VectorQuantizer`.

    ``decay``, ``epsilon`` and ``commitment_cost`` are checked when numbers or concrete
    arrays (NaN or infinite ones would poison the codebook); traced values are used as given.

    Raises:
      TypeError: non-int sizes or ``chunk_size``, non-real hyperparameters, a non-bool
        ``use_running_average``, integer or complex ``dtype``/``param_dtype``, a non-callable
        ``codebook_init``.
      ValueError: ``num_codes``, ``dim`` or ``chunk_size`` < 1; ``decay`` outside ``[0, 1]``;
        ``epsilon`` or ``commitment_cost`` negative; NaN or infinite hyperparameters; a bad
        ``precision``; a ``codebook_init`` result not ``(K, D)``; and at call time as
        :func:`vector_quantize`.

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxtricks.nn import VectorQuantizerEMA
      >>> vq = VectorQuantizerEMA(2, 1, decay=0.0, epsilon=0.0, rngs=nnx.Rngs(0))
      >>> vq.codebook[...] = jnp.array([[0.0], [10.0]])
      >>> out = vq(jnp.array([[1.0], [2.0], [9.0]]))  # one k-means step on the batch
      >>> vq.codebook[...]
      Array([[1.5],
             [9. ]], dtype=float32)
      >>> vq.eval()
      >>> _ = vq(jnp.array([[5.0]]))
      >>> vq.codebook[...]  # frozen in eval mode
      Array([[1.5],
             [9. ]], dtype=float32)

    References:
      van den Oord, Vinyals and Kavukcuoglu, "Neural Discrete Representation Learning",
      2017, arXiv:1711.00937. Razavi, van den Oord and Vinyals, "Generating Diverse
      High-Fidelity Images with VQ-VAE-2", 2019, arXiv:1906.00446 (appendix: EMA updates).
      Su Jianlin, "VQ-VAE的简明介绍：量子化自编码器", https://kexue.fm/archives/6760.
      Peer code: dm-haiku ``hk.nets.VectorQuantizer`` and ``VectorQuantizerEMA``.
    """

    def __init__(
        self,
        num_codes: int,
        dim: int,
        *,
        decay: float = 0.99,
        epsilon: float = 1e-5,
        commitment_cost: float = 0.25,
        chunk_size: int | None = None,
        precision: jax.lax.PrecisionLike = _HIGHEST,
        use_running_average: bool = False,
        rngs: nnx.Rngs,
        dtype: jnp.dtype | None = None,
        param_dtype: jnp.dtype = jnp.float32,
        codebook_init=_codebook_init,
    ):
        self.decay = checks.number("decay", decay, low=0.0, high=1.0)
        self.epsilon = checks.number("epsilon", epsilon, low=0.0)
        self.use_running_average = _check_bool("use_running_average", use_running_average)
        init = _setup(
            self, num_codes, dim, commitment_cost, chunk_size, precision, rngs, dtype,
            param_dtype, codebook_init,
        )  # fmt: skip
        self.codebook = VQStatistics(init)
        self.cluster_size = VQStatistics(jnp.ones((num_codes,), self.param_dtype))
        self.code_sum = VQStatistics(init)

    def __call__(
        self, z: jax.typing.ArrayLike, *, use_running_average: bool | None = None
    ) -> VQOutput:
        """Quantizes ``z`` ``(..., D)`` and, in training mode, updates the statistics.

        ``use_running_average`` overrides the module's flag for this call.
        """
        z = jnp.asarray(z) if self.dtype is None else jnp.asarray(z, self.dtype)
        if use_running_average is None:
            frozen = self.use_running_average
        else:
            frozen = _check_bool("use_running_average", use_running_average)
        previous = self.codebook[...]
        out = vector_quantize(
            z,
            previous,
            commitment_cost=self.commitment_cost,
            chunk_size=self.chunk_size,
            precision=self.precision,
        )
        out = out._replace(loss=self.commitment_cost * out.commitment_loss)
        if not frozen:
            size, total, codebook = _ema_statistics(
                self.cluster_size[...], self.code_sum[...], previous, z, out.indices, self.decay,
                self.epsilon,
            )  # fmt: skip
            dtype = self.param_dtype
            self.cluster_size[...] = size.astype(dtype)
            self.code_sum[...] = total.astype(dtype)
            self.codebook[...] = codebook.astype(dtype)
        return out

    def set_view(self, use_running_average: bool | None = None) -> None:
        """Used by ``nnx.view``: ``use_running_average=True`` freezes the statistics."""
        if use_running_average is not None:
            self.use_running_average = use_running_average


class VQVAE(nnx.Module):
    r"""A small MLP VQ-VAE for little images (e.g. 8×8 digits, flattened to 64 features).

    Encoder: ``Linear(in_features → hidden)``, ReLU, ``Linear(hidden → L·D)``, giving ``L``
    latent vectors of size ``D`` per image; each is quantized (:class:`VectorQuantizerEMA`
    when ``ema`` else :class:`VectorQuantizer`), so an image becomes ``L`` code indices;
    decoder: ``Linear(L·D → hidden)``, ReLU, ``Linear(hidden → in_features)``. Train on

    .. math::

        \overline{(x - \mathrm{dec}(z_q))^2} + \mathcal{L}_{\text{VQ}},

    i.e. ``mean((recon - x)**2) + out.loss``; the straight-through ``z_q`` carries the
    reconstruction gradient to the encoder.

    Args:
      in_features: features per image (64 for 8×8 grey images).
      num_latents: ``L``, latent vectors (code indices) per image, default 8.
      num_codes: ``K``, default 64.
      code_dim: ``D``, default 8.
      hidden: hidden width of encoder and decoder, default 128.
      ema: codebook by moving averages (default) or by the codebook loss.
      commitment_cost: :math:`\beta \ge 0`, finite, default 0.25.
      rngs: ``nnx.Rngs`` with a ``params`` stream.
      dtype: computation dtype of the layers (``None``: the input's).
      param_dtype: dtype of the parameters and statistics.

    All sizes are positive ints. ``__call__(x)`` and ``encode(x)`` take ``x``
    ``(B, in_features)``, ``decode(z_q)`` takes ``(B, L, D)``.

    Raises:
      TypeError: non-int sizes, a non-bool ``ema``, a non-real ``commitment_cost``, integer
        or complex dtypes.
      ValueError: sizes < 1, ``commitment_cost`` negative, NaN or infinite; at call time an
        ``x`` whose last axis is not ``in_features`` or a ``z_q`` not ``(..., L, D)``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxtricks.nn import VQVAE
      >>> model = VQVAE(64, num_latents=4, num_codes=32, rngs=nnx.Rngs(0))
      >>> recon, out = model(jnp.zeros((5, 64)))
      >>> recon.shape, out.indices.shape
      ((5, 64), (5, 4))

    References:
      van den Oord, Vinyals and Kavukcuoglu, "Neural Discrete Representation Learning",
      2017, arXiv:1711.00937. Su Jianlin, https://kexue.fm/archives/6760.
    """

    def __init__(
        self,
        in_features: int = 64,
        *,
        num_latents: int = 8,
        num_codes: int = 64,
        code_dim: int = 8,
        hidden: int = 128,
        ema: bool = True,
        commitment_cost: float = 0.25,
        rngs: nnx.Rngs,
        dtype=None,
        param_dtype=jnp.float32,
    ):
        self.in_features = positive_int("in_features", in_features)
        self.num_latents = positive_int("num_latents", num_latents)
        positive_int("num_codes", num_codes)
        self.code_dim = positive_int("code_dim", code_dim)
        positive_int("hidden", hidden)
        _check_bool("ema", ema)
        _check_commitment_cost(commitment_cost)
        checks.float_dtype("dtype", dtype, complex_ok=False)
        checks.float_dtype("param_dtype", param_dtype, allow_none=False, complex_ok=False)
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.enc1 = nnx.Linear(in_features, hidden, **kw)
        self.enc2 = nnx.Linear(hidden, num_latents * code_dim, **kw)
        self.dec1 = nnx.Linear(num_latents * code_dim, hidden, **kw)
        self.dec2 = nnx.Linear(hidden, in_features, **kw)
        quantizer = VectorQuantizerEMA if ema else VectorQuantizer
        self.vq = quantizer(
            num_codes, code_dim, commitment_cost=commitment_cost, param_dtype=param_dtype,
            rngs=rngs,
        )  # fmt: skip

    def encode(self, x: jax.typing.ArrayLike) -> jax.Array:
        """``(B, in_features)`` → ``(B, L, D)`` continuous latents."""
        x = jnp.asarray(x)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"x must have shape (..., {self.in_features}), got {x.shape}.")
        h = self.enc2(jax.nn.relu(self.enc1(x)))
        return h.reshape(*h.shape[:-1], self.num_latents, self.code_dim)

    def decode(self, z_q: jax.typing.ArrayLike) -> jax.Array:
        """``(B, L, D)`` quantized latents → ``(B, in_features)`` reconstructions."""
        z_q = jnp.asarray(z_q)
        want = (self.num_latents, self.code_dim)
        if z_q.ndim < 2 or z_q.shape[-2:] != want:
            raise ValueError(f"z_q must have shape (..., {want[0]}, {want[1]}), got {z_q.shape}.")
        # An explicit size: reshape(..., -1) is ambiguous for an empty batch.
        flat = z_q.reshape(*z_q.shape[:-2], want[0] * want[1])
        return self.dec2(jax.nn.relu(self.dec1(flat)))

    def __call__(self, x: jax.typing.ArrayLike) -> tuple[jax.Array, VQOutput]:
        """Reconstructs ``x`` ``(B, in_features)``: returns ``(recon, VQOutput)``."""
        out = self.vq(self.encode(x))
        return self.decode(out.quantized), out
