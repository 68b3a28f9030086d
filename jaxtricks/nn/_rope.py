"""Positions: sinusoidal embeddings and rotary position embeddings (RoPE) in 1-D and 2-D.

RoPE multiplies each pair of features of a query or key at position :math:`m` by the rotation
:math:`R(m\\theta_i)`. Because rotations compose, :math:`(R_m q)^\\top (R_n k) = q^\\top
R_{n-m} k`: the attention score depends on the positions only through :math:`n - m`.
Tables are computed on the fly from the positions (no global state): one sine and one cosine
per position and frequency, broadcast over the heads.

Angles in float32. The product :math:`m\\theta_i` rounded to float32 is off by up to
:math:`|m\\theta_i| \\cdot 2^{-24}` (0.06 rad at :math:`m = 10^6`, a whole turn near
:math:`2^{24}`), so the angle is never formed. The integer part :math:`n` of the position is
multiplied by the turns :math:`\\phi_i = \\theta_i / 2\\pi` held as 64-bit fixed-point
fractions (computed exactly from the float64 frequency when tracing) in ``uint32`` words,
whose wrap-around is exactly the reduction modulo one turn; only the top 32 bits of
:math:`\\mathrm{frac}(n\\phi_i)` become a float, in :math:`[-1/2, 1/2)` turn, and the
fractional part of a float position adds :math:`(m - n)\\theta_i` directly. Integer
arithmetic is exact on every backend, so nothing depends on float64, on fused multiply-add
contraction or on host callbacks.
"""

from __future__ import annotations

import functools
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np

from jaxtricks._src import checks

_ROPE_LAYOUTS = ("interleaved", "half")
_SINUSOIDAL_LAYOUTS = ("interleaved", "concat")
# pi to 50 decimals: the turns theta / (2 pi) are exact rationals to far below 2^-64.
_PI = Fraction("3.14159265358979323846264338327950288419716939937510")
# Digits of a wide integer position: n = d1 * 2^31 + d0, each a signed int32.
_DIGIT = 31


def _even(name: str, value: object, multiple: int = 2) -> int:
    """``value`` as an int if it is a positive int divisible by ``multiple``."""
    value = checks.positive_int(name, value)
    if value % multiple:
        raise ValueError(f"{name} must be divisible by {multiple}, got {value}.")
    return value


def _base(base: object) -> float:
    """A concrete, finite, positive scalar base (the frequencies are static)."""
    if checks.is_traced(base):
        raise TypeError(
            "base must be a concrete number (the frequencies are computed when tracing), "
            "got a traced value."
        )
    checks.number("base", base, low=0.0, low_open=True)
    if np.ndim(base) != 0:
        raise ValueError(f"base must be a scalar, got shape {np.shape(base)}.")
    return float(base)


def _as_positions(positions: object, name: str = "positions") -> jax.Array:
    """``positions`` as a real, non-bool JAX array; concrete values must be finite."""
    if checks.is_traced(positions):
        positions = jnp.asarray(positions)
    else:
        host = np.asarray(positions) if not isinstance(positions, jax.Array) else None
        if host is not None and host.dtype.kind in "iu" and host.size and not _x64():
            # jnp.asarray would wrap int64 values outside int32 without an error.
            lo, hi = int(host.min()), int(host.max())
            if lo < -(2**31) or hi >= 2**31:
                raise ValueError(
                    f"{name} must fit in int32 unless jax_enable_x64 is set, got values in "
                    f"[{lo}, {hi}]."
                )
        try:
            positions = jnp.asarray(positions)
        except (TypeError, ValueError) as e:
            raise TypeError(f"{name} must be an array of numbers, got {positions!r}.") from e
    checks.array_dtype_kind(name, positions, ("integer", "floating"))
    if jnp.issubdtype(positions.dtype, jnp.floating) and positions.size:
        checks.number(name, positions, allow_inf=False)
    return positions


def _x64() -> bool:
    return bool(jax.config.jax_enable_x64)


