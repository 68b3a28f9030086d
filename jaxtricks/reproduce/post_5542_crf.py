"""Claims of "简明条件随机场CRF介绍（附带纯Keras实现）" (https://kexue.fm/archives/5542).

The post treats sequence labelling with :math:`K` tags over :math:`T` steps as one
classification among :math:`K^T` paths, scored by emissions plus a transition matrix
(Lafferty, McCallum, Pereira, ICML 2001). The Markov structure turns the sum over all
paths (the normaliser :math:`Z`) into a linear recursion,
:math:`Z_{t+1} = (Z_t G) \\otimes H_{t+1}`, and the best path into a dynamic programme
(Viterbi). The claims check :mod:`jaxtricks.nn`'s CRF against the literal enumeration of all
:math:`K^T` paths, against pytorch-crf, and its log-depth parallel scan against the
sequential recursion.
"""

from __future__ import annotations

import itertools

import jax
import numpy as np

from jaxtricks.nn import crf_log_likelihood, crf_log_partition, crf_marginals, crf_viterbi
from jaxtricks.reproduce._registry import Claim, ClaimSkipped, Measurement, claim

CLAIMS: list[Claim] = []
POST = "5542"


def _problem(seed: int, b: int, t: int, k: int, lengths, dtype=np.float32):
    rng = np.random.default_rng(seed)
    e = rng.normal(0.0, 2.0, (b, t, k)).astype(dtype)
    g = rng.normal(0.0, 1.0, (k, k)).astype(dtype)
    start, end = rng.normal(0.0, 1.0, (2, k)).astype(dtype)
    mask = np.arange(t)[None] < np.asarray(lengths)[:, None]
    tags = rng.integers(0, k, (b, t)).astype(np.int32)
    return e, g, start, end, mask, tags


def _enumerate(e, g, start, end, length):
    """Scores of all K^L paths of one sequence, in float64, by direct summation."""
    k = g.shape[0]
    paths = np.array(list(itertools.product(range(k), repeat=length)))
    s = start[paths[:, 0]] + end[paths[:, -1]]
    s = s + e[np.arange(length), paths].sum(axis=1)
    s = s + g[paths[:, :-1], paths[:, 1:]].sum(axis=1)
    return paths, s


@claim(
    CLAIMS,
    name="crf/brute-force",
    post=POST,
    statement="The forward recursion gives log Z of the sum over all K^T paths, and Viterbi "
    "gives the highest-scoring of the K^T paths, for every valid length of a masked batch, "
    "with and without start/end scores.",
    expected="K = 4, T = 7 (16,384 paths), lengths 7, 6, 4, 2, 1, float64: max |log Z - "
    "brute force| <= 1e-9 (sequential and parallel), every Viterbi path equal to the "
    "enumerated argmax and its score within 1e-9",
)
def brute_force() -> Measurement:
    lengths = (7, 6, 4, 2, 1)
    z_err, score_err, same, total = 0.0, 0.0, 0, 0
    with jax.enable_x64(True):
        e, g, a, b, mask, _ = _problem(0, len(lengths), 7, 4, lengths, np.float64)
        for use_start_end in (True, False):
            se = dict(start=a, end=b) if use_start_end else {}
            zero = np.zeros_like(a)

            @jax.jit
            def run(e, g, mask, se):
                log_z = [crf_log_partition(e, g, mask, **se, parallel=p) for p in (False, True)]
                return log_z, crf_viterbi(e, g, mask, **se)

            log_z, (paths, scores) = jax.tree.map(np.asarray, run(e, g, mask, se))
            for i, length in enumerate(lengths):
                ref_paths, s = _enumerate(
                    e[i], g, se.get("start", zero), se.get("end", zero), length
                )
                ref_z = np.logaddexp.reduce(s)
                z_err = max(z_err, *(abs(float(z[i]) - ref_z) for z in log_z))
                best = int(np.argmax(s))
                same += bool(np.array_equal(paths[i, :length], ref_paths[best]))
                score_err = max(score_err, abs(float(scores[i]) - s[best]))
                total += 1
    ok = z_err <= 1e-9 and score_err <= 1e-9 and same == total
    return Measurement(
        f"max |log Z - brute| {z_err:.1e}; Viterbi paths equal {same}/{total}, "
        f"max score diff {score_err:.1e}",
        ok=ok,
    )


