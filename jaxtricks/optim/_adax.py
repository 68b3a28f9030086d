"""AdaX: Adam with an exponentially growing long-term memory of squared gradients.

The paper's second moment is a weighted *sum* that grows like ``(1 + b2)^t`` and is divided by
``(1 + b2)^t - 1`` only when used. In float32 that sum overflows once ``(1 + b2)^t`` passes
``3.4e38``, i.e. near ``t = 887k`` for ``b2 = 1e-4``. Here the state holds the quotient, the
bias-corrected second moment, which obeys an ordinary moving average with a step-dependent
rate ``c_t``; it stays bounded by the largest squared gradient seen, at every step count.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import tree_util as jtu

from jaxtricks._src import checks

from . import _validate


class ScaleByAdaXState(NamedTuple):
    """State of :func:`scale_by_adax`.

    Attributes:
      count: int32 scalar, the number of updates applied (saturates at the int32 maximum).
      mu: first moment :math:`m_t` (no bias correction), like the params, in ``mu_dtype``.
      nu: bias-corrected second moment :math:`\\hat v_t` in its moving-average form, like the
        params in their real dtype (float32 for complex64, as :math:`|g|^2` is real); never
        the raw sum :math:`v_t` that grows like :math:`(1+\\beta_2)^t`.
    """

    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates


def _check_hyperparams(b1: Any, b2: Any, eps: Any, eps_root: Any) -> None:
    # Concrete values only (numbers and concrete arrays, e.g. from optax.inject_hyperparams
    # outside jit); tracers pass and are never branched on.
    checks.number("b1", b1, low=0, high=1, high_open=True)
    checks.number("b2", b2, low=0, low_open=True)
    checks.number("eps", eps, low=0)
    checks.number("eps_root", eps_root, low=0)


def _real_dtype(dtype: Any) -> jnp.dtype:
    """The real counterpart of an inexact dtype (float32 for complex64)."""
    return jnp.finfo(dtype).dtype


def _check_params(
    params: Any, mu_dtype: jnp.dtype | None, where: str, name: str = "params"
) -> None:
    _validate.inexact_leaves(name, params, where=where)
    if mu_dtype is None or jnp.issubdtype(mu_dtype, jnp.complexfloating):
        return
    for path, p in jtu.tree_leaves_with_path(params):
        if jnp.issubdtype(jnp.result_type(p), jnp.complexfloating):
            raise TypeError(
                f"{where}: mu_dtype must be complex for complex {name}, got {mu_dtype.name} for "
                f"{name}{jtu.keystr(path)} of dtype {jnp.result_type(p).name} (a real first "
                "moment would drop the imaginary part)."
            )


def scale_by_adax(
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 1e-4,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    *,
    mu_dtype: jax.typing.DTypeLike | None = None,
) -> optax.GradientTransformation:
    r"""Rescales updates by the AdaX rule (without the learning rate).

    With :math:`g_t` the incoming update and :math:`t` the 1-based step,

    .. math::

        m_t &= \beta_1 m_{t-1} + (1 - \beta_1)\, g_t \\
        c_t &= \frac{\beta_2}{(1 + \beta_2)^t - 1}
             = \frac{\beta_2}{\operatorname{expm1}(t \log(1 + \beta_2))} \\
        \hat v_t &= (1 - c_t)\, \hat v_{t-1} + c_t\, g_t^2 \\
        u_t &= \frac{m_t}{\sqrt{\hat v_t + \epsilon_{root}} + \epsilon}

    The paper keeps the raw sum :math:`v_t = (1+\beta_2) v_{t-1} + \beta_2 g_t^2` and divides
    by :math:`(1+\beta_2)^t - 1` when it uses it; the two forms are equal algebraically. The raw
    sum overflows float32 near :math:`t \approx 887\mathrm{k}` for :math:`\beta_2 = 10^{-4}`;
    the form kept here stays bounded by :math:`\max_s g_s^2`. :math:`c_1 = 1`, so the decay
    :math:`\hat\beta_t = 1 - c_t` starts at 0 (no zero-initialisation bias, no correction
    needed) and rises to 1: the memory gets longer and longer, unlike Adam's fixed
    :math:`\beta_2`. In float32, :math:`c_t` underflows to 0 past :math:`t \approx 887\mathrm{k}`
    (its true value is below :math:`10^{-42}` there), freezing :math:`\hat v_t`, which is the
    limit of the exact rule. Note that :math:`\beta_2` here is small (:math:`10^{-4}`) and
    plays the opposite role to Adam's :math:`\beta_2`; :math:`m_t` has no bias correction.

    Epsilon convention: :math:`\sqrt{\hat v_t + \epsilon_{root}} + \epsilon` (optax's Adam
    convention). The blog post writes :math:`\sqrt{\hat v_t + \epsilon}`; set ``eps=0`` and
    ``eps_root`` to the post's :math:`\epsilon` to get its rule. The authors' PyTorch code adds
    its epsilon (1e-12) to :math:`\sqrt{v_t}` of the raw sum, i.e. a shrinking
    :math:`\epsilon / \sqrt{(1+\beta_2)^t - 1}` on the :math:`\hat v_t` scale; with such tiny
    values the three conventions agree except on near-zero gradients. :func:`adax` lists the
    authors' defaults in full and the chain that reproduces their optimizer.

    Degenerate values: where :math:`m_t = 0` the update is 0, also when the denominator is 0
    (``eps = eps_root = 0`` on a leaf whose gradients have all been 0), instead of 0/0. With
    ``eps = eps_root = 0``, :math:`m_t \ne 0` over :math:`\hat v_t = 0` gives ±inf: that
    happens only if :math:`g^2` underflows (:math:`|g| \lesssim 10^{-19}` in float32) or if
    the first nonzero gradient comes after :math:`c_t` has underflowed; keep ``eps > 0`` (the
    default) where gradients can be that small. At the other end :math:`g^2` overflows past
    :math:`|g| \approx 1.8 \cdot 10^{19}` (float32, bf16 included): :math:`\hat v_t` becomes
    inf and the update 0, as in ``optax.adam``. With ``eps = 0`` the update is otherwise
    independent of the gradients' scale. A ``b2`` too large for the float dtype gives its
    limit (:math:`c_1 = 1`, :math:`c_t = 0` after), not NaN.

    Complex parameters follow optax's convention: :math:`g_t^2` is :math:`|g_t|^2 =
    \operatorname{Re}(\bar g_t g_t)`, so :math:`\hat v_t` is real (stored in the params'
    real dtype, float32 for complex64) and :math:`m_t` is complex. Feed the conjugate of
    ``jax.grad``'s output, as for ``optax.adam``.

    Args:
      b1: :math:`\beta_1`, decay of the first moment, in [0, 1).
      b2: :math:`\beta_2 > 0`, growth rate of the long-term memory (paper default 1e-4).
      eps: added to the denominator outside the square root, >= 0.
      eps_root: added inside the square root, >= 0.
      mu_dtype: a floating or complex dtype for the first moment (e.g. ``jnp.bfloat16`` to
        save memory); ``None`` keeps the params' dtype. Complex params need a complex
        ``mu_dtype`` (or ``None``). The second moment always has the params' real dtype.

    Returns:
      An ``optax.GradientTransformation``. ``init(params)`` gives a
      :class:`ScaleByAdaXState` whose ``mu`` and ``nu`` have the params' tree, shapes and
      sharding; ``update(updates, state, params=None)`` returns updates with the incoming
      updates' tree, shapes and dtypes.

    Raises:
      ValueError: if a hyperparameter given as a number or a concrete array is NaN, infinite
        or out of range (``b1`` outside [0, 1), ``b2 <= 0``, ``eps < 0`` or ``eps_root < 0``),
        or if ``update`` gets updates whose tree or shapes differ from the params given to
        ``init``. Traced hyperparameters (``optax.inject_hyperparams`` under ``jit``) are not
        checked: out-of-range values give what the formulas give (NaN for NaN).
      TypeError: if ``mu_dtype`` is not a floating or complex dtype, is real for complex
        params, or if a leaf of the params or updates is not floating or complex.

    Examples:
      >>> import jax.numpy as jnp
      >>> import optax
      >>> from jaxtricks.optim import scale_by_adax
      >>> tx = scale_by_adax()
      >>> params = jnp.array([1.0, -2.0, 3.0])
      >>> state = tx.init(params)
      >>> updates, state = tx.update(jnp.array([0.5, -4.0, 0.0]), state)
      >>> print(jnp.round(updates, 6))  # first step: (1 - b1) g / (|g| + eps)
      [ 0.1 -0.1  0. ]
      >>> print(state.nu)  # c_1 = 1: the second moment starts at g^2, not at a biased fraction
      [ 0.25 16.    0.  ]

    References:
      Wenjie Li, Zhaoyang Zhang, Xinjiang Wang, Ping Luo, "AdaX: Adaptive Gradient Descent
      with Exponential Long Term Memory", 2020, arXiv:2004.09740.
      Su Jianlin, "AdaX优化器浅析", https://kexue.fm/archives/7387
    """
    _check_hyperparams(b1, b2, eps, eps_root)
    mu_dtype = checks.float_dtype("mu_dtype", mu_dtype)
    mu_dtype = None if mu_dtype is None else jax.dtypes.canonicalize_dtype(mu_dtype)

    def init_fn(params: optax.Params) -> ScaleByAdaXState:
        _check_params(params, mu_dtype, "scale_by_adax.init")
        return ScaleByAdaXState(
            count=jnp.zeros([], jnp.int32),
            mu=optax.tree.zeros_like(params, dtype=mu_dtype),
            # The second moment of a complex leaf is |g|^2: real, stored in the real dtype.
            nu=jax.tree.map(lambda p: jnp.zeros_like(p, _real_dtype(jnp.result_type(p))), params),
        )

    def update_fn(
        updates: optax.Updates, state: ScaleByAdaXState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, ScaleByAdaXState]:
        del params
        where = "scale_by_adax.update"
        _validate.tree_like(
            "updates", updates, state.mu, what="the params given to init", where=where
        )
        _check_params(updates, mu_dtype, where, "updates")
        count = optax.safe_increment(state.count)
        # One scalar per step, in the widest enabled float (float64 under x64): expm1/log1p
        # keep c_t accurate for tiny b2, where (1 + b2)^t - 1 would cancel. The numerator b2
        # is written expm1(log1p(b2)) (equal up to rounding) so that c_1 is exactly 1.
        wide = jnp.result_type(float)
        b2_value = checks.concrete(b2)
        if b2_value is not None:  # clip before the cast: a huge float64 b2 must not become inf
            b2_value = np.minimum(b2_value.astype(np.float64), np.finfo(wide).max)
        # Capping log(1 + b2) keeps expm1 finite (inf/inf would be NaN); past the cap c_t,
        # t >= 2, is below the smallest normal either way.
        log_growth = jnp.minimum(
            jnp.log1p(jnp.asarray(b2 if b2_value is None else b2_value, wide)),
            float(np.log(np.finfo(wide).max)) - 1.0,
        )
        rate = jnp.expm1(log_growth) / jnp.expm1(count.astype(wide) * log_growth)
        beta_hat = 1 - rate

        def step(g, m, v):
            # Arithmetic in at least float32 (bf16 params), results cast back to storage dtypes.
            dt = jnp.promote_types(g.dtype, jnp.float32)
            rdt = _real_dtype(dt)
            c, keep = rate.astype(rdt), beta_hat.astype(rdt)
            b1_ = jnp.asarray(b1, rdt)
            gw = g.astype(dt)
            # A complex mu_dtype on real params holds real values: drop the zero imaginary part.
            m_in = jnp.real(m) if jnp.isrealobj(gw) and jnp.iscomplexobj(m) else m
            m_new = b1_ * m_in.astype(dt) + (1 - b1_) * gw
            g_sq = gw * gw if jnp.isrealobj(gw) else (jnp.conj(gw) * gw).real  # |g|^2
            v_new = keep * v.astype(rdt) + c * g_sq
            denom = jnp.sqrt(v_new + jnp.asarray(eps_root, rdt)) + jnp.asarray(eps, rdt)
            # With eps = eps_root = 0 a leaf whose gradients were all 0 has m = v = 0: give 0,
            # not 0/0. Where m = 0 and denom > 0 the quotient is 0 anyway.
            u = m_new / jnp.where(m_new == 0, jnp.ones_like(denom), denom)
            return u.astype(g.dtype), m_new.astype(m.dtype), v_new.astype(v.dtype)

        # One pass over the leaves computes update, mu and nu together.
        leaves, treedef = jax.tree.flatten(updates)
        out = [
            step(g, m, v)
            for g, m, v in zip(
                leaves, treedef.flatten_up_to(state.mu), treedef.flatten_up_to(state.nu)
            )
        ]
        new_updates, mu, nu = (treedef.unflatten([o[i] for o in out]) for i in range(3))
        return new_updates, ScaleByAdaXState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)


def adax(
    learning_rate: optax.ScalarOrSchedule,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 1e-4,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    *,
    mu_dtype: jax.typing.DTypeLike | None = None,
) -> optax.GradientTransformation:
    r"""The AdaX optimizer: :func:`scale_by_adax` followed by the learning rate.

    .. math::

        \theta_t = \theta_{t-1} - \eta_t\,
            \frac{m_t}{\sqrt{\hat v_t + \epsilon_{root}} + \epsilon}

    with :math:`m_t`, :math:`\hat v_t` as in :func:`scale_by_adax` (epsilon sits outside the
    square root, ``eps_root`` inside). Adam's usual 1e-3 is a fine start for the learning rate:
    :math:`m_t` is not bias corrected, so the first steps are :math:`1 - \beta_1` times Adam's.

    The authors' defaults (the ``AdaX`` class of their official PyTorch code; the paper uses
    the same :math:`\beta`'s) are: learning rate 1.5e-3, :math:`\beta_1 = 0.9`,
    :math:`\beta_2 = 10^{-4}`, :math:`\epsilon = 10^{-12}` added to :math:`\sqrt{v_t}` of
    the raw sum (about :math:`10^{-10}` at :math:`t = 1` and shrinking on the
    :math:`\hat v_t` scale), and an L2 weight decay of 5e-4 **added to the gradient** before
    both moments (coupled, unlike :func:`adaxw`). ``adax(1.5e-3)`` alone has no such decay
    and ``eps = 1e-8``; the authors' optimizer is the chain

    .. code-block:: python

        optax.chain(
            optax.add_decayed_weights(5e-4),  # g + 5e-4 * theta, before the moments
            scale_by_adax(b1=0.9, b2=1e-4, eps=0.0),
            optax.scale_by_learning_rate(1.5e-3),
        )

    (``eps=0`` because their epsilon is negligible on the :math:`\hat v_t` scale; the second
    example checks the chain against their update rule written in NumPy).

    Args:
      learning_rate: a scalar or an ``optax`` schedule (step -> learning rate); finite.
      b1: :math:`\beta_1` in [0, 1).
      b2: :math:`\beta_2 > 0` (paper default 1e-4).
      eps: added outside the square root, >= 0.
      eps_root: added inside the square root, >= 0.
      mu_dtype: dtype of the first moment; ``None`` keeps the params' dtype.

    Returns:
      An ``optax.GradientTransformation`` (a chain); its updates are to be added to the params
      (``optax.apply_updates``).

    Raises:
      ValueError: as :func:`scale_by_adax`, or if a numeric ``learning_rate`` is NaN or
        infinite.
      TypeError: as :func:`scale_by_adax`, or if ``learning_rate`` is neither a number nor a
        schedule.

    Examples:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> import optax
      >>> from jaxtricks.optim import adax
      >>> loss = lambda p: jnp.sum((p - 3.0) ** 2)
      >>> tx = adax(learning_rate=0.1)
      >>> params = jnp.zeros(2)
      >>> state = tx.init(params)
      >>> for _ in range(200):
      ...     updates, state = tx.update(jax.grad(loss)(params), state)
      ...     params = optax.apply_updates(params, updates)
      >>> print(jnp.round(params, 1))
      [3. 3.]

      The authors' AdaX (defaults above) as an optax chain, against their rule in NumPy:

      >>> import numpy as np
      >>> from jaxtricks.optim import scale_by_adax
      >>> tx = optax.chain(
      ...     optax.add_decayed_weights(5e-4),
      ...     scale_by_adax(b1=0.9, b2=1e-4, eps=0.0),
      ...     optax.scale_by_learning_rate(1.5e-3),
      ... )
      >>> rng = np.random.default_rng(0)
      >>> p = rng.standard_normal(4)
      >>> theta, state = jnp.asarray(p, jnp.float32), tx.init(jnp.asarray(p, jnp.float32))
      >>> m, v = np.zeros(4), np.zeros(4)
      >>> for t in range(1, 51):
      ...     g = np.sin(t * np.arange(1.0, 5.0)) + 5e-4 * p  # L2 decay joins the gradient
      ...     m = 0.9 * m + 0.1 * g
      ...     v = (1 + 1e-4) * v + 1e-4 * g**2  # the raw sum
      ...     step = 1.5e-3 * np.sqrt((1 + 1e-4) ** t - 1)
      ...     p = p - step * m / (np.sqrt(v) + 1e-12)
      ...     g_ours = jnp.asarray(np.sin(t * np.arange(1.0, 5.0)), jnp.float32)
      ...     updates, state = tx.update(g_ours, state, theta)
      ...     theta = optax.apply_updates(theta, updates)
      >>> bool(np.allclose(theta, p, rtol=0, atol=1e-6))
      True

    References:
      Wenjie Li, Zhaoyang Zhang, Xinjiang Wang, Ping Luo, "AdaX: Adaptive Gradient Descent
      with Exponential Long Term Memory", 2020, arXiv:2004.09740 (official PyTorch code:
      github.com/switchablenorms/adax).
      Su Jianlin, "AdaX优化器浅析", https://kexue.fm/archives/7387
    """
    checks.number_or_schedule("learning_rate", learning_rate)
    return optax.chain(
        scale_by_adax(b1, b2, eps, eps_root, mu_dtype=mu_dtype),
        optax.scale_by_learning_rate(learning_rate),
    )


def adaxw(
    learning_rate: optax.ScalarOrSchedule,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 1e-4,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    weight_decay: jax.typing.ArrayLike = 5e-2,
    *,
    mu_dtype: jax.typing.DTypeLike | None = None,
    mask: Any = None,
) -> optax.GradientTransformation:
    r"""AdaX with decoupled weight decay (AdaXW), like AdamW is to Adam.

    .. math::

        \theta_t = \theta_{t-1} - \eta_t \left(
            \frac{m_t}{\sqrt{\hat v_t + \epsilon_{root}} + \epsilon}
            + \lambda\, \theta_{t-1} \right)

    with :math:`m_t`, :math:`\hat v_t` as in :func:`scale_by_adax` and :math:`\lambda` =
    ``weight_decay``; the decay is scaled by the learning rate (schedule included), not by the
    adaptive denominator. The authors' defaults (the ``AdaXW`` class of their official
    PyTorch code, the variant their README recommends) are lr 5e-3, :math:`\beta_1 = 0.9`,
    :math:`\beta_2 = 10^{-4}`, weight decay 5e-2 and :math:`\epsilon = 10^{-12}` on the raw
    sum's :math:`\sqrt{v_t}` (see :func:`adax`); ``adaxw(5e-3, eps=0.0)`` is their rule.

    Args:
      learning_rate: a scalar or an ``optax`` schedule (step -> learning rate); finite.
      b1: :math:`\beta_1` in [0, 1).
      b2: :math:`\beta_2 > 0` (paper default 1e-4).
      eps: added outside the square root, >= 0.
      eps_root: added inside the square root, >= 0.
      weight_decay: :math:`\lambda`, finite and >= 0.
      mu_dtype: dtype of the first moment; ``None`` keeps the params' dtype.
      mask: a pytree of bools with the params' structure, or a prefix of it (one bool for a
        subtree), or a function params -> such a tree, selecting the leaves that decay, as in
        ``optax.add_decayed_weights``; ``None`` decays all of them. It is checked against the
        params at ``init``.

    Returns:
      An ``optax.GradientTransformation`` whose ``update`` needs ``params``; its state is the
      state of ``optax.chain(scale_by_adax(...), optax.add_decayed_weights(...),
      optax.scale_by_learning_rate(...))``.

    Raises:
      ValueError: as :func:`adax`; if ``weight_decay`` is negative, NaN or infinite (numbers
        and concrete arrays; a traced value is used as given); at ``init``, if ``mask`` (or
        what it returns) does not have the params' tree structure or a prefix of it.
      TypeError: as :func:`adax`, or (at ``init``) if the leaves of ``mask`` are not bools.

    Examples:
      >>> import jax.numpy as jnp
      >>> import optax
      >>> from jaxtricks.optim import adaxw
      >>> params = {"w": jnp.array([2.0, -2.0]), "b": jnp.array([2.0])}
      >>> tx = adaxw(learning_rate=0.1, weight_decay=0.5, mask={"w": True, "b": False})
      >>> state = tx.init(params)
      >>> zero = {"w": jnp.zeros(2), "b": jnp.zeros(1)}
      >>> updates, state = tx.update(zero, state, params)
      >>> params = optax.apply_updates(params, updates)
      >>> print(params["w"], params["b"])  # p - lr * wd * p where masked in
      [ 1.9 -1.9] [2.]

    References:
      Wenjie Li, Zhaoyang Zhang, Xinjiang Wang, Ping Luo, "AdaX: Adaptive Gradient Descent
      with Exponential Long Term Memory", 2020, arXiv:2004.09740 (official PyTorch code:
      github.com/switchablenorms/adax).
      Su Jianlin, "AdaX优化器浅析", https://kexue.fm/archives/7387
    """
    checks.number_or_schedule("learning_rate", learning_rate)
    checks.number("weight_decay", weight_decay, low=0)
    tx = optax.chain(
        scale_by_adax(b1, b2, eps, eps_root, mu_dtype=mu_dtype),
        optax.add_decayed_weights(weight_decay, mask),
        optax.scale_by_learning_rate(learning_rate),
    )

    def init_fn(params: optax.Params) -> optax.OptState:
        # optax would only fail inside add_decayed_weights' update, with a tree_map error.
        if mask is not None:
            tree = mask(params) if callable(mask) else mask
            _validate.mask_tree("mask", tree, params, prefix=True, where="adaxw.init")
        return tx.init(params)

    return optax.GradientTransformationExtraArgs(init_fn, tx.update)
