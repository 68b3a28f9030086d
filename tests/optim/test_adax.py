"""Tests of scale_by_adax, adax and adaxw against float64 NumPy references of the paper's form.

The reference keeps the paper's raw sum v_t = (1 + b2) v_{t-1} + b2 g_t^2 and divides by
(1 + b2)^t - 1 (arXiv:2004.09740, Algorithm 1); the library keeps the quotient as a moving
average. The denominator is accumulated by the same recurrence with g^2 = 1, so the reference
shares no formula for c_t with the library.
"""

from decimal import Decimal, localcontext

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxtricks.optim import ScaleByAdaXState, adax, adaxw, scale_by_adax
from jaxtricks.reproduce import post_7387_adax


def paper_adax(grads, b1, b2, eps=1e-8, eps_root=0.0):
    """Float64 AdaX in the paper's raw form: per-step updates, m_t and v_hat_t, each (T, ...)."""
    m = np.zeros(grads.shape[1:])
    v = np.zeros(grads.shape[1:])
    d = 0.0  # (1 + b2)^t - 1 as a sum of weights: no cancellation for tiny b2
    updates, ms, vhats = [], [], []
    for g in grads:
        m = b1 * m + (1 - b1) * g
        v = (1 + b2) * v + b2 * g * g
        d = (1 + b2) * d + b2
        vhat = v / d
        updates.append(m / (np.sqrt(vhat + eps_root) + eps))
        ms.append(m)
        vhats.append(vhat)
    return np.stack(updates), np.stack(ms), np.stack(vhats)


@jax.jit
def run_scale_by_adax(grads, b1, b2, eps_root):
    """Our transform over grads (T, ...) with traced hyperparameters (one compile)."""
    tx = scale_by_adax(b1, b2, eps_root=eps_root)

    def step(state, g):
        u, state = tx.update(g, state)
        return state, (u, state.mu, state.nu)

    return jax.lax.scan(step, tx.init(grads[0]), grads)[1]


