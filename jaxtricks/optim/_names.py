r"""Per-parameter treatment by name: learning-rate multipliers and masks.

A parameter's name is its key path in the params pytree, as written by
``jax.tree_util.keystr``: ``"['encoder']['layer_0']['kernel']"`` for nested dicts,
``"['lin']['bias'].value"`` for a Flax NNX ``nnx.state(model, nnx.Param)``. Patterns match
as substrings of that text (bert4keras matches substrings of the variable name), so a short
pattern can match more than intended (``"w"`` matches ``"['down']"`` too): prefer whole keys
such as ``"['bias']"``, or check with ``jax.tree_util.tree_leaves_with_path``.

Two of the six optimizers of the post need no new code, only optax recipes.

Weight decay, skipping biases and normalisation scales (decoupled, as in AdamW: it is
added to the update after the adaptive scaling and multiplied by the learning rate):

>>> import jax, jax.numpy as jnp, optax
>>> from jaxtricks.optim import name_mask
>>> params = {"dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}}
>>> tx = optax.chain(
...     optax.scale_by_adam(),
...     optax.add_decayed_weights(0.01, mask=name_mask(exclude=("bias", "scale"))),
...     optax.scale_by_learning_rate(0.1),
... )
>>> zero_grads = jax.tree.map(jnp.zeros_like, params)
>>> updates, _ = tx.update(zero_grads, tx.init(params), params)
>>> updates["dense"]["kernel"][0]  # -0.1 * 0.01 * 1: decayed
Array([-0.001, -0.001], dtype=float32)
>>> bool(jnp.all(updates["dense"]["bias"] == 0))  # excluded
True

Layer adaptation (LAMB): each tensor's update is rescaled to the norm of the tensor,
:math:`\Delta\theta = -\eta\, u \|\theta\| / \|u\|`, so every tensor moves by the same
relative amount :math:`\|\Delta\theta\| = \eta\|\theta\|` whatever its gradient scale
(a tensor or update of norm zero keeps the plain update):

>>> tx = optax.chain(
...     optax.scale_by_adam(),
...     optax.add_decayed_weights(0.01, mask=name_mask(exclude=("bias",))),
...     optax.scale_by_trust_ratio(),
...     optax.scale_by_learning_rate(0.1),
... )
>>> grads = {"dense": {"kernel": jnp.full((2, 2), 3.0), "bias": jnp.ones(2)}}
>>> updates, _ = tx.update(grads, tx.init(params), params)
>>> float(optax.tree.norm(updates["dense"]["kernel"]))  # 0.1 * ||kernel|| = 0.1 * 2
0.2...

To leave some tensors out of the adaptation, wrap it:
``optax.masked(optax.scale_by_trust_ratio(), name_mask(exclude=("bias",)))``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax import tree_util as jtu

from jaxtricks._src import checks


def _patterns(value: str | Iterable[str], name: str) -> tuple[str, ...]:
    """``value`` as a tuple of non-empty strings (a lone string is one pattern)."""
    if isinstance(value, str):
        patterns = (value,)
    elif isinstance(value, Iterable) and not isinstance(value, (bytes, Mapping)):
        patterns = tuple(value)
    else:
        raise TypeError(
            f"name_mask: {name} must be a string or an iterable of strings, got {value!r}."
        )
    for p in patterns:
        if not isinstance(p, str):
            raise TypeError(f"name_mask: {name} must hold strings, got {p!r}.")
        if not p:
            raise ValueError(f"name_mask: {name} holds an empty pattern '', which matches all.")
    return patterns


def _check_all_match(patterns: Iterable[str], tree: Any, name: str, where: str) -> None:
    """Raises ``ValueError`` naming the patterns that are a substring of no leaf's key path.

    A pattern that names no parameter is almost always a typo, and would silently do nothing.
    """
    names = [jtu.keystr(path) for path, _ in jtu.tree_leaves_with_path(tree)]
    missing = [p for p in patterns if not any(p in n for n in names)]
    if missing:
        shown = names[:8] + (["..."] if len(names) > 8 else [])
        raise ValueError(
            f"{where}: {name} {missing} match no parameter name; the names are {shown}."
        )


def scale_by_name(multipliers: Mapping[str, float]) -> optax.GradientTransformation:
    r"""Multiplies each leaf's update by the multipliers whose names its key path contains.

    For a leaf with key path :math:`n` (``jax.tree_util.keystr``, see the module notes):

    .. math::

        u' = u \prod_{k \in \text{multipliers},\ k \subseteq n} \text{multipliers}[k],

    the product over every key that is a substring of :math:`n` (1 when none is). Placed
    anywhere after the optimizer's own scaling it multiplies that parameter's learning rate
    (bert4keras's parameter-wise learning rate); before an adaptive optimizer such as Adam
    it would mostly cancel.

    Args:
      multipliers: a mapping ``pattern -> multiplier``; patterns non-empty strings, each
        matching at least one parameter (checked at ``init``), multipliers finite real
        scalars (numbers or concrete arrays).

    Returns:
      A stateless :class:`optax.GradientTransformation` (its state is
      :class:`optax.EmptyState`).

    Raises:
      TypeError: if ``multipliers`` is not a mapping, a key is not a string or a value is
        not a real number.
      ValueError: if a key is empty, a value is NaN, infinite or not a scalar, or (at
        ``init``) a key is a substring of no parameter's key path (a typo would otherwise
        leave every learning rate unchanged). Inside ``optax.multi_transform``, give each
        partition only the keys of its own parameters.

    Examples:
      >>> import jax.numpy as jnp, optax
      >>> from jaxtricks.optim import scale_by_name
      >>> params = {"embed": {"table": jnp.ones(2)}, "head": {"bias": jnp.ones(2)}}
      >>> tx = optax.chain(optax.sgd(1.0), scale_by_name({"embed": 0.1, "bias": 2.0}))
      >>> updates, _ = tx.update(params, tx.init(params), params)
      >>> updates["embed"]["table"], updates["head"]["bias"]
      (Array([-0.1, -0.1], dtype=float32), Array([-2., -2.], dtype=float32))

    References:
      You et al., "Large Batch Optimization for Deep Learning: Training BERT in 76
      minutes", ICLR 2020, arXiv:1904.00962 (per-layer rates). bert4keras,
      ``extend_with_parameter_wise_lr``.
      https://kexue.fm/archives/7094
    """
    if not isinstance(multipliers, Mapping):
        raise TypeError(
            f"scale_by_name: multipliers must be a mapping name -> multiplier, "
            f"got {type(multipliers).__name__}."
        )
    for key, value in multipliers.items():
        if not isinstance(key, str):
            raise TypeError(f"scale_by_name: multipliers keys must be strings, got {key!r}.")
        if not key:
            raise ValueError("scale_by_name: multipliers has the key '', which matches all.")
        checks.number(f"multipliers[{key!r}]", value, where="scale_by_name")
        if jnp.ndim(value) != 0:
            raise ValueError(
                f"scale_by_name: multipliers[{key!r}] must be a scalar, got shape "
                f"{jnp.shape(value)}."
            )
    table = {k: float(v) for k, v in multipliers.items()}

    def init_fn(params):
        _check_all_match(table, params, "multipliers keys", "scale_by_name.init")
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        del params

        def scale(path, u):
            name = jtu.keystr(path)
            factor = math.prod(v for k, v in table.items() if k in name)
            return u if factor == 1.0 else u * jnp.asarray(factor, u.dtype)

        return jtu.tree_map_with_path(scale, updates), state

    return optax.GradientTransformation(init_fn, update_fn)


def name_mask(
    include: str | Iterable[str] = (), exclude: str | Iterable[str] = ()
) -> Callable[[optax.Params], optax.Params]:
    r"""Builds a mask by parameter name, for optax's ``mask=`` arguments.

    For a leaf with key path :math:`n` (``jax.tree_util.keystr``):

    .. math::

        \text{mask}(n) = \big(\text{include} = \emptyset \ \lor\
        \exists k \in \text{include}: k \subseteq n\big) \land
        \nexists k \in \text{exclude}: k \subseteq n.

    Args:
      include: substrings selecting leaves (all leaves when empty); a lone string is one
        pattern.
      exclude: substrings removing leaves; a lone string is one pattern.

    Returns:
      A function ``params -> pytree of bools`` shaped like ``params`` (Python bools), for
      ``optax.add_decayed_weights(mask=...)``, ``optax.masked``,
      :func:`jaxtricks.optim.lazy_rows` and the like. Calling it raises ``ValueError`` if an
      ``include`` pattern matches no parameter (the mask would be all False, surely a typo);
      ``exclude`` patterns that match nothing are fine (e.g. ``"scale"`` on a model without
      normalisation layers).

    Raises:
      TypeError: if ``include`` or ``exclude`` is not a string or an iterable of strings.
      ValueError: if a pattern is empty.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxtricks.optim import name_mask
      >>> params = {"dense": {"kernel": jnp.ones(2), "bias": jnp.ones(2)}, "ln": {"scale": 1.0}}
      >>> name_mask(exclude=("bias", "scale"))(params)
      {'dense': {'bias': False, 'kernel': True}, 'ln': {'scale': False}}
      >>> name_mask(include="dense", exclude="bias")(params)
      {'dense': {'bias': False, 'kernel': True}, 'ln': {'scale': False}}

    References:
      Loshchilov and Hutter, "Decoupled Weight Decay Regularization", ICLR 2019,
      arXiv:1711.05101 (decay masks). bert4keras, ``exclude_from_weight_decay``.
      https://kexue.fm/archives/7094
    """
    include = _patterns(include, "include")
    exclude = _patterns(exclude, "exclude")

    def selected(path, _) -> bool:
        name = jtu.keystr(path)
        wanted = not include or any(k in name for k in include)
        return wanted and not any(k in name for k in exclude)

    def mask(params):
        _check_all_match(include, params, "include patterns", "name_mask")
        return jax.tree_util.tree_map_with_path(selected, params)

    return mask
