"""Bad inputs of jaxtricks.nn's VQ, CRF, capsule and head names: named errors, finite limits.

References are float64 NumPy formulas written here (brute force over CRF paths, the VQ and
EMA formulas, eq. 1 of the capsule paper, the cascade's projections), never stored numbers.
"""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st
from probes import probe, raises
from references import ema_codebook_step

from jaxtricks.nn import (
    CRF,
    VQVAE,
    Capsule,
    CascadingRejection,
    CosineDense,
    VectorQuantizer,
    VectorQuantizerEMA,
    VQOutput,
    VQStatistics,
    cascade_residuals,
    cascade_scores,
    cosine_logits,
    crf_log_likelihood,
    crf_log_partition,
    crf_marginals,
    crf_viterbi,
    dynamic_routing,
    nearest_codes,
    squash,
    vector_quantize,
)

K, D = 3, 2
RNGS = nnx.Rngs(0)  # construction errors are raised before any parameter is drawn
NAN, INF = float("nan"), float("inf")
BAD_SIZES = [(0, ValueError), (-1, ValueError), (2.5, TypeError), (True, TypeError)]
# Hyperparameters that must be >= 0 and finite: Python floats and concrete JAX arrays.
BAD_NONNEGATIVE = [NAN, INF, -1.0, jnp.array(NAN), jnp.array(-0.5), jnp.array(INF)]
CODEBOOK = jnp.array([[0.0, 0.0], [1.0, 1.0], [4.0, 0.0]])


def _fragment(value) -> str:
    """The part of the value an error message must echo (a repr of a number or an array)."""
    text = repr(value)
    return "nan" if "nan" in text else "inf" if "inf" in text else text.split("(")[-1][:3]


def _size_error(make, exc, bad, argument):
    with raises(exc, argument, repr(bad)):
        make(bad)


# ----------------------------------------------------------------- vector_quantize


@probe("error", "nn.vector_quantize", "nn.nearest_codes")
@pytest.mark.parametrize(
    "z,codebook,exc,argument,fragments",
    [
        (jnp.ones((3, 5)), jnp.ones((7, 4)), ValueError, "z", ("(3, 5)", "(7, 4)", "(..., 4)")),
        (jnp.ones((3, 4)), jnp.ones(4), ValueError, "codebook", ("(K, D)", "(4,)")),
        (jnp.ones((3, 4)), jnp.ones((2, 2, 4)), ValueError, "codebook", ("(2, 2, 4)",)),
        (jnp.ones((3, 4)), jnp.ones((0, 4)), ValueError, "codebook", ("(0, 4)",)),
        (jnp.ones(()), jnp.ones((7, 1)), ValueError, "z", ("()",)),
        (jnp.ones((3, 2), bool), CODEBOOK, TypeError, "z", ("bool",)),
        (jnp.ones((3, 2), jnp.complex64), CODEBOOK, TypeError, "z", ("complex64",)),
        (jnp.ones((3, 2)), CODEBOOK.astype(jnp.complex64), TypeError, "codebook", ("complex",)),
    ],
)
def test_vq_shapes_and_dtypes_are_named(z, codebook, exc, argument, fragments):
    for fn in (vector_quantize, nearest_codes):
        with raises(exc, argument, *fragments):
            fn(z, codebook)


@probe("error", "nn.vector_quantize")
@pytest.mark.parametrize("z", [jnp.ones((3, 2), jnp.int32), jnp.ones((3, 2), jnp.uint8)])
def test_vector_quantize_needs_floating_z(z):
    # quantized is in z's dtype and carries the straight-through gradient: floats only.
    with raises(TypeError, "z", str(z.dtype)):
        vector_quantize(z, CODEBOOK)
    with raises(TypeError, "codebook", "int32"):
        vector_quantize(z.astype(jnp.float32), CODEBOOK.astype(jnp.int32))


@probe("error", "nn.vector_quantize", "nn.nearest_codes")
@pytest.mark.parametrize("bad,exc", BAD_SIZES)
def test_vq_chunk_size_is_a_positive_int(bad, exc):
    for fn in (vector_quantize, nearest_codes):
        with raises(exc, "chunk_size", repr(bad)):
            fn(jnp.ones((3, 2)), CODEBOOK, chunk_size=bad)


@probe("error", "nn.vector_quantize", "nn.nearest_codes")
@pytest.mark.parametrize("bad", ["fastest_ever", 3, ("highest",) * 3, [None]])
def test_vq_precision_must_be_a_matmul_precision(bad):
    for fn in (vector_quantize, nearest_codes):
        with raises(ValueError, "precision", repr(bad)):
            fn(jnp.ones((3, 2)), CODEBOOK, precision=bad)


@probe("error", "nn.vector_quantize")
@pytest.mark.parametrize("bad", BAD_NONNEGATIVE)
def test_vector_quantize_commitment_cost_range(bad):
    with raises(ValueError, "commitment_cost", _fragment(bad)):
        vector_quantize(jnp.ones((3, 2)), CODEBOOK, commitment_cost=bad)


@probe("error", "nn.vector_quantize")
@pytest.mark.parametrize("bad", ["0.25", True, None, 1j])
def test_vector_quantize_commitment_cost_type(bad):
    with raises(TypeError, "commitment_cost"):
        vector_quantize(jnp.ones((3, 2)), CODEBOOK, commitment_cost=bad)


_vq_jit = jax.jit(vector_quantize, static_argnames="chunk_size")


@jax.jit
def _vq_grads(z, codebook):
    return jax.grad(lambda z, c: vector_quantize(z, c).loss, (0, 1))(z, codebook)


@probe("value", "nn.vector_quantize", "nn.VQOutput", "nn.nearest_codes")
@pytest.mark.parametrize("shape", [(0, D), (2, 0, D)])
@pytest.mark.parametrize("chunk_size", [None, 2])
def test_vector_quantize_empty_batch_gives_zero_losses(shape, chunk_size):
    z = jnp.ones(shape)
    out = _vq_jit(z, CODEBOOK, chunk_size=chunk_size)
    assert isinstance(out, VQOutput)
    assert out.quantized.shape == shape and out.indices.shape == shape[:-1]
    for loss in (out.loss, out.codebook_loss, out.commitment_loss):
        assert float(loss) == 0.0  # a sum over nothing, not 0/0
    # No assignments: entropy 0, so perplexity exp(0) = 1; no code used.
    assert float(out.perplexity) == 1.0 and float(out.usage) == 0.0
    assert all(np.all(np.asarray(g) == 0) for g in _vq_grads(z, CODEBOOK))


def _np_nearest(z, codebook):
    z, codebook = np.asarray(z, np.float64), np.asarray(codebook, np.float64)
    return ((z[:, None] - codebook[None]) ** 2).sum(-1).argmin(-1)


