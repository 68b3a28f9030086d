"""Vector quantization (VQ-VAE): nearest-code lookup, straight-through gradients, EMA codebooks."""

from __future__ import annotations

import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from jaxtricks._src.checks import positive_int


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


def _check_inputs(z: jax.Array, codebook: jax.Array, chunk_size: int | None) -> None:
    if codebook.ndim != 2:
        raise ValueError(f"codebook must be 2-D (num_codes K, dim D), got shape {codebook.shape}.")
    if codebook.shape[0] < 1:
        raise ValueError(f"codebook must hold at least one code, got shape {codebook.shape}.")
    if z.ndim < 1 or z.shape[-1] != codebook.shape[1]:
        raise ValueError(
            f"z's last axis must equal the codebook's dim D={codebook.shape[1]}, "
            f"got z of shape {z.shape}."
        )
    if chunk_size is not None:
        if not isinstance(chunk_size, numbers.Integral) or isinstance(chunk_size, bool):
            raise TypeError(f"chunk_size must be an int or None, got {chunk_size!r}.")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")


def _check_nonnegative(name: str, value: object) -> None:
    # Traced values (e.g. under optax.inject_hyperparams-style sweeps) are not checked.
    if isinstance(value, numbers.Real) and value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}.")


def nearest_codes(
    z: jax.typing.ArrayLike, codebook: jax.typing.ArrayLike, *, chunk_size: int | None = None
) -> jax.Array:
    r"""Index of the nearest code (squared Euclidean distance) of every vector.

    .. math::

        k(z) = \arg\min_k \; \lVert z\rVert^2 - 2\, z^\top e_k + \lVert e_k\rVert^2,

    the cross term for all codes being one matrix product. Distances are computed in float32, or
    float64 for float64 inputs (``bfloat16`` inputs are cast up; JAX's default matmul
    precision). Ties go to the lowest
    index. With ``chunk_size`` the rows are processed ``chunk_size`` at a time
    (:func:`jax.lax.map`), so the ``(N, K)`` distance matrix never exists whole: peak memory
    is ``chunk_size × K`` floats; the indices are the same. Chunks that fit in cache are also
    faster on CPU (``chunk_size=2048``: about 0.75 of the unchunked time in ``benchmarks/vq.py``).
    No gradient flows through it.

    Args:
      z: ``(..., D)`` vectors.
      codebook: ``(K, D)`` codes.
      chunk_size: static; rows per chunk, or ``None`` for a single matrix product.

    Returns:
      ``(...)`` int32 indices into the codebook.

    Raises:
      ValueError: if ``codebook`` is not 2-D or empty, if ``z``'s last axis differs from
        ``D``, or if ``chunk_size < 1``.
      TypeError: if ``chunk_size`` is not an int.

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
    _check_inputs(z, codebook, chunk_size)
    # The search is piecewise constant: stopping gradients keeps the distances out of autodiff.
    acc = _accumulation_dtype(z, codebook)
    flat = lax.stop_gradient(z.reshape(-1, z.shape[-1]).astype(acc))
    codes = lax.stop_gradient(codebook.astype(acc))
    codes_sq = jnp.sum(jnp.square(codes), axis=-1)

    def nearest(row: jax.Array) -> jax.Array:
        # ||z||^2 is the same for every code: the argmin needs only ||e||^2 - 2 z.e.
        return jnp.argmin(codes_sq - 2.0 * (row @ codes.T)).astype(jnp.int32)

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

    Args:
      z: ``(..., D)`` encoder outputs, any float dtype.
      codebook: ``(K, D)`` codes.
      commitment_cost: :math:`\beta \ge 0` (checked when a Python number), default 0.25.
      chunk_size: static; rows per chunk of the distance computation (see
        :func:`nearest_codes`), or ``None``.

    Returns:
      :class:`VQOutput`: ``quantized`` ``(..., D)`` in ``z``'s dtype, ``indices`` ``(...)``
      int32, and scalars (float32, or float64 for float64 inputs) ``loss``,
      ``codebook_loss``, ``commitment_loss``, ``perplexity``, ``usage``.

    Raises:
      ValueError: if ``codebook`` is not 2-D or empty, ``z``'s last axis differs from the
        codebook's ``D``, ``chunk_size < 1`` or ``commitment_cost < 0``.
      TypeError: if ``chunk_size`` is not an int.

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
    _check_nonnegative("commitment_cost", commitment_cost)
    indices = nearest_codes(z, codebook, chunk_size=chunk_size)
    # argmin indices are in range: the gather needs no bounds handling.
    e = codebook.at[indices].get(mode="promise_in_bounds")
    acc = _accumulation_dtype(z, codebook)
    z32, e32 = z.astype(acc), e.astype(acc)
    codebook_loss = jnp.mean(jnp.square(lax.stop_gradient(z32) - e32))
    commitment_loss = jnp.mean(jnp.square(z32 - lax.stop_gradient(e32)))
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
    z: jax.Array,
    indices: jax.Array,
    decay: float | jax.Array,
    epsilon: float | jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One EMA step of the cluster sizes and code sums, and the Laplace-smoothed codebook."""
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
    smoothed = (new_size + epsilon) / (total + num_codes * epsilon) * total
    codebook = new_sum / smoothed[:, None]
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
      num_codes: ``K``.
      dim: ``D``.
      commitment_cost: :math:`\beta`, default 0.25.
      chunk_size: static rows per chunk of the distance computation, or ``None``.
      rngs: ``nnx.Rngs`` with a ``params`` stream.
      dtype: dtype ``z`` is cast to before quantizing (``None``: keep ``z``'s dtype).
      param_dtype: dtype of the codebook.
      codebook_init: ``init(key, (K, D), dtype)``; default uniform with variance ``1/D`` per
        component (dm-haiku's default).

    Raises:
      ValueError: ``num_codes`` or ``dim`` < 1, ``commitment_cost < 0``; and at call time as
        :func:`vector_quantize`.

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
        rngs: nnx.Rngs,
        dtype=None,
        param_dtype=jnp.float32,
        codebook_init=_codebook_init,
    ):
        positive_int("num_codes", num_codes)
        positive_int("dim", dim)
        _check_nonnegative("commitment_cost", commitment_cost)
        self.num_codes, self.dim = num_codes, dim
        self.commitment_cost = commitment_cost
        self.chunk_size = chunk_size
        self.dtype, self.param_dtype = dtype, param_dtype
        self.codebook = nnx.Param(codebook_init(rngs.params(), (num_codes, dim), param_dtype))

    def __call__(self, z: jax.typing.ArrayLike) -> VQOutput:
        """Quantizes ``z`` ``(..., D)``; see :func:`vector_quantize`."""
        z = jnp.asarray(z) if self.dtype is None else jnp.asarray(z, self.dtype)
        return vector_quantize(
            z,
            self.codebook[...],
            commitment_cost=self.commitment_cost,
            chunk_size=self.chunk_size,
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

    After ``model.eval()`` (which sets ``use_running_average=True``, as for
    ``nnx.BatchNorm``) the statistics are frozen; ``model.train()`` resumes updates. Under
    ``jit`` with ``z`` sharded over a data axis the batch sums are over the global batch.

    Args:
      num_codes: ``K``.
      dim: ``D``.
      decay: :math:`\gamma \in [0, 1]`, default 0.99.
      epsilon: :math:`\epsilon \ge 0` of the Laplace smoothing, default 1e-5.
      commitment_cost: :math:`\beta`, default 0.25.
      chunk_size: static rows per chunk of the distance computation, or ``None``.
      use_running_average: ``True`` freezes the statistics (eval mode); default ``False``.
      rngs: ``nnx.Rngs`` with a ``params`` stream (initial codebook).
      dtype: dtype ``z`` is cast to before quantizing (``None``: keep ``z``'s dtype).
      param_dtype: dtype of the statistics and codebook.
      codebook_init: ``init(key, (K, D), dtype)``, as for :class:`VectorQuantizer`.

    Raises:
      ValueError: ``num_codes`` or ``dim`` < 1, ``decay`` outside ``[0, 1]``, ``epsilon < 0``
        or ``commitment_cost < 0``; and at call time as :func:`vector_quantize`.

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
        use_running_average: bool = False,
        rngs: nnx.Rngs,
        dtype=None,
        param_dtype=jnp.float32,
        codebook_init=_codebook_init,
    ):
        positive_int("num_codes", num_codes)
        positive_int("dim", dim)
        _check_nonnegative("commitment_cost", commitment_cost)
        _check_nonnegative("epsilon", epsilon)
        if isinstance(decay, numbers.Real) and not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay must be in [0, 1], got {decay}.")
        self.num_codes, self.dim = num_codes, dim
        self.decay, self.epsilon = decay, epsilon
        self.commitment_cost = commitment_cost
        self.chunk_size = chunk_size
        self.use_running_average = use_running_average
        self.dtype, self.param_dtype = dtype, param_dtype
        init = codebook_init(rngs.params(), (num_codes, dim), param_dtype)
        self.codebook = VQStatistics(init)
        self.cluster_size = VQStatistics(jnp.ones((num_codes,), param_dtype))
        self.code_sum = VQStatistics(init)

    def __call__(
        self, z: jax.typing.ArrayLike, *, use_running_average: bool | None = None
    ) -> VQOutput:
        """Quantizes ``z`` ``(..., D)`` and, in training mode, updates the statistics.

        ``use_running_average`` overrides the module's flag for this call.
        """
        z = jnp.asarray(z) if self.dtype is None else jnp.asarray(z, self.dtype)
        frozen = self.use_running_average if use_running_average is None else use_running_average
        out = vector_quantize(
            z,
            self.codebook[...],
            commitment_cost=self.commitment_cost,
            chunk_size=self.chunk_size,
        )
        out = out._replace(loss=self.commitment_cost * out.commitment_loss)
        if not frozen:
            size, total, codebook = _ema_statistics(
                self.cluster_size[...], self.code_sum[...], z, out.indices, self.decay,
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
      commitment_cost: :math:`\beta`, default 0.25.
      rngs: ``nnx.Rngs`` with a ``params`` stream.
      dtype: computation dtype of the layers (``None``: the input's).
      param_dtype: dtype of the parameters and statistics.

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
        positive_int("num_codes", num_codes)
        positive_int("code_dim", code_dim)
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.num_latents, self.code_dim = num_latents, code_dim
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
        h = self.enc2(jax.nn.relu(self.enc1(jnp.asarray(x))))
        return h.reshape(*h.shape[:-1], self.num_latents, self.code_dim)

    def decode(self, z_q: jax.typing.ArrayLike) -> jax.Array:
        """``(B, L, D)`` quantized latents → ``(B, in_features)`` reconstructions."""
        z_q = jnp.asarray(z_q)
        return self.dec2(jax.nn.relu(self.dec1(z_q.reshape(*z_q.shape[:-2], -1))))

    def __call__(self, x: jax.typing.ArrayLike) -> tuple[jax.Array, VQOutput]:
        """Reconstructs ``x`` ``(B, in_features)``: returns ``(recon, VQOutput)``."""
        out = self.vq(self.encode(x))
        return self.decode(out.quantized), out
