"""Linear-chain CRF against brute force over all K^T paths (float64 NumPy) and pytorch-crf."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from jax.test_util import check_grads

from jaxtricks.nn import CRF, crf_log_likelihood, crf_log_partition, crf_marginals, crf_viterbi

B, T, K = 4, 4, 3
LENGTHS = (4, 3, 1, 2)


def _inputs(seed=0, lengths=LENGTHS, t=T, k=K, dtype=np.float32):
    rng = np.random.default_rng(seed)
    b = len(lengths)
    e = rng.normal(size=(b, t, k)).astype(dtype)
    g = rng.normal(size=(k, k)).astype(dtype)
    start, end = rng.normal(size=k).astype(dtype), rng.normal(size=k).astype(dtype)
    mask = np.arange(t)[None] < np.asarray(lengths)[:, None]
    tags = rng.integers(0, k, (b, t)).astype(np.int32)
    return e, g, start, end, mask, tags


def _brute(e, g, start, end, length):
    """Float64 enumeration of every path of one sequence's valid prefix.

    Returns (log Z, best path, best score, marginals (length, K), path-score function).
    """
    e, g = np.asarray(e, np.float64)[:length], np.asarray(g, np.float64)
    k = g.shape[0]
    a = np.zeros(k) if start is None else np.asarray(start, np.float64)
    b = np.zeros(k) if end is None else np.asarray(end, np.float64)

    def score(p):
        p = np.asarray(p)
        return a[p[0]] + e[np.arange(length), p].sum() + g[p[:-1], p[1:]].sum() + b[p[-1]]

    paths = np.array(list(itertools.product(range(k), repeat=length)))
    s = np.array([score(p) for p in paths])
    log_z = np.logaddexp.reduce(s)
    prob = np.exp(s - log_z)
    marg = np.zeros((length, k))
    for t in range(length):
        np.add.at(marg[t], paths[:, t], prob)
    return log_z, paths[np.argmax(s)], s.max(), marg, score


@jax.jit
def _everything(e, g, a, b, mask, tags):
    """Every public function once (one compile per shape and start/end presence)."""
    se = dict(start=a, end=b)
    return dict(
        log_z=crf_log_partition(e, g, mask, **se),
        log_z_par=crf_log_partition(e, g, mask, **se, parallel=True),
        ll=crf_log_likelihood(e, tags, g, mask, **se),
        viterbi=crf_viterbi(e, g, mask, **se),
        marg=crf_marginals(e, g, mask, **se),
        marg_par=crf_marginals(e, g, mask, **se, parallel=True),
    )


@pytest.mark.parametrize("use_start_end", [True, False])
def test_matches_brute_force(use_start_end):
    e, g, a, b, mask, tags = _inputs(seed=int(use_start_end))
    if not use_start_end:
        a = b = None
    out = jax.tree.map(np.asarray, _everything(e, g, a, b, mask, tags))
    path, best = out["viterbi"]
    for i, length in enumerate(LENGTHS):
        ref_z, ref_path, ref_best, ref_marg, score = _brute(e[i], g, a, b, length)
        np.testing.assert_allclose([out["log_z"][i], out["log_z_par"][i]], ref_z, rtol=1e-5)
        np.testing.assert_allclose(
            out["ll"][i], score(tags[i, :length]) - ref_z, rtol=1e-5, atol=1e-5
        )
        np.testing.assert_array_equal(path[i, :length], ref_path)
        np.testing.assert_array_equal(path[i, length:], -1)
        np.testing.assert_allclose(best[i], ref_best, rtol=1e-5)
        for key in ("marg", "marg_par"):
            np.testing.assert_allclose(out[key][i, :length], ref_marg, atol=1e-5)
            np.testing.assert_array_equal(out[key][i, length:], 0.0)


def test_single_step():
    # T = 1 skips the scans (eager: no scan to compile).
    e, g, a, b, mask, tags = _inputs(lengths=(1, 1), t=1)
    log_z = crf_log_partition(e, g, start=a, end=b)
    log_z_par = crf_log_partition(e, g, start=a, end=b, parallel=True)
    path = crf_viterbi(e, g, start=a, end=b)[0]
    for i in range(2):
        ref_z, ref_path, _, _, _ = _brute(e[i], g, a, b, 1)
        np.testing.assert_allclose([log_z[i], log_z_par[i]], ref_z, rtol=1e-6)
        np.testing.assert_array_equal(path[i], ref_path)


_jit_pair = jax.jit(
    lambda e, g, a, b, m: (
        crf_log_partition(e, g, m, start=a, end=b),
        crf_log_partition(e, g, m, start=a, end=b, parallel=True),
    )
)


@given(
    e=arrays(np.float32, (3, 7, 4), elements=st.floats(-20, 20, width=32)),
    g=arrays(np.float32, (4, 4), elements=st.floats(-20, 20, width=32)),
    a=arrays(np.float32, (4,), elements=st.floats(-5, 5, width=32)),
    lengths=st.lists(st.integers(1, 7), min_size=3, max_size=3),
)
def test_parallel_equals_sequential(e, g, a, lengths):
    mask = np.arange(7)[None] < np.asarray(lengths)[:, None]
    seq, par = _jit_pair(e, g, a, -a, mask)
    np.testing.assert_allclose(par, seq, rtol=1e-5, atol=1e-4)


def test_forbidden_transitions_are_finite():
    # -inf transitions (forbidden pairs, e.g. O -> I in BIO): finite log Z and gradients,
    # zero gradient on the forbidden entries, and no Viterbi path uses them.
    e, g, a, b, mask, tags = _inputs(seed=3)
    forbidden = np.eye(K, k=1, dtype=bool)
    g = np.where(forbidden, -np.inf, g).astype(np.float32)
    tags = np.zeros_like(tags)  # an allowed path
    out = _everything(e, g, a, b, mask, tags)

    @jax.jit
    def grads(e, g):
        def total(e, g, parallel):
            return crf_log_partition(e, g, mask, parallel=parallel).sum()

        return [jax.grad(total, (0, 1))(e, g, p) for p in (False, True)]

    for key in ("log_z", "log_z_par", "ll", "marg"):
        assert np.isfinite(out[key]).all(), key
    for ge, gg in grads(e, g):
        assert np.isfinite(ge).all() and np.isfinite(gg).all()
        assert np.all(np.asarray(gg)[forbidden] == 0)
    p = np.asarray(out["viterbi"][0])
    assert not np.any((p[:, 1:] == p[:, :-1] + 1) & mask[:, 1:])


def test_matches_pytorch_crf():
    torch = pytest.importorskip("torch")
    torchcrf = pytest.importorskip("torchcrf")
    e, g, a, b, mask, tags = _inputs(seed=5)
    crf = torchcrf.CRF(K, batch_first=True)
    with torch.no_grad():
        crf.transitions.copy_(torch.from_numpy(g))
        crf.start_transitions.copy_(torch.from_numpy(a))
        crf.end_transitions.copy_(torch.from_numpy(b))
        ref_ll = crf(
            torch.from_numpy(e), torch.from_numpy(tags).long(), torch.from_numpy(mask), "none"
        ).numpy()
        ref_paths = crf.decode(torch.from_numpy(e), torch.from_numpy(mask))
    out = _everything(e, g, a, b, mask, tags)
    np.testing.assert_allclose(out["ll"], ref_ll, rtol=1e-5)
    path = np.asarray(out["viterbi"][0])
    assert [row[row >= 0].tolist() for row in path] == ref_paths


def test_jit_equals_eager():
    e, g, a, b, mask, tags = _inputs(seed=7)
    jitted = _everything(e, g, a, b, mask, tags)
    se = dict(start=a, end=b)
    eager = dict(
        ll=crf_log_likelihood(e, tags, g, mask, **se),
        viterbi=crf_viterbi(e, g, mask, **se),
    )
    for key, value in eager.items():
        jax.tree.map(np.testing.assert_array_equal, value, jitted[key])
    # Traced masks and tags are sanitised (prefix mask, in-range tags at valid steps): a no-op
    # on valid ones. Out-of-range values at padded steps are ignored, eager and jitted alike.
    padded = np.where(mask, tags, 99)
    np.testing.assert_array_equal(_everything(e, g, a, b, mask, padded)["ll"], eager["ll"])
    np.testing.assert_array_equal(crf_log_likelihood(e, padded, g, mask, **se), eager["ll"])


def test_gradients(x64):
    e, g, a, b, mask, tags = _inputs(seed=8, dtype=np.float64)
    # Jitted, so that the vjp compiles once and the finite differences reuse one executable.
    # (The parallel path's gradient is checked against brute force: marginals in
    # test_matches_brute_force.)
    ll = jax.jit(lambda e, g, a, b: crf_log_likelihood(e, tags, g, mask, start=a, end=b))
    check_grads(ll, (e, g, a, b), order=1, modes=("rev",))


def test_gradient_of_nll_is_marginals_minus_one_hot():
    # d(-log p)/dh_t = p(y_t | x) - onehot(y_t) at valid steps: the marginals are exact.
    e, g, a, b, mask, tags = _inputs(seed=9)
    grad = jax.jit(jax.grad(lambda e: -crf_log_likelihood(e, tags, g, mask, start=a, end=b).sum()))(
        e
    )
    marg = _everything(e, g, a, b, mask, tags)["marg"]
    one_hot = np.eye(K)[tags] * mask[..., None]
    np.testing.assert_allclose(grad, marg - one_hot, atol=1e-6)


def test_bf16_emissions_give_float32():
    e, g, a, b, mask, tags = _inputs(seed=10)
    e16 = jnp.asarray(e, jnp.bfloat16)
    out = _everything(e16, g, a, b, mask, tags)
    for key in ("log_z", "log_z_par", "ll", "marg"):
        assert out[key].dtype == jnp.float32, key
    assert out["viterbi"][0].dtype == jnp.int32 and out["viterbi"][1].dtype == jnp.float32
    # The same numbers as float32 on the bf16-rounded values: nothing accumulates in bf16.
    ref = _everything(np.asarray(e16, np.float32), g, a, b, mask, tags)
    for key in ("log_z", "ll"):
        np.testing.assert_allclose(out[key], ref[key], rtol=1e-6)
    # The gradient comes back in the emissions' dtype.
    grad = jax.eval_shape(jax.grad(lambda e: crf_log_partition(e, g, mask).sum()), e16)
    assert grad.dtype == jnp.bfloat16


def test_module():
    crf = CRF(K, rngs=nnx.Rngs(0))
    e, _, _, _, mask, tags = _inputs(seed=11)
    g, a, b = crf.transitions[...], crf.start[...], crf.end[...]
    assert g.shape == (K, K) and a.shape == b.shape == (K,)
    assert float(jnp.max(jnp.abs(g))) <= 0.1

    @nnx.jit
    def run(crf):
        return dict(ll=crf(e, tags, mask), viterbi=crf.decode(e, mask), marg=crf.marginals(e, mask))

    out = run(crf)
    ref = _everything(e, g, a, b, mask, tags)
    for key, value in out.items():
        jax.tree.map(np.testing.assert_array_equal, value, ref[key])
    params = nnx.state(crf, nnx.Param)
    assert set(params) == {"transitions", "start", "end"}
    plain = CRF(K, use_start_end=False, rngs=nnx.Rngs(1), param_dtype=jnp.bfloat16)
    assert plain.start is None and plain.end is None
    assert plain.transitions[...].dtype == jnp.bfloat16


def test_batch_sharded_over_data_axis(mesh8):
    # The batch sharded over 8 devices: brute-force values, outputs sharded like the batch.
    lengths = (4, 3, 1, 2) * 2
    e, g, a, b, mask, tags = _inputs(seed=12, lengths=lengths)

    @jax.jit
    def run(e, g, a, b, mask, tags):
        return crf_log_likelihood(e, tags, g, mask, start=a, end=b), crf_viterbi(e, g, mask)[0]

    data = NamedSharding(mesh8, P("data"))
    ll, path = run(jax.device_put(e, data), g, a, b, *jax.device_put((mask, tags), data))
    assert ll.sharding.spec[0] == path.sharding.spec[0] == "data"
    for i, length in enumerate(lengths):
        ref_z, _, _, _, score = _brute(e[i], g, a, b, length)
        np.testing.assert_allclose(ll[i], score(tags[i, :length]) - ref_z, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(path[i, :length], _brute(e[i], g, None, None, length)[1])
