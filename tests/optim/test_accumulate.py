"""Tests for accumulate and microbatch_value_and_grad (https://kexue.fm/archives/6794)."""

import functools

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxtricks.optim import AccumulateState, accumulate, microbatch_value_and_grad

K, CYCLES, T, D = 3, 3, 5, 4  # micro-batches per step, steps, rows per micro-batch, features
LR, B1, B2, EPS = 0.05, 0.9, 0.999, 1e-8


# --------------------------------------------------------------------------- references


def _np_inner(name):
    """Float64 NumPy SGD / Adam on one gradient: (init, step(g, state) -> (update, state))."""
    if name == "sgd":
        return (lambda w: ()), (lambda g, s: (-LR * g, s))

    def step(g, s):
        t, m, v = s
        t, m, v = t + 1, B1 * m + (1 - B1) * g, B2 * v + (1 - B2) * g * g
        m_hat, v_hat = m / (1 - B1**t), v / (1 - B2**t)
        return -LR * m_hat / (np.sqrt(v_hat) + EPS), (t, m, v)

    return (lambda w: (0, np.zeros_like(w), np.zeros_like(w))), step


def _optax_inner(name):
    return optax.sgd(LR) if name == "sgd" else optax.adam(LR, B1, B2, EPS)


def _token_mean_loss(w, x, y, mask):
    """Mean of ½(x·w − y)² over the valid rows of one micro-batch."""
    r = x @ w - y
    return 0.5 * jnp.sum(mask * r * r) / jnp.sum(mask)


@functools.cache
def _jitted_micro_step(name):
    tx = accumulate(_optax_inner(name), K)

    @jax.jit
    def step(w, state, x, y, mask):
        g = jax.grad(_token_mean_loss)(w, x, y, mask)
        u, state = tx.update(g, state, w, weight=jnp.sum(mask))
        return optax.apply_updates(w, u), u, state

    return tx, step


def _masks(counts):
    return (np.arange(T)[None, :] < np.asarray(counts)[:, None]).astype(np.float64)


# --------------------------------------------------------------------------- accumulate


@pytest.mark.parametrize("name", ["sgd", "adam"])
@given(
    data=hnp.arrays(np.float64, (CYCLES, K, T, D + 1), elements=st.floats(-2, 2)),
    counts=st.lists(st.integers(1, T), min_size=CYCLES * K, max_size=CYCLES * K),
)
def test_unequal_weights_equal_large_batch_step(x64, name, data, counts):
    tx, step = _jitted_micro_step(name)
    masks = _masks(counts).reshape(CYCLES, K, T)
    w = jnp.full((D,), 0.3)
    state = tx.init(w)
    w_ref = np.full((D,), 0.3)
    init_ref, step_ref = _np_inner(name)
    s_ref = init_ref(w_ref)
    for c in range(CYCLES):
        # The large batch: every valid row of the cycle's k micro-batches, in float64 NumPy.
        valid = masks[c].astype(bool)
        xs, ys = data[c, ..., :D][valid], data[c, ..., D][valid]
        g_ref = xs.T @ (xs @ w_ref - ys) / len(ys)
        u_ref, s_ref = step_ref(g_ref, s_ref)
        w_ref = w_ref + u_ref
        for i in range(K):
            w_before = w
            w, u, state = step(w, state, data[c, i, :, :D], data[c, i, :, D], masks[c, i])
            if i < K - 1:
                assert np.all(np.asarray(u) == 0.0)
                np.testing.assert_array_equal(w, w_before)
        np.testing.assert_allclose(u, u_ref, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(w, w_ref, rtol=1e-10, atol=1e-13)


def _counting_inner(calls):
    """Identity inner whose update records a host call each time it actually runs."""

    def update(updates, state, params=None):
        jax.debug.callback(lambda: calls.append(1))
        return updates, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


@pytest.mark.parametrize("jit", [False, True])
def test_inner_does_not_run_on_non_emitting_calls(jit):
    calls, peer_calls = [], []
    tx = accumulate(_counting_inner(calls), 4)
    peer = optax.MultiSteps(_counting_inner(peer_calls), 4)
    params = jnp.ones(3)
    state, peer_state = tx.init(params), peer.init(params)
    update = jax.jit(tx.update) if jit else tx.update
    peer_update = jax.jit(peer.update) if jit else peer.update
    for i in range(8):
        _, state = update(jnp.ones(3), state, params)
        jax.effects_barrier()
        assert len(calls) == (i + 1) // 4
    # The peer runs (and discards) its inner update on every micro-step.
    for _ in range(3):
        _, peer_state = peer_update(jnp.ones(3), peer_state, params)
    jax.effects_barrier()
    assert len(peer_calls) == 3


def test_inner_state_advances_once_per_emission():
    tx = accumulate(optax.adam(0.1), 3)
    params = jnp.ones(2)
    state = tx.init(params)
    update = jax.jit(tx.update)
    for i in range(7):
        _, state = update(jnp.full(2, i + 1.0), state, params)
        assert int(state.inner_state[0].count) == (i + 1) // 3
        assert int(state.mini_step) == (i + 1) % 3


def test_equals_multisteps_with_unit_weights(x64):
    k = 3
    tx = accumulate(optax.adam(LR), k)
    peer = optax.MultiSteps(optax.adam(LR), k, accumulator_dtype=jnp.float64)
    update, peer_update = jax.jit(tx.update), jax.jit(peer.update)
    rng = np.random.default_rng(0)
    params = {"a": jnp.asarray(rng.normal(size=(3, 2))), "b": jnp.asarray(rng.normal(size=4))}
    state, peer_state = tx.init(params), peer.init(params)
    for _ in range(3 * k):
        g = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape)), params)
        u, state = update(g, state, params)
        u_peer, peer_state = peer_update(g, peer_state, params)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12, atol=0), u, u_peer)
        params = optax.apply_updates(params, u)


