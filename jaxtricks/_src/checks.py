"""The library's one validation convention (private; see DESIGN.md, "Validation convention").

- Sizes are positive Python ints; ``bool`` is not an int.
- Hyperparameters given as Python/NumPy numbers or concrete JAX arrays are checked for range
  and finiteness; traced values pass unchecked (the caller's docstring says what they give).
- Dtypes that cannot work raise ``TypeError``; shape mismatches name the shape given and the
  shape expected; pytrees that must match the params are compared by structure.
- Every error is a ``ValueError`` or ``TypeError`` whose message names the argument and the
  value.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _label(name: str, where: str | None) -> str:
    return f"{where}: {name}" if where else name


def _short(value: object) -> str:
    """A repr of ``value`` short enough for an error message (arrays by shape and dtype)."""
    if isinstance(value, jax.core.Tracer):
        return f"a traced {value.dtype} array of shape {value.shape}"
    if isinstance(value, (jax.Array, np.ndarray)) and np.ndim(value) > 0:
        return f"an array of shape {tuple(np.shape(value))} and dtype {value.dtype}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def is_traced(value: object) -> bool:
    """Whether ``value`` is (or holds) an abstract tracer, whose values cannot be read."""
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(value))


def concrete(value: object) -> np.ndarray | None:
    """``value`` as a NumPy array when it is concrete (a number or a non-traced array), else None.

    Non-numeric objects give None too; the caller decides whether that is an error.
    """
    if is_traced(value):
        return None
    if isinstance(value, (bool, numbers.Number, np.ndarray, np.generic, jax.Array)):
        return np.asarray(value)
    return None


def positive_int(name: str, value: object, *, where: str | None = None) -> int:
    """``value`` as an ``int`` if it is a positive integer (not a bool), else a clear error."""
    return _integer(name, value, 1, where)


def nonnegative_int(name: str, value: object, *, where: str | None = None) -> int:
    """``value`` as an ``int`` if it is an integer >= 0 (not a bool), else a clear error."""
    return _integer(name, value, 0, where)


def _integer(name: str, value: object, low: int, where: str | None) -> int:
    kind = "a positive int" if low == 1 else f"an int >= {low}"
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{_label(name, where)} must be {kind}, got {_short(value)}.")
    if value < low:
        raise ValueError(f"{_label(name, where)} must be {kind}, got {value!r}.")
    return int(value)


def number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    allow_inf: bool = False,
    integer: bool = False,
    where: str | None = None,
) -> Any:
    """Checks a scalar hyperparameter and returns it unchanged.

    Python/NumPy numbers and concrete JAX arrays (any shape: every element is checked) must
    be real, not NaN, finite unless ``allow_inf``, and inside ``[low, high]`` (``low_open`` /
    ``high_open`` exclude the ends). Traced values are returned unchecked; ``bool`` is
    rejected; non-numeric values raise ``TypeError``.
    """
    label = _label(name, where)
    if is_traced(value):
        return value
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{label} must be a real number, got {value!r}.")
    arr = concrete(value)
    if arr is None or arr.dtype == object:
        raise TypeError(f"{label} must be a real number, got {_short(value)}.")
    if arr.dtype == bool or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise TypeError(f"{label} must be a real number, got {_short(value)} ({arr.dtype}).")
    shown = repr(value) if arr.ndim == 0 else _short(value)
    if integer and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise TypeError(f"{label} must be an integer, got {shown}.")
    if np.any(np.isnan(arr)):
        raise ValueError(f"{label} must not be NaN, got {shown}.")
    if not allow_inf and np.any(np.isinf(arr)):
        raise ValueError(f"{label} must be finite, got {shown}.")
    bad_low = low is not None and np.any(arr <= low if low_open else arr < low)
    bad_high = high is not None and np.any(arr >= high if high_open else arr > high)
    if bad_low or bad_high:
        raise ValueError(
            f"{label} must be {_interval(low, high, low_open, high_open)}, got {shown}."
        )
    return value


def _interval(low, high, low_open, high_open) -> str:
    if high is None:
        return f"{'>' if low_open else '>='} {low}"
    if low is None:
        return f"{'<' if high_open else '<='} {high}"
    return f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"


def number_or_schedule(name: str, value: Any, **bounds: Any) -> Any:
    """Like :func:`number`, but a callable (an optax schedule) passes unchecked."""
    if callable(value):
        return value
    return number(name, value, **bounds)


def choice(name: str, value: object, choices: Sequence[Any], *, where: str | None = None) -> Any:
    """``value`` if it is one of ``choices`` (compared with ``==``, hashable values only)."""
    try:
        ok = any(value == c and type(value) is type(c) for c in choices)
    except Exception:  # arrays and other values whose == is not a bool
        ok = False
    if not ok:
        raise ValueError(
            f"{_label(name, where)} must be one of {tuple(choices)}, got {_short(value)}."
        )
    return value


def callable_arg(name: str, value: object, *, where: str | None = None) -> Callable:
    """``value`` if it is callable, else a ``TypeError`` saying what was given."""
    if not callable(value):
        raise TypeError(f"{_label(name, where)} must be callable, got {_short(value)}.")
    return value


def gradient_transformation(name: str, value: object, *, where: str | None = None) -> Any:
    """``value`` if it has optax's ``init``/``update`` pair, else a ``TypeError``."""
    if not (callable(getattr(value, "init", None)) and callable(getattr(value, "update", None))):
        raise TypeError(
            f"{_label(name, where)} must be an optax.GradientTransformation (with init and "
            f"update), got {_short(value)}."
        )
    return value


