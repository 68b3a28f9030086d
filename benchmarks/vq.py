"""Vector quantization: jaxtricks against dm-haiku's ``hk.nets.VectorQuantizer``.

Run: ``python benchmarks/vq.py [--quick]``. Rows:

* forward + backward time of one VQ layer: ``value_and_grad`` with respect to the inputs and
  the codebook of ``loss + sum(quantized * g)`` (``g`` a fixed upstream gradient), both
  jitted and timed in alternating rounds; default 16,384 vectors × 512 codes × 64 dims.
  Target: time ratio jaxtricks / haiku <= 1.0, with the same indices and loss. jaxtricks is
  timed twice: one distance matrix (``chunk_size=None``) and rows in chunks of 2,048, whose
  distances stay in cache between the product and the argmin.
* compiled temporary memory (no execution) of the same forward + backward at 65,536
  vectors × 8,192 codes × 64 dims: jaxtricks with ``chunk_size=4096`` (target <= 512 MiB)
  and without (the full float32 distance matrix alone is 2 GiB), against haiku.
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

from jaxtricks.nn import vector_quantize  # noqa: E402


def _ours(chunk_size=None):
    def loss(z, codebook, g):
        out = vector_quantize(z, codebook, chunk_size=chunk_size)
        return out.loss + jnp.sum(out.quantized * g), out.indices

    return jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)


def _haiku(dim, num_codes):
    import haiku as hk

    def forward(z, g):
        vq = hk.nets.VectorQuantizer(
            embedding_dim=dim, num_embeddings=num_codes, commitment_cost=0.25
        )
        out = vq(z, is_training=True)
        return out["loss"] + jnp.sum(out["quantize"] * g), out["encoding_indices"]

    apply = hk.without_apply_rng(hk.transform(forward)).apply

    def loss(z, codebook, g):
        # haiku stores the codebook as (D, K).
        return apply({"vector_quantizer": {"embeddings": codebook.T}}, z, g)

    return jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)


def _time_rows(n, k, d, rounds):
    keys = jax.random.split(jax.random.key(0), 3)
    z = jax.random.normal(keys[0], (n, d))
    codebook = jax.random.normal(keys[1], (k, d))
    g = jax.random.normal(keys[2], (n, d)) / n
    chunk = min(2048, n)
    calls = {
        None: (jax.jit(_ours()), (z, codebook, g)),
        chunk: (jax.jit(_ours(chunk)), (z, codebook, g)),
        "haiku": (jax.jit(_haiku(d, k)), (z, codebook, g)),
    }
    (hk_loss, hk_idx), _ = calls["haiku"][0](z, codebook, g)
    times = median_seconds_alternating(calls, rounds=rounds)
    rows = []
    for chunk_size in (None, chunk):
        (loss, idx), _ = calls[chunk_size][0](z, codebook, g)
        same = bool(np.array_equal(idx, hk_idx))
        rel = abs(float(loss) - float(hk_loss)) / abs(float(hk_loss))
        rows.append(
            [
                f"fwd+bwd time, {n} x {k} codes x {d}, chunk_size={chunk_size}",
                f"{times[chunk_size] * 1e3:.2f} ms",
                f"{times['haiku'] * 1e3:.2f} ms",
                f"{times[chunk_size] / times['haiku']:.2f}",
                "<= 1.0",
            ]
        )
        rows.append(
            [
                f"  same indices; |loss difference| / loss (chunk_size={chunk_size})",
                f"{'yes' if same else 'NO'}; {rel:.1e}",
                "",
                "",
                "yes; <= 1e-5",
            ]
        )
    return rows


def _memory_rows(n, k, d, chunk):
    shapes = [jax.ShapeDtypeStruct(s, jnp.float32) for s in ((n, d), (k, d), (n, d))]
    chunked = temp_bytes(_ours(chunk), *shapes)
    full = temp_bytes(_ours(), *shapes)
    peer = temp_bytes(_haiku(d, k), *shapes)
    return [
        [
            f"temp memory fwd+bwd, {n} x {k} x {d}, chunk_size={chunk}",
            mib(chunked),
            mib(peer),
            f"{chunked / peer:.3f}",
            "<= 512 MiB",
        ],
        [
            f"temp memory fwd+bwd, {n} x {k} x {d}, unchunked",
            mib(full),
            mib(peer),
            f"{full / peer:.2f}",
            ">= 2 GiB (distances)",
        ],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller timing shapes, fewer rounds")
    args = parser.parse_args()
    n, k, d, rounds = (4096, 256, 32, 3) if args.quick else (16384, 512, 64, 7)
    rows = _time_rows(n, k, d, rounds) + _memory_rows(65536, 8192, 64, chunk=4096)
    print(machine())
    print(table(["measurement", "jaxtricks", "haiku", "ratio", "target"], rows))


if __name__ == "__main__":
    main()