@probe("value", "nn.nearest_codes", "nn.vector_quantize")
@given(seed=st.integers(0, 2**31), exponent=st.sampled_from([-15, -8, 0, 8, 15]))
def test_vq_nearest_code_exact_at_huge_and_tiny_scales(seed, exponent):
    rng = np.random.default_rng(seed)
    scale = 10.0**exponent
    z = (rng.normal(size=(6, 3)) * scale).astype(np.float32)
    codebook = (rng.normal(size=(5, 3)) * scale).astype(np.float32)
    out = _vq_jit(z, codebook)
    np.testing.assert_array_equal(out.indices, _np_nearest(z, codebook))
    e = np.asarray(codebook, np.float64)[_np_nearest(z, codebook)]
    mse = ((np.asarray(z, np.float64) - e) ** 2).mean()
    np.testing.assert_allclose(out.codebook_loss, mse, rtol=1e-5)


@probe("value", "nn.nearest_codes")
def test_nearest_codes_ties_go_to_the_lowest_index():
    codebook = jnp.array([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0]])  # 0 and 2 equal, 1 as far
    assert nearest_codes(jnp.zeros((1, 2)), codebook).tolist() == [0]
    assert nearest_codes(jnp.array([[1.0, 0.0]]), codebook).tolist() == [0]


# ----------------------------------------------------------- VectorQuantizer (and EMA)

QUANTIZERS = [VectorQuantizer, VectorQuantizerEMA]


@probe("error", "nn.VectorQuantizer", "nn.VectorQuantizerEMA")
@pytest.mark.parametrize("cls", QUANTIZERS)
@pytest.mark.parametrize("argument", ["num_codes", "dim", "chunk_size"])
@pytest.mark.parametrize("bad,exc", BAD_SIZES)
def test_quantizer_sizes_are_positive_ints(cls, argument, bad, exc):
    kwargs = dict(num_codes=K, dim=D, rngs=RNGS)

    def make(value):
        cls(**{**kwargs, argument: value})

    _size_error(make, exc, bad, argument)


@probe("error", "nn.VectorQuantizer", "nn.VectorQuantizerEMA")
@pytest.mark.parametrize("cls", QUANTIZERS)
@pytest.mark.parametrize("bad", BAD_NONNEGATIVE)
def test_quantizer_commitment_cost_range(cls, bad):
    with raises(ValueError, "commitment_cost", _fragment(bad)):
        cls(K, D, commitment_cost=bad, rngs=RNGS)


@probe("error", "nn.VectorQuantizer", "nn.VectorQuantizerEMA")
@pytest.mark.parametrize("cls", QUANTIZERS)
@pytest.mark.parametrize(
    "kwargs,exc,argument,fragment",
    [
        (dict(param_dtype=jnp.int32), TypeError, "param_dtype", "int32"),
        (dict(param_dtype=jnp.complex64), TypeError, "param_dtype", "complex64"),
        (dict(param_dtype=None), TypeError, "param_dtype", "None"),
        (dict(dtype=jnp.int8), TypeError, "dtype", "int8"),
        (dict(codebook_init=0.1), TypeError, "codebook_init", "0.1"),
        (dict(codebook_init=lambda k, s, d: jnp.zeros((K + 1, D), d)), ValueError,
         "codebook_init", "(4, 2)"),
        (dict(precision="nope"), ValueError, "precision", "'nope'"),
    ],
)  # fmt: skip
def test_quantizer_dtypes_initializers_and_precision(cls, kwargs, exc, argument, fragment):
    with raises(exc, argument, fragment):
        cls(K, D, rngs=RNGS, **kwargs)


@probe("error", "nn.VectorQuantizer", "nn.VectorQuantizerEMA")
@pytest.mark.parametrize("cls", QUANTIZERS)
def test_quantizer_call_names_both_shapes(cls):
    vq = cls(K, 3, rngs=nnx.Rngs(0))
    with raises(ValueError, "z", "(2, 4)", "(3, 3)"):
        vq(jnp.ones((2, 4)))
    with raises(TypeError, "z", "int32"):
        vq(jnp.ones((2, 3), jnp.int32))


@probe("error", "nn.VectorQuantizerEMA")
@pytest.mark.parametrize(
    "argument,bad,exc",
    [
        ("decay", NAN, ValueError),
        ("decay", INF, ValueError),
        ("decay", -0.1, ValueError),
        ("decay", 1.5, ValueError),
        ("decay", jnp.array(2.0), ValueError),
        ("decay", jnp.array(NAN), ValueError),
        ("decay", "0.9", TypeError),
        ("epsilon", NAN, ValueError),
        ("epsilon", INF, ValueError),
        ("epsilon", -1e-5, ValueError),
        ("epsilon", jnp.array(NAN), ValueError),
        ("epsilon", jnp.array(-1.0), ValueError),
        ("epsilon", None, TypeError),
        ("use_running_average", 1, TypeError),
        ("use_running_average", "yes", TypeError),
    ],
)
def test_ema_hyperparameters_are_checked_at_construction(argument, bad, exc):
    # A NaN epsilon or decay would poison the codebook at the first update.
    with raises(exc, argument, _fragment(bad) if exc is ValueError else repr(bad)[:3]):
        VectorQuantizerEMA(K, D, **{argument: bad}, rngs=RNGS)


@probe("error", "nn.VectorQuantizerEMA")
@pytest.mark.parametrize("bad", [1, "no", jnp.array(True)])
def test_ema_call_flag_is_a_bool(bad):
    vq = VectorQuantizerEMA(K, D, rngs=nnx.Rngs(0))
    with raises(TypeError, "use_running_average"):
        vq(jnp.ones((2, D)), use_running_average=bad)


@probe("error", "nn.VQStatistics", "nn.VectorQuantizerEMA")
def test_statistics_of_the_wrong_shape_are_named_at_call():
    vq = VectorQuantizerEMA(K, D, rngs=nnx.Rngs(0))
    vq.codebook = VQStatistics(jnp.ones((K, D + 1)))  # replaced by hand, inconsistent with dim
    with raises(ValueError, "z", f"({K}, {D + 1})", f"(2, {D})"):
        vq(jnp.ones((2, D)))


_apply = nnx.jit(lambda module, z: module(z))


