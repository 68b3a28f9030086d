"""Integrated gradients on a small CNN: microbatched nodes against all nodes in one batch.

Run: ``python benchmarks/attribution.py [--quick] [--steps 300] [--microbatch 32] [--size 32]``.
``jaxtricks.attribution.integrated_gradients`` of one image's class logit through a small
convolutional network (three 3×3 convolutions, global average pooling, a dense layer; plain
JAX) with ``microbatch_size`` nodes per vectorised gradient batch, against the same call with
``microbatch_size=None`` (all ``steps`` nodes at once, what a plain ``vmap`` over the path
does). The table gives the compiled temporary memory of each (``memory_analysis`` of the
jitted call), their ratio (target ≤ 0.2), and the wall times measured in alternating rounds.
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

from jaxtricks.attribution import integrated_gradients  # noqa: E402

CHANNELS = (3, 32, 64, 64)  # input channels, then three convolutions (strides 1, 2, 2)
CLASSES = 10


def init_cnn(key: jax.Array) -> dict:
    """He-initialised HWIO kernels and a dense head."""
    keys = jax.random.split(key, len(CHANNELS))
    convs = [
        jax.random.normal(k, (3, 3, c_in, c_out)) * np.sqrt(2.0 / (9 * c_in))
        for k, c_in, c_out in zip(keys, CHANNELS[:-1], CHANNELS[1:])
    ]
    head = jax.random.normal(keys[-1], (CHANNELS[-1], CLASSES)) / np.sqrt(CHANNELS[-1])
    return {"convs": convs, "head": head}


def cnn_logits(params: dict, image: jax.Array) -> jax.Array:
    """Class logits of one (H, W, C) image."""
    h = image[None]
    for i, kernel in enumerate(params["convs"]):
        stride = 1 if i == 0 else 2
        h = jax.lax.conv_general_dilated(
            h, kernel, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        h = jax.nn.gelu(h)
    return jnp.mean(h, axis=(0, 1, 2)) @ params["head"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer timing rounds")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--microbatch", type=int, default=32)
    parser.add_argument("--size", type=int, default=32, help="image height and width")
    parser.add_argument("--method", default="riemann_right")
    a = parser.parse_args()
    rounds, reps = (2, 2) if a.quick else (5, 3)

    params = init_cnn(jax.random.key(0))
    image = jax.random.normal(jax.random.key(1), (a.size, a.size, CHANNELS[0]))
    label = int(jnp.argmax(cnn_logits(params, image)))

    def ig(microbatch_size):
        def run(params, image):
            f = lambda x: cnn_logits(params, x)[label]  # noqa: E731
            return integrated_gradients(
                f, image, steps=a.steps, method=a.method, microbatch_size=microbatch_size
            )

        return run

    calls = {"micro": ig(a.microbatch), "all": ig(None)}
    temp = {name: temp_bytes(fn, params, image) for name, fn in calls.items()}
    jitted = {name: jax.jit(fn) for name, fn in calls.items()}
    (attr_m, gap_m), (attr_a, gap_a) = (jitted[n](params, image) for n in ("micro", "all"))
    diff = float(jnp.max(jnp.abs(attr_m - attr_a)) / jnp.max(jnp.abs(attr_a)))
    seconds = median_seconds_alternating(
        {name: (fn, (params, image)) for name, fn in jitted.items()}, rounds=rounds, reps=reps
    )
    mem_ratio = temp["micro"] / temp["all"]
    rows = [
        [
            "compiled temp memory",
            mib(temp["micro"]),
            mib(temp["all"]),
            f"{mem_ratio:.3f}",
            "<= 0.2",
        ],
        [
            "wall time per call",
            f"{seconds['micro'] * 1e3:.1f} ms",
            f"{seconds['all'] * 1e3:.1f} ms",
            f"{seconds['micro'] / seconds['all']:.2f}",
            "report",
        ],
        [
            "completeness gap, absolute",
            f"{abs(float(gap_m)):.2e}",
            f"{abs(float(gap_a)):.2e}",
            f"max rel. attr. diff {diff:.1e}",
            "same result",
        ],
    ]
    print(
        f"machine: {machine()}\n"
        f"integrated_gradients, {a.steps} steps ({a.method}), CNN {CHANNELS} on one "
        f"{a.size}x{a.size}x{CHANNELS[0]} float32 image; jaxtricks = microbatch_size="
        f"{a.microbatch}, peer = all {a.steps} nodes in one vmap (microbatch_size=None)\n"
    )
    print(table(["measurement", "jaxtricks", "peer", "ratio", "target"], rows))


if __name__ == "__main__":
    main()
