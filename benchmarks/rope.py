"""RoPE against the memory floor and attention with RoPE against attention without.

Run: ``python benchmarks/rope.py [--batch 8] [--seq 1024] [--heads 16] [--head-dim 128]``.
Every function is jitted, warmed up and timed by the median over repetitions. Rows:

* ``apply_rope`` (tables computed on the fly from the positions, inside the jitted call) and
  the same rotation with sine and cosine tables precomputed outside ("cached", through the
  private helper the library uses), each divided by the time of one fused multiply-add pass
  ``x * a + b`` over the same tensor (``a``, ``b`` vectors over the head dim): the memory
  floor of any elementwise op that reads ``x`` once and writes once. Target: <= 1.5.
* ``jax.nn.dot_product_attention`` on ``q, k, v`` ``(B, T, N, H)`` with RoPE applied to ``q``
  and ``k`` against the same call without. Target: <= 1.10.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _harness import machine, median_seconds_alternating, mib, table, temp_bytes  # noqa: E402

from jaxtricks.nn import apply_rope  # noqa: E402
from jaxtricks.nn._rope import _rotate, _tables  # noqa: E402  (the cached-table variant)


def _rope_rows(shape, dtype, rounds):
    x = jax.random.normal(jax.random.key(0), shape, dtype)
    positions = jnp.arange(shape[1])
    h = shape[-1]
    a = jnp.linspace(0.5, 1.5, h, dtype=dtype).reshape(1, 1, 1, h)
    b = jnp.linspace(-1.0, 1.0, h, dtype=dtype).reshape(1, 1, 1, h)
    calls = {"floor": (jax.jit(lambda x, a, b: x * a + b), (x, a, b))}
    for layout in ("interleaved", "half"):
        on_the_fly = jax.jit(lambda x, p, layout=layout: apply_rope(x, p, layout=layout))
        cos, sin = _tables(positions, x, h, 10000.0, layout)

        def cached(x, cos, sin, layout=layout):
            return _rotate(x, cos, sin, layout)

        cached = jax.jit(cached)
        np.testing.assert_allclose(
            np.asarray(on_the_fly(x, positions), np.float32),
            np.asarray(cached(x, cos, sin), np.float32),
            rtol=1e-2,
            atol=1e-2,
        )
        calls[f"apply_rope {layout}"] = (on_the_fly, (x, positions))
        calls[f"apply_rope {layout} (cached tables)"] = (cached, (x, cos, sin))
    times = median_seconds_alternating(calls, rounds=rounds)
    t_floor = times.pop("floor")
    return [
        [
            name,
            jnp.dtype(dtype).name,
            f"{t * 1e3:.2f}",
            f"{t_floor * 1e3:.2f}",
            f"{t / t_floor:.2f}",
            mib(temp_bytes(calls[name][0], *calls[name][1])),
        ]
        for name, t in times.items()
    ]


def _attention_rows(shape, dtype, rounds):
    keys = jax.random.split(jax.random.key(1), 3)
    q, k, v = (jax.random.normal(key, shape, dtype) for key in keys)
    positions = jnp.arange(shape[1])
    plain = jax.jit(lambda q, k, v: jax.nn.dot_product_attention(q, k, v))

    @jax.jit
    def with_rope(q, k, v):
        return jax.nn.dot_product_attention(apply_rope(q, positions), apply_rope(k, positions), v)

    times = median_seconds_alternating(
        {"plain": (plain, (q, k, v)), "rope": (with_rope, (q, k, v))}, rounds=rounds
    )
    return [
        [
            f"attention + RoPE {shape}",
            jnp.dtype(dtype).name,
            f"{times['rope'] * 1e3:.2f}",
            f"{times['plain'] * 1e3:.2f}",
            f"{times['rope'] / times['plain']:.2f}",
            mib(temp_bytes(with_rope, q, k, v)),
        ]
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--attention-batch", type=int, default=2)
    parser.add_argument("--attention-heads", type=int, default=8)
    parser.add_argument("--attention-head-dim", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=9, help="alternating timing rounds")
    args = parser.parse_args()
    shape = (args.batch, args.seq, args.heads, args.head_dim)
    att = (args.attention_batch, args.seq, args.attention_heads, args.attention_head_dim)
    rows = []
    for dtype in (jnp.float32, jnp.bfloat16):
        rows += _rope_rows(shape, dtype, args.rounds)
    for dtype in (jnp.float32, jnp.bfloat16):
        rows += _attention_rows(att, dtype, args.rounds)
    print(machine())
    print(f"x {shape}; ratio = time / baseline (x * a + b for RoPE, attention without RoPE)")
    print(
        table(
            ["function", "dtype", "time (ms)", "baseline (ms)", "ratio", "temp memory"],
            rows,
        )
    )


if __name__ == "__main__":
    main()
