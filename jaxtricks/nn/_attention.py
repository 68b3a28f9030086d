"""Multi-head self-attention with rotary position embedding (RoPE)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from jaxtricks._src import checks

from ._rope import _ROPE_LAYOUTS, _as_positions, _base, _check_positions, _rope, _rope_2d

_ROPES = ("1d", "2d", None)


def _check_rope(rope: str | None, head_dim: int) -> None:
    checks.choice("rope", rope, _ROPES)
    multiple = 4 if rope == "2d" else 2
    if rope is not None and head_dim % multiple:
        raise ValueError(
            f"rope={rope!r} needs a head dim divisible by {multiple}, got head dim {head_dim}."
        )


def _check_bool(name: str, value: object) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {value!r}.")
    return bool(value)


def _check_config(
    width_name: str, width: object, num_heads: object, rope, layout, causal, base
) -> int:
    """Checks the attention options of a module whose model width is ``width_name``.

    Returns the head dim.
    """
    width = checks.positive_int(width_name, width)
    num_heads = checks.positive_int("num_heads", num_heads)
    if width % num_heads:
        raise ValueError(
            f"{width_name} must be divisible by num_heads, got {width_name}={width}, "
            f"num_heads={num_heads}."
        )
    head_dim = width // num_heads
    _check_rope(rope, head_dim)
    checks.choice("layout", layout, _ROPE_LAYOUTS)
    _check_bool("causal", causal)
    _base(base)
    return head_dim


def _check_module_args(rngs: object, dtype: object, param_dtype: object) -> None:
    if not isinstance(rngs, nnx.Rngs):
        raise TypeError(f"rngs must be an nnx.Rngs, got {type(rngs).__name__}.")
    checks.float_dtype("dtype", dtype, complex_ok=False)
    checks.float_dtype("param_dtype", param_dtype, allow_none=False, complex_ok=False)


def _as_float(name: str, x: object) -> jax.Array:
    try:
        x = jnp.asarray(x)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be a floating array, got {x!r}.") from e
    checks.array_dtype_kind(name, x, ("floating",))
    return x


def _check_mask(mask: object, batch: int, length: int) -> jax.Array | None:
    """``mask`` as a bool ``(B, T)`` array (``None`` stays ``None``)."""
    if mask is None:
        return None
    try:
        mask = jnp.asarray(mask)
    except (TypeError, ValueError) as e:
        raise TypeError(f"mask must be a bool array, got {mask!r}.") from e
    checks.array_dtype_kind("mask", mask, ("bool",))
    if mask.shape != (batch, length):
        raise ValueError(f"mask must have shape (B, T) = {(batch, length)}, got {mask.shape}.")
    return mask


def _check_positions_for(
    rope: str | None, positions: object, batch: int, length: int, source: str
) -> jax.Array | None:
    """Checked positions for ``rope`` against ``(B, T)``; ``None`` where they are not used."""
    if rope is None:
        return None
    if positions is None:
        if rope == "2d":
            raise ValueError("rope='2d' needs positions of shape (B or 1, T, 2), got None.")
        return None
    positions = _as_positions(positions)
    _check_positions(positions, (batch, length), (2,) if rope == "2d" else (), source)
    return positions


def rope_attention(
    query: jax.typing.ArrayLike,
    key: jax.typing.ArrayLike,
    value: jax.typing.ArrayLike,
    positions: jax.typing.ArrayLike | None = None,
    *,
    rope: str | None = "1d",
    layout: str = "interleaved",
    base: float = 10000.0,
    mask: jax.typing.ArrayLike | None = None,
    causal: bool = False,
) -> jax.Array:
    r"""Scaled dot-product attention of RoPE-rotated queries and keys.

    Per head, with :math:`R_m` the rotation of :func:`~jaxtricks.nn.apply_rope` at position
    :math:`m` and :math:`M` the boolean mask (key valid, and :math:`s \le t` when causal):

    .. math::

        o_t = \sum_s \frac{\exp(a_{ts})\, v_s}{\sum_{s'} \exp(a_{ts'})}, \qquad
        a_{ts} = \begin{cases} (R_t q_t)^\top (R_s k_s) / \sqrt{H} & M_{ts} \\
                 -\infty & \text{otherwise,} \end{cases}

    computed by :func:`jax.nn.dot_product_attention` (softmax in float32). A query with no
    valid key at all (a fully padded sequence, or a causal row whose prefix is all padding)
    outputs **zeros**, never NaN and never a function of the padded values, and its
    gradients are zero. Padded *queries* still attend to the valid keys (as in BERT); ignore
    their outputs downstream. ``T = 0`` gives an empty ``(B, 0, N, H)`` output. RoPE angles
    are exact for long contexts (see :func:`~jaxtricks.nn.apply_rope`).

    Args:
      query: ``(B, T, N, H)``, real floating.
      key: ``(B, T, N, H)``, the shape and dtype of ``query``.
      value: ``(B, T, N, H)``, the shape and dtype of ``query``.
      positions: ``rope="1d"``: ``(B or 1, T)`` or ``(T,)``, default ``arange(T)``;
        ``rope="2d"``: ``(B or 1, T, 2)``, required; ignored for ``rope=None``. Integers or
        floats; concrete values must be finite (traced NaN or infinite positions give NaN
        in the outputs that see them).
      rope: ``"1d"`` (:func:`~jaxtricks.nn.apply_rope`), ``"2d"``
        (:func:`~jaxtricks.nn.apply_rope_2d`, ``H`` divisible by 4) or ``None`` (no positions:
        the attention is then permutation-equivariant in the tokens).
      layout: RoPE pair layout, ``"interleaved"`` (RoFormer) or ``"half"`` (GPT-NeoX, Llama).
      base: RoPE frequency base, a concrete finite number > 0.
      mask: ``(B, T)`` bool, ``True`` for valid tokens; masks keys. Integer or float masks are
        rejected rather than cast.
      causal: a bool; also mask keys after the query (:math:`s > t`).

    Returns:
      ``(B, T, N, H)`` in ``query``'s dtype.

    Raises:
      TypeError: non-floating ``query``, ``key`` or ``value``, ``key``/``value`` of another
        dtype than ``query``, a non-bool ``mask`` or ``causal``, non-real ``positions``, or a
        traced ``base``.
      ValueError: ``query`` not 4-D, ``key`` or ``value`` not of ``query``'s shape, unknown
        ``rope`` or ``layout``, ``H`` not even (not divisible by 4 for ``"2d"``), ``"2d"``
        without positions, ``positions`` not matching ``(B, T)``, non-finite concrete
        ``positions`` or ``base``, or a ``mask`` that is not ``(B, T)``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jaxtricks.nn import rope_attention
      >>> q, k, v = jax.random.normal(jax.random.key(0), (3, 1, 5, 2, 4))  # B=1 T=5 N=2 H=4
      >>> mask = jnp.array([[True, True, True, False, False]])
      >>> out = rope_attention(q, k, v, mask=mask, causal=True)
      >>> out.shape, bool(jnp.allclose(out[:, 0], v[:, 0]))  # token 0 sees only itself
      ((1, 5, 2, 4), True)

    References:
      Vaswani et al., "Attention Is All You Need", 2017, arXiv:1706.03762.
      Su, Lu, Pan, Murtadha, Wen, Liu, "RoFormer: Enhanced Transformer with Rotary Position
      Embedding", 2021, arXiv:2104.09864.
      https://kexue.fm/archives/4765 and https://kexue.fm/archives/8265
    """
    query, key, value = (
        _as_float(n, a) for n, a in zip(("query", "key", "value"), (query, key, value))
    )
    if query.ndim != 4:
        raise ValueError(f"query must have shape (B, T, N, H), got {query.shape}.")
    for name, a in (("key", key), ("value", value)):
        if a.shape != query.shape:
            raise ValueError(
                f"{name} must have the shape of query (B, T, N, H) = {query.shape}, got {a.shape}."
            )
        if a.dtype != query.dtype:
            raise TypeError(f"{name} must have the dtype of query ({query.dtype}), got {a.dtype}.")
    batch, length, _, head_dim = query.shape
    _check_rope(rope, head_dim)
    checks.choice("layout", layout, _ROPE_LAYOUTS)
    causal = _check_bool("causal", causal)
    base = _base(base)
    mask = _check_mask(mask, batch, length)
    positions = _check_positions_for(rope, positions, batch, length, f"query is {query.shape}")
    if rope == "1d":
        if positions is None:
            positions = jnp.arange(length)
        query = _rope(query, positions, base, layout, None, "query")
        key = _rope(key, positions, base, layout, None, "key")
    elif rope == "2d":
        query = _rope_2d(query, positions, base, layout, "query")
        key = _rope_2d(key, positions, base, layout, "key")
    # Tags for named recomputation policies (jaxtricks.remat "save:query,key,value").
    query = checkpoint_name(query, "query")
    key = checkpoint_name(key, "key")
    value = checkpoint_name(value, "value")
    if mask is None:
        return jax.nn.dot_product_attention(query, key, value, is_causal=causal)
    out = jax.nn.dot_product_attention(
        query, key, value, mask=mask[:, None, None, :], is_causal=causal
    )
    # jax fills masked logits with a finite number, so a row without any valid key would
    # average the padded values: zero it instead. Causal rows see keys 0..t only.
    if causal:
        has_key = jnp.cumsum(mask, axis=-1) > 0
    else:
        has_key = jnp.broadcast_to(jnp.any(mask, axis=-1, keepdims=True), mask.shape)
    return jnp.where(has_key[:, :, None, None], out, jnp.zeros((), out.dtype))


class RoPEAttention(nnx.Module):
    r"""Multi-head self-attention with rotary position embedding.

    .. math::

        q, k, v = x W_q + b_q,\; x W_k + b_k,\; x W_v + b_v \quad (\text{split into } N
        \text{ heads of } H = D/N), \qquad
        y = \mathrm{concat}_n\big(\mathrm{attention}(R q_n, R k_n, v_n)\big) W_o + b_o,

    with the attention of :func:`rope_attention`. Heads are the consecutive blocks of
    ``H`` features: feature ``n*H + h`` of a projection is feature ``h`` of head ``n``.

    Parameters: ``query``, ``key``, ``value`` (``nnx.Linear`` ``D -> D``: ``kernel (D, D)``,
    ``bias (D,)``) and ``out`` (``nnx.Linear`` ``D -> D``). No dropout.

    Args:
      in_features: ``D``, model width; divisible by ``num_heads``.
      num_heads: ``N``.
      rope: ``"1d"``, ``"2d"`` (``H`` divisible by 4) or ``None`` (no positions).
      layout: RoPE pair layout, ``"interleaved"`` (RoFormer, bert4keras) or ``"half"``
        (GPT-NeoX, Llama).
      causal: mask keys after each query.
      base: RoPE frequency base.
      rngs: parameter initialisation.
      dtype: computation dtype (``None``: inferred from inputs and params).
      param_dtype: parameter dtype.

    Raises:
      TypeError: non-int ``in_features`` or ``num_heads``, non-bool ``causal``, a traced
        ``base``, ``rngs`` not an ``nnx.Rngs``, or an integer or complex ``dtype`` /
        ``param_dtype``.
      ValueError: ``in_features`` or ``num_heads`` < 1, ``in_features`` not divisible by
        ``num_heads``, a head dim that ``rope`` cannot rotate (odd; not divisible by 4 for
        ``"2d"``), unknown ``rope`` or ``layout``, or a non-finite or non-positive ``base``.

    Call ``(x, positions=None, mask=None)``: ``x`` ``(B, T, D)``; ``positions`` as in
    :func:`rope_attention` (default ``arange(T)`` for ``"1d"``, required ``(B or 1, T, 2)``
    for ``"2d"``); ``mask`` ``(B, T)`` bool padding mask (``True`` valid), combined with
    ``causal``. Returns ``(B, T, D)``; a query without any valid key outputs the ``out`` bias
    (its attention is zero, never NaN). A wrong ``x`` (not floating, not ``(B, T, D)``),
    ``positions`` or ``mask`` raises ``TypeError``/``ValueError`` as in
    :func:`rope_attention`.

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxtricks.nn import RoPEAttention
      >>> layer = RoPEAttention(16, 4, causal=True, rngs=nnx.Rngs(0))
      >>> y = layer(jnp.ones((2, 6, 16)), mask=jnp.ones((2, 6), bool))
      >>> y.shape, layer.query.kernel[...].shape
      ((2, 6, 16), (16, 16))

    References:
      Vaswani et al., "Attention Is All You Need", 2017, arXiv:1706.03762.
      Su, Lu, Pan, Murtadha, Wen, Liu, "RoFormer: Enhanced Transformer with Rotary Position
      Embedding", 2021, arXiv:2104.09864.
      https://kexue.fm/archives/4765 and https://kexue.fm/archives/8265
    """

    def __init__(
        self,
        in_features: int,
        num_heads: int,
        *,
        rope: str | None = "1d",
        layout: str = "interleaved",
        causal: bool = False,
        base: float = 10000.0,
        rngs: nnx.Rngs,
        dtype: jnp.dtype | None = None,
        param_dtype: jnp.dtype = jnp.float32,
    ) -> None:
        head_dim = _check_config("in_features", in_features, num_heads, rope, layout, causal, base)
        _check_module_args(rngs, dtype, param_dtype)
        self.in_features, self.num_heads, self.head_dim = in_features, num_heads, head_dim
        self.rope, self.layout, self.causal, self.base = rope, layout, bool(causal), float(base)

        def linear() -> nnx.Linear:
            return nnx.Linear(
                in_features, in_features, dtype=dtype, param_dtype=param_dtype, rngs=rngs
            )

        self.query, self.key, self.value, self.out = linear(), linear(), linear(), linear()

    def __call__(
        self,
        x: jax.Array,
        positions: jax.typing.ArrayLike | None = None,
        mask: jax.typing.ArrayLike | None = None,
    ) -> jax.Array:
        x = _as_float("x", x)
        if x.ndim != 3 or x.shape[-1] != self.in_features:
            raise ValueError(f"x must have shape (B, T, {self.in_features}), got {x.shape}.")
        # Checked against x here so that the messages name x rather than the projections.
        _check_mask(mask, *x.shape[:2])
        _check_positions_for(self.rope, positions, *x.shape[:2], f"x is {x.shape}")
        heads = (*x.shape[:2], self.num_heads, self.head_dim)
        q = self.query(x).reshape(heads)
        k = self.key(x).reshape(heads)
        v = self.value(x).reshape(heads)
        o = rope_attention(
            q,
            k,
            v,
            positions,
            rope=self.rope,
            layout=self.layout,
            base=self.base,
            mask=mask,
            causal=self.causal,
        )
        o = checkpoint_name(o, "attention")
        return self.out(o.reshape(x.shape[:2] + (self.in_features,)))