@probe("value", "nn.VectorQuantizerEMA", "nn.VQStatistics")
@pytest.mark.parametrize("decay,num_rows", [(0.0, 0), (0.0, 4), (0.5, 4)])
def test_ema_epsilon_zero_keeps_unused_codes(decay, num_rows):
    vq = VectorQuantizerEMA(K, D, decay=decay, epsilon=0.0, rngs=nnx.Rngs(0))
    start = np.array([[0.0, 0.0], [10.0, 10.0], [-9.0, 5.0]])
    size, total = np.array([1.0, 1.0, 0.0]), start * np.array([1.0, 1.0, 0.0])[:, None]
    vq.codebook[...], vq.code_sum[...] = jnp.asarray(start, jnp.float32), jnp.asarray(total)
    vq.cluster_size[...] = jnp.asarray(size, jnp.float32)  # code 2: a zero EMA count
    z = np.array([[0.5, 0.0], [1.0, 0.5], [9.0, 9.0], [11.0, 10.0]])[:num_rows]
    _apply(vq, jnp.asarray(z, jnp.float32))
    _, _, want = ema_codebook_step(size, total, start, z, _np_nearest(z, start), decay, 0.0)
    got = np.asarray(vq.codebook[...])
    assert np.all(np.isfinite(got))  # formerly 0/0 = NaN for code 2
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_array_equal(got[2], start[2])  # unused, zero count: unchanged


@probe("value", "nn.VectorQuantizerEMA", "nn.VQStatistics", "nn.VQOutput")
def test_ema_empty_batch_keeps_statistics_finite():
    vq = VectorQuantizerEMA(K, D, decay=0.9, epsilon=1e-3, rngs=nnx.Rngs(0))
    size, total = np.ones(K), np.asarray(vq.code_sum[...], np.float64)
    previous = np.asarray(vq.codebook[...], np.float64)
    out = _apply(vq, jnp.zeros((0, D)))
    assert float(out.loss) == 0.0 and float(out.perplexity) == 1.0
    empty_z, empty_idx = np.zeros((0, D)), np.zeros(0, int)
    size, total, want = ema_codebook_step(size, total, previous, empty_z, empty_idx, 0.9, 1e-3)
    np.testing.assert_allclose(vq.cluster_size[...], size, rtol=1e-6)
    np.testing.assert_allclose(vq.codebook[...], want, rtol=1e-5)


@probe("value", "nn.VectorQuantizer")
def test_quantizer_empty_batch():
    out = VectorQuantizer(K, D, rngs=nnx.Rngs(0))(jnp.zeros((0, D)))
    assert out.quantized.shape == (0, D) and float(out.loss) == 0.0


# --------------------------------------------------------------------------- VQVAE


@probe("error", "nn.VQVAE")
@pytest.mark.parametrize(
    "argument", ["in_features", "num_latents", "num_codes", "code_dim", "hidden"]
)
@pytest.mark.parametrize("bad,exc", BAD_SIZES)
def test_vqvae_sizes_are_positive_ints(argument, bad, exc):
    kwargs = dict(in_features=4, num_latents=2, num_codes=K, code_dim=D, hidden=4)

    def make(value):
        VQVAE(**{**kwargs, argument: value}, rngs=RNGS)

    _size_error(make, exc, bad, argument)


@probe("error", "nn.VQVAE")
@pytest.mark.parametrize(
    "kwargs,exc,argument",
    [
        (dict(ema=1), TypeError, "ema"),
        (dict(commitment_cost=NAN), ValueError, "commitment_cost"),
        (dict(commitment_cost=-0.5), ValueError, "commitment_cost"),
        (dict(param_dtype=jnp.int32), TypeError, "param_dtype"),
        (dict(dtype=jnp.complex64), TypeError, "dtype"),
    ],
)
def test_vqvae_flags_and_hyperparameters(kwargs, exc, argument):
    with raises(exc, argument):
        VQVAE(4, num_latents=2, num_codes=K, code_dim=D, hidden=4, rngs=RNGS, **kwargs)


@pytest.fixture(scope="module")
def vqvae():
    return VQVAE(4, num_latents=2, num_codes=K, code_dim=D, hidden=4, rngs=nnx.Rngs(0))


@probe("error", "nn.VQVAE")
def test_vqvae_call_shapes_are_named(vqvae):
    with raises(ValueError, "x", "(..., 4)", "(2, 5)"):
        vqvae(jnp.ones((2, 5)))
    with raises(ValueError, "z_q", "(..., 2, 2)", "(2, 4)"):
        vqvae.decode(jnp.ones((2, 4)))


@probe("value", "nn.VQVAE")
def test_vqvae_empty_batch(vqvae):
    recon, out = vqvae(jnp.zeros((0, 4)))
    assert recon.shape == (0, 4) and out.indices.shape == (0, 2)
    assert float(out.loss) == 0.0
    assert all(np.all(np.isfinite(v)) for v in jax.tree.leaves(nnx.state(vqvae, VQStatistics)))


# ----------------------------------------------------------------------------- CRF

E = np.random.default_rng(0).normal(size=(2, 3, K)).astype(np.float32)
G = np.random.default_rng(1).normal(size=(K, K)).astype(np.float32)
MASK = np.array([[True, True, True], [True, True, False]])
TAGS = np.array([[0, 1, 2], [2, 2, -1]], np.int32)
CRF_FUNCTIONS = {
    "crf_log_partition": lambda e, g, m=None, **kw: crf_log_partition(e, g, m, **kw),
    "crf_log_likelihood": lambda e, g, m=None, **kw: crf_log_likelihood(
        e, np.zeros(np.shape(e)[:2], np.int32), g, m, **kw
    ),
    "crf_viterbi": lambda e, g, m=None, **kw: crf_viterbi(e, g, m, **kw),
    "crf_marginals": lambda e, g, m=None, **kw: crf_marginals(e, g, m, **kw),
}
CRF_BAD = [
    ((E[0], G), {}, ValueError, "emissions", ("(B, T, K)", "(3, 3)")),
    ((E[:, :0], G), {}, ValueError, "emissions", ("(2, 0, 3)",)),
    ((E, G[:2]), {}, ValueError, "transitions", ("(3, 3)", "(2, 3)")),
    ((E, G), dict(start=np.zeros(2)), ValueError, "start", ("(3,)", "(2,)")),
    ((E, G), dict(end=np.zeros((1, K))), ValueError, "end", ("(1, 3)",)),
    ((E, G, MASK[:, :2]), {}, ValueError, "mask", ("(2, 3)", "(2, 2)")),
    ((E, G, MASK.astype(np.int32)), {}, TypeError, "mask", ("int32",)),
    ((E, G, MASK.astype(np.float32)), {}, TypeError, "mask", ("float32",)),
    ((E, G, np.array([[True] * 3, [False] * 3])), {}, ValueError, "mask", ("[1]",)),
    ((E, G, np.array([[True, False, True], [True] * 3])), {}, ValueError, "mask", ("[0]",)),
    ((E.astype(np.int32), G), {}, TypeError, "emissions", ("int32",)),
    ((E.astype(np.complex64), G), {}, TypeError, "emissions", ("complex64",)),
    ((E, G.astype(bool)), {}, TypeError, "transitions", ("bool",)),
    ((E, G), dict(start=np.zeros(K, np.int32)), TypeError, "start", ("int32",)),
    ((np.where(E > 1, np.nan, E), G), {}, ValueError, "emissions", ("NaN",)),
    ((E, np.full((K, K), np.inf, np.float32)), {}, ValueError, "transitions", ("+inf",)),
    ((E, jnp.asarray(G).at[0, 1].set(jnp.nan)), {}, ValueError, "transitions", ("NaN", "(0, 1)")),
    ((E, G), dict(end=np.array([0.0, np.inf, 0.0])), ValueError, "end", ("+inf",)),
]


