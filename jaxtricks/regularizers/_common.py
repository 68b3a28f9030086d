"""Helpers of the regularizers beyond the shared ``jaxtricks._src`` ones (private)."""

from __future__ import annotations

from typing import Any

import numpy as np


def scalar(name: str, value: Any) -> None:
    """Raises ``ValueError`` unless ``value`` is 0-D (a hyperparameter broadcasts nowhere)."""
    if np.ndim(value) != 0:
        raise ValueError(f"{name} must be a scalar, got shape {tuple(np.shape(value))}.")