@functools.lru_cache(maxsize=128)
def _frequencies(dim: int, base: float) -> tuple[np.ndarray, np.ndarray]:
    """The float64 frequencies ``theta (dim/2,)`` and their turns in 64-bit fixed point.

    ``words[k, 0]`` and ``words[k, 1]`` are the high and low ``uint32`` words of
    :math:`\\mathrm{round}(2^{64}\\,\\mathrm{frac}(2^{31k}\\theta_i / 2\\pi))`, ``k = 0, 1``
    (one per digit of :func:`_digits`), formed from the exact rational value of the float64
    :math:`\\theta_i`.
    """
    theta = base ** (-np.arange(0, dim, 2, dtype=np.float64) / dim)
    if np.any(theta > np.finfo(np.float32).max):
        raise ValueError(
            f"base must give frequencies within float32 range for dim {dim}, got {base!r} "
            f"(largest frequency {theta.max():.3g})."
        )
    words = np.empty((2, 2, theta.size), np.uint32)
    for i, t in enumerate(theta.tolist()):
        turns = Fraction(t) / (2 * _PI)
        for k in range(2):
            fixed = round((turns * 2 ** (_DIGIT * k)) % 1 * 2**64) % 2**64
            words[k, 0, i], words[k, 1, i] = fixed >> 32, fixed & 0xFFFFFFFF
    return theta, words


def _digits(positions: jax.Array) -> tuple[list[jax.Array], jax.Array | None]:
    """Signed int32 digits of the integer part ``n`` of the positions, and ``p - n``.

    ``n = d0`` (int32 and narrower) or ``n = d1 * 2^31 + d0`` (wider integers, and floats,
    whose integer part can exceed int32); the fraction is ``None`` for integer positions.
    Every step is exact: ``floor``, ``p - floor(p)``, ``trunc(n / 2^31)`` and
    ``n - d1 * 2^31`` of a float are representable in its own format.
    """
    dt = positions.dtype
    if jnp.issubdtype(dt, jnp.integer):
        if dt.itemsize < 4 or dt == jnp.int32:
            return [positions.astype(jnp.int32)], None
        d0 = (positions & (2**_DIGIT - 1)).astype(jnp.int32)
        d1 = positions >> _DIGIT
        if jnp.issubdtype(dt, jnp.signedinteger):
            d1 = jnp.clip(d1, -(2**31), 2**31 - 1)
        else:
            d1 = jnp.minimum(d1, 2**31 - 1)
        return [d0, d1.astype(jnp.int32)], None
    p = positions.astype(jnp.float32)
    n = jax.lax.stop_gradient(jnp.floor(p))
    d1 = jnp.trunc(n * 2.0**-_DIGIT)
    d0 = n - d1 * 2.0**_DIGIT
    d1 = jnp.clip(d1, -(2.0**31), 2.0**31 - 128)  # beyond 2^62 the turns are meaningless
    return [d0.astype(jnp.int32), d1.astype(jnp.int32)], p - n


def _mulhi(u: jax.Array, v_hi: jax.Array, v_lo: jax.Array) -> jax.Array:
    """The high word of the 64-bit product of ``uint32`` ``u`` and ``v = v_hi 2^16 + v_lo``.

    Schoolbook on 16-bit halves: every partial sum stays below 2^32, so it is exact in
    ``uint32`` (no 64-bit integers, which TPUs lack).
    """
    u_hi, u_lo = u >> 16, u & 0xFFFF
    m1 = u_hi * v_lo + ((u_lo * v_lo) >> 16)
    m2 = u_lo * v_hi + (m1 & 0xFFFF)
    return u_hi * v_hi + (m1 >> 16) + (m2 >> 16)


def _turn_word(digit: jax.Array, hi: jax.Array, lo: jax.Array) -> jax.Array:
    """The top word of ``digit * (hi 2^32 + lo) mod 2^64``: frac(digit phi) in 2^-32 units.

    ``digit`` (signed int32) is sign-extended to 64 bits, ``s 2^32 + u`` with ``s`` 0 or
    ``2^32 - 1``; products wrap modulo 2^32 (XLA's integer semantics), which drops whole
    turns exactly.
    """
    u = jax.lax.bitcast_convert_type(digit, jnp.uint32)
    s = jax.lax.bitcast_convert_type(digit >> 31, jnp.uint32)
    return u * hi + _mulhi(u, lo >> 16, lo & 0xFFFF) + s * lo