@given(
    b1=st.floats(0.0, 0.99),
    b2=st.floats(1e-6, 1.0),
    eps_root=st.sampled_from([0.0, 1e-6]),
    seed=st.integers(0, 2**16),
)
def test_ema_form_equals_paper_form(x64, b1, b2, eps_root, seed):
    rng = np.random.default_rng(seed)
    # Scales drifting over two decades so both old and recent gradients matter.
    grads = rng.standard_normal((200, 5)) * np.exp(np.linspace(-2, 2, 200))[:, None]
    ref_u, ref_m, ref_v = paper_adax(grads, b1, b2, eps_root=eps_root)
    u, m, v = run_scale_by_adax(jnp.asarray(grads), jnp.float64(b1), jnp.float64(b2), eps_root)
    np.testing.assert_allclose(np.asarray(v), ref_v, rtol=1e-12, atol=0)
    np.testing.assert_allclose(np.asarray(m), ref_m, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(np.asarray(u), ref_u, rtol=1e-12, atol=1e-300)
    # The moving average stays within the range of the squared gradients seen so far.
    running_max = np.maximum.accumulate(grads**2, axis=0)
    assert np.all(np.asarray(v) <= running_max * (1 + 1e-12))


def _beta_hat(t, b2, dtype):
    """1 - c_t read off the transform: from nu = 1 with a zero gradient, nu_t = 1 - c_t."""
    tx = scale_by_adax(b2=b2)
    state = ScaleByAdaXState(
        count=jnp.asarray(t - 1, jnp.int32), mu=jnp.zeros((), dtype), nu=jnp.ones((), dtype)
    )
    return float(tx.update(jnp.zeros((), dtype), state)[1].nu)


def _beta_hat_exact(t, b2):
    """1 - b2 / ((1 + b2)^t - 1) in 60-digit decimal arithmetic."""
    with localcontext() as ctx:
        ctx.prec = 60
        b = Decimal(b2)
        return float(1 - b / ((1 + b) ** t - 1))


@given(b2=st.floats(1e-6, 10.0))
def test_beta_hat_starts_at_zero_and_tends_to_one(x64, b2):
    assert _beta_hat(1, b2, jnp.float64) == 0.0
    assert _beta_hat(1, b2, jnp.float32) == 0.0
    # (1 + b2)^t ~ e^60 at the last t: there 1 - beta_hat_t ~ b2 e^-60.
    ts = sorted({2, 10, 1_000, 100_000, int(60 / b2) + 1})
    got = [_beta_hat(t, b2, jnp.float64) for t in ts]
    np.testing.assert_allclose(got, [_beta_hat_exact(t, b2) for t in ts], rtol=1e-12, atol=1e-15)
    assert all(a <= b for a, b in zip(got, got[1:]))
    assert got[-1] == pytest.approx(1.0, abs=1e-15)  # t is the largest, >= 60 / b2


@given(b1=st.floats(0.0, 0.99), seed=st.integers(0, 2**16))
def test_first_step_is_scaled_sign(x64, b1, seed):
    g = np.random.default_rng(seed).standard_normal(6) * 10.0 ** np.arange(-3, 3)
    tx = scale_by_adax(b1=b1)
    u, state = tx.update(jnp.asarray(g), tx.init(jnp.zeros(6)))
    # No bias correction of m and c_1 = 1: the first step is (1 - b1) g / (|g| + eps).
    np.testing.assert_allclose(np.asarray(u), (1 - b1) * g / (np.abs(g) + 1e-8), rtol=1e-13)
    np.testing.assert_allclose(np.asarray(state.nu), g * g, rtol=1e-15)
    assert int(state.count) == 1


def _steps(tx, params, grads, jit=False):
    state = tx.init(params)
    update = jax.jit(tx.update) if jit else tx.update
    outs = []
    for g in grads:
        u, state = update(g, state, params)
        params = optax.apply_updates(params, u)
        outs.append(u)
    return outs, state, params


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_dtypes_kept(dtype):
    params = {"w": jnp.ones((3, 2), dtype), "b": jnp.zeros((2,), dtype)}
    grads = [jax.tree.map(lambda p, s=s: jnp.full_like(p, s), params) for s in (0.5, -1.0, 2.0)]
    for tx in (scale_by_adax(), adax(1e-3), adaxw(1e-3)):
        updates, state, new_params = _steps(tx, params, grads, jit=True)
        leaves = jax.tree.leaves((updates, new_params, state))
        floats = [x for x in leaves if jnp.issubdtype(x.dtype, jnp.floating)]
        assert floats and all(x.dtype == dtype for x in floats), [x.dtype for x in floats]


def test_mu_dtype():
    params = jnp.linspace(-1.0, 1.0, 8, dtype=jnp.float32)
    grads = [jnp.sin(params * (k + 1)) for k in range(5)]
    low, state, _ = _steps(scale_by_adax(mu_dtype=jnp.bfloat16), params, grads, jit=True)
    full, _, _ = _steps(scale_by_adax(), params, grads, jit=True)
    assert state.mu.dtype == jnp.bfloat16
    assert state.nu.dtype == jnp.float32 and low[-1].dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(low[-1]), np.asarray(full[-1]), rtol=2e-2, atol=1e-3)


def test_jit_equals_eager():
    tx = adaxw(1e-2, b2=1e-3, weight_decay=0.1)
    params = {"w": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4), "b": jnp.arange(4.0)}
    grads = [jax.tree.map(lambda p, k=k: jnp.cos(p * (k + 1)), params) for k in range(6)]
    eager, s_eager, _ = _steps(tx, params, grads)
    jitted = jax.jit(tx.update)
    state = tx.init(params)
    for g, want in zip(grads, eager):
        got, state = jitted(g, state, params)
        params = optax.apply_updates(params, got)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8), got, want)
    assert int(state[0].count) == int(s_eager[0].count) == len(grads)


def test_inject_hyperparams():
    params = jnp.linspace(-1.0, 1.0, 5)
    grads = [jnp.sin(params + k) for k in range(4)]
    tx = optax.inject_hyperparams(adax)(learning_rate=0.1, b2=1e-3)
    state = tx.init(params)
    assert float(state.hyperparams["b2"]) == pytest.approx(1e-3)
    want, _, _ = _steps(adax(0.1, b2=1e-3), params, grads)
    update = jax.jit(tx.update)
    for g, w in zip(grads, want):
        u, state = update(g, state)
        np.testing.assert_allclose(np.asarray(u), np.asarray(w), rtol=1e-6)
    # A hyperparameter changed in the state takes effect at the next step.
    state.hyperparams["learning_rate"] = jnp.asarray(0.05)
    u, _ = update(grads[0], state)
    u2, _ = update(
        grads[0], state._replace(hyperparams={**state.hyperparams, "learning_rate": 0.1})
    )
    np.testing.assert_allclose(np.asarray(u), 0.5 * np.asarray(u2), rtol=1e-6)