@probe("error", "nn.crf_log_partition", "nn.crf_log_likelihood", "nn.crf_viterbi",
       "nn.crf_marginals")  # fmt: skip
@pytest.mark.parametrize("args,kwargs,exc,argument,fragments", CRF_BAD)
def test_crf_functions_name_bad_shapes_dtypes_and_values(args, kwargs, exc, argument, fragments):
    for fn in CRF_FUNCTIONS.values():
        with raises(exc, argument, *fragments):
            fn(*args, **kwargs)


@probe("error", "nn.crf_log_partition", "nn.crf_marginals")
@pytest.mark.parametrize("bad", [1, "yes", None, jnp.array(True)])
def test_crf_parallel_is_a_bool(bad):
    for fn in (crf_log_partition, crf_marginals):
        with raises(TypeError, "parallel"):
            fn(E, G, parallel=bad)


@probe("error", "nn.crf_log_likelihood")
@pytest.mark.parametrize(
    "tags,exc,fragments",
    [
        (TAGS[:, :2], ValueError, ("(2, 3)", "(2, 2)")),
        (TAGS.astype(np.float32), TypeError, ("float32",)),
        (TAGS.astype(bool), TypeError, ("bool",)),
        (np.array([[0, 1, K], [0, 0, 0]]), ValueError, ("[0, 3)", "[3]")),
        (np.array([[0, -2, 0], [0, 0, 0]]), ValueError, ("[-2]",)),
    ],
)
def test_crf_tags_are_checked(tags, exc, fragments):
    with raises(exc, "tags", *fragments):
        crf_log_likelihood(E, tags, G, MASK)


@probe("error", "nn.crf_log_partition", "nn.crf_viterbi")
def test_crf_shape_errors_are_raised_under_jit():
    with raises(ValueError, "transitions", "(3, 3)"):
        jax.jit(crf_log_partition)(E, G[:2])
    with raises(ValueError, "mask", "(2, 3)"):
        jax.jit(crf_viterbi)(E, G, MASK[:1])


@probe("error", "nn.CRF")
@pytest.mark.parametrize("bad,exc", BAD_SIZES)
def test_crf_module_num_tags_is_a_positive_int(bad, exc):
    _size_error(lambda v: CRF(v, rngs=RNGS), exc, bad, "num_tags")


@probe("error", "nn.CRF")
@pytest.mark.parametrize(
    "kwargs,exc,argument",
    [
        (dict(use_start_end=1), TypeError, "use_start_end"),
        (dict(param_dtype=jnp.int32), TypeError, "param_dtype"),
        (dict(param_dtype=jnp.complex64), TypeError, "param_dtype"),
    ],
)
def test_crf_module_flags_and_dtypes(kwargs, exc, argument):
    with raises(exc, argument):
        CRF(K, rngs=RNGS, **kwargs)


@probe("error", "nn.CRF")
def test_crf_module_methods_name_bad_inputs():
    crf = CRF(K, rngs=nnx.Rngs(0))
    with raises(ValueError, "tags", "got [3"):
        crf.log_likelihood(E, np.full((2, 3), K), MASK)
    with raises(TypeError, "mask", "int32"):
        crf.decode(E, MASK.astype(np.int32))
    with raises(ValueError, "emissions", "(2, 3, 4)"):
        crf.marginals(np.zeros((2, 3, K + 1), np.float32))


def _brute(e, g, a=None, b=None):
    """Float64 enumeration of one sequence: (log Z, max score, marginals, path score)."""
    e, g = np.asarray(e, np.float64), np.asarray(g, np.float64)
    t, k = e.shape
    a = np.zeros(k) if a is None else np.asarray(a, np.float64)
    b = np.zeros(k) if b is None else np.asarray(b, np.float64)

    def score(p):
        p = np.asarray(p)
        return a[p[0]] + e[np.arange(t), p].sum() + g[p[:-1], p[1:]].sum() + b[p[-1]]

    paths = np.array(list(itertools.product(range(k), repeat=t)))
    s = np.array([score(p) for p in paths])
    with np.errstate(invalid="ignore", divide="ignore"):
        log_z = np.logaddexp.reduce(s)
        prob = np.exp(s - log_z) if np.isfinite(log_z) else np.zeros(len(s))
    marg = np.zeros((t, k))
    for i in range(t):
        np.add.at(marg[i], paths[:, i], prob)
    return log_z, s.max(), marg, score


@jax.jit
def _crf_all(e, g, mask, tags):
    """Every CRF function, both partition algorithms, and the gradients of the finite parts."""

    def finite_sum(x):
        return jnp.sum(jnp.where(jnp.isfinite(x), x, 0.0))

    def loss(e, g):
        return finite_sum(crf_log_likelihood(e, tags, g, mask)) + finite_sum(
            crf_log_partition(e, g, mask, parallel=True)
        )

    return dict(
        log_z=crf_log_partition(e, g, mask),
        log_z_par=crf_log_partition(e, g, mask, parallel=True),
        ll=crf_log_likelihood(e, tags, g, mask),
        viterbi=crf_viterbi(e, g, mask),
        marg=crf_marginals(e, g, mask),
        marg_par=crf_marginals(e, g, mask, parallel=True),
        grads=jax.grad(loss, (0, 1))(e, g),
    )