def test_extra_args_forwarded_from_emitting_call_and_weight_kept():
    def update(updates, state, params=None, *, scale=1.0, **extra_args):
        assert "weight" not in extra_args
        return jax.tree.map(lambda g: g * scale, updates), state

    inner = optax.GradientTransformationExtraArgs(lambda p: optax.EmptyState(), update)
    tx = accumulate(inner, 2)
    state = tx.init(jnp.zeros(2))
    u, state = tx.update(jnp.array([2.0, 0.0]), state, weight=1.0, scale=100.0)
    np.testing.assert_array_equal(u, [0.0, 0.0])
    u, state = tx.update(jnp.array([0.0, 4.0]), state, weight=3.0, scale=10.0)
    # (1·[2, 0] + 3·[0, 4]) / 4, scaled by the emitting call's scale.
    np.testing.assert_allclose(u, [5.0, 30.0], rtol=1e-6)
    # An inner without extra-argument support ignores them.
    tx = accumulate(optax.sgd(1.0), 1)
    u, _ = tx.update(jnp.ones(2), tx.init(jnp.zeros(2)), value=jnp.float32(3.0))
    np.testing.assert_array_equal(u, [-1.0, -1.0])


def test_zero_weight_cycle_gives_zero_gradient():
    tx = accumulate(optax.sgd(1.0), 2)
    state = tx.init(jnp.zeros(2))
    _, state = tx.update(jnp.ones(2), state, weight=0.0)
    u, state = tx.update(jnp.ones(2), state, weight=0)
    np.testing.assert_array_equal(u, [0.0, 0.0])
    assert float(state.acc_weight) == 0.0


def test_zero_weight_micro_batch_is_left_out_even_if_not_finite(x64):
    # A micro-batch without valid tokens: gradient NaN/inf (a mean over nothing), weight 0.
    grads = np.array([[1.0, -2.0, 0.5], [np.nan, np.inf, -np.inf], [3.0, 0.25, -1.0]])
    weights = np.array([2.0, 0.0, 5.0])
    tx = accumulate(optax.sgd(1.0), 3)
    state = tx.init(jnp.zeros(3))
    for g, w in zip(grads, weights):
        u, state = tx.update(jnp.asarray(g), state, weight=w)
    keep = weights > 0
    want = -(weights[keep] @ grads[keep]) / weights.sum()
    np.testing.assert_allclose(np.asarray(u), want, rtol=1e-15)


def test_inner_checked_at_construction():
    with pytest.raises(TypeError, match="inner must be an optax.GradientTransformation"):
        accumulate(lambda g: g, 2)


def test_jit_equals_eager():
    tx = accumulate(optax.adam(LR), 3)
    rng = np.random.default_rng(1)
    params = jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)
    s_eager = s_jit = tx.init(params)
    update = jax.jit(tx.update)
    for _ in range(7):
        g = jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)
        w = jnp.float32(rng.integers(1, 5))
        u_eager, s_eager = tx.update(g, s_eager, params, weight=w)
        u_jit, s_jit = update(g, s_jit, params, weight=w)
        np.testing.assert_allclose(u_jit, u_eager, rtol=1e-6, atol=1e-7)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), s_jit, s_eager)