def test_schedule_learning_rate(x64):
    schedule = optax.linear_schedule(1.0, 0.1, transition_steps=5)
    rng = np.random.default_rng(3)
    grads = rng.standard_normal((7, 4))
    ref_u, _, _ = paper_adax(grads, 0.9, 1e-4)
    tx = adax(schedule)
    state = tx.init(jnp.zeros(4))
    for t, g in enumerate(grads):
        u, state = tx.update(jnp.asarray(g), state)
        # optax evaluates the schedule on its int32 count (in float32): do the same.
        lr = float(schedule(jnp.asarray(t, jnp.int32)))
        np.testing.assert_allclose(np.asarray(u), -lr * ref_u[t], rtol=1e-12)


@given(
    lr=st.floats(1e-4, 1e-1),
    weight_decay=st.floats(0.0, 1.0),
    b2=st.floats(1e-5, 1e-1),
    seed=st.integers(0, 2**16),
)
def test_adaxw_matches_reference_with_mask(x64, lr, weight_decay, b2, seed):
    rng = np.random.default_rng(seed)
    params = {"w": rng.standard_normal((3, 4)), "b": rng.standard_normal(4)}
    mask = {"w": True, "b": False}
    grads = [{k: rng.standard_normal(v.shape) for k, v in params.items()} for _ in range(15)]
    ref = {k: v.copy() for k, v in params.items()}
    for k in ref:
        u, _, _ = paper_adax(np.stack([g[k] for g in grads]), 0.9, b2)
        for t in range(len(grads)):
            ref[k] = ref[k] - lr * (u[t] + (weight_decay * ref[k] if mask[k] else 0.0))
    tx = adaxw(lr, b2=b2, weight_decay=weight_decay, mask=mask)
    _, _, got = _steps(tx, jax.tree.map(jnp.asarray, params), jax.tree.map(jnp.asarray, grads))
    for k in ref:
        np.testing.assert_allclose(np.asarray(got[k]), ref[k], rtol=1e-12, atol=1e-14)


def _parabola(dtype):
    """sum |p - p*|^2 from (-1, 10, 1); p* = (1, -1, 1), times 1 + i for complex dtypes."""
    start = jnp.array([-1.0, 10.0, 1.0], dtype)
    solution = jnp.array([1.0, -1.0, 1.0], dtype) * (1 + 1j if jnp.iscomplexobj(start) else 1)
    return start, solution, lambda p: jnp.sum(jnp.abs(p - solution) ** 2)


def _rosenbrock(dtype):
    """|a - x|^2 + 100 |y - x^2|^2 from 0, minimum (a, a^2); a = 1, or 1 + i for complex."""
    a = 1 + 1j if jnp.issubdtype(dtype, jnp.complexfloating) else 1.0
    solution = jnp.array([a, a**2], dtype)
    loss = lambda p: jnp.abs(a - p[0]) ** 2 + 100 * jnp.abs(p[1] - p[0] ** 2) ** 2  # noqa: E731
    return jnp.zeros(2, dtype), solution, loss


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.complex64])
@pytest.mark.parametrize("problem", [_parabola, _rosenbrock])
@pytest.mark.parametrize(
    "make",
    [lambda: adax(0.1), lambda: adax(1e-2), lambda: adaxw(0.1, weight_decay=1e-4)],
    ids=["adax-0.1", "adax-0.01", "adaxw-0.1"],
)
def test_optax_test_optimization_pattern(make, problem, dtype):
    # The pattern of optax's alias_test.test_optimization (10,000 steps, rtol = atol = 3e-2),
    # with our optimizers. adaxw's default decay 5e-2 moves the Rosenbrock minimum; optax's
    # suite runs adamw at its default 1e-4, so does this.
    start, solution, loss = problem(dtype)
    tx = make()

    @jax.jit
    def solve(p):
        def body(_, carry):
            p, state = carry
            u, state = tx.update(jnp.conj(jax.grad(loss)(p)), state, p)
            return optax.apply_updates(p, u), state

        return jax.lax.fori_loop(0, 10_000, body, (p, tx.init(p)))[0]

    np.testing.assert_allclose(np.asarray(solve(start)), np.asarray(solution), rtol=3e-2, atol=3e-2)


def test_state_keeps_sharding(mesh8):
    sharding = NamedSharding(mesh8, P("data"))
    params = jax.device_put(jnp.linspace(-1.0, 1.0, 32).reshape(16, 2), sharding)
    grads = jax.device_put(jnp.cos(jnp.arange(32.0)).reshape(16, 2), sharding)
    tx = adaxw(1e-3)
    state = tx.init(params)
    update = jax.jit(tx.update, donate_argnums=(1,))
    for _ in range(2):
        updates, state = update(grads, state, params)
    adax_state = state[0]
    for x in (updates, adax_state.mu, adax_state.nu):
        assert x.sharding.is_equivalent_to(sharding, x.ndim), x.sharding