def float_dtype(
    name: str,
    dtype: object,
    *,
    allow_none: bool = True,
    complex_ok: bool = True,
    where: str | None = None,
) -> jnp.dtype | None:
    """``dtype`` as a NumPy dtype if it is inexact (float, or complex when ``complex_ok``)."""
    if dtype is None:
        if allow_none:
            return None
        raise TypeError(f"{_label(name, where)} must be a floating dtype, got None.")
    try:
        dt = jnp.dtype(dtype)
    except TypeError as e:
        raise TypeError(f"{_label(name, where)} must be a floating dtype, got {dtype!r}.") from e
    ok = jnp.issubdtype(dt, jnp.floating) or (
        complex_ok and jnp.issubdtype(dt, jnp.complexfloating)
    )
    if not ok:
        kinds = "floating or complex" if complex_ok else "floating"
        raise TypeError(f"{_label(name, where)} must be a {kinds} dtype, got {dt.name}.")
    return dt


def array_dtype_kind(name: str, x: Any, kinds: Iterable[str], *, where: str | None = None) -> None:
    """Raises ``TypeError`` unless ``x``'s dtype is of one of ``kinds``.

    Kinds: ``"bool"``, ``"integer"``, ``"floating"``, ``"complex"``.
    """
    kinds = tuple(kinds)
    dt = jnp.result_type(x)
    tests = {
        "bool": dt == jnp.bool_,
        "integer": jnp.issubdtype(dt, jnp.integer),
        "floating": jnp.issubdtype(dt, jnp.floating),
        "complex": jnp.issubdtype(dt, jnp.complexfloating),
    }
    if not any(tests[k] for k in kinds):
        article = "an" if kinds[0][0] in "aeiou" else "a"
        raise TypeError(
            f"{_label(name, where)} must have {article} {' or '.join(kinds)} dtype, got {dt.name}."
        )


def shape(name: str, x: Any, expected: Sequence[int | None], *, where: str | None = None) -> None:
    """Raises ``ValueError`` unless ``x``'s shape is ``expected`` (``None`` matches any size)."""
    got = tuple(np.shape(x))
    ok = len(got) == len(expected) and all(e is None or g == e for g, e in zip(got, expected))
    if not ok:
        want = "(" + ", ".join("any" if e is None else str(e) for e in expected) + ")"
        raise ValueError(f"{_label(name, where)} must have shape {want}, got {got}.")


def min_ndim(name: str, x: Any, ndim: int, what: str, *, where: str | None = None) -> None:
    """Raises ``ValueError`` unless ``x`` has at least ``ndim`` axes (``what`` names them)."""
    got = tuple(np.shape(x))
    if len(got) < ndim:
        raise ValueError(
            f"{_label(name, where)} must have at least {ndim} "
            f"{'axis' if ndim == 1 else 'axes'} {what}, got shape {got}."
        )


def tree_matches(
    name: str, tree: Any, reference: Any, *, what: str = "the params", where: str | None = None
) -> None:
    """Raises ``ValueError`` unless ``tree`` has the pytree structure of ``reference``."""
    got, want = jax.tree.structure(tree), jax.tree.structure(reference)
    if got != want:
        raise ValueError(
            f"{_label(name, where)} must have the tree structure of {what}; got {got}, "
            f"expected {want}."
        )


def prng_key(name: str, key: Any, *, where: str | None = None) -> Any:
    """``key`` if it is one PRNG key: a typed key of shape ``()`` or a raw ``uint32`` key.

    Raw keys are the legacy ``jax.random.PRNGKey`` arrays, ``(2,)`` (threefry) or ``(4,)``
    (rbg). A batch of keys is an error: the caller ``vmap``\\ s over it.
    """
    label = _label(name, where)
    dtype = getattr(key, "dtype", None)
    if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key):
        if np.shape(key) != ():
            raise ValueError(
                f"{label} must be a single PRNG key of shape (), got a batch of shape "
                f"{tuple(np.shape(key))}; vmap over the keys instead."
            )
        return key
    if dtype == jnp.uint32 and np.shape(key) in ((2,), (4,)):
        return key
    raise TypeError(f"{label} must be a PRNG key (jax.random.key(seed)), got {_short(key)}.")