def _angles(positions: jax.Array, dim: int, base: float, dtype) -> jax.Array:
    """:math:`m\\theta_i`, :math:`\\theta_i = \\mathrm{base}^{-2i/\\mathrm{dim}}`: ``(..., dim/2)``.

    Formed in ``dtype`` promoted with the positions' float dtype and at least float32. In
    float64 the product is direct; in float32 the angle is reduced modulo :math:`2\\pi`
    exactly (the module docstring) and lies in :math:`[-\\pi, \\pi)`, plus
    :math:`(m - \\lfloor m \\rfloor)\\theta_i` for float positions.
    """
    if jnp.issubdtype(positions.dtype, jnp.floating):
        dtype = jnp.promote_types(dtype, positions.dtype)
    dtype = jnp.promote_types(dtype, jnp.float32)
    theta, words = _frequencies(dim, base)
    shape = (1,) * positions.ndim + theta.shape
    p = positions[..., None]
    if dtype == jnp.float64:
        return p.astype(dtype) * jnp.asarray(theta.reshape(shape))
    digits, frac = _digits(positions)
    word = None
    for k, digit in enumerate(digits):
        hi, lo = (jnp.asarray(w.reshape(shape)) for w in words[k])
        term = _turn_word(digit[..., None], hi, lo)
        word = term if word is None else word + term
    turns = jax.lax.bitcast_convert_type(word, jnp.int32).astype(jnp.float32) * 2.0**-32
    angles = turns * np.float32(2 * np.pi)
    if frac is not None:
        angles = angles + frac[..., None] * jnp.asarray(theta.reshape(shape), jnp.float32)
    return angles.astype(dtype)


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

    Accuracy: the frequencies are float64 and the angles are reduced modulo :math:`2\pi`
    exactly in integer arithmetic (see the module), so float32 embeddings stay within
    about 1e-6 of the float64 formula for every int32 position and every float32 position
    below :math:`2^{62}` in magnitude (float positions are exact as given: a float32 above
    :math:`2^{24}` is an integer). The gradient with respect to float positions is
    :math:`\theta_i \cos(k\theta_i)` and :math:`-\theta_i \sin(k\theta_i)`.

    Args:
      positions: integer or float array of any shape ``(...)``; concrete values must be
        finite. Traced NaN or infinite positions give NaN embeddings (they cannot be
        checked under ``jit``).
      dim: embedding size :math:`d`, a positive even int (static).
      base: the base of the geometric frequencies (10000 in the paper), a concrete finite
        number > 0.
      layout: ``"interleaved"`` (sin, cos, sin, cos, ...) or ``"concat"`` ([sin ... | cos ...]).

    Returns:
      ``(..., dim)`` in float32, or float64 for float64 positions. Empty positions give an
      empty ``(..., dim)`` array.

    Raises:
      TypeError: if ``dim`` is not an int, ``positions`` is not a real (non-bool) array, or
        ``base`` is traced or not a number.
      ValueError: if ``dim`` is not positive or odd, ``layout`` is unknown, ``base`` is not
        finite and > 0, or concrete ``positions`` are NaN or infinite.

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
    dim = _even("dim", dim)
    checks.choice("layout", layout, _SINUSOIDAL_LAYOUTS)
    base = _base(base)
    angles = _angles(_as_positions(positions), dim, base, jnp.float32)
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
      head_dim: :math:`H`, a positive even int (static).

    Returns:
      An integer NumPy array ``(H,)``.

    Raises:
      TypeError: if ``head_dim`` is not an int (bool included).
      ValueError: if ``head_dim`` is not positive or odd.

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
    head_dim = _even("head_dim", head_dim)
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


def _as_x(x: object, name: str, multiple: int | None) -> jax.Array:
    """``x`` as a real floating array ``(..., T, N, H)``, ``H`` divisible by ``multiple``."""
    try:
        x = jnp.asarray(x)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be a floating array, got {x!r}.") from e
    checks.array_dtype_kind(name, x, ("floating",))
    if x.ndim < 3:
        raise ValueError(f"{name} must have shape (..., T, N, H), got {x.shape}.")
    if multiple is not None and x.shape[-1] % multiple:
        raise ValueError(
            f"the head dim H = {name}.shape[-1] must be divisible by {multiple}, got "
            f"{x.shape[-1]} ({name} is {x.shape})."
        )
    return x


