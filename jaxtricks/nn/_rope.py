"""Positions: sinusoidal embeddings and rotary position embeddings (RoPE) in 1-D and 2-D.

RoPE multiplies each pair of features of a query or key at position :math:`m` by the rotation
:math:`R(m\\theta_i)`. Because rotations compose, :math:`(R_m q)^\\top (R_n k) = q^\\top
R_{n-m} k`: the attention score depends on the positions only through :math:`n - m`.
Tables are computed on the fly from the positions (no global state): one sine and one cosine
per position and frequency, broadcast over the heads.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

_ROPE_LAYOUTS = ("interleaved", "half")
_SINUSOIDAL_LAYOUTS = ("interleaved", "concat")


def _check_even(name: str, value: int, multiple: int = 2) -> None:
    if value % multiple:
        raise ValueError(f"{name} must be divisible by {multiple}, got {value}.")


def _check_layout(layout: str, allowed: tuple[str, ...]) -> None:
    if layout not in allowed:
        raise ValueError(f"layout must be one of {allowed}, got {layout!r}.")


def _angles(positions: jax.Array, dim: int, base: float, dtype) -> jax.Array:
    """:math:`m\\theta_i`, :math:`\\theta_i = \\mathrm{base}^{-2i/\\mathrm{dim}}`: ``(..., dim/2)``.

    Angles are formed in ``dtype`` promoted with the positions' float dtype and at least
    float32, so large integer positions keep float32 (or better) precision.
    """
    if jnp.issubdtype(positions.dtype, jnp.floating):
        dtype = jnp.promote_types(dtype, positions.dtype)
    dtype = jnp.promote_types(dtype, jnp.float32)
    exponents = jnp.arange(0, dim, 2, dtype=dtype) / dim
    inv_freq = jnp.asarray(base, dtype) ** -exponents
    inv_freq = inv_freq.reshape((1,) * positions.ndim + inv_freq.shape)
    return positions.astype(dtype)[..., None] * inv_freq


def sinusoidal_embedding(
    positions: jax.typing.ArrayLike,
    dim: int,
    *,
    base: float = 10000.0,
    layout: str = "interleaved",
) -> jax.Array:
    r"""The sinusoidal position embedding of "Attention Is All You Need".

    With :math:`\theta_i = \mathrm{base}^{-2i/d}`, :math:`i = 0, \dots, d/2 - 1`:

    .. math::

        p_{k, 2i} = \sin(k\theta_i), \qquad p_{k, 2i+1} = \cos(k\theta_i)
        \qquad (\text{layout} = \text{"interleaved"}),

    or :math:`p_k = [\sin(k\theta_0), \dots, \sin(k\theta_{d/2-1}), \cos(k\theta_0), \dots,
    \cos(k\theta_{d/2-1})]` for ``layout="concat"``. Either way
    :math:`p_m^\top p_n = \sum_i \cos((m - n)\theta_i)`, a function of :math:`m - n` alone
    that decays (on average) as :math:`|m - n|` grows.

    Args:
      positions: integer or float array of any shape ``(...)``.
      dim: embedding size :math:`d` (static, even).
      base: the base of the geometric frequencies (10000 in the paper).
      layout: ``"interleaved"`` (sin, cos, sin, cos, ...) or ``"concat"`` ([sin ... | cos ...]).

    Returns:
      ``(..., dim)`` in float32, or float64 for float64 positions.

    Raises:
      ValueError: if ``dim`` is odd or not positive, or ``layout`` is unknown.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxtricks.nn import sinusoidal_embedding
      >>> p = sinusoidal_embedding(jnp.arange(3), 4)
      >>> print(p.shape, p[0])
      (3, 4) [0. 1. 0. 1.]
      >>> print(jnp.round(p[1], 4))  # sin 1, cos 1, sin 0.01, cos 0.01 (0.99995)
      [0.8415 0.5403 0.01   1.    ]

    References:
      Ashish Vaswani et al., "Attention Is All You Need", NeurIPS 2017, arXiv:1706.03762.
      Su Jianlin, "Transformer升级之路：1、Sinusoidal位置编码追根溯源",
      https://kexue.fm/archives/8231
    """
    if dim <= 0:
        raise ValueError(f"dim must be a positive even integer, got {dim}.")
    _check_even("dim", dim)
    _check_layout(layout, _SINUSOIDAL_LAYOUTS)
    angles = _angles(jnp.asarray(positions), dim, base, jnp.float32)
    sin, cos = jnp.sin(angles), jnp.cos(angles)
    if layout == "interleaved":
        return jnp.stack([sin, cos], axis=-1).reshape(*angles.shape[:-1], dim)
    return jnp.concatenate([sin, cos], axis=-1)


def rope_permutation(head_dim: int) -> np.ndarray:
    r"""The feature permutation taking the interleaved RoPE layout to the half layout.

    The interleaved layout rotates pairs :math:`(2i, 2i + 1)`; the half layout pairs
    :math:`(i, i + H/2)`. With ``perm = rope_permutation(H)``,
    ``x_half = x_interleaved[..., perm]`` puts every interleaved pair where the half layout
    expects it, so

    .. math::

        \mathrm{rope}_\text{half}(x[\dots, \pi]) = \mathrm{rope}_\text{interleaved}(x)[\dots, \pi],
        \qquad \pi = (0, 2, 4, \dots, H - 2, 1, 3, \dots, H - 1).

    The inverse map (half to interleaved) is ``np.argsort(perm)``. Checkpoints are **not**
    interchangeable between layouts: a model trained with one layout must have the query and
    key projection columns permuted (per head) by ``perm`` before it runs with the other.

    Args:
      head_dim: :math:`H` (static, even).

    Returns:
      An integer NumPy array ``(H,)``.

    Raises:
      ValueError: if ``head_dim`` is odd.

    Examples:
      >>> from jaxtricks.nn import rope_permutation
      >>> print(rope_permutation(8))
      [0 2 4 6 1 3 5 7]

    References:
      Jianlin Su, Yu Lu, Shengfeng Pan, Ahmed Murtadha, Bo Wen, Yunfeng Liu, "RoFormer:
      Enhanced Transformer with Rotary Position Embedding", 2021, arXiv:2104.09864.
      Su Jianlin, "Transformer升级之路：2、博采众长的旋转式位置编码",
      https://kexue.fm/archives/8265
    """
    _check_even("head_dim", head_dim)
    return np.concatenate([np.arange(0, head_dim, 2), np.arange(1, head_dim, 2)])


def _rotate(x: jax.Array, cos: jax.Array, sin: jax.Array, layout: str) -> jax.Array:
    """Rotates the pairs of ``x`` ``(..., H)`` by the tables of :func:`_tables` (broadcast).

    Computes in the tables' dtype and returns x's dtype.
    """
    if layout == "interleaved" and _partner_gather(x.dtype):
        # x * [c0, c0, c1, c1, ...] + x[j ^ 1] * [-s0, s0, -s1, s1, ...]: a constant gather of
        # the partner keeps the loop over the contiguous head dim, which vectorises on CPU.
        partner = jnp.take(x, np.arange(x.shape[-1]) ^ 1, axis=-1).astype(cos.dtype)
        return (x.astype(cos.dtype) * cos + partner * sin).astype(x.dtype)
    # Pairs as an axis of size 2 (last for interleaved, second to last for half): one stack
    # that XLA fuses with the arithmetic into a single pass over x (a concatenate of slices
    # would not fuse and costs a temporary the size of x).
    half = x.shape[-1] // 2
    axis = -1 if layout == "interleaved" else -2
    shape = (half, 2) if axis == -1 else (2, half)
    pairs = x.astype(cos.dtype).reshape(*x.shape[:-1], *shape)
    x1, x2 = (jnp.take(pairs, i, axis=axis) for i in (0, 1))
    out = jnp.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=axis)
    return out.reshape(x.shape).astype(x.dtype)


def _partner_gather(dtype) -> bool:
    """Whether interleaved pairs rotate by gathering partners (the faster form on CPU for
    32- and 64-bit x; for 16-bit x the gather is ~2x slower than a size-2 pair axis)."""
    return jnp.dtype(dtype).itemsize >= 4


def _prepare(x: jax.typing.ArrayLike, layout: str, multiple: int) -> jax.Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"x must have a floating dtype, got {x.dtype}.")
    if x.ndim < 3:
        raise ValueError(f"x must have shape (..., T, N, H), got {x.shape}.")
    _check_even("the head dim H = x.shape[-1]", x.shape[-1], multiple)
    _check_layout(layout, _ROPE_LAYOUTS)
    return x


def _check_positions(positions: jax.Array, x: jax.Array, trailing: tuple[int, ...]) -> None:
    """``positions`` must be ``(..., T) + trailing`` with ``...`` broadcastable to x's batch."""
    lead = x.shape[:-2]  # (..., T)
    core = positions.shape[: positions.ndim - len(trailing)]
    want = "(..., T)" + ("" if not trailing else f" + {trailing}")
    ok = positions.ndim >= 1 + len(trailing) and positions.shape[len(core) :] == trailing
    if ok:
        try:
            ok = len(core) <= len(lead) and np.broadcast_shapes(core, lead) == lead
        except ValueError:
            ok = False
    if not ok:
        raise ValueError(
            f"positions must have shape {want} broadcastable to x's {lead} (x is {x.shape}), "
            f"got {positions.shape}."
        )


