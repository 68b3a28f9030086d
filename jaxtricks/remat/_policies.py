"""Named recomputation (gradient checkpointing) policies over ``jax.checkpoint_policies``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import jax

from jaxtricks._src import checks

F = TypeVar("F", bound=Callable[..., Any])

#: A policy spec: one of :data:`POLICY_NAMES`, ``"save:<name>[,<name>...]"``, a sequence of
#: ``checkpoint_name`` names, or ``None`` (same as ``"none"``).
PolicyLike = str | Sequence[str] | None

_CP = jax.checkpoint_policies
_NAMED: dict[str, Callable[..., bool]] = {
    "full": _CP.nothing_saveable,
    "dots": _CP.checkpoint_dots,
    "dots_no_batch": _CP.dots_with_no_batch_dims_saveable,
}
POLICY_NAMES: tuple[str, ...] = ("none", "full", "dots", "dots_no_batch", "save:<names>")


def _names_policy(names: Sequence[str], given: object) -> Callable[..., bool]:
    names = tuple(names)
    bad = [n for n in names if not isinstance(n, str)]
    if bad:
        raise TypeError(f"policy: checkpoint names must be strings, got {bad[0]!r} in {given!r}.")
    if not names or not all(names):
        raise ValueError(
            f"policy: expected at least one non-empty checkpoint_name string, got {given!r}."
        )
    return _CP.save_only_these_names(*names)


def policy(name: PolicyLike) -> Callable[..., bool] | None:
    r"""The ``jax.checkpoint`` policy for a policy name.

    A policy decides which intermediate values of a checkpointed function are kept for the
    backward pass; the rest are recomputed from the function's inputs. With a layer body
    checkpointed under ``"full"``, a stack of :math:`L` layers keeps only the layer inputs:

    .. math::

        M_{\text{none}} \approx \sum_{l=1}^{L} |\text{activations}_l|, \qquad
        M_{\text{full}} \approx \sum_{l=1}^{L} |x_l| + \max_l |\text{activations}_l|,

    at the price of about one more forward pass (Chen et al. 2016).

    Names:

    - ``"none"`` (or ``None``): no recomputation. Returns ``None``, which here means *do not
      wrap in* ``jax.checkpoint`` (note: ``jax.checkpoint(f, policy=None)`` itself saves
      nothing, which is ``"full"``).
    - ``"full"``: save nothing, ``jax.checkpoint_policies.nothing_saveable``.
    - ``"dots"``: save every matmul output, ``checkpoint_dots``.
    - ``"dots_no_batch"``: save matmul outputs without batch dimensions (weight-times-
      activation products, not attention's batched ``q @ k``),
      ``dots_with_no_batch_dims_saveable``.
    - ``"save:a,b"`` or a sequence ``("a", "b")``: save only the values tagged with
      ``jax.ad_checkpoint.checkpoint_name(x, "a")`` / ``"b"``, ``save_only_these_names``.

    Args:
      name: the policy spec (see above).

    Returns:
      A policy callable for ``jax.checkpoint(..., policy=...)``, or ``None`` for ``"none"``.

    Raises:
      ValueError: unknown name (the message lists the valid ones), an empty name list or an
        empty name.
      TypeError: ``name`` is not a string, a sequence of strings or ``None`` (bytes are not
        names), or a sequence holds something other than strings.

    Examples:
      >>> import jax
      >>> from jaxtricks.remat import policy
      >>> policy("none") is None
      True
      >>> policy("full") is jax.checkpoint_policies.nothing_saveable
      True
      >>> callable(policy("save:attn_out,mlp_in")), callable(policy(("attn_out",)))
      (True, True)

    References:
      Chen, Xu, Zhang, Guestrin, "Training Deep Nets with Sublinear Memory Cost", 2016,
      arXiv:1604.06174. https://kexue.fm/archives/7367
    """
    if name is None or name == "none":
        return None
    if isinstance(name, str):
        if name in _NAMED:
            return _NAMED[name]
        if name.startswith("save:"):
            return _names_policy(name[len("save:") :].split(","), name)
        raise ValueError(f"policy: unknown policy {name!r}; expected one of {POLICY_NAMES}.")
    if isinstance(name, Sequence) and not isinstance(name, (bytes, bytearray)):
        return _names_policy(name, name)
    raise TypeError(
        f"policy: expected a policy name, a sequence of checkpoint names or None, got {name!r}."
    )


def checkpoint(fn: F, policy: PolicyLike = "full", *, prevent_cse: bool = True) -> F:
    r"""Wrap ``fn`` for recomputation in the backward pass under a named policy.

    ``checkpoint(fn, "none")`` returns ``fn`` itself; any other policy returns
    ``jax.checkpoint(fn, policy=..., prevent_cse=prevent_cse)``: values, and gradients up to
    floating-point reassociation, are those of ``fn``; memory kept for the backward pass
    shrinks and the forward pass runs again inside it. Use it on a layer body (the post
    checkpoints every layer of BERT, about one extra forward pass per step). Put the layers
    under ``jax.lax.scan`` / ``nnx.scan``: in an unrolled Python loop XLA may schedule the
    recomputation early and keep the saving from happening (observed on CPU):

    .. math::

        \text{time}_{\text{full}} \approx \text{time}_{\text{none}}
        \cdot \frac{2 \cdot \text{fwd} + \text{bwd}}{\text{fwd} + \text{bwd}}.

    Args:
      fn: the function to checkpoint (any pytree arguments and outputs).
      policy: a spec accepted by :func:`policy`: ``"none"``, ``"full"``, ``"dots"``,
        ``"dots_no_batch"``, ``"save:a,b"``, a sequence of names, or ``None``.
      prevent_cse: passed to ``jax.checkpoint``; keep ``True`` unless ``fn`` runs under
        ``lax.scan`` (where it is not needed and can cost speed).

    Returns:
      A function with the signature of ``fn``.

    Raises:
      TypeError: ``fn`` is not callable, ``prevent_cse`` is not a bool, or as :func:`policy`.
      ValueError: as :func:`policy`.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jaxtricks.remat import checkpoint
      >>> f = lambda x: jnp.sum(jnp.tanh(jnp.tanh(x)))
      >>> g = checkpoint(f, "full")
      >>> x = jnp.arange(3.0)
      >>> bool(jnp.allclose(jax.grad(g)(x), jax.grad(f)(x)))
      True
      >>> checkpoint(f, "none") is f
      True

    References:
      Chen, Xu, Zhang, Guestrin, "Training Deep Nets with Sublinear Memory Cost", 2016,
      arXiv:1604.06174. https://kexue.fm/archives/7367
    """
    checks.callable_arg("fn", fn, where="checkpoint")
    if not isinstance(prevent_cse, bool):
        raise TypeError(f"checkpoint: prevent_cse must be a bool, got {prevent_cse!r}.")
    chosen = _lookup(policy)
    if chosen is None:
        return fn
    return jax.checkpoint(fn, policy=chosen, prevent_cse=prevent_cse)


_lookup = policy
