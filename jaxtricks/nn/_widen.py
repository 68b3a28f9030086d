"""Function-preserving widening of a :class:`TransformerEncoder` (repeat and rescale)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxtricks._src import checks

from ._transformer import TransformerEncoder


def _repeat(a: jax.Array, factor: int, axes: tuple[int, ...], scale: float) -> jax.Array:
    """``a`` repeated interleaved (x1, x1, x2, x2, ...) along ``axes``, times ``scale``."""
    for axis in axes:
        a = jnp.repeat(a, factor, axis=axis)
    return (a * scale).astype(a.dtype)


def _rope_columns(num_heads: int, head_dim: int, factor: int, rope: str, layout: str) -> np.ndarray:
    """Widened q/k column of every original column, keeping each RoPE pair's frequency.

    The widened head (size ``factor * head_dim``) has frequencies
    :math:`\\mathrm{base}^{-2i/(fH)}`; its pair :math:`i = f j` has exactly the frequency of
    the original pair :math:`j`, so original pair ``j`` goes there (both components).
    ``rope="2d"`` applies this to each of the two half-heads.
    """
    blocks = 2 if rope == "2d" else 1
    size = head_dim // blocks  # one 1-D RoPE block
    half = size // 2
    c = np.arange(size)
    if layout == "interleaved":  # pairs (2j, 2j + 1)
        pair, part = c // 2, c % 2
        within = 2 * factor * pair + part
    else:  # "half": pairs (j, j + size / 2)
        pair, part = c % half, c // half
        within = factor * pair + part * factor * half
    per_head = np.concatenate([b * factor * size + within for b in range(blocks)])
    return np.concatenate([h * factor * head_dim + per_head for h in range(num_heads)])


def _query_key(
    params: dict, factor: int, cols: np.ndarray | None, width: int
) -> dict[str, jax.Array]:
    """Widened query or key ``{"kernel", "bias"}`` (stacked over layers)."""
    kernel, bias = params["kernel"], params["bias"]
    if cols is None:  # plain repetition: q·k gains f·(f^(-1/4))^2 = sqrt(f) = sqrt(fH)/sqrt(H)
        return {
            "kernel": _repeat(kernel, factor, (1, 2), factor**-0.75),
            "bias": _repeat(bias, factor, (1,), factor**-0.25),
        }
    # One copy per pair, at the matching frequency, the other columns zero: q·k gains sqrt(f).
    rows = _repeat(kernel, factor, (1,), factor**-0.25)
    new_kernel = jnp.zeros(rows.shape[:2] + (width,), kernel.dtype).at[:, :, cols].set(rows)
    new_bias = (
        jnp.zeros(bias.shape[:1] + (width,), bias.dtype)
        .at[:, cols]
        .set((bias * factor**0.25).astype(bias.dtype))
    )
    return {"kernel": new_kernel, "bias": new_bias}


def _norm(params: dict, factor: int, stacked: bool) -> dict[str, jax.Array]:
    axes = (1,) if stacked else (0,)
    return {k: _repeat(v, factor, axes, factor**-0.5) for k, v in params.items()}


def widen(model: TransformerEncoder, factor: int = 2) -> TransformerEncoder:
    r"""A ``factor`` times wider :class:`TransformerEncoder` computing the same function.

    Every feature axis is repeated interleaved, :math:`\mathrm{rep}(x) = (x_1, \dots, x_1,
    x_2, \dots)` (each entry ``f`` times), and the widened model maps
    :math:`\mathrm{rep}(x)/\sqrt f` to :math:`\mathrm{rep}(y)/\sqrt f` where
    :math:`y` is the original output (so that logits against an embedding table widened the
    same way are unchanged). The number of heads is kept and each head widens from
    :math:`H` to :math:`fH`; interleaved repetition keeps every head's features inside its own
    head, as the post requires. Every layer's residual stream carries
    :math:`\mathrm{rep}(\cdot)/\sqrt f`, which fixes the parameters (``~`` marks the widened
    tensor, :math:`\mathrm{rep}` on every feature axis):

    .. math::

        \tilde W_{q,k} = f^{-3/4}\, \mathrm{rep}(W_{q,k}),\quad
        \tilde b_{q,k} = f^{-1/4}\, \mathrm{rep}(b_{q,k})
        \quad (\tilde q^\top \tilde k / \sqrt{fH} = q^\top k / \sqrt H) \\
        \tilde W_v = \mathrm{rep}(W_v)/f,\ \tilde b_v = \mathrm{rep}(b_v)/\sqrt f,\quad
        \tilde W_o = \mathrm{rep}(W_o)/f,\ \tilde b_o = \mathrm{rep}(b_o)/\sqrt f \\
        \tilde W_1 = \mathrm{rep}(W_1)/\sqrt f,\ \tilde b_1 = \mathrm{rep}(b_1),\quad
        \tilde W_2 = f^{-3/2}\, \mathrm{rep}(W_2),\ \tilde b_2 = \mathrm{rep}(b_2)/\sqrt f \\
        \tilde\gamma = \mathrm{rep}(\gamma)/\sqrt f,\quad
        \tilde\beta = \mathrm{rep}(\beta)/\sqrt f,\quad \tilde\epsilon = \epsilon / f.

    The first feed-forward layer reproduces the pre-activation itself, because the
    activation (GELU) is not homogeneous; the second one restores the :math:`1/\sqrt f`. The
    post's summary table gives :math:`\tilde b_2 = b_2/2` for :math:`f = 2`; the derivation
    (and the numerical check in the tests) needs :math:`b_2/\sqrt 2`. LayerNorm statistics
    of :math:`\mathrm{rep}(u)/\sqrt f` are :math:`\mu/\sqrt f` and :math:`\sigma^2/f`, hence
    :math:`\epsilon/f` (the new model's ``layer_norm_epsilon``).

    RoPE: repetition maps the widened pair frequencies :math:`\mathrm{base}^{-2i/(fH)}` onto
    the wrong features whatever the layout (interleaved repetition even splits the
    ``"interleaved"`` pairs; the post's pairwise repetition keeps the pairs but not their
    frequencies, and the post calls the result nearly, not exactly, lossless). Here, for
    ``rope="1d"`` or ``"2d"``, the query and key columns of original pair :math:`j` go to
    widened pair :math:`fj`, whose frequency is exactly that of pair :math:`j`, with
    :math:`\tilde W_{q,k} = f^{-1/4}` times the row-repeated kernel, bias
    :math:`f^{1/4} b_{q,k}`, and the other :math:`(f - 1)/f` of the q/k columns zero. This is
    exact for either layout, but those zero columns receive zero gradient (their partner
    keys/queries are zero), so they stay zero under training; add noise to use them. As the
    post's comments note, every repeated copy also gets identical gradients: widening alone
    does not break the symmetry.

    Args:
      model: a :class:`TransformerEncoder` of width ``D``.
      factor: the widening factor ``f``, a positive Python int (static; 1 gives an equal copy).

    Returns:
      A new :class:`TransformerEncoder` of width ``f * D``, ``f * mlp_dim``, the same number
      of layers and heads, the same options (norm, RoPE, activation, causal, remat, dtypes)
      and ``layer_norm_epsilon / f``; call it on :math:`\mathrm{rep}(x)/\sqrt f` (with the
      same ``mask`` and ``positions``). ``model`` is not modified.

    Raises:
      TypeError: if ``model`` is not a :class:`TransformerEncoder` or ``factor`` is not an
        int (bool, float and string included).
      ValueError: if ``factor < 1``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxtricks.nn import TransformerEncoder, widen
      >>> enc = TransformerEncoder(2, 8, 2, 16, rngs=nnx.Rngs(0))
      >>> wide = widen(enc, factor=2)
      >>> wide.dim, wide.layers.mlp.fc1.kernel[...].shape
      (16, (2, 16, 32))
      >>> x = jax.random.normal(jax.random.key(1), (1, 5, 8))
      >>> rep = lambda a: jnp.repeat(a, 2, axis=-1) / jnp.sqrt(2.0)
      >>> bool(jnp.allclose(wide(rep(x)), rep(enc(x)), atol=1e-5))
      True

    References:
      Su Jianlin, "我们可以无损放大一个Transformer模型吗（一）", 2021,
      https://kexue.fm/archives/8444
      Tianqi Chen, Ian Goodfellow, Jonathon Shlens, "Net2Net: Accelerating Learning via
      Knowledge Transfer", ICLR 2016, arXiv:1511.05641 (related work).
    """
    if not isinstance(model, TransformerEncoder):
        raise TypeError(f"model must be a TransformerEncoder, got {type(model).__name__}.")
    f = checks.positive_int("factor", factor)
    attention, fc1 = model.layers.attention, model.layers.mlp.fc1
    config = dict(
        rope=attention.rope,
        layout=attention.layout,
        causal=attention.causal,
        base=attention.base,
        norm=model.norm,
        activation=model.layers.mlp.activation,
        layer_norm_epsilon=model.layer_norm_epsilon / f,
        remat=model.remat,
        dtype=fc1.dtype,
        param_dtype=fc1.param_dtype,
    )
    width = f * model.dim

    def build() -> TransformerEncoder:
        return TransformerEncoder(
            model.num_layers, width, model.num_heads, f * model.mlp_dim, rngs=nnx.Rngs(0), **config
        )

    old = nnx.to_pure_dict(nnx.state(model))
    layers = old["layers"]
    cols = (
        None
        if attention.rope is None
        else _rope_columns(model.num_heads, attention.head_dim, f, attention.rope, attention.layout)
    )
    att = layers["attention"]

    def linear(p: dict, w_scale: float, b_scale: float) -> dict[str, jax.Array]:
        return {
            "kernel": _repeat(p["kernel"], f, (1, 2), w_scale),
            "bias": _repeat(p["bias"], f, (1,), b_scale),
        }

    new = {
        "layers": {
            "attention": {
                "query": _query_key(att["query"], f, cols, width),
                "key": _query_key(att["key"], f, cols, width),
                "value": linear(att["value"], 1.0 / f, f**-0.5),
                "out": linear(att["out"], 1.0 / f, f**-0.5),
            },
            "norm1": _norm(layers["norm1"], f, stacked=True),
            "mlp": {
                "fc1": linear(layers["mlp"]["fc1"], f**-0.5, 1.0),
                "fc2": linear(layers["mlp"]["fc2"], f**-1.5, f**-0.5),
            },
            "norm2": _norm(layers["norm2"], f, stacked=True),
        }
    }
    if "final_norm" in old:
        new["final_norm"] = _norm(old["final_norm"], f, stacked=False)
    graphdef, state = nnx.split(nnx.eval_shape(build))
    nnx.replace_by_pure_dict(state, new)
    return nnx.merge(graphdef, state)
