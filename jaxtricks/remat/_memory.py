"""Compiled-memory reports, batch-size search over compiles, and what a policy saves."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

# jax 0.10 exposes only the printing variant publicly (jax.ad_checkpoint.print_saved_residuals);
# the list-returning function it prints from lives here.
from jax._src.ad_checkpoint import saved_residuals as _jax_saved_residuals

from jaxtricks._src import checks


def _check_args(where: str, args: Sequence[Any]) -> None:
    """Every leaf an array, a ``jax.ShapeDtypeStruct`` or a number: what ``jit`` can take."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(args):
        ok = isinstance(leaf, (jax.Array, np.ndarray, np.generic, numbers.Number)) or (
            hasattr(leaf, "shape") and hasattr(leaf, "dtype")
        )
        if not ok:
            raise TypeError(
                f"{where}: args{jax.tree_util.keystr(path)} must be an array, a "
                f"jax.ShapeDtypeStruct or a number, got {checks._short(leaf)} of type "
                f"{type(leaf).__name__}."
            )


def _check_donate(where: str, donate_argnums: Any, count: int) -> tuple[int, ...]:
    """``donate_argnums`` as a tuple of valid argument positions."""
    given = (donate_argnums,) if not isinstance(donate_argnums, (tuple, list)) else donate_argnums
    out = []
    for i in given:
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, numbers.Integral):
            raise TypeError(
                f"{where}: donate_argnums must be an int or a sequence of ints, got "
                f"{donate_argnums!r}."
            )
        if not -count <= i < count:
            raise ValueError(
                f"{where}: donate_argnums {donate_argnums!r} names an argument that does not "
                f"exist (the call has {count} positional arguments)."
            )
        out.append(int(i) % count)
    return tuple(out)


class MemoryReport(NamedTuple):
    """Compiled memory of one jitted call, in bytes (from ``Compiled.memory_analysis()``).

    Attributes:
      argument_bytes: inputs (``argument_size_in_bytes``).
      output_bytes: outputs (``output_size_in_bytes``).
      temp_bytes: scratch buffers live during the call (``temp_size_in_bytes``): activations
        kept for the backward pass, gradients before they are written out, and so on.
      alias_bytes: outputs that reuse donated input buffers (``alias_size_in_bytes``).
      total_bytes: ``argument_bytes + output_bytes + temp_bytes - alias_bytes``: everything the
        call needs at once on the device, counting a donated buffer once. Generated code
        is not included.
    """

    argument_bytes: int
    output_bytes: int
    temp_bytes: int
    alias_bytes: int
    total_bytes: int


def memory_report(
    fn: Callable[..., Any], *args: Any, donate_argnums: int | Sequence[int] = ()
) -> MemoryReport:
    r"""Compiled memory of ``jax.jit(fn, donate_argnums=...)(*args)``, without running it.

    The call is lowered and compiled for the default backend (works on CPU), nothing is
    executed, and ``args`` may be ``jax.ShapeDtypeStruct`` so nothing is allocated either.

    .. math::

        \text{total} = \text{argument} + \text{output} + \text{temp} - \text{alias}.

    Args:
      fn: the function (pytree arguments and outputs).
      *args: its positional arguments: arrays or ``jax.ShapeDtypeStruct`` pytrees.
      donate_argnums: positions of arguments donated to the call (as in ``jax.jit``); their
        buffers may be reused for outputs, which ``alias_bytes`` counts.

    Returns:
      A :class:`MemoryReport`.

    Raises:
      TypeError: ``fn`` is not callable, an argument leaf is not an array, a
        ``jax.ShapeDtypeStruct`` or a number, or ``donate_argnums`` holds a non-int.
      ValueError: ``donate_argnums`` names a position past the arguments.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jaxtricks.remat import memory_report
      >>> x = jax.ShapeDtypeStruct((256, 256), jnp.float32)
      >>> r = memory_report(lambda a: a @ a, x)
      >>> r.argument_bytes, r.output_bytes
      (262144, 262144)
      >>> r.total_bytes == r.argument_bytes + r.output_bytes + r.temp_bytes - r.alias_bytes
      True

    References:
      Chen, Xu, Zhang, Guestrin, "Training Deep Nets with Sublinear Memory Cost", 2016,
      arXiv:1604.06174. https://kexue.fm/archives/7367
    """
    checks.callable_arg("fn", fn, where="memory_report")
    _check_args("memory_report", args)
    donate_argnums = _check_donate("memory_report", donate_argnums, len(args))
    compiled = jax.jit(fn, donate_argnums=donate_argnums).lower(*args).compile()
    stats = compiled.memory_analysis()
    arg, out = int(stats.argument_size_in_bytes), int(stats.output_size_in_bytes)
    temp, alias = int(stats.temp_size_in_bytes), int(stats.alias_size_in_bytes)
    return MemoryReport(arg, out, temp, alias, arg + out + temp - alias)