@claim(
    CLAIMS,
    name="crf/pytorch-crf",
    post=POST,
    statement="The log-likelihood and the Viterbi paths equal pytorch-crf's (torchcrf.CRF, "
    "with start/end transitions) on the same emissions, tags, masks and parameters.",
    expected="B = 16, T = 40, K = 10, random lengths, float32: max |log-likelihood "
    "difference| <= 1e-4 x (1 + |value|), all decoded paths identical",
)
def pytorch_crf() -> Measurement:
    try:
        import torch
        import torchcrf
    except ImportError as err:
        raise ClaimSkipped("pytorch-crf (torchcrf) or torch not installed") from err
    lengths = np.random.default_rng(1).integers(1, 41, 16)
    lengths[0] = 40
    e, g, a, b, mask, tags = _problem(2, 16, 40, 10, lengths)
    crf = torchcrf.CRF(10, batch_first=True)
    with torch.no_grad():
        crf.transitions.copy_(torch.from_numpy(g))
        crf.start_transitions.copy_(torch.from_numpy(a))
        crf.end_transitions.copy_(torch.from_numpy(b))
        te, tm = torch.from_numpy(e), torch.from_numpy(mask)
        ref_ll = crf(te, torch.from_numpy(tags).long(), tm, reduction="none").numpy()
        ref_paths = crf.decode(te, tm)

    @jax.jit
    def ours(e, g, a, b, mask, tags):
        ll = crf_log_likelihood(e, tags, g, mask, start=a, end=b)
        return ll, crf_viterbi(e, g, mask, start=a, end=b)[0]

    ll, paths = (np.asarray(x) for x in ours(e, g, a, b, mask, tags))
    ll_err = float(np.max(np.abs(ll - ref_ll) / (1.0 + np.abs(ref_ll))))
    same = sum(row[row >= 0].tolist() == ref for row, ref in zip(paths, ref_paths))
    return Measurement(
        f"max relative log-likelihood difference {ll_err:.1e} (values down to "
        f"{ref_ll.min():.1f}); decoded paths equal {same}/{len(ref_paths)}",
        ok=ll_err <= 1e-4 and same == len(ref_paths),
    )


@claim(
    CLAIMS,
    name="crf/parallel-scan",
    post=POST,
    statement="The partition function as a log-semiring matrix product under "
    "lax.associative_scan (log-depth in T) equals the sequential forward recursion, and so "
    "do its gradients (the marginals).",
    expected="B = 8, T = 256, K = 8, random lengths, float32: max |log Z difference| <= "
    "1e-5 x max |log Z| and max |marginal difference| <= 1e-4",
)
def parallel_scan() -> Measurement:
    lengths = np.random.default_rng(3).integers(1, 257, 8)
    lengths[0] = 256
    e, g, a, b, mask, _ = _problem(4, 8, 256, 8, lengths)

    @jax.jit
    def both(e, g, a, b, mask):
        out = []
        for p in (False, True):
            out.append(crf_log_partition(e, g, mask, start=a, end=b, parallel=p))
            out.append(crf_marginals(e, g, mask, start=a, end=b, parallel=p))
        return out

    z_seq, m_seq, z_par, m_par = (np.asarray(x) for x in both(e, g, a, b, mask))
    z_err = float(np.max(np.abs(z_par - z_seq)))
    m_err = float(np.max(np.abs(m_par - m_seq)))
    scale = float(np.max(np.abs(z_seq)))
    return Measurement(
        f"max |log Z difference| {z_err:.1e} (|log Z| up to {scale:.0f}); "
        f"max |marginal difference| {m_err:.1e}",
        ok=z_err <= 1e-5 * scale and m_err <= 1e-4,
    )
