"""Float64 NumPy references shared by several test files (not collected: no test_ prefix)."""

from __future__ import annotations

import numpy as np


def rope64(x, angles, layout):
    """float64 rotation of ``x`` (..., T, N, H) by ``angles`` (T, H/2) in either RoPE layout."""
    x = np.asarray(x, np.float64)
    c, s = np.cos(angles)[:, None], np.sin(angles)[:, None]  # (T, 1, H/2)
    h = x.shape[-1]
    if layout == "interleaved":
        a, b = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2], out[..., 1::2] = a * c - b * s, b * c + a * s
        return out
    a, b = x[..., : h // 2], x[..., h // 2 :]
    return np.concatenate([a * c - b * s, b * c + a * s], axis=-1)


def ema_codebook_step(size, total, previous, z, idx, decay, eps):
    """One VQ-EMA step in float64: statistics and the Laplace-smoothed codebook.

    A code whose smoothed count is 0 keeps its ``previous`` row (the limit the module
    documents instead of 0/0).
    """
    k = len(size)
    counts = np.bincount(idx, minlength=k)
    sums = np.zeros_like(total)
    np.add.at(sums, idx, z)
    size = decay * size + (1 - decay) * counts
    total = decay * total + (1 - decay) * sums
    n = size.sum()
    smoothed = (size + eps) / (n + k * eps) * n if n + k * eps > 0 else np.zeros(k)
    with np.errstate(invalid="ignore", divide="ignore"):
        codebook = np.where(smoothed[:, None] > 0, total / smoothed[:, None], previous)
    return size, total, codebook
