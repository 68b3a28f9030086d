"""The linear-chain CRF against pytorch-crf, and its parallel scan against the sequential one.

Run: ``python benchmarks/crf.py [--quick]``. Rows:

* log-likelihood + gradient (mean negative log-likelihood, gradients with respect to the
  emissions, transitions, start and end) and Viterbi decoding at B = 32, T = 128, K = 20
  with random lengths: ``jax.jit`` of :func:`jaxtricks.nn.crf_log_likelihood` /
  :func:`~jaxtricks.nn.crf_viterbi` against ``torchcrf.CRF`` (forward + backward, and
  ``decode`` under ``torch.no_grad``) on the same CPU, torch using as many threads as there
  are cores. Targets: time ratio <= 0.25 and <= 0.1. Skipped without torch / pytorch-crf.
* log Z + gradient with respect to the emissions, ``parallel=True``
  (``lax.associative_scan`` over (K, K) log-semiring matrices, O(T K^3) work, log depth)
  against ``parallel=False`` (``lax.scan``, O(T K^2) work, T steps) for
  T in {32, 128, 512, 2048} (``--quick``: up to 512), with the compiled temporary memory.
  A ratio below 1 is where the parallel scan wins.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _harness import (  # noqa: E402
    machine,
    median_call_seconds,
    median_seconds_alternating,
    mib,
    table,
    temp_bytes,
)

from jaxtricks.nn import crf_log_likelihood, crf_log_partition, crf_viterbi  # noqa: E402


def _problem(b: int, t: int, k: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(t // 2, t + 1, b)
    lengths[0] = t
    return dict(
        e=rng.normal(size=(b, t, k)).astype(np.float32),
        tags=rng.integers(0, k, (b, t)).astype(np.int32),
        mask=np.arange(t)[None] < lengths[:, None],
        g=(0.1 * rng.normal(size=(k, k))).astype(np.float32),
        a=(0.1 * rng.normal(size=k)).astype(np.float32),
        b=(0.1 * rng.normal(size=k)).astype(np.float32),
    )


def _peer_rows(b: int, t: int, k: int, rounds: int) -> list[list[str]]:
    try:
        import torch
        import torchcrf
    except ImportError:
        return [["vs pytorch-crf", "skipped: torch / pytorch-crf not installed", "", "", ""]]
    torch.set_num_threads(os.cpu_count() or 1)
    p = _problem(b, t, k)

    def nll(e, g, a, b_, mask, tags):
        return -jnp.mean(crf_log_likelihood(e, tags, g, mask, start=a, end=b_))

    train = jax.jit(jax.value_and_grad(nll, argnums=(0, 1, 2, 3)))
    decode = jax.jit(lambda e, g, a, b_, mask: crf_viterbi(e, g, mask, start=a, end=b_))
    args = [jnp.asarray(p[n]) for n in ("e", "g", "a", "b", "mask", "tags")]

    crf = torchcrf.CRF(k, batch_first=True)
    with torch.no_grad():
        crf.transitions.copy_(torch.from_numpy(p["g"]))
        crf.start_transitions.copy_(torch.from_numpy(p["a"]))
        crf.end_transitions.copy_(torch.from_numpy(p["b"]))
    te = torch.from_numpy(p["e"]).requires_grad_(True)
    tt, tm = torch.from_numpy(p["tags"]).long(), torch.from_numpy(p["mask"])

    def torch_train():
        crf.zero_grad(set_to_none=True)
        te.grad = None
        loss = -crf(te, tt, tm, reduction="mean")
        loss.backward()
        return None

    def torch_decode():
        with torch.no_grad():
            return crf.decode(te, tm) and None

    # Same numbers before timing.
    loss, _ = train(*args)
    torch_train()
    with torch.no_grad():
        ref = -crf(te, tt, tm, reduction="mean").item()
    np.testing.assert_allclose(float(loss), ref, rtol=1e-5)
    paths = np.asarray(decode(*args[:5])[0])
    assert [r[r >= 0].tolist() for r in paths] == crf.decode(te, tm)

    times = median_seconds_alternating(
        {
            "ours train": (train, args),
            "peer train": (torch_train, ()),
            "ours decode": (decode, args[:5]),
            "peer decode": (torch_decode, ()),
        },
        rounds=rounds,
        reps=3,
    )
    shape = f"B={b}, T={t}, K={k}"
    rows = []
    for what, label, target in (
        ("train", f"log-likelihood + grad ({shape})", 0.25),
        ("decode", f"Viterbi ({shape})", 0.1),
    ):
        ours, peer = times[f"ours {what}"], times[f"peer {what}"]
        rows.append(
            [
                label,
                f"{ours * 1e3:.2f} ms",
                f"pytorch-crf {peer * 1e3:.2f} ms",
                f"{ours / peer:.3f}",
                f"<= {target}",
            ]
        )
    return rows


def _scan_rows(b: int, k: int, lengths: list[int], reps: int) -> list[list[str]]:
    rows = []
    for t in lengths:
        p = _problem(b, t, k, seed=t)
        args = [jnp.asarray(p[n]) for n in ("e", "g", "mask")]
        fns = {
            par: jax.jit(
                jax.value_and_grad(
                    lambda e, g, mask, par=par: jnp.sum(crf_log_partition(e, g, mask, parallel=par))
                )
            )
            for par in (False, True)
        }
        seq_val, par_val = (float(fns[par](*args)[0]) for par in (False, True))
        np.testing.assert_allclose(par_val, seq_val, rtol=1e-5)
        t_seq, t_par = (median_call_seconds(fns[par], *args, reps=reps, warmup=1) for par in (0, 1))
        m_seq, m_par = (temp_bytes(fns[par], *args) for par in (False, True))
        rows.append(
            [
                f"log Z + grad, parallel / sequential (B={b}, T={t}, K={k})",
                f"parallel {t_par * 1e3:.2f} ms, {mib(m_par)}",
                f"sequential {t_seq * 1e3:.2f} ms, {mib(m_seq)}",
                f"{t_par / t_seq:.2f}",
                "< 1: parallel wins" if t_par < t_seq else "(sequential wins)",
            ]
        )
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer rounds, T up to 512")
    parser.add_argument("--scan-batch", type=int, default=8, help="B of the scan sweep")
    parser.add_argument("--scan-tags", type=int, default=20, help="K of the scan sweep")
    args = parser.parse_args(argv)
    lengths = [32, 128, 512] if args.quick else [32, 128, 512, 2048]
    rows = _peer_rows(32, 128, 20, rounds=3 if args.quick else 7)
    rows += _scan_rows(args.scan_batch, args.scan_tags, lengths, reps=3 if args.quick else 5)
    print(f"machine: {machine()}\n")
    print(table(["measurement", "jaxtricks", "peer", "ratio", "target"], rows))


if __name__ == "__main__":
    main()