def _check_against_brute(out, e, g, mask, tags):
    for i in range(e.shape[0]):
        n = int(mask[i].sum())
        log_z, best, marg, score = _brute(e[i, :n], g)
        for key in ("log_z", "log_z_par"):
            np.testing.assert_allclose(out[key][i], log_z, rtol=1e-5)
        with np.errstate(invalid="ignore"):
            want_ll = -np.inf if not np.isfinite(log_z) else score(tags[i, :n]) - log_z
        np.testing.assert_allclose(out["ll"][i], want_ll, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(out["viterbi"][1][i], best, rtol=1e-5)
        for key in ("marg", "marg_par"):
            np.testing.assert_allclose(out[key][i, :n], marg, atol=1e-5)
            np.testing.assert_array_equal(out[key][i, n:], 0.0)
    for grad in out["grads"]:
        assert np.all(np.isfinite(grad))


@probe("value", "nn.crf_log_partition", "nn.crf_log_likelihood", "nn.crf_viterbi",
       "nn.crf_marginals")  # fmt: skip
@pytest.mark.parametrize("case", ["all_transitions", "one_step_row", "dead_emission_step"])
def test_crf_without_a_possible_path_gives_minus_inf(case):
    e, g = E.copy(), np.full((K, K), -np.inf, np.float32)
    mask = np.array([[True, True, True], [True, False, False]])
    if case == "one_step_row":  # row 1 has one step: possible although every transition is -inf
        pass
    elif case == "dead_emission_step":  # finite transitions, but no tag allowed at row 0, step 1
        g, e[0, 1] = G.copy(), -np.inf
    else:
        mask = np.ones_like(mask)
    tags = np.zeros((2, 3), np.int32)
    out = jax.tree.map(np.asarray, _crf_all(e, g, mask, tags))
    assert np.isneginf(out["log_z"][0]) and np.isneginf(out["ll"][0])  # formerly NaN
    assert np.isneginf(out["viterbi"][1][0]) and np.all(out["marg"][0] == 0)
    assert np.all((out["viterbi"][0][0] >= 0) & (out["viterbi"][0][0] < K))  # documented
    _check_against_brute(out, e, g, mask, tags)


@probe("value", "nn.crf_log_likelihood", "nn.crf_log_partition", "nn.crf_marginals")
def test_crf_impossible_path_next_to_possible_ones():
    g = G.copy()
    g[0, 1] = -np.inf  # tag 0 never followed by tag 1
    e = E.copy()
    e[1, 2] = -np.inf  # a -inf emission at a padded step of row 1 must be ignored
    g[2, 0] = -np.inf  # ... and so must the transition into the padded step (tag 0 there)
    tags = np.array([[0, 1, 2], [1, 2, 0]], np.int32)  # row 0 impossible, row 1 possible
    out = jax.tree.map(np.asarray, _crf_all(e, g, MASK, tags))
    assert np.isneginf(out["ll"][0]) and np.isfinite(out["ll"][1])  # row 1 was NaN (-inf * 0)
    _check_against_brute(out, e, g, MASK, tags)


@probe("value", "nn.crf_log_partition", "nn.crf_log_likelihood", "nn.crf_viterbi",
       "nn.crf_marginals")  # fmt: skip
def test_crf_empty_batch():
    e, tags = np.zeros((0, 3, K), np.float32), np.zeros((0, 3), np.int32)
    # Shapes of everything by tracing alone (compiling them all would cost seconds).
    out = jax.eval_shape(_crf_all, e, G, np.ones((0, 3), bool), tags)
    assert out["log_z"].shape == out["ll"].shape == out["viterbi"][1].shape == (0,)
    assert out["viterbi"][0].shape == (0, 3) and out["marg"].shape == (0, 3, K)


@probe("value", "nn.crf_log_partition", "nn.crf_log_likelihood", "nn.crf_viterbi")
@pytest.mark.parametrize("scale", [1e-30, 1e30])
def test_crf_huge_and_tiny_scores(scale):
    e, g = (E * scale).astype(np.float32), (G * scale).astype(np.float32)
    tags = np.array([[0, 1, 2], [2, 2, 0]], np.int32)
    _check_against_brute(jax.tree.map(np.asarray, _crf_all(e, g, MASK, tags)), e, g, MASK, tags)


@probe("value", "nn.crf_log_partition", "nn.crf_log_likelihood", "nn.crf_viterbi",
       "nn.crf_marginals")  # fmt: skip
def test_crf_traced_mask_is_read_as_its_valid_prefix():
    # Holes and empty rows cannot be checked under jit: the documented reading is the leading
    # run of True values, the first step always valid.
    traced = np.array([[True, False, True], [False, False, False]])
    prefix = np.array([[True, False, False], [True, False, False]])
    tags = np.zeros((2, 3), np.int32)
    got, want = _crf_all(E, G, traced, tags), _crf_all(E, G, prefix, tags)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_array_equal(a, b)


@probe("value", "nn.crf_log_likelihood")
def test_crf_traced_tags_out_of_range_give_minus_inf():
    tags = np.array([[0, K, 0], [1, 2, 99]], np.int32)  # row 0 invalid; row 1 pads the 99
    ll = np.asarray(_crf_all(E, G, MASK, tags)["ll"])
    assert np.isneginf(ll[0])
    log_z, _, _, score = _brute(E[1, :2], G)
    np.testing.assert_allclose(ll[1], score(tags[1, :2]) - log_z, rtol=1e-5)


@probe("value", "nn.CRF")
@pytest.mark.parametrize("use_start_end", [True, False])
def test_crf_module_with_forbidden_transitions(use_start_end):
    # Every transition forbidden: only the one-step row (mask) has a possible path.
    crf = CRF(K, use_start_end=use_start_end, rngs=nnx.Rngs(0))
    crf.transitions[...] = jnp.full((K, K), -jnp.inf)
    mask = np.array([[True, True, True], [True, False, False]])
    tags = np.zeros((2, 3), np.int32)
    ll, marg = nnx.jit(lambda m: (m(E, tags, mask), m.marginals(E, mask)))(crf)
    a, b = (None, None) if not use_start_end else (crf.start[...], crf.end[...])
    log_z, _, want_marg, score = _brute(E[1, :1], np.asarray(G), a, b)
    assert np.isneginf(ll[0]) and np.all(np.asarray(marg[0]) == 0)
    np.testing.assert_allclose(ll[1], score(tags[1, :1]) - log_z, rtol=1e-5)
    np.testing.assert_allclose(marg[1, :1], want_marg, atol=1e-6)


# ---------------------------------------------------------------------------- squash


@probe("error", "nn.squash")
@pytest.mark.parametrize(
    "kwargs,exc,argument,fragment",
    [
        (dict(offset=0.0), ValueError, "offset", "0.0"),
        (dict(offset=-1.0), ValueError, "offset", "-1.0"),
        (dict(offset=NAN), ValueError, "offset", "nan"),
        (dict(offset=INF), ValueError, "offset", "inf"),
        (dict(offset=jnp.array(NAN)), ValueError, "offset", "nan"),
        (dict(offset=jnp.array(0.0)), ValueError, "offset", "0."),
        (dict(offset=jnp.ones(2)), ValueError, "offset", "(2,)"),
        (dict(offset="1"), TypeError, "offset", "'1'"),
        (dict(offset=True), TypeError, "offset", "True"),
        (dict(axis=1), ValueError, "axis", "1"),
        (dict(axis=-2), ValueError, "axis", "-2"),
        (dict(axis=0.0), TypeError, "axis", "0.0"),
    ],
)
def test_squash_arguments_are_checked(kwargs, exc, argument, fragment):
    with raises(exc, argument, fragment):
        squash(jnp.ones(3), **kwargs)


@probe("error", "nn.squash")
@pytest.mark.parametrize("dtype", [jnp.complex64, jnp.bool_])
def test_squash_rejects_complex_and_bool(dtype):
    with raises(TypeError, "s", jnp.dtype(dtype).name):
        squash(jnp.ones(3, dtype))


def _np_squash(s, offset=1.0):
    """Eq. (1) of the capsule paper in float64, by the norm's exact scaling."""
    s = np.asarray(s, np.float64)
    m = np.abs(s).max(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        unit = np.where(m > 0, (s / m) / np.linalg.norm(s / m, axis=-1, keepdims=True), 0.0)
        norm = m * np.linalg.norm(s / np.where(m > 0, m, 1.0), axis=-1, keepdims=True)
        length = np.where(
            norm > 1, 1.0 / (1.0 + offset / norm / norm), norm**2 / (offset + norm**2)
        )
    return unit * length


_squash = jax.jit(squash, static_argnames="offset")
_squash_jac = jax.jit(jax.jacrev(squash))


@probe("value", "nn.squash")
@given(
    exponent=st.integers(-15, 38),
    direction=st.lists(st.floats(-1, 1), min_size=3, max_size=3).filter(
        lambda v: max(map(abs, v)) > 0.1
    ),
)
def test_squash_is_exact_at_every_scale(exponent, direction):
    # float32 lengths from 1e-15 to 1e38: no ||s||^2 overflow, no 0/0.
    s = np.asarray(direction, np.float32) * np.float32(10.0**exponent)
    got = np.asarray(_squash(s), np.float64)
    want = _np_squash(s)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * np.abs(want).max())
    assert np.all(np.isfinite(_squash_jac(s)))


@probe("value", "nn.squash")
@pytest.mark.parametrize(
    "s,want",
    [
        ([np.inf, 1.0, 2.0], [1.0, 0.0, 0.0]),
        ([-np.inf, 0.0, np.inf], [-(0.5**0.5), 0.0, 0.5**0.5]),
        ([1e20, 1e20, 0.0], [0.5**0.5, 0.5**0.5, 0.0]),
        ([3e38, -3e38, 3e38], [3**-0.5, -(3**-0.5), 3**-0.5]),
        ([0.0, 0.0, 0.0], [0.0, 0.0, 0.0]),
    ],
)
def test_squash_limits(s, want):
    # ||s|| -> inf: the unit direction (the length s^2/(1+s^2) -> 1); zero: 0.
    got = _squash(jnp.asarray(s, jnp.float32))
    np.testing.assert_allclose(got, np.asarray(want), rtol=1e-6, atol=1e-7)
    jac = np.asarray(_squash_jac(jnp.asarray(s, jnp.float32)))
    assert np.all(np.isfinite(jac))
    if not any(s):
        assert np.all(jac == 0)  # the exact Jacobian at 0


@probe("value", "nn.squash")
def test_squash_float64_huge(x64):
    s = jnp.array([[1e300, -1e300, 1e-300], [1.0, -1.0, 1e-300 * 1e-300]], jnp.float64)
    want = [[0.5**0.5, -(0.5**0.5), 0.0], _np_squash(np.asarray(s[1]))]
    np.testing.assert_allclose(_squash(s), want, rtol=1e-14, atol=1e-300)


# ------------------------------------------------------------------- dynamic_routing

VOTES = jnp.ones((1, 2, K, D))


@probe("error", "nn.dynamic_routing")
@pytest.mark.parametrize("bad,exc", BAD_SIZES)
def test_routing_num_iters_is_a_positive_int(bad, exc):
    _size_error(lambda v: dynamic_routing(VOTES, v), exc, bad, "num_iters")


@probe("error", "nn.dynamic_routing")
@pytest.mark.parametrize(
    "u_hat,kwargs,exc,argument,fragment",
    [
        (VOTES, dict(method="em"), ValueError, "method", "'em'"),
        (VOTES, dict(method=None), ValueError, "method", "None"),
        (jnp.ones((2, 3)), {}, ValueError, "u_hat", "(2, 3)"),
        (VOTES.astype(jnp.complex64), {}, TypeError, "u_hat", "complex64"),
        (VOTES.astype(bool), {}, TypeError, "u_hat", "bool"),
    ],
)
def test_routing_arguments_are_checked(u_hat, kwargs, exc, argument, fragment):
    with raises(exc, argument, fragment):
        dynamic_routing(u_hat, **kwargs)


_route = jax.jit(dynamic_routing, static_argnums=1, static_argnames="method")


@functools.partial(jax.jit, static_argnames="method")
def _route_and_grad(u, method):
    out, vjp = jax.vjp(lambda u: dynamic_routing(u, 2, method=method), u)
    return out, vjp(jnp.ones_like(out))[0]  # the gradient of a linear read-out


@probe("value", "nn.dynamic_routing")
@pytest.mark.parametrize("method", ["hinton", "kmeans"])
def test_routing_zero_votes_give_zero_capsules(method):
    out, grad = _route_and_grad(jnp.zeros((2, 3, K, D)), method)
    assert np.all(np.asarray(out) == 0) and np.all(np.isfinite(grad))


@probe("value", "nn.dynamic_routing")
@pytest.mark.parametrize("method", ["hinton", "kmeans"])
@pytest.mark.parametrize("scale", [1e-12, 1e18])
def test_routing_one_output_capsule_at_huge_and_tiny_scales(method, scale):
    # One output capsule: every coupling is 1, so the output is squash(sum_i u_i) exactly.
    u = np.random.default_rng(2).normal(size=(2, 4, 1, 3)).astype(np.float32) * scale
    offset = 1.0 if method == "hinton" else 0.5
    want = _np_squash(np.asarray(u, np.float64).sum(1), offset)
    got = np.asarray(_route(u, 3, method=method), np.float64)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * np.abs(want).max())