def test_vmap_equals_loop():
    tx = accumulate(optax.adam(LR), 2)
    rng = np.random.default_rng(2)
    params = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)  # 3 independent problems
    grads = jnp.asarray(rng.normal(size=(4, 3, 4)), jnp.float32)  # 4 calls
    weights = jnp.asarray(rng.integers(1, 5, size=(4, 3)), jnp.float32)
    state = jax.vmap(tx.init)(params)
    update = jax.jit(lambda g, s, p, w: tx.update(g, s, p, weight=w))
    batched = jax.jit(jax.vmap(update))
    for g, w in zip(grads, weights):
        u, state = batched(g, state, params, w)
    for j in range(3):
        s = tx.init(params[j])
        for g, w in zip(grads, weights):
            u_j, s = update(g[j], s, params[j], w[j])
        np.testing.assert_allclose(u[j], u_j, rtol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_dtypes(dtype):
    tx = accumulate(optax.adam(LR), 2)
    params = {"w": jnp.ones((3, 2), dtype)}
    state = tx.init(params)
    assert state.acc_grads["w"].dtype == jnp.float32  # at least float32 for long sums
    for _ in range(2):
        u, state = jax.jit(tx.update)({"w": jnp.full((3, 2), 0.5, dtype)}, state, params)
        assert u["w"].dtype == dtype
        assert state.acc_grads["w"].dtype == jnp.float32
        assert state.inner_state[0].mu["w"].dtype == dtype
        assert state.inner_state[0].nu["w"].dtype == dtype


def test_sharding_of_state_preserved(mesh8):
    sharding = NamedSharding(mesh8, P("data"))
    params = {"w": jax.device_put(jnp.ones((16, 4)), sharding)}
    tx = accumulate(optax.adam(LR), 2)
    state = tx.init(params)
    assert state.acc_grads["w"].sharding.is_equivalent_to(sharding, 2)
    update = jax.jit(tx.update, donate_argnums=(0, 1))
    for i in range(3):
        g = {"w": jax.device_put(jnp.full((16, 4), i + 1.0), sharding)}
        u, state = update(g, state, params)
        for leaf in (u["w"], state.acc_grads["w"], *jax.tree.leaves(state.inner_state[0][1:])):
            assert leaf.sharding.is_equivalent_to(sharding, 2), leaf.sharding


def test_inject_hyperparams_inside():
    # The schedule sees the inner count: one tick per emitted (large-batch) step.
    inner = optax.inject_hyperparams(optax.sgd)(learning_rate=lambda count: 1.0 / (count + 1))
    tx = accumulate(inner, 2)
    state = tx.init(jnp.zeros(1))
    emitted = []
    for _ in range(6):
        u, state = tx.update(jnp.ones(1), state)
        emitted.append(float(u[0]))
    np.testing.assert_allclose(emitted, [0.0, -1.0, 0.0, -1 / 2, 0.0, -1 / 3], rtol=1e-6)
    # A numeric hyperparameter can be changed in the state between steps.
    tx = accumulate(optax.inject_hyperparams(optax.adam)(learning_rate=0.1), 2)
    ref = accumulate(optax.adam(0.1), 2)
    state, ref_state = tx.init(jnp.zeros(2)), ref.init(jnp.zeros(2))
    for i in range(4):
        g = jnp.array([1.0, -2.0]) * (i + 1)
        u, state = tx.update(g, state)
        u_ref, ref_state = ref.update(g, ref_state)
        # inject_hyperparams holds b1, b2 as float32 arrays: the bias corrections round apart.
        np.testing.assert_allclose(u, u_ref, rtol=2e-5)
    state.inner_state.hyperparams["learning_rate"] = jnp.asarray(0.0)
    for _ in range(2):
        u, state = tx.update(jnp.ones(2), state)
    np.testing.assert_array_equal(u, [0.0, 0.0])


def test_emitted_flag_found_in_a_chain():
    tx = optax.chain(optax.clip(10.0), accumulate(optax.sgd(1.0), 2))
    state = tx.init(jnp.zeros(2))
    flags = []
    for _ in range(4):
        _, state = tx.update(jnp.ones(2), state)
        flags.append(int(optax.tree.get(state, "mini_step")) == 0)
    assert flags == [False, True, False, True]
    assert isinstance(state[1], AccumulateState)


@pytest.mark.parametrize(
    "every_k,error,match",
    [
        (0, ValueError, r"every_k must be a positive int, got 0"),
        (-2, ValueError, r"every_k must be a positive int, got -2"),
        (2.0, TypeError, r"every_k must be a positive int, got 2\.0"),
        (True, TypeError, r"every_k .* got True"),
    ],
)
def test_accumulate_errors(every_k, error, match):
    with pytest.raises(error, match=match):
        accumulate(optax.sgd(1.0), every_k)


def test_weight_must_be_scalar():
    tx = accumulate(optax.sgd(1.0), 2)
    with pytest.raises(ValueError, match=r"weight must be a scalar .* got shape \(2,\)"):
        tx.update(jnp.ones(2), tx.init(jnp.zeros(2)), weight=jnp.ones(2))


# --------------------------------------------------------------------------- microbatching


def _mlp_loss(params, batch):
    """Masked summed squared error of a tanh MLP, and the number of valid rows."""
    h = jnp.tanh(batch["x"] @ params["w1"] + params["b1"][None, :])
    r = h @ params["w2"] - batch["y"]
    return jnp.sum(batch["mask"] * jnp.sum(r * r, axis=-1)), jnp.sum(batch["mask"])


def _mlp_problem(rng, n=16, d=3, h=5, dtype=np.float64):
    params = {
        "w1": rng.normal(size=(d, h)),
        "b1": rng.normal(size=h),
        "w2": rng.normal(size=(h, 2)),
    }
    batch = {"x": rng.normal(size=(n, d)), "y": rng.normal(size=(n, 2))}
    batch["mask"] = (rng.random(n) < 0.6).astype(np.float64)
    batch["mask"][0] = 1.0
    cast = lambda t: jax.tree.map(lambda a: jnp.asarray(a, dtype), t)  # noqa: E731
    return cast(params), cast(batch)


def _np_full_batch(params, batch):
    """Float64 NumPy loss and hand-written gradient of the masked mean over the whole batch."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    x, y, m = (np.asarray(batch[k], np.float64) for k in ("x", "y", "mask"))
    h = np.tanh(x @ p["w1"] + p["b1"])
    r = h @ p["w2"] - y
    n = m.sum()
    dr = 2 * m[:, None] * r / n
    dz = (dr @ p["w2"].T) * (1 - h * h)
    grads = {"w1": x.T @ dz, "b1": dz.sum(0), "w2": h.T @ dr}
    return (m * (r * r).sum(-1)).sum() / n, grads


_jitted_full_value_and_grad = jax.jit(jax.value_and_grad(_mlp_loss, has_aux=True))


@functools.cache
def _jitted_microbatch(n):
    return jax.jit(microbatch_value_and_grad(_mlp_loss, n))


@pytest.mark.parametrize("n", [1, 2, 4, 8])
@given(seed=st.integers(0, 2**31 - 1))
def test_microbatch_equals_full_batch(x64, n, seed):
    params, batch = _mlp_problem(np.random.default_rng(seed))
    loss, grads = _jitted_microbatch(n)(params, batch)
    loss_ref, grads_ref = _np_full_batch(params, batch)
    np.testing.assert_allclose(loss, loss_ref, rtol=1e-12)
    for k in grads_ref:
        np.testing.assert_allclose(grads[k], grads_ref[k], rtol=1e-11, atol=1e-13)
    # And the autodiff peer of the same full-batch mean.
    (l_sum, w), g_sum = _jitted_full_value_and_grad(params, batch)
    np.testing.assert_allclose(loss, l_sum / w, rtol=1e-12)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b / w, rtol=1e-11, atol=1e-13), grads, g_sum
    )


def test_microbatch_jit_equals_eager(x64):
    params, batch = _mlp_problem(np.random.default_rng(3))
    f = microbatch_value_and_grad(_mlp_loss, 4)
    out_eager, out_jit = f(params, batch), jax.jit(f)(params, batch)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-13), out_eager, out_jit)


def test_microbatch_weight_is_not_differentiated(x64):
    def loss_fn(w, batch):
        return jnp.sum(batch["x"] * w), jnp.sum(batch["x"] * w * w)  # weight depends on w

    batch = {"x": jnp.arange(1.0, 5.0)}
    loss, grad = microbatch_value_and_grad(loss_fn, 2)(jnp.float64(2.0), batch)
    # loss = 2·10 / (4·10); d/dw of Σx·w / const = 10 / 40.
    np.testing.assert_allclose(loss, 0.5, rtol=1e-15)
    np.testing.assert_allclose(grad, 0.25, rtol=1e-15)


def test_microbatch_all_masked_batch_gives_zeros():
    params, batch = _mlp_problem(np.random.default_rng(7), dtype=np.float32)
    batch["mask"] = jnp.zeros_like(batch["mask"])
    loss, grads = jax.jit(microbatch_value_and_grad(_mlp_loss, 2))(params, batch)
    assert float(loss) == 0.0
    assert all(np.all(np.asarray(g) == 0.0) for g in jax.tree.leaves(grads))


def test_microbatch_zero_weight_gives_zeros_even_if_loss_sum_is_not_masked():
    # Documented: total weight 0 gives loss and gradient 0, whatever loss_sum returns.
    f = microbatch_value_and_grad(lambda w, b: (jnp.sum(b["x"] * w), jnp.float32(0.0)), 2)
    loss, grad = f(jnp.float32(2.0), {"x": jnp.ones(4)})
    assert float(loss) == 0.0 and float(grad) == 0.0


def test_microbatch_sharded_batch(mesh8):
    params, batch = _mlp_problem(np.random.default_rng(4), n=32, dtype=np.float32)
    sharded = jax.device_put(batch, NamedSharding(mesh8, P("data")))
    f = jax.jit(microbatch_value_and_grad(_mlp_loss, 4))
    loss, grads = f(params, sharded)
    loss_ref, grads_ref = _np_full_batch(params, batch)
    np.testing.assert_allclose(loss, loss_ref, rtol=1e-5)
    for k in grads_ref:
        np.testing.assert_allclose(grads[k], grads_ref[k], rtol=1e-4, atol=1e-6)


def test_microbatch_dtype():
    params, batch = _mlp_problem(np.random.default_rng(5), dtype=jnp.bfloat16)
    loss, grads = jax.jit(microbatch_value_and_grad(_mlp_loss, 4))(params, batch)
    assert all(g.dtype == jnp.bfloat16 for g in jax.tree.leaves(grads))
    assert loss.dtype == jnp.float32


def test_microbatch_temporary_memory_smaller():
    # Wide hidden layers over a long batch: activations dominate the full-batch temporaries.
    b, d, h = 2048, 16, 256
    params = {
        "w1": jax.ShapeDtypeStruct((d, h), jnp.float32),
        "b1": jax.ShapeDtypeStruct((h,), jnp.float32),
        "w2": jax.ShapeDtypeStruct((h, 2), jnp.float32),
    }
    batch = {
        "x": jax.ShapeDtypeStruct((b, d), jnp.float32),
        "y": jax.ShapeDtypeStruct((b, 2), jnp.float32),
        "mask": jax.ShapeDtypeStruct((b,), jnp.float32),
    }

    def temp_bytes(f):
        return jax.jit(f).lower(params, batch).compile().memory_analysis().temp_size_in_bytes

    full = temp_bytes(microbatch_value_and_grad(_mlp_loss, 1))
    sliced = temp_bytes(microbatch_value_and_grad(_mlp_loss, 8))
    assert sliced < 0.35 * full, (sliced, full)


@pytest.mark.parametrize(
    "num,error,match",
    [
        (0, ValueError, r"num_microbatches must be a positive int, got 0"),
        (-1, ValueError, r"num_microbatches must be a positive int, got -1"),
        (2.5, TypeError, r"num_microbatches must be a positive int, got 2\.5"),
    ],
)
def test_microbatch_bad_num(num, error, match):
    with pytest.raises(error, match=match):
        microbatch_value_and_grad(_mlp_loss, num)


def test_microbatch_bad_batch():
    params, batch = _mlp_problem(np.random.default_rng(6), n=10, dtype=np.float32)
    f = microbatch_value_and_grad(_mlp_loss, 4)
    with pytest.raises(ValueError, match=r"batch \(10\) must be divisible by num_microbatches=4"):
        f(params, batch)
    bad = dict(batch, mask=jnp.ones(8))
    with pytest.raises(ValueError, match=r"disagree on the leading \(batch\) axis"):
        microbatch_value_and_grad(_mlp_loss, 2)(params, bad)

    def vector_loss(p, b):
        return _mlp_loss(p, b)[0] * jnp.ones(2), jnp.sum(b["mask"])

    with pytest.raises(ValueError, match=r"scalar loss_sum, got shape \(2,\)"):
        microbatch_value_and_grad(vector_loss, 2)(params, batch)
