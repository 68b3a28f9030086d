"""Discrete optimal transport between two weighted point sets: entropic (Sinkhorn) and exact.

Private helpers of :mod:`jaxtricks.distances`. Every function here works on one problem:
weights ``a`` ``(n,)`` and ``b`` ``(m,)`` (zeros carry no mass and are treated as absent), a
cost matrix ``c`` ``(n, m)`` and the boolean validity masks of the rows and columns.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# Over-relaxation factors of the potential updates (1 is plain Sinkhorn; Thibault et al. 2017,
# arXiv:1711.01851): values in (1, 2) accelerate convergence at small epsilon. 1.8 is the
# fastest stable value once epsilon has reached its target; while epsilon still decays, 1.8
# can lock into a wrong plan on clustered words (sentences against themselves), so the decay
# phase uses 1.5.
_OMEGA_DECAY, _OMEGA_TARGET = 1.5, 1.8
# Default target epsilon as a fraction of the spread (max - min) of the valid costs.
_RELATIVE_EPSILON = 1e-3


def sinkhorn_cost(
    a: jax.Array,
    b: jax.Array,
    c: jax.Array,
    x_valid: jax.Array,
    y_valid: jax.Array,
    epsilon: float | jax.Array | None,
    num_iters: int,
) -> jax.Array:
    """Transport cost <P, C> of the log-domain Sinkhorn plan, with epsilon-scaling.

    The cost is shifted by its minimum (which moves the value by exactly that constant, the
    marginals being fixed) and epsilon decays geometrically from the cost spread to the target
    over the first half of the ``num_iters`` iterations, then stays at the target. The last
    update is a plain (not over-relaxed) column update, so the plan's column sums equal ``b``.
    """
    # Zero masses (WRD's zero vectors) are absent words: log 0 must not reach the potentials.
    x_valid, y_valid = x_valid & (a > 0), y_valid & (b > 0)
    both = x_valid[:, None] & y_valid[None, :]
    # No valid pair (a traced all-False mask): finite placeholders; the plan is then all 0.
    some = jnp.any(both)
    lo = jnp.where(some, jnp.min(jnp.where(both, c, jnp.inf)), 0)
    hi = jnp.where(some, jnp.max(jnp.where(both, c, -jnp.inf)), 0)
    spread = jnp.maximum(hi - lo, jnp.finfo(c.dtype).eps)
    # Padding gets a huge finite cost instead of -inf logits: no masking inside the loop, and
    # no inf * 0 in the backward pass. Its mass exp(-1e6 * spread / eps) underflows to 0.
    reduced = jnp.where(both, c - lo, 1e6 * spread)
    target = _RELATIVE_EPSILON * spread if epsilon is None else jnp.asarray(epsilon, c.dtype)
    start = jnp.maximum(spread, target)
    decay_steps = max(num_iters // 2, 1)
    log_a = jnp.where(x_valid, jnp.log(jnp.where(x_valid, a, 1.0)), 0.0)
    log_b = jnp.where(y_valid, jnp.log(jnp.where(y_valid, b, 1.0)), 0.0)

    def lse(z, axis):
        # log-sum-exp with a constant (stop_gradient) shift; -inf never occurs here.
        shift = jax.lax.stop_gradient(jnp.max(z, axis=axis, keepdims=True))
        return jnp.log(jnp.sum(jnp.exp(z - shift), axis=axis)) + jnp.squeeze(shift, axis)

    def update_f(g, eps):
        return jnp.where(x_valid, eps * (log_a - lse((g[None, :] - reduced) / eps, 1)), 0.0)

    def update_g(f, eps):
        return jnp.where(y_valid, eps * (log_b - lse((f[:, None] - reduced) / eps, 0)), 0.0)

    def body(k, fg):
        f, g = fg
        frac = jnp.minimum((k + 1) / decay_steps, 1.0)
        eps = jnp.maximum(start * (target / start) ** frac, target)
        omega = jnp.where(k < decay_steps, _OMEGA_DECAY, _OMEGA_TARGET)
        f = (1 - omega) * f + omega * update_f(g, eps)
        g = (1 - omega) * g + omega * update_g(f, eps)
        return f, g

    zeros_f, zeros_g = jnp.zeros_like(a), jnp.zeros_like(b)
    f, g = jax.lax.fori_loop(0, num_iters, body, (zeros_f, zeros_g))
    g = update_g(f, target)
    plan = jnp.where(both, jnp.exp((f[:, None] + g[None, :] - reduced) / target), 0.0)
    return jnp.sum(plan * jnp.where(both, c, 0.0))


def _solve_lp(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> float:
    """The exact transport cost of one problem by linear programming (HiGHS), in float64."""
    from scipy.optimize import linprog  # lazily: only the exact method needs scipy

    rows, cols = np.flatnonzero(a > 0), np.flatnonzero(b > 0)
    if rows.size == 0 or cols.size == 0:
        return 0.0  # no mass to move (a traced all-False mask)
    a, b, c = a[rows], b[cols] * (a[rows].sum() / b[cols].sum()), c[np.ix_(rows, cols)]
    n, m = c.shape
    equalities = np.vstack(
        [np.kron(np.eye(n), np.ones((1, m))), np.kron(np.ones((1, n)), np.eye(m))]
    )
    result = linprog(
        c.ravel(), A_eq=equalities, b_eq=np.concatenate([a, b]), bounds=(0, None), method="highs"
    )
    if result.status != 0:
        raise RuntimeError(f"The exact transport LP failed: {result.message}")
    return float(result.fun)


def _exact_host(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    a, b, c = (np.asarray(v, np.float64) for v in (a, b, c))
    out = np.empty(a.shape[:-1])
    for index in np.ndindex(out.shape):
        out[index] = _solve_lp(a[index], b[index], c[index])
    return out


@jax.custom_jvp
def exact_cost(a: jax.Array, b: jax.Array, c: jax.Array) -> jax.Array:
    """The exact transport cost via a host callback (batched problems are solved in a loop)."""
    shape = jax.ShapeDtypeStruct(a.shape[:-1], c.dtype)

    def host(a, b, c):
        return _exact_host(a, b, c).astype(c.dtype)

    return jax.pure_callback(host, shape, a, b, c, vmap_method="broadcast_all")


@exact_cost.defjvp
def _exact_cost_jvp(primals, tangents):
    raise ValueError(
        "method='exact' is not differentiable (a host LP solver); use method='sinkhorn' to "
        "differentiate, or wrap the inputs in jax.lax.stop_gradient."
    )