def _run_from(count, nu, steps, b2=1e-4):
    """``steps`` float32 updates of ``scale_by_adax`` starting from ``count`` and ``nu``."""
    tx = scale_by_adax(b2=b2)
    g0 = jnp.asarray([0.3, -2.0, 5.0, 1e-3], jnp.float32)

    def body(i, carry):
        state, _ = carry
        g = g0 * jnp.cos(i.astype(jnp.float32))
        return tx.update(g, state)[::-1]

    state = ScaleByAdaXState(jnp.asarray(count, jnp.int32), jnp.zeros(4, jnp.float32), nu)
    return jax.jit(lambda s: jax.lax.fori_loop(0, steps, body, (s, jnp.zeros(4))))(state)


def test_float32_state_finite_where_raw_form_overflows():
    b2 = 1e-4
    # The paper's raw float32 sum: v_t = (1 + b2)^t - 1 for g = 1 overflows between 880k and 895k.
    with np.errstate(over="ignore"):
        raw = np.float32(1 + b2) ** np.array([880_000, 895_000], np.float32) - np.float32(1)
    assert raw.dtype == np.float32 and np.isfinite(raw[0]) and np.isinf(raw[1])
    nu0 = jnp.asarray([0.05, 4.0, 20.0, 1e-6], jnp.float32)
    for count, steps in ((880_000, 20_000), (10**7 - 10, 20), (2**31 - 3, 5)):
        state, update = _run_from(count, nu0, steps)
        assert int(state.count) == min(count + steps, 2**31 - 1)  # saturates, never wraps
        for x in (state.mu, state.nu, update):
            assert bool(jnp.all(jnp.isfinite(x))), (count, x)
        # c_t is below 1e-38 there: the long-term memory is frozen, as in exact arithmetic.
        np.testing.assert_allclose(np.asarray(state.nu), np.asarray(nu0), rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"b1": 1.0}, r"b1 must be in \[0, 1\), got 1.0"),
        ({"b1": -0.1}, r"b1 must be in \[0, 1\), got -0.1"),
        ({"b1": float("nan")}, r"b1 must not be NaN, got nan"),
        ({"b1": jnp.asarray(1.5)}, r"b1 must be in \[0, 1\), got Array\(1.5"),
        ({"b2": float("inf")}, r"b2 must be finite, got inf"),
        ({"b2": 0.0}, r"b2 must be > 0, got 0.0"),
        ({"b2": -1e-4}, r"b2 must be > 0, got -0.0001"),
        ({"eps": -1e-8}, r"eps must be >= 0, got -1e-08"),
        ({"eps_root": -1.0}, r"eps_root must be >= 0, got -1.0"),
    ],
)
def test_bad_hyperparameters(kwargs, match):
    for factory in (scale_by_adax, lambda **k: adax(1e-3, **k), lambda **k: adaxw(1e-3, **k)):
        with pytest.raises(ValueError, match=match):
            factory(**kwargs)


def test_bad_weight_decay():
    with pytest.raises(ValueError, match=r"weight_decay must be >= 0, got -0.1"):
        adaxw(1e-3, weight_decay=-0.1)
    with pytest.raises(ValueError, match=r"weight_decay must not be NaN"):
        adaxw(1e-3, weight_decay=float("nan"))


def test_array_hyperparameters_checked_when_concrete_passed_when_traced():
    # Concrete arrays (inject_hyperparams outside jit) are read; tracers are never branched on.
    tx = scale_by_adax(b1=jnp.asarray(0.9), b2=jnp.asarray(1e-4))
    u, _ = tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))
    np.testing.assert_allclose(np.asarray(u), 0.1, rtol=1e-5)

    @jax.jit
    def first_update(b1):
        tx = scale_by_adax(b1=b1)
        return tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))[0]

    np.testing.assert_allclose(np.asarray(first_update(0.5)), 0.5, rtol=1e-6)
    # Eagerly, inject_hyperparams hands the factory concrete arrays: they are checked.
    injected = optax.inject_hyperparams(adax)(learning_rate=0.1, b1=1.5)
    with pytest.raises(ValueError, match=r"b1 must be in \[0, 1\)"):
        injected.init(jnp.zeros(2))