def max_batch_size(
    make_fn: Callable[[int], tuple[Callable[..., Any], Sequence[Any]]],
    budget_bytes: int,
    *,
    multiple_of: int = 1,
    max_batch: int = 2**20,
    donate_argnums: int | Sequence[int] = (),
) -> int:
    r"""The largest batch size whose compiled call fits a memory budget (compiles only).

    For a candidate batch ``b``, ``fn, args = make_fn(b)`` and the call fits when
    ``memory_report(fn, *args, donate_argnums=...).total_bytes <= budget_bytes``. Memory is
    assumed non-decreasing in ``b`` (true for a fixed model whose activations scale with the
    batch); under that assumption the answer is exact:

    .. math::

        b^* = \max\{\, b \in \text{multiple\_of}\cdot\mathbb{N}_{>0},\ b \le
        \text{max\_batch} : \text{total}(b) \le \text{budget} \,\}.

    The search grows a fitting size until one does not fit (exponential phase), then
    narrows the bracket (bisection phase). Each guess is where the line through the last two
    measured totals crosses the budget (doubling when the line is flat or has been trusted
    three times without bracketing the answer; the midpoint when a guess failed to halve the
    bracket): four compiles when memory is exactly affine in the batch, a few more when
    small batches deviate from the line (alignment, padding), and never more than about
    :math:`2\log_2(b^*/\text{multiple\_of}) + 8`.

    Args:
      make_fn: ``make_fn(batch_size) -> (fn, args)``; ``args`` a sequence, best of
        ``jax.ShapeDtypeStruct`` so nothing is allocated.
      budget_bytes: the memory budget in bytes (> 0).
      multiple_of: search only multiples of this (e.g. 8).
      max_batch: stop searching at this size (for calls whose memory does not grow).
      donate_argnums: as in :func:`memory_report`, passed to every compile.

    Returns:
      The largest fitting batch size, or ``0`` when even ``multiple_of`` does not fit.

    Raises:
      TypeError: ``make_fn`` not callable, or returning something other than a pair
        ``(fn, args)`` with ``fn`` callable and ``args`` a tuple or list; ``budget_bytes``,
        ``multiple_of`` or ``max_batch`` not an int.
      ValueError: ``budget_bytes``, ``multiple_of`` or ``max_batch`` below 1.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jaxtricks.remat import max_batch_size
      >>> def make(b):  # 4 KiB in + 4 KiB out per row
      ...     return (lambda x: x * 2), (jax.ShapeDtypeStruct((b, 1024), jnp.float32),)
      >>> max_batch_size(make, 10 * 8192)
      10

    References:
      Chen, Xu, Zhang, Guestrin, "Training Deep Nets with Sublinear Memory Cost", 2016,
      arXiv:1604.06174. https://kexue.fm/archives/7367
    """
    checks.callable_arg("make_fn", make_fn, where="max_batch_size")
    budget_bytes = checks.positive_int("budget_bytes", budget_bytes, where="max_batch_size")
    multiple_of = checks.positive_int("multiple_of", multiple_of, where="max_batch_size")
    max_batch = checks.positive_int("max_batch", max_batch, where="max_batch_size")

    totals: dict[int, int] = {}  # k -> total bytes at batch k * multiple_of

    def fits(k: int) -> bool:
        made = make_fn(k * multiple_of)
        if not (
            isinstance(made, tuple)
            and len(made) == 2
            and callable(made[0])
            and isinstance(made[1], (tuple, list))
        ):
            raise TypeError(
                f"max_batch_size: make_fn({k * multiple_of}) must return a pair (fn, args) "
                f"with fn callable and args a tuple or list, got {checks._short(made)}."
            )
        fn, args = made
        totals[k] = memory_report(fn, *args, donate_argnums=donate_argnums).total_bytes
        return totals[k] <= budget_bytes

    def crossing() -> float | None:
        """Where the line through the last two measured totals reaches the budget."""
        (k0, t0), (k1, t1) = list(totals.items())[-2:]
        if t1 == t0:
            return None
        return k1 + (budget_bytes - t1) * (k1 - k0) / (t1 - t0)

    top = max_batch // multiple_of  # the largest k allowed
    if top == 0 or not fits(1):
        return 0
    lo, hi = 1, None  # fits(lo); hi: the smallest k known not to fit (None: none yet)
    steps = 0
    while hi is None:  # exponential phase
        if lo == top:
            return lo * multiple_of
        estimate = crossing() if len(totals) > 1 else None
        # Trust the line for three guesses, then double: bounded even if memory is concave.
        guess = 2 * lo if estimate is None or steps >= 3 else max(int(estimate), lo + 1)
        guess = min(guess, top)
        steps += 1
        if fits(guess):
            lo = guess
        else:
            hi = guess
    last_width = None
    while hi - lo > 1:  # bisection phase
        width = hi - lo
        estimate = crossing()
        if estimate is None or (last_width is not None and 2 * width > last_width):
            guess = (lo + hi) // 2  # the last guess did not halve the bracket
        else:
            guess = int(estimate)
        guess = min(max(guess, lo + 1), hi - 1)
        last_width = width
        if fits(guess):
            lo = guess
        else:
            hi = guess
    return lo * multiple_of


