"""GELU and its two elementary approximations (tanh form and sigmoid form).

Conventions differ between frameworks: ``jax.nn.gelu`` defaults to the tanh approximation
(``approximate=True``), while PyTorch's ``torch.nn.GELU`` defaults to the exact erf form
(``approximate='none'``). A model ported from PyTorch with plain ``jax.nn.gelu`` therefore
changes its activation by up to 4.7e-4; the three names below make the choice explicit.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxtricks._src import checks

# Logistic fit of the normal CDF used by the GELU paper (minimax optimum 1.70174, rounded).
_SIGMOID_SCALE = 1.702
# Beyond |x| = 10 the tanh argument exceeds 43, where tanh is +-1 in every float dtype: clipping
# the cubic there changes no value, but keeps x**3 (and its gradient) from overflowing.
_TANH_CLIP = 10.0


def _with_limits(formula: Callable[[jax.Array], jax.Array], x: jax.typing.ArrayLike, name: str):
    """``formula(x)`` for finite ``x``; the limits 0 and ``x`` at -inf and +inf.

    The formula only ever sees finite values (0 stands in for the infinities), so neither its
    value (``-inf * 0``) nor its gradient can produce a NaN that the ``where`` would have to hide.
    """
    x = jnp.asarray(x)
    checks.array_dtype_kind("x", x, ("integer", "floating"), where=name)
    if not jnp.issubdtype(x.dtype, jnp.floating):  # integers promote, as in jax.nn.gelu
        x = x.astype(jnp.result_type(float))
    inf = jnp.isinf(x)
    zero = jnp.zeros_like(x)
    y = formula(jnp.where(inf, zero, x))
    return jnp.where(inf, jnp.where(x > 0, x, zero), y)


def _erf_form(x: jax.Array) -> jax.Array:
    return jax.nn.gelu(x, approximate=False)


def _tanh_form(x: jax.Array) -> jax.Array:
    # jax.nn.gelu(x, approximate=True) term by term, with the cubic's argument clipped.
    c = jnp.clip(x, -_TANH_CLIP, _TANH_CLIP)
    sqrt_2_over_pi = np.sqrt(2 / np.pi).astype(x.dtype)
    return x * (0.5 * (1.0 + jnp.tanh(sqrt_2_over_pi * (c + 0.044715 * (c**3)))))


def _sigmoid_form(x: jax.Array) -> jax.Array:
    return x * jax.nn.sigmoid(_SIGMOID_SCALE * x)


def gelu_erf(x: jax.typing.ArrayLike) -> jax.Array:
    r"""Exact GELU, :math:`x\,\Phi(x)` with the normal CDF written through erf.

    .. math::

        \operatorname{GELU}(x) = x\,\Phi(x)
        = \frac{x}{2}\left[1 + \operatorname{erf}\left(\frac{x}{\sqrt 2}\right)\right]

    This is PyTorch's default ``torch.nn.GELU()``; in JAX it is
    ``jax.nn.gelu(x, approximate=False)`` (which this function calls for finite ``x``),
    whereas a bare ``jax.nn.gelu(x)`` is the tanh approximation :func:`gelu_tanh`.
    At :math:`x = -\infty` the result is 0 and at :math:`+\infty` it is :math:`+\infty`
    (the limits of :math:`x\,\Phi(x)`, where ``jax.nn.gelu`` gives NaN), with gradients 0 and
    1 there; the gradient is finite for every finite ``x``. NaN gives NaN.

    Args:
      x: input of any shape, floating dtype.

    Returns:
      An array of ``x``'s shape and dtype.

    Raises:
      TypeError: if ``x`` is bool or complex (integers promote to the default float).

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxtricks.activations import gelu_erf
      >>> y = gelu_erf(jnp.array([-1.0, 0.0, 1.0, 3.0]))
      >>> [round(float(v), 4) for v in y]
      [-0.1587, 0.0, 0.8413, 2.996]
      >>> [float(v) for v in gelu_erf(jnp.array([-jnp.inf, jnp.inf]))]  # the limits
      [0.0, inf]

    References:
      Dan Hendrycks, Kevin Gimpel, "Gaussian Error Linear Units (GELUs)", 2016,
      arXiv:1606.08415.
      Su Jianlin, "GELU的两个初等函数近似是怎么来的", https://kexue.fm/archives/7309
    """
    return _with_limits(_erf_form, x, "gelu_erf")


def gelu_tanh(x: jax.typing.ArrayLike) -> jax.Array:
    r"""GELU's tanh approximation (the form of GPT-2 and the original BERT code).

    .. math::

        \operatorname{GELU}(x) \approx \frac{x}{2}\left[1 + \tanh\left(\sqrt{\frac{2}{\pi}}
        \left(x + 0.044715\,x^3\right)\right)\right]

    The maximum absolute deviation from :func:`gelu_erf` is about 4.7e-4 (at
    :math:`|x| \approx 2.7`). The post derives the coefficient by fixing
    :math:`a = \sqrt{2/\pi}` (the slope at 0) and choosing :math:`b` in
    :math:`\tanh(a x + b x^3)` to minimise the largest error against
    :math:`\operatorname{erf}(x/\sqrt 2)`, which gives :math:`b/a = 0.0447149`. For finite
    ``x`` this is ``jax.nn.gelu(x, approximate=True)`` (JAX's default), written out term by
    term with the cubic's argument clipped to :math:`|x| \le 10`, where tanh is already
    :math:`\pm 1`: same values, but the gradient stays finite where :math:`x^3` would overflow
    (``jax.nn.gelu``'s is NaN beyond :math:`|x| \approx 10^{19}` in float32). At
    :math:`-\infty` the result is 0 and at :math:`+\infty` it is :math:`+\infty`, with
    gradients 0 and 1 there. NaN gives NaN.

    Args:
      x: input of any shape, floating dtype.

    Returns:
      An array of ``x``'s shape and dtype.

    Raises:
      TypeError: if ``x`` is bool or complex (integers promote to the default float).

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxtricks.activations import gelu_tanh
      >>> y = gelu_tanh(jnp.array([-1.0, 0.0, 1.0, 3.0]))
      >>> [round(float(v), 4) for v in y]
      [-0.1588, 0.0, 0.8412, 2.9964]

    References:
      Dan Hendrycks, Kevin Gimpel, "Gaussian Error Linear Units (GELUs)", 2016,
      arXiv:1606.08415.
      Su Jianlin, "GELU的两个初等函数近似是怎么来的", https://kexue.fm/archives/7309
    """
    return _with_limits(_tanh_form, x, "gelu_tanh")


def gelu_sigmoid(x: jax.typing.ArrayLike) -> jax.Array:
    r"""GELU's sigmoid approximation, :math:`x\,\sigma(1.702\,x)`.

    .. math::

        \operatorname{GELU}(x) \approx x\,\sigma(1.702\,x), \qquad
        \sigma(z) = \frac{1}{1 + e^{-z}}

    1.702 is (rounded) the :math:`\lambda` minimising :math:`\max_x |\Phi(x) -
    \sigma(\lambda x)|`, 1.70174. The largest deviation from :func:`gelu_erf` is about 0.0203
    (at :math:`|x| \approx 2.27`), some 40 times that of :func:`gelu_tanh`. It is the same
    expression as ``jax.nn.silu(1.702 * x) / 1.702``; computed in ``x``'s dtype. At
    :math:`-\infty` the result is 0 and at :math:`+\infty` it is :math:`+\infty`, with
    gradients 0 and 1 there; the gradient is finite for every finite ``x``. NaN gives NaN.

    Args:
      x: input of any shape, floating dtype.

    Returns:
      An array of ``x``'s shape and dtype.

    Raises:
      TypeError: if ``x`` is bool or complex (integers promote to the default float).

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxtricks.activations import gelu_sigmoid
      >>> y = gelu_sigmoid(jnp.array([-1.0, 0.0, 1.0, 3.0]))
      >>> [round(float(v), 4) for v in y]
      [-0.1542, 0.0, 0.8458, 2.9819]

    References:
      Dan Hendrycks, Kevin Gimpel, "Gaussian Error Linear Units (GELUs)", 2016,
      arXiv:1606.08415.
      Su Jianlin, "GELU的两个初等函数近似是怎么来的", https://kexue.fm/archives/7309
    """
    return _with_limits(_sigmoid_form, x, "gelu_sigmoid")
