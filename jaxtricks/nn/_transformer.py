"""A Transformer encoder whose layers run under ``nnx.scan`` (one compiled layer body)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

import jaxtricks.activations
from jaxtricks._src import checks

from ._attention import (
    RoPEAttention,
    _as_float,
    _check_config,
    _check_mask,
    _check_module_args,
    _check_positions_for,
)

_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu_erf": jaxtricks.activations.gelu_erf,
    "gelu_tanh": jaxtricks.activations.gelu_tanh,
    "relu": jax.nn.relu,
}
_NORMS = ("post", "pre")


def _activation(activation: str | Callable[[jax.Array], jax.Array]):
    if callable(activation):
        return activation
    if not isinstance(activation, str):
        raise TypeError(
            f"activation must be a callable or one of {tuple(_ACTIVATIONS)}, got {activation!r}."
        )
    if activation not in _ACTIVATIONS:
        raise ValueError(
            f"activation must be a callable or one of {tuple(_ACTIVATIONS)}, got {activation!r}."
        )
    return _ACTIVATIONS[activation]


def _remat_policy(remat: object) -> None:
    """Resolves ``remat`` once, before any parameter exists; errors name the argument."""
    # Imported here: jaxtricks.remat may import jaxtricks.nn for its examples.
    import jaxtricks.remat

    if remat is not None and not isinstance(remat, str):
        if not (isinstance(remat, (tuple, list)) and all(isinstance(n, str) for n in remat)):
            raise TypeError(
                f"remat must be None, a policy name or a sequence of checkpoint names, "
                f"got {remat!r}."
            )
    try:
        jaxtricks.remat.policy(remat)
    except (TypeError, ValueError) as e:
        raise type(e)(f"remat={remat!r}: {e}") from e


class MLP(nnx.Module):
    """The position-wise feed-forward block ``fc2(activation(fc1(x)))`` of an encoder layer.

    Args:
      dim: model width ``D``.
      mlp_dim: hidden width.
      activation: a name (``"gelu_erf"``, ``"gelu_tanh"``, ``"relu"``) or a callable.
      rngs, dtype, param_dtype: as in ``nnx.Linear``.
    """

    def __init__(self, dim, mlp_dim, activation, *, rngs, dtype=None, param_dtype=jnp.float32):
        self.fc1 = nnx.Linear(dim, mlp_dim, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.fc2 = nnx.Linear(mlp_dim, dim, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.activation = activation

    def __call__(self, x: jax.Array) -> jax.Array:
        h = checkpoint_name(self.fc1(x), "mlp_hidden")
        return self.fc2(_activation(self.activation)(h))


class EncoderLayer(nnx.Module):
    r"""One Transformer encoder layer, post-LN (BERT) or pre-LN (Xiong et al. 2020).

    .. math::

        \text{post:}\; h = \mathrm{LN}_1(x + \mathrm{Attn}(x)),\;
        y = \mathrm{LN}_2(h + \mathrm{MLP}(h)); \qquad
        \text{pre:}\; h = x + \mathrm{Attn}(\mathrm{LN}_1(x)),\;
        y = h + \mathrm{MLP}(\mathrm{LN}_2(h)).

    Submodules: ``attention`` (:class:`RoPEAttention`), ``norm1``, ``mlp`` (``fc1``, ``fc2``),
    ``norm2``. See :class:`TransformerEncoder` for the arguments.
    """

    def __init__(
        self,
        dim,
        num_heads,
        mlp_dim,
        *,
        rope,
        layout,
        causal,
        base,
        norm,
        activation,
        layer_norm_epsilon,
        rngs,
        dtype=None,
        param_dtype=jnp.float32,
    ):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.attention = RoPEAttention(
            dim, num_heads, rope=rope, layout=layout, causal=causal, base=base, **kw
        )
        self.norm1 = nnx.LayerNorm(dim, epsilon=layer_norm_epsilon, **kw)
        self.mlp = MLP(dim, mlp_dim, activation, **kw)
        self.norm2 = nnx.LayerNorm(dim, epsilon=layer_norm_epsilon, **kw)
        self.norm = norm

    def __call__(self, x, positions=None, mask=None):
        if self.norm == "post":
            x = self.norm1(x + self.attention(x, positions, mask))
            return self.norm2(x + self.mlp(x))
        x = x + self.attention(self.norm1(x), positions, mask)
        return x + self.mlp(self.norm2(x))


class TransformerEncoder(nnx.Module):
    r"""A stack of Transformer encoder layers with RoPE attention, scanned over layers.

    Each layer is post-LN (``norm="post"``, BERT, the original Transformer) or pre-LN
    (``norm="pre"``, Xiong et al. 2020, GPT-2) with :math:`\mathrm{Attn}` a
    :class:`RoPEAttention` and :math:`\mathrm{MLP}(x) = \phi(x W_1 + b_1) W_2 + b_2`:

    .. math::

        \text{post:}\quad h = \mathrm{LN}_1(x + \mathrm{Attn}(x)),\quad
        y = \mathrm{LN}_2(h + \mathrm{MLP}(h));

        \text{pre:}\quad h = x + \mathrm{Attn}(\mathrm{LN}_1(x)),\quad
        y = h + \mathrm{MLP}(\mathrm{LN}_2(h)),

    and the pre-LN stack ends with one more LayerNorm (``final_norm``); the post-LN output is
    already normalised. Post-LN keeps every layer's output at zero mean and unit variance
    (before the affine of ``norm2``); pre-LN keeps an unnormalised residual stream whose
    identity path runs from input to ``final_norm``.

    The parameters of all layers are stacked along a leading ``num_layers`` axis (created
    with ``nnx.vmap`` over split rngs) and the forward pass is one ``nnx.scan``, so the layer
    body compiles once. Parameter tree (``L`` layers, ``D = dim``, ``F = mlp_dim``)::

        layers.attention.query.kernel (L, D, D)   layers.attention.query.bias (L, D)
        layers.attention.key.kernel   (L, D, D)   layers.attention.key.bias   (L, D)
        layers.attention.value.kernel (L, D, D)   layers.attention.value.bias (L, D)
        layers.attention.out.kernel   (L, D, D)   layers.attention.out.bias   (L, D)
        layers.norm1.scale (L, D)                 layers.norm1.bias (L, D)
        layers.mlp.fc1.kernel (L, D, F)           layers.mlp.fc1.bias (L, F)
        layers.mlp.fc2.kernel (L, F, D)           layers.mlp.fc2.bias (L, D)
        layers.norm2.scale (L, D)                 layers.norm2.bias (L, D)
        final_norm.scale (D,)  final_norm.bias (D,)      # norm="pre" only

    Heads are consecutive blocks of ``D / num_heads`` output features of the q, k, v kernels.
    LayerNorm is :math:`\gamma (x - \mu) / \sqrt{\sigma^2 + \epsilon} + \beta` (epsilon inside
    the square root). Dropout is not included.

    Args:
      num_layers: ``L``, a positive int.
      dim: model width ``D``, a positive int.
      num_heads: attention heads, a positive int dividing ``dim``.
      mlp_dim: hidden width ``F`` of the feed-forward block (BERT: ``4 * dim``), a positive
        int.
      rope: ``"1d"``, ``"2d"`` or ``None`` (no positions), as in :class:`RoPEAttention`.
      layout: RoPE pair layout, ``"interleaved"`` or ``"half"``.
      causal: causal attention in every layer.
      base: RoPE frequency base.
      norm: ``"post"`` (BERT) or ``"pre"``.
      activation: ``"gelu_erf"`` (exact GELU, BERT, PyTorch's default), ``"gelu_tanh"``
        (the tanh approximation, ``jax.nn.gelu``'s default), ``"relu"`` or a callable.
      layer_norm_epsilon: LayerNorm epsilon, a concrete finite number > 0; ``1e-12`` matches
        BERT checkpoints, ``1e-6`` is the usual choice for pre-LN models and low precision
        (``1e-12`` is below bf16 and float16 resolution and guards nothing there).
      remat: ``None`` (no recomputation) or a policy name of :func:`jaxtricks.remat.policy`
        (``"none"``, ``"full"``, ``"dots"``, ``"dots_no_batch"``, ``"save:<names>"``) applied
        to the layer body inside the scan. Values tagged with ``checkpoint_name``:
        ``"query"``, ``"key"``, ``"value"`` (after RoPE, ``(B, T, N, H)``), ``"attention"``
        (before the output projection) and ``"mlp_hidden"`` (``fc1`` output).
      rngs: parameter initialisation.
      dtype: computation dtype (``None``: inferred from inputs and params).
      param_dtype: parameter dtype.

    Raises:
      TypeError: a non-int size (``num_layers``, ``dim``, ``num_heads``, ``mlp_dim``; bool
        included), non-bool ``causal``, an ``activation`` that is neither a name nor a
        callable, a ``remat`` of the wrong type, a traced ``base``, ``rngs`` not an
        ``nnx.Rngs``, or an integer or complex ``dtype`` / ``param_dtype``.
      ValueError: a size < 1, ``dim`` not divisible by ``num_heads``, a head dim that
        ``rope`` cannot rotate, unknown ``rope``, ``layout``, ``norm``, ``activation`` name
        or ``remat`` policy (the message quotes :func:`jaxtricks.remat.policy`), a
        non-finite or non-positive ``base`` or ``layer_norm_epsilon``.

    Call ``(x, mask=None, positions=None)``: ``x`` ``(B, T, D)``, ``mask`` ``(B, T)`` bool
    (``True`` valid), ``positions`` as in :class:`RoPEAttention`. Returns ``(B, T, D)``. A
    wrong ``x``, ``mask`` or ``positions`` raises as in :func:`rope_attention` before any
    layer runs; queries without any valid key get a zero attention output (finite).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxtricks.nn import TransformerEncoder
      >>> enc = TransformerEncoder(2, 32, 4, 64, remat="full", rngs=nnx.Rngs(0))
      >>> enc(jnp.ones((1, 8, 32))).shape, enc.layers.mlp.fc1.kernel[...].shape
      ((1, 8, 32), (2, 32, 64))
      >>> # BERT-base shapes without allocating anything (for compiled-memory analysis):
      >>> abstract = nnx.eval_shape(lambda: TransformerEncoder(12, 768, 12, 3072, rngs=nnx.Rngs(0)))
      >>> abstract.layers.attention.query.kernel.shape
      (12, 768, 768)

    References:
      Vaswani et al., "Attention Is All You Need", 2017, arXiv:1706.03762.
      Devlin, Chang, Lee, Toutanova, "BERT: Pre-training of Deep Bidirectional Transformers
      for Language Understanding", 2018, arXiv:1810.04805 (post-LN).
      Xiong et al., "On Layer Normalization in the Transformer Architecture", 2020,
      arXiv:2002.04745 (pre-LN).
      Su et al., "RoFormer", 2021, arXiv:2104.09864.
      https://kexue.fm/archives/4765, https://kexue.fm/archives/8265,
      https://kexue.fm/archives/7367 (recomputation)
    """

    def __init__(
        self,
        num_layers: int,
        dim: int,
        num_heads: int,
        mlp_dim: int,
        *,
        rope: str | None = "1d",
        layout: str = "interleaved",
        causal: bool = False,
        base: float = 10000.0,
        norm: str = "post",
        activation: str | Callable[[jax.Array], jax.Array] = "gelu_erf",
        layer_norm_epsilon: float = 1e-12,
        remat: str | None = None,
        rngs: nnx.Rngs,
        dtype: jnp.dtype | None = None,
        param_dtype: jnp.dtype = jnp.float32,
    ) -> None:
        num_layers = checks.positive_int("num_layers", num_layers)
        _check_config("dim", dim, num_heads, rope, layout, causal, base)
        mlp_dim = checks.positive_int("mlp_dim", mlp_dim)
        checks.choice("norm", norm, _NORMS)
        _activation(activation)
        if checks.is_traced(layer_norm_epsilon):
            raise TypeError("layer_norm_epsilon must be a concrete number, got a traced value.")
        checks.number("layer_norm_epsilon", layer_norm_epsilon, low=0.0, low_open=True)
        layer_norm_epsilon = float(layer_norm_epsilon)
        _remat_policy(remat)
        _check_module_args(rngs, dtype, param_dtype)
        self.num_layers, self.dim, self.num_heads, self.mlp_dim = (
            num_layers,
            dim,
            num_heads,
            mlp_dim,
        )
        self.norm, self.remat, self.layer_norm_epsilon = norm, remat, layer_norm_epsilon
        layer_kw = dict(
            rope=rope,
            layout=layout,
            causal=causal,
            base=base,
            norm=norm,
            activation=activation,
            layer_norm_epsilon=layer_norm_epsilon,
            dtype=dtype,
            param_dtype=param_dtype,
        )

        @nnx.split_rngs(splits=num_layers)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def make_layers(rngs: nnx.Rngs) -> EncoderLayer:
            return EncoderLayer(dim, num_heads, mlp_dim, rngs=rngs, **layer_kw)

        self.layers = make_layers(rngs)
        self.final_norm = (
            nnx.LayerNorm(
                dim, epsilon=layer_norm_epsilon, dtype=dtype, param_dtype=param_dtype, rngs=rngs
            )
            if norm == "pre"
            else None
        )

    def __call__(
        self,
        x: jax.Array,
        mask: jax.typing.ArrayLike | None = None,
        positions: jax.typing.ArrayLike | None = None,
    ) -> jax.Array:
        x = _as_float("x", x)
        if x.ndim != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"x must have shape (B, T, {self.dim}), got {x.shape}.")
        # Checked here, outside the scan, so that errors name the encoder's arguments.
        mask = _check_mask(mask, *x.shape[:2])
        rope = self.layers.attention.rope
        _check_positions_for(rope, positions, *x.shape[:2], f"x is {x.shape}")
        import jaxtricks.remat

        def body(h, layer):
            graphdef, state = nnx.split(layer)

            def pure(h, state):
                return nnx.merge(graphdef, state)(h, positions, mask)

            # prevent_cse is unneeded under scan (jax.checkpoint docs) and costs speed.
            return jaxtricks.remat.checkpoint(pure, self.remat, prevent_cse=False)(h, state)

        x = nnx.scan(body, in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)(x, self.layers)
        return x if self.final_norm is None else self.final_norm(x)