def test_eps_zero_on_a_zero_leaf_gives_zero_and_keeps_the_rest():
    params = {"used": jnp.ones(3), "unused": jnp.ones(2)}
    grads = {"used": jnp.array([0.5, -2.0, 0.0]), "unused": jnp.zeros(2)}
    tx = scale_by_adax(eps=0.0)
    state = tx.init(params)
    for _ in range(3):
        u, state = jax.jit(tx.update)(grads, state)
    np.testing.assert_array_equal(np.asarray(u["unused"]), 0.0)
    # Elsewhere the rule is unchanged: m / sqrt(v) with m = (1 - 0.9^3) g and v = g^2.
    g = np.array([0.5, -2.0, 0.0])
    want = np.divide((1 - 0.9**3) * g, np.abs(g), out=np.zeros(3), where=g != 0)
    np.testing.assert_allclose(np.asarray(u["used"]), want, rtol=1e-6)


@pytest.mark.parametrize("mu_dtype", [None, jnp.bfloat16, jnp.float32, jnp.complex64])
def test_explicit_mu_dtype(mu_dtype):
    # optax's test_explicit_dtype for adam, over our mu_dtype: mu takes it, nu stays real.
    params = jnp.array([0.5, -1.0], jnp.float32)
    tx = scale_by_adax(mu_dtype=mu_dtype)
    state = tx.init(params)
    assert state.mu.dtype == (jnp.float32 if mu_dtype is None else mu_dtype)
    assert state.nu.dtype == jnp.float32
    u, state = jax.jit(tx.update)(jnp.array([1.0, -3.0]), state)
    assert u.dtype == jnp.float32 and state.mu.dtype == (mu_dtype or jnp.float32)
    np.testing.assert_allclose(np.asarray(u), [0.1, -0.1], rtol=1e-2)


def _complex_run(tx, z0, target, steps):
    """``steps`` jitted updates on sum |z - target|^2, fed conj(grad) as optax expects."""
    loss = lambda z: jnp.sum(jnp.abs(z - target) ** 2)  # noqa: E731

    @jax.jit
    def step(z, state):
        g = jnp.conj(jax.grad(loss)(z))
        u, state = tx.update(g, state, z)
        return optax.apply_updates(z, u), state

    state = tx.init(z0)
    for _ in range(steps):
        z0, state = step(z0, state)
    return z0, state


def test_complex_second_moment_is_abs_squared(x64):
    rng = np.random.default_rng(0)
    grads = rng.standard_normal((30, 3)) + 1j * rng.standard_normal((30, 3))
    tx = scale_by_adax(b2=1e-2)
    state = tx.init(jnp.zeros(3, jnp.complex128))
    for g in grads:
        u, state = tx.update(jnp.asarray(g), state)
    assert state.nu.dtype == jnp.float64 and state.mu.dtype == jnp.complex128
    # The paper's raw form with |g|^2 (optax's convention for complex Adam), in float64.
    ref_u, ref_m, ref_v = paper_adax(np.abs(grads), 0.9, 1e-2)
    ref_m = paper_adax(grads.real, 0.9, 1e-2)[1] + 1j * paper_adax(grads.imag, 0.9, 1e-2)[1]
    np.testing.assert_allclose(np.asarray(state.nu), ref_v[-1], rtol=1e-12)
    np.testing.assert_allclose(np.asarray(state.mu), ref_m[-1], rtol=1e-12)
    np.testing.assert_allclose(np.asarray(u), ref_m[-1] / (np.sqrt(ref_v[-1]) + 1e-8), rtol=1e-12)


@pytest.mark.parametrize("make", [lambda: adax(0.1), lambda: adaxw(0.1, weight_decay=1e-3)])
def test_complex_problem_solved_like_its_real_coordinates(make):
    # The complex problem and the same problem in real coordinates (x, y) reach one solution.
    target = jnp.array([1 + 1j, -1 + 0.5j, 0.25 - 2j], jnp.complex64)
    z, _ = _complex_run(make(), jnp.zeros(3, jnp.complex64), target, 400)
    real_target = jnp.concatenate([target.real, target.imag])
    xy, _ = _complex_run(make(), jnp.zeros(6, jnp.float32), real_target, 400)
    np.testing.assert_allclose(np.asarray(z), np.asarray(target), atol=3e-2)
    np.testing.assert_allclose(np.asarray(z), np.asarray(xy[:3] + 1j * xy[3:]), atol=3e-2, rtol=0)


@pytest.mark.parametrize("fn", [post_7387_adax.ema_form_equals_paper, post_7387_adax.beta_hat])
def test_cheap_claims_hold(fn):
    m = fn()
    assert m.ok, m.measured
