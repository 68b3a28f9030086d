"""Small real tasks the claims train on: scikit-learn's bundled digits and an MLP.

The digits (1,797 8×8 images, 10 classes) ship inside the scikit-learn wheel, so nothing is
downloaded. Without scikit-learn the claims that need them are skipped, not failed.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxtricks.reproduce._registry import ClaimSkipped


class Digits(NamedTuple):
    x_train: jax.Array  # (n_train, 64) float32, standardised with training statistics or in [0, 1]
    y_train: jax.Array  # (n_train,) int32
    x_test: jax.Array
    y_test: jax.Array


def load_digits_split(
    seed: int = 0, test_fraction: float = 0.25, *, standardize: bool = True
) -> Digits:
    """Digits split at random into train and test.

    Features are standardised with the training statistics, or with ``standardize=False``
    left as pixels in [0, 1] (for reconstructions, where rare pixels would dominate an MSE
    of standardised features, and for images).
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ClaimSkipped("needs scikit-learn: pip install 'jaxtricks[reproduce]'") from e
    x, y = load_digits(return_X_y=True)
    perm = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(test_fraction * len(y)))
    test, train = perm[:n_test], perm[n_test:]
    if standardize:
        x = (x - x[train].mean(0)) / (x[train].std(0) + 1e-6)
    else:
        x = x / 16.0
    x, y = x.astype(np.float32), y.astype(np.int32)
    return Digits(*(jnp.asarray(a) for a in (x[train], y[train], x[test], y[test])))


def init_mlp(key: jax.Array, sizes: tuple[int, ...]) -> list[dict[str, jax.Array]]:
    """He-initialised MLP parameters for layer widths ``sizes`` (input first)."""
    params = []
    for k, (n_in, n_out) in zip(jax.random.split(key, len(sizes) - 1), zip(sizes, sizes[1:])):
        w = jax.random.normal(k, (n_in, n_out), jnp.float32) * jnp.sqrt(2.0 / n_in)
        params.append({"w": w, "b": jnp.zeros((n_out,), jnp.float32)})
    return params


def mlp_logits(params: list[dict[str, jax.Array]], x: jax.Array) -> jax.Array:
    """ReLU MLP; the last layer is linear."""
    for layer in params[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"][None])
    return x @ params[-1]["w"] + params[-1]["b"][None]


def cross_entropy_sum(params, x: jax.Array, y: jax.Array) -> jax.Array:
    """Summed (not averaged) softmax cross-entropy of the MLP on ``(x, y)``."""
    logp = jax.nn.log_softmax(mlp_logits(params, x))
    return -jnp.take_along_axis(logp, y[:, None], axis=-1).sum()


def accuracy(params, x: jax.Array, y: jax.Array) -> float:
    """Fraction of ``x`` classified as ``y``."""
    return float(jnp.mean(jnp.argmax(mlp_logits(params, x), -1) == y))
