"""Word rotator's / mover's distance over many pairs: batched Sinkhorn against POT and ott-jax.

Run: ``python benchmarks/distances.py [--pairs 10000] [--quick]``. The inputs are random Gaussian
word vectors (20 words per sentence, 768 features, float32) already on the device. Each solver
computes the cost matrices itself:

- jaxtricks: ``jax.jit(jax.vmap(word_rotators_distance))`` with the defaults (epsilon 1e-3 of
  each pair's cost spread, 60 epsilon-scaled iterations);
- POT: ``ot.emd2`` (exact network simplex) in a Python loop over NumPy arrays, timed on a
  subset of the pairs (``--pot-pairs``) and scaled;
- ott-jax: ``Sinkhorn`` vmapped over the pairs with the same fixed iteration count, the same
  target epsilon and its own geometric epsilon schedule (same start and decay), reporting
  the same transport cost <P, C>.

Errors are relative to POT's exact values on the first ``--error-pairs`` pairs. A second table
gives the jaxtricks trade-off: iterations against error against throughput.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _harness import machine, median_seconds_alternating, table  # noqa: E402

from jaxtricks.distances import word_movers_distance, word_rotators_distance  # noqa: E402

FNS = {"WRD": word_rotators_distance, "WMD": word_movers_distance}


def _problem_np(kind: str, x: np.ndarray, y: np.ndarray):
    """Weights and cost matrix in float64 NumPy (what a POT user writes)."""
    import ot

    x, y = x.astype(np.float64), y.astype(np.float64)
    if kind == "WMD":
        a, b = np.full(len(x), 1 / len(x)), np.full(len(y), 1 / len(y))
        return a, b, ot.dist(x, y, metric="euclidean")
    nx, ny = np.linalg.norm(x, axis=1), np.linalg.norm(y, axis=1)
    return nx / nx.sum(), ny / ny.sum(), 1 - (x / nx[:, None]) @ (y / ny[:, None]).T


def _pot(kind: str, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, float]:
    """Exact values and the wall time of the Python loop."""
    import ot

    start = time.perf_counter()
    out = [ot.emd2(*_problem_np(kind, x, y)) for x, y in zip(xs, ys)]
    return np.array(out), time.perf_counter() - start


def _problem_jax(kind: str, x: jax.Array, y: jax.Array):
    if kind == "WMD":
        sq = jnp.sum(x * x, 1)[:, None] + jnp.sum(y * y, 1)[None, :] - 2 * x @ y.T
        n, m = x.shape[0], y.shape[0]
        return jnp.full(n, 1 / n), jnp.full(m, 1 / m), jnp.sqrt(jnp.maximum(sq, 1e-30))
    nx, ny = jnp.linalg.norm(x, axis=1), jnp.linalg.norm(y, axis=1)
    cost = 1 - (x / nx[:, None]) @ (y / ny[:, None]).T
    return nx / nx.sum(), ny / ny.sum(), cost


def _ott_fn(kind: str, num_iters: int):
    """ott-jax Sinkhorn on one pair, fixed iteration count, epsilon as jaxtricks' default."""
    from ott.geometry import epsilon_scheduler, geometry
    from ott.problems.linear import linear_problem
    from ott.solvers.linear import sinkhorn

    solver = sinkhorn.Sinkhorn(
        lse_mode=True,
        threshold=-1.0,  # never stops early: exactly max_iterations
        inner_iterations=1,
        min_iterations=num_iters,
        max_iterations=num_iters,
    )
    decay_steps = max(num_iters // 2, 1)

    def fn(x, y):
        a, b, cost = _problem_jax(kind, x, y)
        spread = cost.max() - cost.min()
        target = 1e-3 * spread
        eps = epsilon_scheduler.Epsilon(target, init=1e3, decay=1e-3 ** (1 / decay_steps))
        out = solver(linear_problem.LinearProblem(geometry.Geometry(cost, epsilon=eps), a, b))
        return jnp.sum(out.matrix * cost)

    return fn


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=10_000)
    parser.add_argument("--pot-pairs", type=int, default=1_000)
    parser.add_argument("--error-pairs", type=int, default=200)
    parser.add_argument("--reps", type=int, default=3, help="alternating timing rounds")
    parser.add_argument("--quick", action="store_true", help="2,000 pairs, POT on 300")
    args = parser.parse_args(argv)
    if args.quick:
        args.pairs, args.pot_pairs, args.error_pairs = 2_000, 300, 100
    try:
        import ot  # noqa: F401
    except ImportError:
        sys.exit("POT is needed for the reference: pip install pot")

    kx, ky = jax.random.split(jax.random.key(0))
    xs = jax.random.normal(kx, (args.pairs, 20, 768), jnp.float32)
    ys = jax.random.normal(ky, (args.pairs, 20, 768), jnp.float32)
    xs_np, ys_np = np.asarray(xs), np.asarray(ys)
    k, pot_n = args.error_pairs, args.pot_pairs

    rows, tradeoff = [], []
    for kind, fn in FNS.items():
        exact, _ = _pot(kind, xs_np[:k], ys_np[:k])

        def rel_err(values, exact=exact):
            err = np.abs(np.asarray(values[:k], np.float64) - exact) / exact
            return f"{err.max():.1e} / {np.median(err):.1e}", err.max()

        # Alternating rounds: drifts of a shared machine touch every solver alike.
        calls = {
            "ours": (jax.jit(jax.vmap(fn)), (xs, ys)),
            "pot": (lambda x, y, kind=kind: _pot(kind, x, y)[0], (xs_np[:pot_n], ys_np[:pot_n])),
        }
        try:
            calls["ott"] = (jax.jit(jax.vmap(_ott_fn(kind, 60))), (xs, ys))
        except ImportError:
            pass
        seconds = median_seconds_alternating(calls, rounds=args.reps, reps=1)
        rate = {name: (pot_n if name == "pot" else args.pairs) / t for name, t in seconds.items()}
        ours_err, _ = rel_err(calls["ours"][0](xs, ys))
        rows.append(
            [
                f"{kind} pairs/s vs POT ot.emd2 loop",
                f"{rate['ours']:,.0f}",
                f"{rate['pot']:,.0f}",
                f"{rate['ours'] / rate['pot']:.1f}x",
                ">= 3x",
            ]
        )
        rows.append([f"{kind} rel. error max / median", ours_err, "0 (exact)", "", "<= 1e-3"])
        if "ott" in calls:
            ott_err, _ = rel_err(calls["ott"][0](xs, ys))
            rows.append(
                [
                    f"{kind} pairs/s vs ott-jax Sinkhorn (60 it.)",
                    f"{rate['ours']:,.0f}",
                    f"{rate['ott']:,.0f}",
                    f"{rate['ours'] / rate['ott']:.1f}x",
                    "",
                ]
            )
            rows.append([f"{kind} ott-jax rel. error max / median", ours_err, ott_err, "", ""])
        else:
            rows.append([f"{kind} ott-jax", "", "not installed", "", ""])
        sweep = {
            iters: (jax.jit(jax.vmap(lambda x, y, n=iters, f=fn: f(x, y, num_iters=n))), (xs, ys))
            for iters in (20, 40, 60, 100, 150)
        }
        sweep["pot"] = calls["pot"]
        seconds = median_seconds_alternating(sweep, rounds=args.reps, reps=1)
        pot_rate = pot_n / seconds.pop("pot")
        for iters, t in seconds.items():
            err, worst = rel_err(sweep[iters][0](xs, ys))
            rate = args.pairs / t
            tradeoff.append(
                [kind, iters, err, f"{rate:,.0f}", f"{rate / pot_rate:.1f}x", worst <= 1e-3]
            )

    print(
        f"machine: {machine()}; {args.pairs:,} pairs of 20 x 768 float32 sentences "
        f"(POT timed on {args.pot_pairs:,}, errors on {k})\n"
    )
    print(table(["measurement", "jaxtricks", "peer", "ratio", "target"], rows))
    print()
    print(
        table(
            ["distance", "num_iters", "rel. error max / median", "pairs/s", "vs POT", "<= 1e-3"],
            tradeoff,
        )
    )


if __name__ == "__main__":
    main()
