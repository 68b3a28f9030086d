"""Tests of jaxtricks.distances against float64 NumPy references, POT and a brute-force LP."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jaxpr_checks import dot_precisions
from scipy.optimize import linprog

from jaxtricks.distances import (
    word_centroid_distance,
    word_movers_distance,
    word_rotators_distance,
    wrd_lower_bound,
)

DISTANCES = [word_movers_distance, word_rotators_distance]


def _problem(kind, x, y):
    """Float64 NumPy weights and cost matrix of WMD or WRD (the reference formulas)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if kind == "wmd":
        a, b = np.full(len(x), 1 / len(x)), np.full(len(y), 1 / len(y))
        cost = np.sqrt(((x[:, None, :] - y[None, :, :]) ** 2).sum(-1))
    else:
        nx, ny = np.linalg.norm(x, axis=1), np.linalg.norm(y, axis=1)
        a, b = nx / nx.sum(), ny / ny.sum()
        cost = 1 - (x / nx[:, None]) @ (y / ny[:, None]).T
    return a, b, cost


def _lp(a, b, cost):
    """The transport LP written independently of the library (dense constraints, HiGHS)."""
    n, m = cost.shape
    rows = [np.eye(n)[i].repeat(m) for i in range(n)]
    cols = [np.tile(np.eye(m)[j], n) for j in range(m)]
    res = linprog(cost.ravel(), A_eq=np.array(rows + cols), b_eq=np.r_[a, b], method="highs")
    return res.fun


def _pairs(seed, count, n, m, d):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((count, n, d)), rng.standard_normal((count, m, d))


FN = {"wmd": word_movers_distance, "wrd": word_rotators_distance}
# One jitted version per function: eager calls would compile every loop body op by op.
JIT = {f: jax.jit(f, static_argnames=("method", "num_iters")) for f in DISTANCES}
JIT.update({f: jax.jit(f) for f in (word_centroid_distance, wrd_lower_bound)})


