"""Claims of "从EMD、WMD到WRD：文本向量序列的相似度计算" (https://kexue.fm/archives/7388).

Word mover's distance (Kusner et al., 2015) moves the uniformly weighted words of one text
onto the other's along Euclidean distances; word rotator's distance (Yokoi et al., 2020,
arXiv:2004.15003) weights words by their norms and moves them along the cosine distance.
The claims: the batched fixed-iteration Sinkhorn solver of :mod:`jaxtricks.distances`
matches an exact solver; WRD(x, x) = 0; 0 <= WRD <= 2; WMD >= the word centroid distance;
WRD >= its lower bound (half the squared distance of the norm-weighted sums).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxtricks.distances import (
    word_centroid_distance,
    word_movers_distance,
    word_rotators_distance,
    wrd_lower_bound,
)
from jaxtricks.reproduce._registry import Claim, Measurement, claim

CLAIMS: list[Claim] = []
POST = "7388"
PAIRS, WORDS, DIM = 50, 20, 768


def _sentences(seed: int, count: int, words: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = (count, words, dim)
    return rng.standard_normal(shape).astype(np.float32), rng.standard_normal(shape).astype(
        np.float32
    )


def _reference(kind: str, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, str]:
    """Exact values in float64: POT's network simplex when installed, else the library's LP."""
    try:
        import ot
    except ImportError:
        fn = word_movers_distance if kind == "wmd" else word_rotators_distance
        with jax.enable_x64(True):
            exact = jax.vmap(lambda x, y: fn(x, y, method="exact"))
            return np.asarray(exact(jnp.asarray(xs, jnp.float64), jnp.asarray(ys, jnp.float64))), (
                "scipy HiGHS LP"
            )
    out = []
    for x, y in zip(xs.astype(np.float64), ys.astype(np.float64)):
        if kind == "wmd":
            a, b = np.full(len(x), 1 / len(x)), np.full(len(y), 1 / len(y))
            cost = np.sqrt(np.maximum(((x[:, None] - y[None]) ** 2).sum(-1), 0))
        else:
            nx, ny = np.linalg.norm(x, axis=1), np.linalg.norm(y, axis=1)
            a, b = nx / nx.sum(), ny / ny.sum()
            cost = 1 - (x / nx[:, None]) @ (y / ny[:, None]).T
        out.append(ot.emd2(a, b, cost))
    return np.array(out), "POT ot.emd2"


@claim(
    CLAIMS,
    name="wrd/sinkhorn-equals-exact",
    post=POST,
    statement="The batched Sinkhorn solver (defaults: epsilon 1e-3 of the cost spread, 60 "
    "epsilon-scaled iterations) gives WRD and WMD equal to the exact optimal transport cost.",
    expected=f"{PAIRS} random Gaussian pairs ({WORDS} words, {DIM} features, float32): max "
    "relative error vs the exact solver (POT ot.emd2, else an LP) <= 1e-3 for WRD and WMD",
)
def sinkhorn_equals_exact() -> Measurement:
    xs, ys = _sentences(0, PAIRS, WORDS, DIM)
    parts, ok = [], True
    for kind, fn in (("wrd", word_rotators_distance), ("wmd", word_movers_distance)):
        got = np.asarray(jax.jit(jax.vmap(fn))(jnp.asarray(xs), jnp.asarray(ys)), np.float64)
        exact, solver = _reference(kind, xs, ys)
        err = np.abs(got - exact) / exact
        ok &= bool(err.max() <= 1e-3)
        parts.append(
            f"{kind.upper()} (mean {exact.mean():.4f}): max rel err {err.max():.1e}, "
            f"median {np.median(err):.1e}"
        )
    return Measurement("; ".join(parts) + f" (reference: {solver})", ok=ok)


@claim(
    CLAIMS,
    name="wrd/self-distance-zero",
    post=POST,
    statement="WRD(x, x) = 0: every word stays in place.",
    expected="20 random sentences (20 words, 768 features, float64): exact WRD(x, x) <= 1e-9; "
    "Sinkhorn (float32) within its entropic bias, <= 1e-3",
)
def self_distance_zero() -> Measurement:
    xs, _ = _sentences(1, 20, WORDS, DIM)
    with jax.enable_x64(True):
        x64 = jnp.asarray(xs, jnp.float64)
        exact = np.asarray(jax.vmap(lambda x: word_rotators_distance(x, x, method="exact"))(x64))
    sinkhorn = np.asarray(jax.jit(jax.vmap(lambda x: word_rotators_distance(x, x)))(xs))
    worst_exact, worst_sinkhorn = float(np.abs(exact).max()), float(sinkhorn.max())
    return Measurement(
        f"max exact WRD(x, x) = {worst_exact:.1e}; max Sinkhorn WRD(x, x) = {worst_sinkhorn:.1e}",
        ok=worst_exact <= 1e-9 and 0 <= float(sinkhorn.min()) and worst_sinkhorn <= 1e-3,
    )


@claim(
    CLAIMS,
    name="wrd/bounds",
    post=POST,
    statement="0 <= WRD <= 2 (2 when every word of y points opposite to every word of x); "
    "WMD >= word centroid distance (triangle inequality); "
    "WRD >= 1/2 |sum x / Z - sum y / Z'|^2 with Z = sum |x_i| (Jensen).",
    expected="50 random pairs (8 and 6 words, 5 features, float64, exact LP): all WRD in "
    "[0, 2]; WRD = 2 within 1e-9 for 5 pairs of words along u and along -u; every slack "
    "WMD - WCD and WRD - bound >= -1e-9",
)
def bounds() -> Measurement:
    rng = np.random.default_rng(2)
    with jax.enable_x64(True):
        xs = jnp.asarray(rng.standard_normal((50, 8, 5)))
        ys = jnp.asarray(rng.standard_normal((50, 6, 5)))
        exact = lambda fn: jax.vmap(lambda x, y: fn(x, y, method="exact"))  # noqa: E731
        wrd = np.asarray(exact(word_rotators_distance)(xs, ys))
        wmd = np.asarray(exact(word_movers_distance)(xs, ys))
        wcd = np.asarray(jax.vmap(word_centroid_distance)(xs, ys))
        lower = np.asarray(jax.vmap(wrd_lower_bound)(xs, ys))
        # Positive multiples of one direction u against positive multiples of -u.
        u = jnp.asarray(rng.standard_normal((5, 1, 5)))
        lengths = jnp.asarray(rng.uniform(0.5, 2.0, (2, 5, 8, 1)))
        opposite = np.asarray(exact(word_rotators_distance)(lengths[0] * u, -lengths[1] * u))
    slack_wcd, slack_lb = (wmd - wcd).min(), (wrd - lower).min()
    return Measurement(
        f"WRD in [{wrd.min():.4f}, {wrd.max():.4f}]; opposite sentences max |WRD - 2| "
        f"{np.abs(opposite - 2).max():.1e}; min slack WMD - WCD {slack_wcd:.4f} "
        f"(mean WMD {wmd.mean():.3f}, WCD {wcd.mean():.3f}); min slack WRD - bound "
        f"{slack_lb:.4f} (mean WRD {wrd.mean():.3f}, bound {lower.mean():.3f})",
        ok=bool(
            wrd.min() >= 0
            and wrd.max() <= 2
            and np.abs(opposite - 2).max() <= 1e-9
            and slack_wcd >= -1e-9
            and slack_lb >= -1e-9
        ),
    )
