"""InfoNCE: the in-batch contrastive loss of CPC, SimCLR and SimCSE.

Row ``i`` of ``a`` must pick row ``i`` of ``b`` out of all rows of ``b`` (the other rows are
the negatives), by a softmax over temperature-scaled cosine similarities.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxtricks._src import checks
from jaxtricks._src.numerics import compute_dtype, l2_normalize

from . import _common

# Norms below this are treated as this value: a zero row normalises to zero with a finite
# gradient (PyTorch's ``F.normalize`` uses the same floor).
_MIN_NORM = 1e-12


def info_nce(
    a: jax.typing.ArrayLike,
    b: jax.typing.ArrayLike,
    *,
    temperature: jax.typing.ArrayLike = 0.05,
    symmetric: bool = False,
) -> jax.Array:
    r"""InfoNCE loss of paired embeddings with in-batch negatives (SimCSE's loss).

    Rows are L2-normalised, so the logits are cosine similarities over the temperature
    :math:`\tau`; row :math:`i` of ``a`` has row :math:`i` of ``b`` as its positive and every
    other row of ``b`` as a negative:

    .. math::

        \hat a_i = \frac{a_i}{\max(\|a_i\|, 10^{-12})}, \qquad
        s_{ij} = \frac{\hat a_i \cdot \hat b_j}{\tau}, \qquad
        \mathcal{L} = \frac{1}{B} \sum_{i=1}^{B}
            \Big(-s_{ii} + \log \sum_{j=1}^{M} e^{s_{ij}}\Big)

    This is the cross-entropy of the softmax over each row of :math:`S = \hat A \hat B^\top / \tau`
    with the diagonal as the integer labels, averaged over rows. By default it is
    one-directional, ``a`` → ``b`` (SimCSE, CPC). With ``symmetric=True`` it is the mean of
    the ``a`` → ``b`` and ``b`` → ``a`` losses (SimCLR/CLIP style); that needs ``M == B``.

    ``b`` may have more rows than ``a`` (``M > B``): rows ``B..M-1`` are extra negatives for
    every row of ``a`` (SimCSE's supervised hard negatives). The minimum of the loss is 0
    and a loss of :math:`\log M` means chance. Under ``jit`` with the batch sharded over a
    data axis, the similarity matrix is the global ``B × M`` one: every example is contrasted
    with the whole batch, not only with its own shard.

    Norms are computed scaled (no overflow for rows of any finite magnitude, no underflow for
    tiny ones), and a zero row normalises to 0 (its logits are 0) with a finite gradient. A
    temperature below the smallest normal number of the compute dtype (1.2e-38 in float32;
    subnormals flush to zero on CPU and TPU) is taken as that number, so logits stay finite and
    the loss is finite (huge as :math:`\tau \to 0` for a row whose positive is not its largest
    similarity), never NaN. An empty batch (``B = 0``) gives 0.

    Args:
      a: ``(B, D)`` anchors (e.g. the first dropout view of B sentences); integer or
        floating dtype.
      b: ``(M, D)`` with ``M >= B``; row ``i < B`` is the positive of ``a[i]``.
      temperature: :math:`\tau > 0`, a finite scalar; SimCSE uses 0.05. Python, NumPy and
        concrete JAX values are checked; a traced one is not (a traced :math:`\tau \le 0` or
        non-finite :math:`\tau` gives a meaningless loss, inf or NaN).
      symmetric: average in the ``b`` → ``a`` direction too (requires ``M == B``). A static
        Python bool.

    Returns:
      Scalar, the mean loss over the ``B`` rows, in the promoted dtype of ``a`` and ``b``
      (bf16 inputs are computed in float32 and cast back).

    Raises:
      TypeError: if ``a`` or ``b`` is bool or complex, ``symmetric`` is not a bool, or
        ``temperature`` is not a real number.
      ValueError: if ``a`` or ``b`` is not 2-D, the feature sizes differ, ``b`` has fewer
        rows than ``a``, ``symmetric=True`` with ``M != B``, ``temperature`` is not a
        scalar, or a concrete ``temperature`` is not finite and positive.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxtricks.losses import info_nce
      >>> a = jnp.array([[1.0, 0.0], [0.0, 2.0]])
      >>> # Perfectly aligned pairs with orthogonal negatives: loss = log(1 + e^{-1/tau}).
      >>> print(f"{float(info_nce(a, a, temperature=1.0)):.4f}")
      0.3133
      >>> print(f"{float(info_nce(a, a[::-1], temperature=1.0)):.4f}")  # swapped pairs
      1.3133

    References:
      Aaron van den Oord, Yazhe Li, Oriol Vinyals, "Representation Learning with Contrastive
      Predictive Coding", 2018, arXiv:1807.03748.
      Tianyu Gao, Xingcheng Yao, Danqi Chen, "SimCSE: Simple Contrastive Learning of Sentence
      Embeddings", 2021, arXiv:2104.08821.
      Su Jianlin, "对比学习可以使用梯度累积吗？", https://kexue.fm/archives/8471
    """
    where = "info_nce"
    a = _common.real_array("a", a, where=where)
    b = _common.real_array("b", b, where=where)
    if not isinstance(symmetric, bool):
        raise TypeError(f"{where}: symmetric must be a bool, got {symmetric!r}.")
    if np.ndim(temperature) != 0:
        raise ValueError(
            f"{where}: temperature must be a scalar, got shape {np.shape(temperature)}."
        )
    checks.number("temperature", temperature, low=0.0, low_open=True, where=where)
    checks.shape("a", a, (None, None), where=where)
    checks.shape("b", b, (None, a.shape[1]), where=where)
    if b.shape[0] < a.shape[0]:
        raise ValueError(
            f"{where}: b must have at least as many rows as a (M >= B = {a.shape[0]}), got "
            f"shape {b.shape} for a of shape {a.shape}."
        )
    if symmetric and b.shape[0] != a.shape[0]:
        raise ValueError(f"{where}: symmetric=True needs b of a's shape {a.shape}, got {b.shape}.")
    out_dtype = jnp.result_type(a, b, float)
    dt = compute_dtype(a, b)
    a_hat = l2_normalize(a.astype(dt), min_norm=_MIN_NORM)
    b_hat = l2_normalize(b.astype(dt), min_norm=_MIN_NORM)
    # Subnormal temperatures would be flushed to 0 on CPU and TPU (then 0 / 0): the smallest
    # normal number stands in for them, so that cosines / tau stay finite (|cos| <= 1).
    tau = jnp.maximum(jnp.asarray(temperature, dt), jnp.finfo(dt).tiny)
    logits = (a_hat @ b_hat.T) / tau
    batch = a.shape[0]
    diagonal = jnp.arange(batch)
    loss = _common.mean_or_zero(_common.cross_entropy(logits, diagonal))
    if symmetric:
        backward = _common.mean_or_zero(_common.cross_entropy(logits.T, diagonal))
        loss = 0.5 * (loss + backward)
    return loss.astype(out_dtype)