def _tables(positions: jax.Array, x: jax.Array, dim: int, base: float, layout: str):
    """The tables :func:`_rotate` takes, at x's rank, in x's compute dtype.

    cos and sin ``(..., T, 1, dim/2)``; for the partner gather of :func:`_rotate`, each
    repeated over its pair with the sign of the rotation folded in, ``(..., T, 1, dim)``.
    """
    compute = jnp.promote_types(x.dtype, jnp.float32)
    # Leading ones so the tables have x's rank (no implicit rank promotion); 1 over the heads.
    positions = positions.reshape((1,) * (x.ndim - 2 - positions.ndim) + positions.shape + (1,))
    angles = _angles(positions, dim, base, compute)
    cos, sin = jnp.cos(angles).astype(compute), jnp.sin(angles).astype(compute)
    if layout == "interleaved" and _partner_gather(x.dtype):
        tables = jnp.stack([jnp.stack([cos, cos], -1), jnp.stack([-sin, sin], -1)], -1)
        tables = tables.reshape(*angles.shape[:-1], dim, 2)
    else:
        tables = jnp.stack([cos, sin], axis=-1)
    # XLA (CPU at least) fuses sin and cos into the rotation loop and then evaluates them once
    # per element of x (every head and batch row): ~10x slower than reading x. A dot is never
    # fused into its elementwise consumers, so passing the tables through an exact product
    # with the 2x2 identity materialises them once (optimization_barrier is dropped on CPU).
    eye = jnp.eye(2, dtype=compute)
    # The cos/sin axis goes first so that each table is contiguous for the rotation.
    tables = jnp.einsum("...c,cd->d...", tables, eye, precision=jax.lax.Precision.HIGHEST)
    return tables[0], tables[1]