def _check_positions(
    positions: jax.Array, lead: tuple[int, ...], trailing: tuple[int, ...], source: str
) -> None:
    """``positions`` must be ``(..., T) + trailing`` with ``...`` broadcastable to ``lead``.

    ``lead`` is ``(..., T)`` of the rotated array, described by ``source`` in the message.
    """
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
            f"positions must have shape {want} broadcastable to {lead} ({source}), "
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


def _rope(
    x: jax.Array,
    positions: object,
    base: object,
    layout: object,
    rotary_dim: object,
    name: str,
) -> jax.Array:
    """:func:`apply_rope` on a checked ``x`` named ``name`` in messages."""
    checks.choice("layout", layout, _ROPE_LAYOUTS)
    base = _base(base)
    head_dim = x.shape[-1]
    if rotary_dim is None:
        if head_dim % 2:
            raise ValueError(
                f"the head dim H = {name}.shape[-1] must be divisible by 2, got {head_dim} "
                f"({name} is {x.shape}); rotate a part with rotary_dim."
            )
        rotary_dim = head_dim
    else:
        rotary_dim = _even("rotary_dim", rotary_dim)
        if rotary_dim > head_dim:
            raise ValueError(
                f"rotary_dim must be <= the head dim {head_dim} ({name} is {x.shape}), "
                f"got {rotary_dim}."
            )
    positions = _as_positions(positions)
    _check_positions(positions, x.shape[:-2], (), f"{name} is {x.shape}")
    if rotary_dim == head_dim:
        cos, sin = _tables(positions, x, head_dim, base, layout)
        return _rotate(x, cos, sin, layout)
    part = x[..., :rotary_dim]
    cos, sin = _tables(positions, part, rotary_dim, base, layout)
    return jnp.concatenate([_rotate(part, cos, sin, layout), x[..., rotary_dim:]], axis=-1)


