"""Claims of "级联抑制：提升GAN表现的一种简单有效的方法" (https://kexue.fm/archives/7105).

Cascading rejection (Shin et al., arXiv:1911.10979) scores a discriminator's feature vector
:math:`v` in stages: :math:`D_k = \\langle v_k, w_k\\rangle` with :math:`v_1 = v` and
:math:`v_{k+1}` the part of :math:`v_k` orthogonal to :math:`w_k`. The post's point is
geometric: one score :math:`\\langle v, w\\rangle` sees only the projection of :math:`v` on
:math:`w`, and every later stage scores a component the earlier ones ignored. The GAN
results (FID/IS on CIFAR-10 and others) are out of this budget.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxtricks.nn import cascade_residuals, cascade_scores
from jaxtricks.reproduce._registry import Claim, Measurement, claim

CLAIMS: list[Claim] = []
POST = "7105"
_B, _D, _S = 512, 64, 8


def _inputs(dtype: jnp.dtype) -> tuple[jax.Array, jax.Array]:
    """Random features and stages whose scales span 1e-3 to 1e3 (scale must not matter)."""
    rng = np.random.default_rng(0)
    v = rng.standard_normal((_B, _D))
    ws = rng.standard_normal((_S, _D)) * np.logspace(-3, 3, _S)[:, None]
    return jnp.asarray(v, dtype), jnp.asarray(ws, dtype)


def _worst_cosine(dtype: jnp.dtype) -> float:
    """max over examples and stages of |<v_{k+1}, w_k>| / (|v_k| |w_k|)."""
    v, ws = _inputs(dtype)
    res = np.asarray(jax.jit(cascade_residuals)(v, ws), np.float64)  # (B, S + 1, D)
    w = np.asarray(ws, np.float64)
    dots = np.abs(np.einsum("bsd,sd->bs", res[:, 1:], w))
    norms = np.linalg.norm(res[:, :-1], axis=-1) * np.linalg.norm(w, axis=-1)[None]
    return float(np.max(dots / norms))


@claim(
    CLAIMS,
    name="cascade/residuals-orthogonal",
    post=POST,
    statement="Each cascade residual is orthogonal to the stage weight it was projected "
    "against: <v_{k+1}, w_k> = 0.",
    expected=f"max_k |<v_(k+1), w_k>| / (|v_k| |w_k|) <= 1e-6 in float32 and <= 1e-13 in "
    f"float64 ({_B} random vectors of dimension {_D}, {_S} stages with norms from 1e-3 to 1e3)",
)
def residuals_orthogonal() -> Measurement:
    f32 = _worst_cosine(jnp.float32)
    with jax.enable_x64(True):
        f64 = _worst_cosine(jnp.float64)
    return Measurement(
        f"max relative |<v_(k+1), w_k>|: float32 {f32:.1e}, float64 {f64:.1e}",
        ok=f32 <= 1e-6 and f64 <= 1e-13,
    )


@claim(
    CLAIMS,
    name="cascade/scores-see-every-direction",
    post=POST,
    statement="One score <v, w> ignores the component of v orthogonal to w; the cascade "
    "splits |v|^2 into the stages' parts, |v|^2 = sum_k D_k^2/|w_k|^2 + |v_(S+1)|^2, and "
    "with S = D independent stages the scores determine v.",
    expected=f"float64, {_B} vectors, D = {_D}: Pythagorean split exact to <= 1e-12 relative; "
    "rank of v -> (D_1..D_S) equals S for S = 1, 8, D; v recovered from the D scores to "
    "<= 1e-8 relative; vectors differing only orthogonally to w_1 share D_1 but not D_2..D_S",
)
def scores_see_every_direction() -> Measurement:
    with jax.enable_x64(True):
        rng = np.random.default_rng(1)
        v = rng.standard_normal((_B, _D))
        ws = rng.standard_normal((_D, _D))
        scores = np.asarray(cascade_scores(v, ws))  # (B, D)
        last = np.asarray(cascade_residuals(v, ws))[:, -1]
        parts = (scores**2 / (ws**2).sum(-1)[None]).sum(-1) + (last**2).sum(-1)
        split = float(np.max(np.abs(parts - (v**2).sum(-1)) / (v**2).sum(-1)))
        # The scores are linear in v: their matrix is the scores of the standard basis.
        ranks = [
            int(np.linalg.matrix_rank(np.asarray(cascade_scores(np.eye(_D), ws[:s]))))
            for s in (1, 8, _D)
        ]
        basis = np.asarray(cascade_scores(np.eye(_D), ws))  # row i: scores of e_i
        recovered = np.linalg.solve(basis.T, scores.T).T
        recon = float(np.max(np.linalg.norm(recovered - v, axis=-1) / np.linalg.norm(v, axis=-1)))
        # Same first score, different perpendicular part.
        u = rng.standard_normal(_D)
        u -= (u @ ws[0]) / (ws[0] @ ws[0]) * ws[0]
        pair = np.asarray(cascade_scores(np.stack([v[0], v[0] + u]), ws[:_S]))
        d1 = float(abs(pair[0, 0] - pair[1, 0]))
        later = float(np.max(np.abs(pair[0, 1:] - pair[1, 1:])))
    measured = (
        f"split rel. err {split:.1e}; ranks (S=1, 8, {_D}) = {tuple(ranks)}; "
        f"recovery rel. err {recon:.1e}; |dD_1| = {d1:.1e} vs max |dD_k|, k>1 = {later:.2f}"
    )
    ok = (
        split <= 1e-12
        and ranks == [1, 8, _D]
        and recon <= 1e-8
        and d1 <= 1e-12 * (1 + later)
        and later > 1e-3
    )
    return Measurement(measured, ok=ok)