def apply_rope(
    x: jax.typing.ArrayLike,
    positions: jax.typing.ArrayLike,
    *,
    base: float = 10000.0,
    layout: str = "interleaved",
) -> jax.Array:
    r"""Rotary position embedding (RoPE) of queries or keys.

    Each pair :math:`(a, b)` of features of the token at position :math:`m` is rotated by
    :math:`m\theta_i`, :math:`\theta_i = \mathrm{base}^{-2i/H}`:

    .. math::

        \begin{pmatrix} a' \\ b' \end{pmatrix} =
        \begin{pmatrix} \cos m\theta_i & -\sin m\theta_i \\
                        \sin m\theta_i & \cos m\theta_i \end{pmatrix}
        \begin{pmatrix} a \\ b \end{pmatrix},
        \qquad (R_m q)^\top (R_n k) = q^\top R_{n-m} k .

    Pair :math:`i` is :math:`(x_{2i}, x_{2i+1})` for ``layout="interleaved"`` (RoFormer,
    bert4keras) and :math:`(x_i, x_{i+H/2})` for ``layout="half"`` (GPT-NeoX, Llama, Gemma,
    Hugging Face's and equinox's ``rotate_half``). The two give the same scores up to the feature
    permutation :func:`rope_permutation`, but checkpoints are **not** interchangeable: weights
    trained with one layout must be permuted to run with the other.

    Angles are computed in float32 at least (float64 for float64 inputs or positions), so
    large positions keep their precision; the rotation runs in float32 for bfloat16 and
    float16 inputs and the result is cast back to ``x``'s dtype. The sine and cosine tables
    are computed once per call, ``(..., T, H/2)``, and broadcast over the heads.

    Args:
      x: ``(..., T, N, H)``, the layout of :func:`jax.nn.dot_product_attention` (batch, time,
        heads, head dim); ``H`` even.
      positions: ``(..., T)``, integers or floats (e.g. ``offset + arange(T)`` when decoding
        with a cache), its leading axes broadcastable to ``x``'s batch axes.
      base: the base of the geometric frequencies.
      layout: ``"interleaved"`` or ``"half"``.

    Returns:
      The rotated ``x``, same shape and dtype.

    Raises:
      TypeError: if ``x`` is not floating.
      ValueError: if ``H`` is odd, ``layout`` is unknown or the shapes of ``positions`` and
        ``x`` do not match.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxtricks.nn import apply_rope
      >>> q = jnp.ones((1, 4, 2, 8))  # (B, T, N, H)
      >>> k = jnp.ones((1, 4, 2, 8))
      >>> pos = jnp.arange(4)
      >>> rq, rk = apply_rope(q, pos), apply_rope(k, pos)
      >>> s = jnp.einsum("btnh,bsnh->bnts", rq, rk)[0, 0]
      >>> print(jnp.allclose(s[1, 0], s[3, 2]), jnp.allclose(s[0, 0], 8.0))  # depends on m - n
      True True

    References:
      Jianlin Su, Yu Lu, Shengfeng Pan, Ahmed Murtadha, Bo Wen, Yunfeng Liu, "RoFormer:
      Enhanced Transformer with Rotary Position Embedding", 2021, arXiv:2104.09864.
      Su Jianlin, "Transformer升级之路：2、博采众长的旋转式位置编码",
      https://kexue.fm/archives/8265
    """
    x = _prepare(x, layout, 2)
    positions = jnp.asarray(positions)
    _check_positions(positions, x, ())
    cos, sin = _tables(positions, x, x.shape[-1], base, layout)
    return _rotate(x, cos, sin, layout)