# --------------------------------------------------------------------------- Capsule


@probe("error", "nn.Capsule")
@pytest.mark.parametrize(
    "argument", ["in_features", "num_capsules", "capsule_dim", "routings", "num_inputs"]
)
@pytest.mark.parametrize("bad,exc", BAD_SIZES)
def test_capsule_sizes_are_positive_ints(argument, bad, exc):
    kwargs = dict(in_features=4, num_capsules=K, capsule_dim=D)
    if argument == "num_inputs":
        kwargs["share_weights"] = False

    def make(value):
        Capsule(**{**kwargs, argument: value}, rngs=RNGS)

    _size_error(make, exc, bad, argument)


@probe("error", "nn.Capsule")
@pytest.mark.parametrize(
    "kwargs,exc,argument",
    [
        (dict(method="em"), ValueError, "method"),
        (dict(share_weights=1), TypeError, "share_weights"),
        (dict(share_weights=False), ValueError, "num_inputs"),
        (dict(num_inputs=3), ValueError, "num_inputs"),
        (dict(param_dtype=jnp.int32), TypeError, "param_dtype"),
        (dict(dtype=jnp.complex64), TypeError, "dtype"),
    ],
)
def test_capsule_construction_flags(kwargs, exc, argument):
    with raises(exc, argument):
        Capsule(4, K, D, rngs=RNGS, **kwargs)


