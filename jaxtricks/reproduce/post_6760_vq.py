"""Claims of "VQ-VAE的简明介绍" (https://kexue.fm/archives/6760): vector quantization.

VQ-VAE (van den Oord, Vinyals and Kavukcuoglu, arXiv:1711.00937) replaces each encoder
output :math:`z` by its nearest code :math:`e`; the argmin has no gradient, so the decoder's
gradient is copied to :math:`z` by the straight-through estimator
:math:`z_q = z + \\mathrm{sg}(e - z)`. The codebook learns either by the loss
:math:`\\lVert \\mathrm{sg}(z) - e\\rVert^2` or by moving averages of the assigned vectors
(:math:`e = m / N`), which with decay 0 is one k-means step. The claims measure these on
:mod:`jaxtricks.nn` and train a small VQ-VAE on scikit-learn's 8×8 digits.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxtricks.nn import VQVAE, VectorQuantizerEMA, vector_quantize
from jaxtricks.reproduce._registry import Claim, Measurement, claim
from jaxtricks.reproduce._tasks import load_digits_split

CLAIMS: list[Claim] = []


@claim(
    CLAIMS,
    name="vq/straight-through",
    post="6760",
    statement="With z_q = z + sg(e - z) the gradient reaching the encoder output is the "
    "gradient at the quantized vector: dL/dz = dL/dz_q.",
    expected="max |dL/dz - dL/dz_q| <= 1e-12 (float64) for L = sum(w * z_q^3), 512 vectors, "
    "D = 8, K = 32, while dL/dz is nonzero",
)
def straight_through() -> Measurement:
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        z, w = (jnp.asarray(rng.normal(size=(512, 8))) for _ in range(2))
        codebook = jnp.asarray(rng.normal(size=(32, 8)))

        def loss_at(q):
            return jnp.sum(w * q**3)

        @jax.jit
        def grads(z):
            through = jax.grad(lambda z: loss_at(vector_quantize(z, codebook).quantized))(z)
            return through, jax.grad(loss_at)(vector_quantize(z, codebook).quantized)

        through, at_zq = grads(z)
        err = float(jnp.max(jnp.abs(through - at_zq)))
        norm = float(jnp.linalg.norm(through))
    return Measurement(
        f"max deviation {err:.1e}; |dL/dz| = {norm:.1f}", ok=err <= 1e-12 and norm > 0
    )


@claim(
    CLAIMS,
    name="vq/ema-kmeans",
    post="6760",
    statement="The EMA codebook update N <- gN + (1-g)n, m <- gm + (1-g)sum z, e = m/N with "
    "decay g = 0 is one k-means (Lloyd) step on the batch.",
    expected="max |codebook - k-means step| <= 1e-4 (float64; Laplace smoothing with "
    "epsilon = 1e-5 is the only difference), 16 codes, 800 points in 8-D, all codes used",
)
def ema_kmeans() -> Measurement:
    rng = np.random.default_rng(1)
    centres = 4.0 * rng.normal(size=(16, 8))
    points = (centres[:, None] + rng.normal(size=(16, 50, 8))).reshape(-1, 8)
    start = centres + 0.3 * rng.normal(size=centres.shape)
    assign = np.argmin(((points[:, None] - start[None]) ** 2).sum(-1), axis=1)
    used = len(np.unique(assign))
    lloyd = np.stack([points[assign == k].mean(0) for k in range(16)]) if used == 16 else start
    with jax.enable_x64(True):
        vq = VectorQuantizerEMA(
            16, 8, decay=0.0, epsilon=1e-5, param_dtype=jnp.float64, rngs=nnx.Rngs(0)
        )
        vq.codebook[...] = jnp.asarray(start)
        nnx.jit(lambda m, z: m(z))(vq, jnp.asarray(points))
        err = float(np.max(np.abs(np.asarray(vq.codebook[...]) - lloyd)))
    return Measurement(
        f"max deviation {err:.1e} ({used}/16 codes used)", ok=err <= 1e-4 and used == 16
    )


NUM_CODES = 64
STEPS = 600
BATCH = 128


def _train_vqvae(x_train: jax.Array, seed: int = 0):
    model = VQVAE(64, num_latents=8, num_codes=NUM_CODES, code_dim=8, rngs=nnx.Rngs(seed))
    optimizer = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)
    graphdef, state = nnx.split((model, optimizer))
    batches = jax.random.randint(jax.random.key(seed), (STEPS, BATCH), 0, x_train.shape[0])

    @jax.jit
    def train(state, batches):
        def step(state, idx):
            model, optimizer = nnx.merge(graphdef, state)
            x = x_train[idx]

            def loss_fn(model):
                recon, out = model(x)
                mse = jnp.mean((recon - x) ** 2)
                return mse + out.loss, mse

            (_, mse), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
            optimizer.update(model, grads)
            return nnx.state((model, optimizer)), mse

        return jax.lax.scan(step, state, batches)

    state, curve = train(state, batches)
    model, _ = nnx.merge(graphdef, state)
    return model, curve


@claim(
    CLAIMS,
    name="vq/vqvae-digits",
    post="6760",
    statement="A VQ-VAE (MLP, EMA codebook, 8 latent codes per image out of K = 64) trained on 8×8 "
    "digits reconstructs held-out digits well with most codes in use.",
    expected="held-out MSE (pixels in [0, 1]) <= 0.3 × the mean-image baseline, and more "
    f"than half of the K = {NUM_CODES} codes used on the held-out set ({STEPS} Adam steps, "
    f"batch {BATCH})",
)
def vqvae_digits() -> Measurement:
    # Pixels in [0, 1], not standardised: rare pixels would dominate the MSE.
    digits = load_digits_split(standardize=False)
    x_train, x_test = digits.x_train, digits.x_test
    model, curve = _train_vqvae(x_train)
    model.eval()
    recon, out = nnx.jit(lambda m, x: m(x))(model, x_test)
    mse = float(jnp.mean((recon - x_test) ** 2))
    baseline = float(jnp.mean((x_test - x_train.mean(0)) ** 2))
    used = int(round(float(out.usage) * NUM_CODES))
    return Measurement(
        f"test MSE {mse:.3f} vs mean-image baseline {baseline:.3f} (ratio {mse / baseline:.2f}); "
        f"perplexity {float(out.perplexity):.1f}; {used}/{NUM_CODES} codes used; "
        f"train MSE {float(curve[:50].mean()):.3f} -> {float(curve[-50:].mean()):.3f}",
        ok=mse <= 0.3 * baseline and used > NUM_CODES // 2,
    )