def apply_rope_2d(
    x: jax.typing.ArrayLike,
    positions: jax.typing.ArrayLike,
    *,
    base: float = 10000.0,
    layout: str = "interleaved",
) -> jax.Array:
    r"""Axial 2-D rotary position embedding (e.g. for image patches on a grid).

    The first half of each head is rotated by the 1-D RoPE of size :math:`H/2` at the first
    coordinate, the second half at the second coordinate:

    .. math::

        R_{x, y} = \begin{pmatrix} R_x & 0 \\ 0 & R_y \end{pmatrix}, \qquad
        (R_{x_1, y_1} q)^\top (R_{x_2, y_2} k) = q^\top R_{x_2 - x_1,\, y_2 - y_1} k,

    with :math:`R_x` the :math:`H/2`-dimensional rotation of :func:`apply_rope`
    (:math:`\theta_i = \mathrm{base}^{-2i/(H/2)}`). ``layout`` applies within each half:
    ``"half"`` pairs :math:`(i, i + H/4)` inside each half. Precision and dtypes as in
    :func:`apply_rope`.

    Args:
      x: ``(..., T, N, H)`` with ``H`` divisible by 4.
      positions: ``(..., T, 2)``, the two coordinates of each token (integers or floats).
      base: the base of the geometric frequencies.
      layout: ``"interleaved"`` or ``"half"``.

    Returns:
      The rotated ``x``, same shape and dtype.

    Raises:
      TypeError: if ``x`` is not floating.
      ValueError: if ``H`` is not divisible by 4, ``layout`` is unknown or ``positions`` is not
        ``(..., T, 2)`` matching ``x``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxtricks.nn import apply_rope_2d
      >>> grid = jnp.stack(jnp.meshgrid(jnp.arange(3), jnp.arange(3), indexing="ij"), -1)
      >>> pos = grid.reshape(9, 2)  # (T, 2): row, column
      >>> q = apply_rope_2d(jnp.ones((9, 1, 8)), pos)
      >>> s = jnp.einsum("tnh,snh->ts", q, q)
      >>> print(jnp.allclose(s[0, 4], s[4, 8]), q.shape)  # (0,0)-(1,1) and (1,1)-(2,2)
      True (9, 1, 8)

    References:
      Jianlin Su, Yu Lu, Shengfeng Pan, Ahmed Murtadha, Bo Wen, Yunfeng Liu, "RoFormer:
      Enhanced Transformer with Rotary Position Embedding", 2021, arXiv:2104.09864.
      Su Jianlin, "Transformer升级之路：4、二维位置的旋转式位置编码",
      https://kexue.fm/archives/8397
    """
    x = _prepare(x, layout, 4)
    positions = jnp.asarray(positions)
    _check_positions(positions, x, (2,))
    half = x.shape[-1] // 2
    parts = []
    for axis, xs in enumerate((x[..., :half], x[..., half:])):
        cos, sin = _tables(positions[..., axis], x, half, base, layout)
        parts.append(_rotate(xs, cos, sin, layout))
    return jnp.concatenate(parts, axis=-1)
