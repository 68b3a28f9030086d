"""One contract suite run over every optimizer of jaxtricks.optim.

Each entry builds a full optimizer from a learning rate (a float or a schedule). The suite
checks what a user of optax relies on, the same way for all of them: jit equals eager,
``optax.inject_hyperparams``, schedules as learning rates, dtypes kept in updates and state
(so a jitted step never retraces), the params' sharding kept in the state on 8 devices, and
convergence on a quadratic.

Complex64 params are covered wherever optax's own suite covers them (``alias_test.py`` runs
every Adam-family optimizer on complex problems; all of ours are, or wrap, one). As there,
the optimizer is fed ``conj(jax.grad(loss))`` and a complex problem must be solved like the
same problem written in real coordinates.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxtricks import optim


def _adax(learning_rate):
    return optim.adax(learning_rate)


def _adaxw(learning_rate):
    return optim.adaxw(learning_rate, weight_decay=1e-3)


def _accumulate(learning_rate):
    return optim.accumulate(optax.adam(learning_rate), every_k=2)


def _lazy_rows(learning_rate):
    return optim.lazy_rows(optax.adam(learning_rate))


def _lookahead(learning_rate):
    return optim.lookahead(optax.adam(learning_rate), sync_period=3, slow_step_size=0.5)


def _ema(learning_rate):
    return optax.chain(optax.adam(learning_rate), optim.ema_params(0.9))


def _scale_by_name(learning_rate):
    return optax.chain(optax.adam(learning_rate), optim.scale_by_name({"b": 0.5}))


OPTIMIZERS = {
    "adax": (_adax, 0.1),
    "adaxw": (_adaxw, 0.1),
    "accumulate": (_accumulate, 0.1),
    "lazy_rows": (_lazy_rows, 0.1),
    "lookahead": (_lookahead, 0.1),
    "ema_params": (_ema, 0.1),
    "scale_by_name": (_scale_by_name, 0.1),
}
NAMES = sorted(OPTIMIZERS)


def _params(dtype=jnp.float32):
    rng = np.random.default_rng(0)
    shapes = {"w": (16, 8), "b": (16,)}
    if jnp.issubdtype(dtype, jnp.complexfloating):
        return {
            k: jnp.asarray(rng.normal(size=s) + 1j * rng.normal(size=s), dtype)
            for k, s in shapes.items()
        }
    return {k: jnp.asarray(rng.normal(size=s), dtype) for k, s in shapes.items()}


def _target(params):
    def target(p):
        value = 0.5 + 0.5j if jnp.iscomplexobj(p) else 0.5
        return jnp.full(p.shape, value, jnp.promote_types(p.dtype, jnp.float32))

    return jax.tree.map(target, params)


def _loss(params):
    def sq(p, t):
        d = p.astype(t.dtype) - t
        return jnp.sum((jnp.conj(d) * d).real)  # |d|^2, real for complex params

    return sum(jax.tree.leaves(jax.tree.map(sq, params, _target(params))))


def _grads(params):
    # optax's convention for complex params: the optimizer gets the conjugate of jax.grad.
    return jax.tree.map(jnp.conj, jax.grad(_loss)(params))


def _run(tx, params, steps, jit=True):
    state = tx.init(params)

    def step(params, state):
        updates, state = tx.update(_grads(params), state, params)
        return optax.apply_updates(params, updates), state

    step = jax.jit(step) if jit else step
    for _ in range(steps):
        params, state = step(params, state)
    return params, state


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.complex64])
@pytest.mark.parametrize("name", NAMES)
def test_jit_equals_eager(name, dtype):
    make, lr = OPTIMIZERS[name]
    p_jit, _ = _run(make(lr), _params(dtype), 4, jit=True)
    p_eager, _ = _run(make(lr), _params(dtype), 4, jit=False)
    chex.assert_trees_all_close(p_jit, p_eager, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_inject_hyperparams_equals_plain(name):
    make, lr = OPTIMIZERS[name]
    injected = optax.inject_hyperparams(make)(learning_rate=lr)
    p_plain, _ = _run(make(lr), _params(), 4)
    p_injected, state = _run(injected, _params(), 4)
    chex.assert_trees_all_close(p_plain, p_injected, rtol=1e-5, atol=1e-6)
    assert float(state.hyperparams["learning_rate"]) == pytest.approx(lr)


@pytest.mark.parametrize("name", NAMES)
def test_schedule_as_learning_rate(name):
    make, lr = OPTIMIZERS[name]
    constant = optax.constant_schedule(lr)
    p_float, _ = _run(make(lr), _params(), 4)
    p_schedule, _ = _run(make(constant), _params(), 4)
    chex.assert_trees_all_close(p_float, p_schedule, rtol=1e-6, atol=1e-7)
    # A schedule that is zero at the start leaves the params where they were.
    p_zero, _ = _run(make(optax.linear_schedule(0.0, lr, 100)), _params(), 1)
    chex.assert_trees_all_close(p_zero, _params(), atol=0)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.complex64])
@pytest.mark.parametrize("name", NAMES)
def test_dtypes_kept_and_no_retrace(name, dtype):
    chex.clear_trace_counter()  # chex counts traces per source location, across parameters
    make, lr = OPTIMIZERS[name]
    tx = make(lr)
    params = _params(dtype)
    state = tx.init(params)
    dtypes = jax.tree.map(lambda x: jnp.asarray(x).dtype, state)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(params, state):
        updates, state = tx.update(_grads(params), state, params)
        return updates, optax.apply_updates(params, updates), state

    for _ in range(3):
        updates, params, state = step(params, state)
    for tree in (updates, params):
        assert all(x.dtype == dtype for x in jax.tree.leaves(tree)), (name, tree)
    assert jax.tree.map(lambda x: jnp.asarray(x).dtype, state) == dtypes


def _check_sharding_kept(name, mesh, dtype=jnp.float32):
    make, lr = OPTIMIZERS[name]
    tx = make(lr)
    sharding = NamedSharding(mesh, P("data"))
    params = jax.device_put(_params(dtype), sharding)
    state = jax.jit(tx.init)(params)

    @jax.jit
    def step(params, state):
        updates, state = tx.update(_grads(params), state, params)
        return optax.apply_updates(params, updates), state

    for _ in range(2):
        params, state = step(params, state)
    shapes = {p.shape for p in jax.tree.leaves(params)}
    mirrored = [x for x in jax.tree.leaves(state) if getattr(x, "shape", ()) in shapes]
    assert all(x.sharding.is_equivalent_to(sharding, x.ndim) for x in jax.tree.leaves(params))
    for leaf in mirrored:
        assert leaf.sharding.is_equivalent_to(sharding, leaf.ndim), (name, leaf.sharding)


# Complex64 where the state's dtype differs from the params' (AdaX's real second moment).
@pytest.mark.parametrize(
    "name,dtype",
    [(n, jnp.float32) for n in NAMES] + [(n, jnp.complex64) for n in ("adax", "adaxw")],
)
def test_state_keeps_params_sharding(name, dtype, mesh8):
    _check_sharding_kept(name, mesh8, dtype)


@pytest.mark.parametrize("name", NAMES)
def test_state_keeps_params_sharding_explicit_mesh(name, mesh8_explicit):
    with jax.set_mesh(mesh8_explicit):
        _check_sharding_kept(name, mesh8_explicit)


@pytest.mark.parametrize("name", NAMES)
def test_converges_on_a_quadratic(name):
    # Complex64: test_complex_problem_solved_as_in_real_coordinates.
    make, lr = OPTIMIZERS[name]
    start = float(_loss(_params()))
    params, _ = _run(make(lr), _params(), 300)
    assert float(_loss(params)) < 1e-2 * start, name


def _real_coordinates(tree):
    """A complex tree as real params: real and imaginary parts along a new last axis."""
    return jax.tree.map(lambda z: jnp.stack([z.real, z.imag], axis=-1), tree)


@pytest.mark.parametrize("name", NAMES)
def test_complex_problem_solved_as_in_real_coordinates(name):
    # optax's complex test: solving over complex params lands where the same problem over
    # (real, imag) lands. Before the fix AdaX squared complex gradients and did not converge.
    make, lr = OPTIMIZERS[name]
    z, _ = _run(make(lr), _params(jnp.complex64), 300)
    xy, _ = _run(make(lr), _real_coordinates(_params(jnp.complex64)), 300)
    chex.assert_trees_all_close(_real_coordinates(z), xy, atol=5e-2)
    chex.assert_trees_all_close(z, _target(z), atol=5e-2)