def apply_rope(
    x: jax.typing.ArrayLike,
    positions: jax.typing.ArrayLike,
    *,
    base: float = 10000.0,
    layout: str = "interleaved",
    rotary_dim: int | None = None,
) -> jax.Array:
    r"""Rotary position embedding (RoPE) of queries or keys.

    Each pair :math:`(a, b)` of features of the token at position :math:`m` is rotated by
    :math:`m\theta_i`, :math:`\theta_i = \mathrm{base}^{-2i/R}` with :math:`R` the
    ``rotary_dim`` (:math:`H` by default):

    .. math::

        \begin{pmatrix} a' \\ b' \end{pmatrix} =
        \begin{pmatrix} \cos m\theta_i & -\sin m\theta_i \\
                        \sin m\theta_i & \cos m\theta_i \end{pmatrix}
        \begin{pmatrix} a \\ b \end{pmatrix},
        \qquad (R_m q)^\top (R_n k) = q^\top R_{n-m} k .

    Pair :math:`i` is :math:`(x_{2i}, x_{2i+1})` for ``layout="interleaved"`` (RoFormer,
    bert4keras) and :math:`(x_i, x_{i+R/2})` for ``layout="half"`` (GPT-NeoX, Llama, Gemma,
    Hugging Face's and equinox's ``rotate_half``). The two give the same scores up to the feature
    permutation :func:`rope_permutation`, but checkpoints are **not** interchangeable: weights
    trained with one layout must be permuted to run with the other. With ``rotary_dim=R < H``
    (partial rotary, GPT-NeoX and Phi) only the first :math:`R` features rotate, with
    frequencies over :math:`R` and the layout applied within them (``"half"`` pairs
    :math:`(i, i + R/2)`); features :math:`R, \dots, H - 1` pass through unchanged.

    Accuracy: the frequencies are float64 and float32 angles are reduced modulo
    :math:`2\pi` exactly in integer arithmetic (see the module), so the rotation matches the
    float64 formula to about :math:`10^{-6}\,|x|` for every int32 position (10⁶, 2²⁴ and
    beyond alike) and every float32 position below :math:`2^{62}` in magnitude (taken exactly
    as given, so interpolated positions keep float32 accuracy relative to their size).
    bfloat16 and float16 inputs rotate in float32 and round once to their dtype; float64
    inputs or positions compute in float64. The sine and cosine tables are computed once per
    call, ``(..., T, R/2)``, and broadcast over the heads.

    Args:
      x: ``(..., T, N, H)``, the layout of :func:`jax.nn.dot_product_attention` (batch, time,
        heads, head dim), real floating; ``H`` even unless ``rotary_dim`` is given.
      positions: ``(..., T)``, integers or floats (e.g. ``offset + arange(T)`` when decoding
        with a cache), its leading axes broadcastable to ``x``'s batch axes. Concrete values
        must be finite; traced NaN or infinite positions give NaN in their tokens' rotated
        features (they cannot be checked under ``jit``).
      base: the base of the geometric frequencies, a concrete finite number > 0.
      layout: ``"interleaved"`` or ``"half"``.
      rotary_dim: ``None`` (rotate all ``H`` features) or a positive even int ``<= H``.

    Returns:
      The rotated ``x``, same shape and dtype (``T = 0`` gives the empty array back).

    Raises:
      TypeError: if ``x`` is not real floating, ``positions`` is not a real (non-bool) array,
        ``rotary_dim`` is not an int, or ``base`` is traced or not a number.
      ValueError: if ``H`` (or ``rotary_dim``) is odd, ``rotary_dim`` is not in ``[1, H]``,
        ``layout`` is unknown, ``base`` is not finite and > 0, the shapes of ``positions``
        and ``x`` do not match, or concrete ``positions`` are NaN or infinite.

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
      >>> partial = apply_rope(q, pos, layout="half", rotary_dim=4)  # features 4..7 untouched
      >>> print(bool(jnp.all(partial[..., 4:] == q[..., 4:])))
      True

    References:
      Jianlin Su, Yu Lu, Shengfeng Pan, Ahmed Murtadha, Bo Wen, Yunfeng Liu, "RoFormer:
      Enhanced Transformer with Rotary Position Embedding", 2021, arXiv:2104.09864.
      Sid Black et al., "GPT-NeoX-20B: An Open-Source Autoregressive Language Model", 2022,
      arXiv:2204.06745 (partial rotary).
      Su Jianlin, "Transformer升级之路：2、博采众长的旋转式位置编码",
      https://kexue.fm/archives/8265
    """
    return _rope(_as_x(x, "x", None), positions, base, layout, rotary_dim, "x")


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
    ``"half"`` pairs :math:`(i, i + H/4)` inside each half. Precision (angles reduced exactly,
    about :math:`10^{-6}|x|` against float64 for any int32 coordinate), dtypes and the
    handling of non-finite traced coordinates as in :func:`apply_rope`.

    Args:
      x: ``(..., T, N, H)`` real floating, with ``H`` divisible by 4.
      positions: ``(..., T, 2)``, the two coordinates of each token (integers or floats);
        concrete values must be finite.
      base: the base of the geometric frequencies, a concrete finite number > 0.
      layout: ``"interleaved"`` or ``"half"``.

    Returns:
      The rotated ``x``, same shape and dtype (``T = 0`` gives the empty array back).

    Raises:
      TypeError: if ``x`` is not real floating, ``positions`` is not a real (non-bool) array,
        or ``base`` is traced or not a number.
      ValueError: if ``H`` is not divisible by 4, ``layout`` is unknown, ``base`` is not
        finite and > 0, ``positions`` is not ``(..., T, 2)`` matching ``x``, or concrete
        ``positions`` are NaN or infinite.

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
    return _rope_2d(_as_x(x, "x", 4), positions, base, layout, "x")


def _rope_2d(x: jax.Array, positions: object, base: object, layout: object, name: str):
    """:func:`apply_rope_2d` on a checked ``x`` named ``name`` in messages."""
    checks.choice("layout", layout, _ROPE_LAYOUTS)
    base = _base(base)
    positions = _as_positions(positions)
    _check_positions(positions, x.shape[:-2], (2,), f"{name} is {x.shape}")
    half = x.shape[-1] // 2
    parts = []
    for axis, xs in enumerate((x[..., :half], x[..., half:])):
        cos, sin = _tables(positions[..., axis], x, half, base, layout)
        parts.append(_rotate(xs, cos, sin, layout))
    return jnp.concatenate(parts, axis=-1)