class Residual(NamedTuple):
    """One value saved for the backward pass: its shape, dtype and where it comes from."""

    shape: tuple[int, ...]
    dtype: Any
    reason: str


def saved_residuals(fn: Callable[..., Any], *args: Any) -> list[Residual]:
    r"""The values ``jax.vjp(fn, *args)`` keeps for the backward pass (what a policy saves).

    Wraps ``jax.ad_checkpoint.print_saved_residuals``' list form. ``reason`` reads
    ``"from the argument x"`` for inputs, ``"output of dot_general from file:line"`` for
    intermediates kept by a policy, ``"named 'attn_out' from ..."`` for ``checkpoint_name``
    values. Without checkpointing every nonlinearity's output or derivative is saved; under
    ``checkpoint(fn, "full")`` only the arguments; ``"dots"`` adds matmul outputs;
    ``"save:a"`` adds the values named ``a``. Constants captured by ``fn`` are not listed.

    .. math::

        \text{saved bytes} = \sum_{r \in \text{residuals}} |r.\text{shape}| \cdot
        \text{itemsize}(r.\text{dtype}).

    Args:
      fn: the function, typically a loss or a ``checkpoint``-wrapped layer.
      *args: its positional arguments (arrays or ``jax.ShapeDtypeStruct``).

    Returns:
      A list of :class:`Residual`, in JAX's order.

    Raises:
      TypeError: ``fn`` is not callable or an argument leaf is not an array, a
        ``jax.ShapeDtypeStruct`` or a number.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jaxtricks.remat import checkpoint, saved_residuals
      >>> f = lambda w, x: jnp.sum(jnp.tanh(x @ w))
      >>> w, x = jnp.ones((4, 4)), jnp.ones((2, 4))
      >>> [r.reason.split(" from")[0] for r in saved_residuals(checkpoint(f, "dots"), w, x)]
      ['from the argument w', 'from the argument x', 'output of dot_general']
      >>> len(saved_residuals(checkpoint(f, "full"), w, x))
      2

    References:
      Chen, Xu, Zhang, Guestrin, "Training Deep Nets with Sublinear Memory Cost", 2016,
      arXiv:1604.06174. https://kexue.fm/archives/7367
    """
    checks.callable_arg("fn", fn, where="saved_residuals")
    _check_args("saved_residuals", args)
    return [
        Residual(tuple(aval.shape), aval.dtype, reason)
        for aval, reason in _jax_saved_residuals(fn, *args)
    ]
