"""Helpers of the regularizers beyond the shared ``jaxtricks._src`` ones (private)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxtricks._src import checks


def prng_key(name: str, key: Any) -> Any:
    """``key`` if it is one PRNG key: a typed key of shape ``()`` or a raw ``uint32`` key.

    Raw keys are the legacy ``jax.random.PRNGKey`` arrays, ``(2,)`` (threefry) or ``(4,)``
    (rbg). A batch of keys is an error here: the caller ``vmap``\\ s over it.
    """
    dtype = getattr(key, "dtype", None)
    if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key):
        if np.shape(key) != ():
            raise ValueError(
                f"{name} must be a single PRNG key of shape (), got a batch of shape "
                f"{tuple(np.shape(key))}; vmap over the keys instead."
            )
        return key
    if dtype == jnp.uint32 and np.shape(key) in ((2,), (4,)):
        return key
    raise TypeError(f"{name} must be a PRNG key (jax.random.key(seed)), got {checks._short(key)}.")


def scalar(name: str, value: Any) -> None:
    """Raises ``ValueError`` unless ``value`` is 0-D (a hyperparameter broadcasts nowhere)."""
    if np.ndim(value) != 0:
        raise ValueError(f"{name} must be a scalar, got shape {tuple(np.shape(value))}.")


def inverse_scale(peak: jax.Array) -> jax.Array:
    """A power of two ``s`` with ``peak * s`` in [0.5, 4), normal and exact (1 for 0, inf, NaN).

    Multiplying by an exact power of two changes no digit. Dividing by ``peak`` itself would
    not do: XLA turns ``x / c`` into ``x * (1 / c)``, and ``1 / c`` is subnormal, flushed to
    0, for ``c`` above about 8.5e37 in float32.
    """
    finfo = jnp.finfo(peak.dtype)
    _, exponent = jnp.frexp(peak)  # peak = m 2^e, m in [0.5, 1)
    exponent = jnp.clip(exponent, finfo.minexp + 1, finfo.maxexp - 2)  # 2^-e stays normal
    return jax.lax.stop_gradient(jnp.ldexp(jnp.ones((), peak.dtype), -exponent))