@pytest.mark.parametrize("kind", ["wmd", "wrd"])
def test_exact_matches_pot_and_lp(x64, kind):
    ot = pytest.importorskip("ot")
    xs, ys = (jnp.asarray(v) for v in _pairs(0, 3, 5, 4, 3))
    got = jax.jit(jax.vmap(lambda x, y: FN[kind](x, y, method="exact")))(xs, ys)
    assert got.dtype == jnp.float64
    for g, x, y in zip(np.asarray(got), xs, ys):
        a, b, cost = _problem(kind, x, y)
        np.testing.assert_allclose(g, ot.emd2(a, b, cost), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(g, _lp(a, b, cost), rtol=1e-9, atol=1e-12)


def test_exact_matches_brute_force_permutations(x64):
    # Equal sizes and uniform weights: an optimal plan is a permutation (Birkhoff).
    xs, ys = _pairs(1, 3, 4, 4, 2)
    for x, y in zip(xs, ys):
        _, _, cost = _problem("wmd", x, y)
        best = min(cost[range(4), p].sum() for p in itertools.permutations(range(4))) / 4
        got = JIT[word_movers_distance](jnp.asarray(x), jnp.asarray(y), method="exact")
        np.testing.assert_allclose(got, best, rtol=1e-10)


@pytest.mark.parametrize("kind", ["wmd", "wrd"])
def test_sinkhorn_defaults_within_1e3_of_exact(kind):
    # The documented regime: random Gaussian words, 20 words, 768 features, defaults.
    xs, ys = _pairs(2, 8, 20, 20, 768)
    fn = jax.jit(jax.vmap(FN[kind]))
    got = np.asarray(fn(jnp.asarray(xs, jnp.float32), jnp.asarray(ys, jnp.float32)))
    exact = np.array([_lp(*_problem(kind, x, y)) for x, y in zip(xs, ys)])
    np.testing.assert_allclose(got, exact, rtol=1e-3)


@pytest.mark.parametrize("kind", ["wmd", "wrd"])
def test_sinkhorn_low_dimension_with_more_iterations(kind):
    xs, ys = _pairs(3, 8, 20, 20, 16)
    fn = jax.jit(jax.vmap(lambda x, y: FN[kind](x, y, num_iters=200)))
    got = np.asarray(fn(jnp.asarray(xs, jnp.float32), jnp.asarray(ys, jnp.float32)))
    exact = np.array([_lp(*_problem(kind, x, y)) for x, y in zip(xs, ys)])
    err = np.abs(got - exact) / exact
    assert np.median(err) < 1e-3 and err.max() < 5e-3, err


def _small(seed):
    """One float32 pair of the shapes most tests share (so jitted functions are reused)."""
    x, y = _pairs(seed, 1, 6, 5, 3)
    return jnp.asarray(x[0], jnp.float32), jnp.asarray(y[0], jnp.float32)


def test_wrd_of_itself_is_zero():
    x, _ = _small(4)
    y = jnp.concatenate([x[3:], x[:3]])  # the same words in another order
    fn = JIT[word_rotators_distance]
    assert float(fn(x, y, method="exact")) == pytest.approx(0.0, abs=1e-6)
    # Sinkhorn: the entropic plan leaks a little mass off the diagonal (documented bias).
    assert 0.0 <= float(fn(x, y)) < 1e-3
    assert 0.0 <= float(fn(x, x)) < 1e-3


def test_sinkhorn_clustered_sentence_against_itself():
    # Regression: three near-parallel content words with large norms and three short function
    # words. Over-relaxing by 1.8 while epsilon still decays locked such sentences into plans
    # with WRD(x, x) above 1.
    rng = np.random.default_rng(0)
    u = rng.standard_normal((20, 1, 32))
    content = u / np.linalg.norm(u, axis=-1, keepdims=True) + 0.1 * rng.standard_normal((20, 3, 32))
    content = 3 * content / np.linalg.norm(content, axis=-1, keepdims=True)
    xs = jnp.asarray(np.concatenate([content, 0.07 * rng.standard_normal((20, 3, 32))], 1))
    xs = xs.astype(jnp.float32)
    got = jax.jit(jax.vmap(lambda x: word_rotators_distance(x, x)))(xs)
    assert float(jnp.max(got)) < 1e-3


@given(seed=st.integers(0, 2**16))
def test_bounds_and_range(seed):
    x, y = _small(seed)
    wrd = float(JIT[word_rotators_distance](x, y, method="exact"))
    wmd = float(JIT[word_movers_distance](x, y, method="exact"))
    assert -1e-6 <= wrd <= 2 + 1e-6
    assert wrd >= float(JIT[wrd_lower_bound](x, y)) - 1e-6
    assert wmd >= float(JIT[word_centroid_distance](x, y)) - 1e-5


def test_bounds_against_numpy(x64):
    x, y = _pairs(5, 1, 6, 4, 3)
    x, y = x[0], y[0]
    zx, zy = np.linalg.norm(x, axis=1).sum(), np.linalg.norm(y, axis=1).sum()
    lb = 0.5 * np.sum((x.sum(0) / zx - y.sum(0) / zy) ** 2)
    np.testing.assert_allclose(jax.jit(wrd_lower_bound)(x, y), lb, rtol=1e-12)
    wcd = np.linalg.norm(x.mean(0) - y.mean(0))
    np.testing.assert_allclose(jax.jit(word_centroid_distance)(x, y), wcd, rtol=1e-12)


@pytest.mark.parametrize(
    "fn,method",
    [
        (word_movers_distance, "exact"),
        (word_rotators_distance, "exact"),
        (word_rotators_distance, "sinkhorn"),
        (word_centroid_distance, None),
        (wrd_lower_bound, None),
    ],
)
def test_masks_equal_dropping_rows(fn, method):
    x, y = _small(6)
    x_mask = jnp.array([1, 1, 0, 1, 1, 0], bool)
    y_mask = jnp.array([0, 1, 1, 1, 1], bool)
    x_pad = jnp.where(x_mask[:, None], x, 100.0)  # padding holds garbage: it carries no mass
    kwargs = {} if method is None else {"method": method}
    if method == "sinkhorn":  # converged further: both runs then agree to float32 round-off
        kwargs["num_iters"] = 200
    masked = JIT[fn](x_pad, y, x_mask=x_mask, y_mask=y_mask, **kwargs)
    dropped = JIT[fn](x[np.asarray(x_mask)], y[np.asarray(y_mask)], **kwargs)
    np.testing.assert_allclose(masked, dropped, rtol=2e-4, atol=1e-6)


def test_vmap_equals_loop_and_jit_equals_eager():
    xs, ys = zip(*(_small(seed) for seed in range(3)))
    fn = JIT[word_rotators_distance]
    batched = jax.jit(jax.vmap(word_rotators_distance))(jnp.stack(xs), jnp.stack(ys))
    looped = jnp.stack([fn(x, y) for x, y in zip(xs, ys)])
    # Batched float32 reductions round differently; exp((f + g - C) / eps) with eps = 1e-3 of
    # the cost spread turns round-off of 1e-7 into about 1e-4 relative.
    np.testing.assert_allclose(batched, looped, rtol=5e-4)
    # Eager (op by op) against jit; the exact method and the bounds compile fast op by op.
    eager = word_rotators_distance(xs[0], ys[0], method="exact")
    np.testing.assert_allclose(eager, fn(xs[0], ys[0], method="exact"), rtol=1e-6)
    for bound in (word_centroid_distance, wrd_lower_bound):
        np.testing.assert_allclose(bound(xs[0], ys[0]), JIT[bound](xs[0], ys[0]), rtol=1e-6)


@pytest.mark.parametrize("fn", DISTANCES)
def test_gradient_matches_finite_differences_and_is_finite(x64, fn):
    x, y = (jnp.asarray(v[0]) for v in _pairs(8, 1, 4, 4, 3))
    # A smooth case: a large epsilon makes the entropic plan (and the cost) smooth in x.
    f = jax.jit(lambda x, y, eps: fn(x, y, epsilon=eps, num_iters=30))
    grad = jax.jit(jax.grad(f))
    direction = jnp.asarray(np.random.default_rng(0).standard_normal(x.shape))
    h = 1e-5
    fd = (f(x + h * direction, y, 0.5) - f(x - h * direction, y, 0.5)) / (2 * h)
    np.testing.assert_allclose(jnp.sum(grad(x, y, 0.5) * direction), fd, rtol=1e-6)
    # Coincident words, a zero word and a small epsilon: the gradient stays finite.
    z = x.at[1].set(0.0)
    assert bool(jnp.all(jnp.isfinite(grad(z, z, 1e-3))))


def test_bound_gradients_finite_when_equal():
    x = jnp.array([[1.0, 0.0], [0.0, 0.0]])
    for fn in (word_centroid_distance, wrd_lower_bound):
        grad = jax.jit(jax.grad(lambda x, fn=fn: fn(x, x)))(x)
        assert bool(jnp.all(jnp.isfinite(grad))), fn.__name__


@pytest.mark.parametrize("fn", DISTANCES + [word_centroid_distance, wrd_lower_bound])
def test_dtypes(fn):
    x, y = _small(9)
    out32 = JIT[fn](x, y)
    out16 = JIT[fn](x.astype(jnp.bfloat16), y.astype(jnp.bfloat16))
    assert out32.dtype == jnp.float32 and out16.dtype == jnp.float32
    np.testing.assert_allclose(out16, out32, rtol=5e-2, atol=1e-2)


def test_exact_is_not_differentiable():
    x = jnp.ones((2, 3))
    with pytest.raises(ValueError, match="not differentiable"):
        jax.grad(lambda x: word_movers_distance(x, x + 1, method="exact"))(x)


@pytest.mark.parametrize(
    "kwargs,args,match",
    [
        ({}, (np.ones((3, 4)), np.ones((2, 5))), "same feature dimension"),
        ({}, (np.ones(4), np.ones((2, 4))), r"x must have shape \(words, features\)"),
        ({"y_mask": np.ones(3, bool)}, (np.ones((3, 4)), np.ones((2, 4))), r"y_mask must have"),
        ({"x_mask": np.zeros(3, bool)}, (np.ones((3, 4)), np.ones((2, 4))), "masks every word"),
        ({"method": "lp"}, (np.ones((3, 4)), np.ones((2, 4))), "method must be one of"),
        ({"epsilon": 0.0}, (np.ones((3, 4)), np.ones((2, 4))), "epsilon must be > 0"),
        ({"num_iters": 0}, (np.ones((3, 4)), np.ones((2, 4))), "positive int, got 0"),
    ],
)
def test_errors(kwargs, args, match):
    with pytest.raises(ValueError, match=match):
        word_rotators_distance(*args, **kwargs)


def test_error_types():
    with pytest.raises(TypeError, match="num_iters must be a positive int, got 2.5"):
        word_movers_distance(np.ones((2, 3)), np.ones((2, 3)), num_iters=2.5)
    with pytest.raises(ValueError, match="masks every word"):
        word_centroid_distance(np.ones((2, 3)), np.ones((2, 3)), y_mask=np.zeros(2, bool))


@pytest.mark.parametrize("fn", DISTANCES + [word_centroid_distance, wrd_lower_bound])
def test_cost_products_run_at_highest_precision(fn):
    # The CPU ignores the precision: read it from the jaxpr, forward and backward, even under a
    # low default (TPU bf16 passes).
    x, y = _small(10)
    highest = (jax.lax.Precision.HIGHEST,) * 2
    with jax.default_matmul_precision("bfloat16"):
        for f in (fn, jax.grad(fn)):
            precisions = dot_precisions(f, x, y)
            assert precisions and all(p == highest for p in precisions), precisions


def test_zero_word_vectors_give_the_documented_values(x64):
    x, y = (jnp.asarray(v[0]) for v in _pairs(11, 1, 4, 3, 5))
    zeros = jnp.zeros_like(x)
    # All zero: uniform masses, every cosine 0, so WRD = 1 by either method; the bound is
    # 0.5 |sum y / Z'|^2 (the zero sequence contributes the zero vector).
    for method in ("exact", "sinkhorn"):
        np.testing.assert_allclose(JIT[word_rotators_distance](zeros, y, method=method), 1.0)
    zy = np.linalg.norm(np.asarray(y), axis=1).sum()
    want = 0.5 * np.sum((np.asarray(y).sum(0) / zy) ** 2)
    np.testing.assert_allclose(JIT[wrd_lower_bound](zeros, y), want, rtol=1e-12)
    # One zero word among others carries (next to) no mass: the same as dropping it.
    with_zero = x.at[2].set(0.0)
    dropped = jnp.delete(x, 2, axis=0)
    np.testing.assert_allclose(
        JIT[word_rotators_distance](with_zero, y, method="exact"),
        JIT[word_rotators_distance](dropped, y, method="exact"),
        rtol=1e-12,
    )
    grad = jax.jit(jax.grad(word_rotators_distance))(with_zero, y)
    assert bool(jnp.all(jnp.isfinite(grad)))


@pytest.mark.parametrize("fn", DISTANCES + [word_centroid_distance, wrd_lower_bound])
def test_traced_all_false_mask_gives_zero(fn):
    x, y = _small(12)
    none = jnp.zeros(x.shape[0], bool)
    got = jax.jit(lambda m: fn(x, y, x_mask=m, y_mask=m[: y.shape[0]]))(none)
    assert float(got) == 0.0
    if fn in DISTANCES:
        exact = jax.jit(lambda m: fn(x, y, x_mask=m, method="exact"))(none)
        assert float(exact) == 0.0


def test_integer_inputs_are_promoted_to_float32():
    x = jnp.array([[1, 0], [0, 2]])
    y = jnp.array([[2, 0], [0, 1]])
    for fn in DISTANCES + [word_centroid_distance, wrd_lower_bound]:
        kwargs = {"method": "exact"} if fn in DISTANCES else {}
        got = JIT[fn](x, y, **kwargs)
        want = JIT[fn](x.astype(jnp.float32), y.astype(jnp.float32), **kwargs)
        assert got.dtype == jnp.float32
        np.testing.assert_allclose(got, want, rtol=1e-6)
