"""Checks shared by the optim transforms that ``jaxtricks._src.checks`` does not have (private).

They run at trace time on static facts (tree structures, shapes, dtypes), so they cost nothing
under ``jit``. Each error names the argument, what was given and what was expected.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import tree_util as jtu

from jaxtricks._src import checks


def describe(value: object) -> str:
    """A short text for ``value`` in a message (arrays by shape and dtype)."""
    if isinstance(value, (jax.Array, np.ndarray)):
        kind = "a traced" if checks.is_traced(value) else "an"
        return f"{kind} array of shape {tuple(np.shape(value))} and dtype {value.dtype}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def tree_like(name: str, tree: Any, reference: Any, *, what: str, where: str | None = None) -> None:
    """Raises ``ValueError`` unless ``tree`` has ``reference``'s structure and leaf shapes."""
    checks.tree_matches(name, tree, reference, what=what, where=where)
    label = f"{where}: {name}" if where else name
    for (path, leaf), ref in zip(jtu.tree_leaves_with_path(tree), jax.tree.leaves(reference)):
        got, want = tuple(np.shape(leaf)), tuple(np.shape(ref))
        if got != want:
            raise ValueError(
                f"{label}{jtu.keystr(path)} must have the shape of {what}, {want}; got {got}."
            )


def inexact_leaves(name: str, tree: Any, *, where: str | None = None) -> None:
    """Raises ``TypeError`` if a leaf of ``tree`` has an integer or bool dtype."""
    label = f"{where}: {name}" if where else name
    for path, leaf in jtu.tree_leaves_with_path(tree):
        dt = jnp.result_type(leaf)
        if not jnp.issubdtype(dt, jnp.inexact):
            raise TypeError(
                f"{label}{jtu.keystr(path)} must have a floating or complex dtype, got {dt.name}."
            )


def mask_tree(name: str, mask: Any, params: Any, *, prefix: bool, where: str | None = None) -> Any:
    """Checks a mask of Python/NumPy bools against ``params`` and returns it.

    With ``prefix`` the mask may stop above the leaves (optax's masks: one bool for a subtree);
    otherwise its structure must be the params' own. Integer leaves (``1``/``0``) and arrays
    with more than one element are rejected: a mask says yes or no per leaf (or subtree).
    """
    label = f"{where}: {name}" if where else name
    treedef = jax.tree.structure(mask)
    if prefix:
        try:
            treedef.flatten_up_to(params)
        except ValueError:
            raise ValueError(
                f"{label} must have the tree structure of the params (or a prefix of it); got "
                f"{treedef}, expected {jax.tree.structure(params)}."
            ) from None
    else:
        checks.tree_matches(name, mask, params, where=where)
    for path, leaf in jtu.tree_leaves_with_path(mask):
        if checks.is_traced(leaf):
            raise TypeError(
                f"{label}{jtu.keystr(path)} must be a Python bool, got {describe(leaf)}: a "
                "mask selects leaves while tracing, so it cannot be a traced value."
            )
        if not (
            isinstance(leaf, (bool, np.bool_))
            or (np.ndim(leaf) == 0 and np.asarray(leaf).dtype == np.bool_)
        ):
            raise TypeError(f"{label}{jtu.keystr(path)} must be a bool, got {describe(leaf)}.")
    return mask
