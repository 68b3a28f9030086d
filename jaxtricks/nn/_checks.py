"""Argument checks shared by the modules of :mod:`jaxtricks.nn` (private)."""

from __future__ import annotations

import numbers


def positive_int(name: str, value: object) -> int:
    """``value`` as an ``int`` if it is a positive integer (not a bool), else a clear error."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive int, got {value!r}.")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}.")
    return int(value)