@pytest.fixture(scope="module")
def capsule_layers():
    return (
        Capsule(4, K, D, rngs=nnx.Rngs(0)),
        # Abstract (no initialisation to compile): its shape check comes before the kernel.
        nnx.eval_shape(
            lambda: Capsule(4, K, D, share_weights=False, num_inputs=2, rngs=nnx.Rngs(0))
        ),
    )


@probe("error", "nn.Capsule")
def test_capsule_call_shapes_and_dtypes(capsule_layers):
    shared, per_input = capsule_layers
    with raises(ValueError, "u", "(1, 2, 5)", "(B, n_in, 4)"):
        shared(jnp.ones((1, 2, 5)))
    with raises(ValueError, "u", "num_inputs = 2", "3"):
        per_input(jnp.ones((1, 3, 4)))
    with raises(TypeError, "u", "complex64"):
        shared(jnp.ones((1, 2, 4), jnp.complex64))


@probe("value", "nn.Capsule", "nn.dynamic_routing")
def test_capsule_zero_and_empty_inputs(capsule_layers):
    shared, _ = capsule_layers
    read_out = jnp.arange(D, dtype=jnp.float32).reshape(1, 1, D)
    empty, zero = jnp.zeros((1, 0, 4)), jnp.zeros((1, 2, 4))  # no input capsules; zero ones

    @nnx.jit
    def run(layer):
        return layer(empty), layer(zero), nnx.grad(lambda m: jnp.sum(m(zero) * read_out))(layer)

    for out in run(shared)[:2]:
        assert out.shape == (1, K, D) and np.all(np.asarray(out) == 0)
    assert np.all(np.isfinite(run(shared)[2].kernel[...]))


# ------------------------------------------------------------- cosine_logits, CosineDense


@probe("error", "nn.cosine_logits")
@pytest.mark.parametrize(
    "x,kernel,kwargs,exc,argument,fragments",
    [
        (jnp.ones(3), jnp.ones(3), {}, ValueError, "kernel", ("(D, K)", "(3,)")),
        (jnp.ones((2, 4)), jnp.ones((3, 2)), {}, ValueError, "x", ("(2, 4)", "(3, 2)")),
        (jnp.ones(()), jnp.ones((3, 2)), {}, ValueError, "x", ("()",)),
        (jnp.ones(3, jnp.complex64), jnp.ones((3, 2)), {}, TypeError, "x", ("complex64",)),
        (jnp.ones(3), jnp.ones((3, 2), bool), {}, TypeError, "kernel", ("bool",)),
        (jnp.ones(3), jnp.ones((3, 2)), dict(eps="1e-12"), TypeError, "eps", ()),
        (jnp.ones(3), jnp.ones((3, 2)), dict(precision="x"), ValueError, "precision", ("'x'",)),
    ],
)
def test_cosine_logits_bad_arguments(x, kernel, kwargs, exc, argument, fragments):
    with raises(exc, argument, *fragments):
        cosine_logits(x, kernel, **kwargs)


@probe("error", "nn.cosine_logits", "nn.CosineDense")
@pytest.mark.parametrize("bad", BAD_NONNEGATIVE)
def test_cosine_eps_range(bad):
    with raises(ValueError, "eps", _fragment(bad)):
        cosine_logits(jnp.ones(3), jnp.ones((3, 2)), eps=bad)
    with raises(ValueError, "eps", _fragment(bad)):
        CosineDense(3, 2, eps=bad, rngs=RNGS)


@probe("error", "nn.CosineDense")
@pytest.mark.parametrize("argument", ["in_features", "out_features"])
@pytest.mark.parametrize("bad,exc", BAD_SIZES)
def test_cosine_dense_sizes(argument, bad, exc):
    def make(value):
        CosineDense(**{"in_features": 3, "out_features": 2, argument: value}, rngs=RNGS)

    _size_error(make, exc, bad, argument)


HEAD_KWARGS = [
    (dict(kernel_init="lecun"), TypeError, "kernel_init"),
    (dict(param_dtype=jnp.int32), TypeError, "param_dtype"),
    (dict(dtype=jnp.complex64), TypeError, "dtype"),
]


@probe("error", "nn.CosineDense")
@pytest.mark.parametrize("kwargs,exc,argument", HEAD_KWARGS)
def test_cosine_dense_construction(kwargs, exc, argument):
    with raises(exc, argument):
        CosineDense(3, 2, rngs=RNGS, **kwargs)


@probe("error", "nn.CosineDense")
def test_cosine_dense_call():
    layer = COSINE_DENSE
    with raises(ValueError, "x", "(..., 3)", "(2, 4)"):
        layer(jnp.ones((2, 4)))
    with raises(TypeError, "x", "complex64"):
        layer(jnp.ones((2, 3), jnp.complex64))


def _np_cosine(x, kernel, eps=1e-12):
    """float64: x / max(|x|, sqrt eps) against columns / max(|w|, sqrt eps), scaled norms."""
    x, kernel = np.asarray(x, np.float64), np.asarray(kernel, np.float64)

    def normalize(a, axis):
        m = np.abs(a).max(axis, keepdims=True)
        m = np.where(m > 0, m, 1.0)
        norm = m * np.linalg.norm(a / m, axis=axis, keepdims=True)
        denom = np.maximum(norm, np.sqrt(eps))
        return np.where(denom > 0, a / np.where(denom > 0, denom, 1.0), 0.0)  # zero -> 0

    return normalize(x, -1) @ normalize(kernel, 0)


_cosine = jax.jit(cosine_logits)
COSINE_DENSE = CosineDense(3, 2, rngs=nnx.Rngs(0))


@probe("value", "nn.cosine_logits", "nn.CosineDense")
@pytest.mark.parametrize("scale", [1e-3, 1e20, 1e30])
def test_cosine_logits_at_huge_scales(scale):
    # |x|^2 overflows float32 beyond 1.8e19: the scaled norm gives the exact cosines.
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(4, 3)) * scale).astype(np.float32)
    kernel = (rng.normal(size=(3, 2)) * scale).astype(np.float32)
    np.testing.assert_allclose(_cosine(x, kernel), _np_cosine(x, kernel), rtol=1e-5, atol=1e-6)
    COSINE_DENSE.kernel[...] = jnp.asarray(kernel)
    got = _apply(COSINE_DENSE, x)
    np.testing.assert_allclose(got, _np_cosine(x, kernel), rtol=1e-5, atol=1e-6)


@probe("value", "nn.cosine_logits")
def test_cosine_logits_zero_vectors_and_empty_batch():
    x = jnp.array([[0.0, 0.0, 0.0], [1.0, 2.0, 2.0]])
    kernel = jnp.array([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])  # a zero column

    @jax.jit
    def run(x, kernel):
        grads = jax.grad(lambda a, b: jnp.sum(jnp.sin(cosine_logits(a, b))), (0, 1))(x, kernel)
        # eps = 0: the zero vector still maps to 0 (no 0/0).
        return cosine_logits(x, kernel), cosine_logits(x, kernel, eps=0.0), grads

    cos, cos0, grads = run(x, kernel)
    np.testing.assert_allclose(cos, _np_cosine(x, kernel), atol=1e-7)
    np.testing.assert_allclose(cos0, _np_cosine(x, kernel, 0.0), atol=1e-7)
    assert all(np.all(np.isfinite(g)) for g in grads)
    assert jax.eval_shape(cosine_logits, jnp.zeros((0, 3)), kernel).shape == (0, 2)


# --------------------------------------------------------- cascade_scores, CascadingRejection

CASCADES = {"cascade_scores": cascade_scores, "cascade_residuals": cascade_residuals}


@probe("error", "nn.cascade_scores", "nn.cascade_residuals")
@pytest.mark.parametrize(
    "v,ws,exc,argument,fragments",
    [
        (jnp.ones(3), jnp.ones((0, 3)), ValueError, "ws", ("S, D >= 1", "(0, 3)")),
        (jnp.ones(0), jnp.ones((2, 0)), ValueError, "ws", ("(2, 0)",)),
        (jnp.ones(4), jnp.ones(4), ValueError, "ws", ("(S, D)", "(4,)")),
        (jnp.ones((2, 3)), jnp.ones((2, 4)), ValueError, "v", ("(2, 3)", "(2, 4)")),
        (jnp.ones(()), jnp.ones((2, 1)), ValueError, "v", ("()",)),
        (jnp.ones(3, jnp.complex64), jnp.ones((2, 3)), TypeError, "v", ("complex64",)),
        (jnp.ones(3), jnp.ones((2, 3), bool), TypeError, "ws", ("bool",)),
    ],
)
def test_cascade_bad_arguments(v, ws, exc, argument, fragments):
    for fn in CASCADES.values():
        with raises(exc, argument, *fragments):
            fn(v, ws)


def _np_cascade(v, ws):
    """float64 cascade of one vector: (scores, residuals), the projections on scaled w."""
    v = np.asarray(v, np.float64)
    scores, residuals = [], [v]
    for w in np.asarray(ws, np.float64):
        scores.append(v @ w)
        u = w / np.abs(w).max() if np.abs(w).max() > 0 else w
        if np.abs(w).max() > 0:
            v = v - (v @ u) / (u @ u) * u
        residuals.append(v)
    return np.array(scores), np.stack(residuals)


_cascade = jax.jit(lambda v, ws: (cascade_scores(v, ws), cascade_residuals(v, ws)))
_cascade_grads = jax.jit(jax.grad(lambda v, ws: jnp.sum(cascade_residuals(v, ws) ** 2), (0, 1)))


@probe("value", "nn.cascade_scores", "nn.cascade_residuals")
@pytest.mark.parametrize("w_scale", [0.0, 1e-30, 1.0, 1e30, 1e38])
def test_cascade_projections_at_every_weight_scale(w_scale):
    # ||w||^2 over- or underflows float32 here; the projection is scale-free. w = 0 stages
    # score 0 and pass v on unchanged.
    rng = np.random.default_rng(4)
    v = rng.normal(size=(2, 3)).astype(np.float32)
    ws = (rng.normal(size=(2, 3)) * w_scale).astype(np.float32)
    scores, residuals = (np.asarray(a, np.float64) for a in _cascade(v, ws))
    for i in range(2):
        want_s, want_r = _np_cascade(v[i], ws)
        np.testing.assert_allclose(scores[i], want_s, rtol=1e-5, atol=1e-6 * (w_scale or 1))
        np.testing.assert_allclose(residuals[i], want_r, rtol=1e-5, atol=1e-6)
    assert all(np.all(np.isfinite(g)) for g in _cascade_grads(v, ws))


@probe("value", "nn.cascade_scores", "nn.cascade_residuals")
def test_cascade_empty_batch():
    scores, residuals = _cascade(jnp.zeros((0, 3)), jnp.ones((2, 3)))
    assert scores.shape == (0, 2) and residuals.shape == (0, 3, 3)


@probe("error", "nn.CascadingRejection")
@pytest.mark.parametrize("argument", ["in_features", "num_stages"])
@pytest.mark.parametrize("bad,exc", BAD_SIZES)
def test_cascading_rejection_sizes(argument, bad, exc):
    def make(value):
        CascadingRejection(**{"in_features": 3, "num_stages": 2, argument: value}, rngs=RNGS)

    _size_error(make, exc, bad, argument)


@probe("error", "nn.CascadingRejection")
@pytest.mark.parametrize(
    "kwargs,exc,argument", HEAD_KWARGS + [(dict(use_bias="yes"), TypeError, "use_bias")]
)
def test_cascading_rejection_construction(kwargs, exc, argument):
    with raises(exc, argument):
        CascadingRejection(3, 2, rngs=RNGS, **kwargs)


@probe("error", "nn.CascadingRejection")
def test_cascading_rejection_call():
    head = CascadingRejection(3, 2, rngs=nnx.Rngs(0))
    with raises(ValueError, "v", "(..., 3)", "(4,)"):
        head(jnp.ones(4))
    with raises(TypeError, "v", "complex64"):
        head(jnp.ones(3, jnp.complex64))


@probe("value", "nn.CascadingRejection")
@pytest.mark.parametrize("use_bias", [True, False])
def test_cascading_rejection_zero_kernel_scores_the_bias(use_bias):
    # Zero stages score 0 (plus the bias) with finite gradients, not 0/0.
    head = CascadingRejection(3, 2, use_bias=use_bias, rngs=nnx.Rngs(0))
    head.kernel[...] = jnp.zeros((2, 3))
    bias = np.array([0.5, -1.0]) if use_bias else np.zeros(2)
    if use_bias:
        head.bias[...] = jnp.asarray(bias, jnp.float32)
    v = jnp.ones((4, 3))

    @nnx.jit
    def run(head):
        return head(v), nnx.grad(lambda m: jnp.sum(m(v) ** 2))(head)

    scores, grads = run(head)
    np.testing.assert_array_equal(scores, np.broadcast_to(bias, (4, 2)))
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
