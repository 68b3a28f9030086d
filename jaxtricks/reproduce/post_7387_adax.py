"""Claims of "AdaX优化器浅析" (https://kexue.fm/archives/7387) and the AdaX paper, arXiv:2004.09740.

The post rewrites AdaX's growing second-moment sum as a moving average whose decay
:math:`\\hat\\beta_t = 1 - c_t` starts at 0 and rises to 1; the library keeps that form so that
float32 state never overflows. The claims check the equivalence, the decay's two ends, the
overflow the rewrite avoids, and that AdaX trains a real model as well as Adam.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxtricks.optim import adaxw, scale_by_adax
from jaxtricks.reproduce._registry import Claim, Measurement, claim
from jaxtricks.reproduce._tasks import (
    accuracy,
    cross_entropy_sum,
    init_mlp,
    load_digits_split,
)

CLAIMS: list[Claim] = []
POST = "7387"


def _paper_nu_hat(grads: np.ndarray, b2: float) -> np.ndarray:
    """The paper's raw form in float64 NumPy: ``v_t = (1+b2) v + b2 g^2``, ``v_t / d_t``.

    ``d_t = (1+b2)^t - 1`` is accumulated by the same recurrence with ``g^2 = 1`` (the sum of
    the weights), which avoids the cancellation of ``(1+b2)**t - 1`` for tiny ``b2``.
    """
    v = np.zeros(grads.shape[1:])
    d = 0.0
    out = []
    for g in grads:
        v = (1 + b2) * v + b2 * g * g
        d = (1 + b2) * d + b2
        out.append(v / d)
    return np.stack(out)


def _ema_nu_hat(grads: jax.Array, b2: float) -> jax.Array:
    """The library's ``nu`` after each step of ``scale_by_adax`` over ``grads`` (T, ...)."""
    tx = scale_by_adax(b2=b2)

    def step(state, g):
        _, state = tx.update(g, state)
        return state, state.nu

    return jax.lax.scan(step, tx.init(grads[0]), grads)[1]


@claim(
    CLAIMS,
    name="adax/ema-form-equals-paper",
    post=POST,
    statement="The moving-average form of AdaX's second moment, with rate "
    "c_t = b2/((1+b2)^t - 1), equals the paper's bias-corrected raw sum v_t/((1+b2)^t - 1).",
    expected="max relative difference <= 1e-12 in float64 over 5,000 steps, b2 in "
    "{1e-6, 1e-4, 1e-2, 0.1}",
)
def ema_form_equals_paper() -> Measurement:
    steps = 5000
    rng = np.random.default_rng(0)
    # Gradients whose scale drifts over three decades, so old and new terms both matter.
    grads = rng.standard_normal((steps, 8)) * np.exp(np.linspace(0, 7, steps))[:, None]
    worst = {}
    with jax.enable_x64(True):
        # b2 <= 0.1: the raw float64 sum itself overflows past (1 + b2)^t ~ 1e308.
        for b2 in (1e-6, 1e-4, 1e-2, 0.1):
            ours = np.asarray(_ema_nu_hat(jnp.asarray(grads), b2))
            ref = _paper_nu_hat(grads, b2)
            worst[b2] = float(np.max(np.abs(ours - ref) / np.abs(ref)))
    top = float(np.max(list(worst.values())))  # NaN propagates and fails the check
    detail = ", ".join(f"b2={b2:g}: {e:.1e}" for b2, e in worst.items())
    return Measurement(f"max rel diff {top:.1e} ({detail})", ok=bool(top <= 1e-12))


def _beta_hat(count: int, b2: float, dtype) -> float:
    """``1 - c_t`` read off ``scale_by_adax``: with ``nu = 1`` and ``g = 0``, ``nu_t = 1 - c_t``."""
    tx = scale_by_adax(b2=b2)
    state = tx.init(jnp.zeros((), dtype))
    state = state._replace(count=jnp.asarray(count - 1, jnp.int32), nu=jnp.ones((), dtype))
    return float(tx.update(jnp.zeros((), dtype), state)[1].nu)


@claim(
    CLAIMS,
    name="adax/beta-hat",
    post=POST,
    statement="Written as a moving average, AdaX's second moment has decay "
    "beta_hat_t = 1 - b2/((1+b2)^t - 1): beta_hat_1 = 0 (no start-up bias) and beta_hat_t -> 1.",
    expected="beta_hat_1 = 0 exactly (float32 and float64); 1 - beta_hat_t decreasing, "
    "< 1e-8 at t = 2e5 (b2 = 1e-4, float64)",
)
def beta_hat() -> Measurement:
    with jax.enable_x64(True):
        first64 = _beta_hat(1, 1e-4, jnp.float64)
        ts = (1, 10, 1_000, 10_000, 100_000, 200_000)
        gaps = [1 - _beta_hat(t, 1e-4, jnp.float64) for t in ts]
    first32 = _beta_hat(1, 1e-4, jnp.float32)
    ok = first64 == 0.0 and first32 == 0.0 and gaps[-1] < 1e-8
    ok = ok and all(a > b for a, b in zip(gaps, gaps[1:]))
    detail = ", ".join(f"t={t}: {g:.3g}" for t, g in zip(ts, gaps))
    return Measurement(
        f"beta_hat_1 = {first64:g} (f64), {first32:g} (f32); 1 - beta_hat_t: {detail}", ok=ok
    )


def _raw_overflow_step(b2: float) -> int:
    """First step at which the paper's raw float32 sum ``v_t`` (with ``g = 1``) is inf."""

    def cond(carry):
        return jnp.isfinite(carry[1])

    def body(carry):
        t, v = carry
        return t + 1, jnp.float32(1 + b2) * v + jnp.float32(b2)

    t, _ = jax.jit(lambda: jax.lax.while_loop(cond, body, (jnp.int32(0), jnp.float32(0))))()
    return int(t)


@claim(
    CLAIMS,
    name="adax/finite-at-1e7",
    post=POST,
    statement="Stored as the moving average, AdaX's float32 state stays finite for 10^7 "
    "steps, while the paper's raw float32 sum v_t overflows near t = 887k (b2 = 1e-4).",
    expected="after 10,000,000 real float32 steps: count = 1e7 and mu, nu, update finite; "
    "raw float32 v_t first inf at a step in [850k, 920k]",
)
def finite_at_1e7() -> Measurement:
    steps = 10_000_000
    tx = scale_by_adax()
    freqs = jnp.array([0.37, 1.3, 2.9, 0.011, 5.0, 0.7, 3.3, 0.05], jnp.float32)

    def run():
        def body(i, carry):
            state, _ = carry
            # Cheap deterministic gradients with varying sign and scale (no RNG in the loop).
            g = jnp.sin(i.astype(jnp.float32) * freqs) * (1.0 + freqs)
            return tx.update(g, state)[::-1]

        init = (tx.init(jnp.zeros(8, jnp.float32)), jnp.zeros(8, jnp.float32))
        return jax.lax.fori_loop(0, steps, body, init)

    start = time.perf_counter()
    state, update = jax.block_until_ready(jax.jit(run)())
    seconds = time.perf_counter() - start
    finite = all(bool(jnp.all(jnp.isfinite(x))) for x in (state.mu, state.nu, update))
    overflow = _raw_overflow_step(1e-4)
    ok = int(state.count) == steps and finite and 850_000 <= overflow <= 920_000
    return Measurement(
        f"{int(state.count):,} steps run in {seconds:.1f} s: mu, nu, update finite={finite}, "
        f"max nu {float(jnp.max(state.nu)):.3g}; raw float32 v_t is inf from step {overflow:,}",
        ok=ok,
    )


def _batches(seed: int, n: int, steps: int, batch: int) -> np.ndarray:
    """(steps, batch) row indices: shuffled epochs, each row used once per epoch."""
    rng = np.random.default_rng(seed)
    per_epoch = n // batch
    epochs = -(-steps // per_epoch)
    rows = [
        rng.permutation(n)[: per_epoch * batch].reshape(per_epoch, batch) for _ in range(epochs)
    ]
    return np.concatenate(rows)[:steps]


def _digits_accuracy(tx: optax.GradientTransformation, data, seeds, steps, batch) -> np.ndarray:
    """Test accuracy of a (64, 128, 10) MLP trained by ``tx`` on ``steps`` batches, per seed."""
    n = data.x_train.shape[0]

    def train(key, batches):
        params = init_mlp(key, (64, 128, 10))

        def step(carry, idx):
            params, state = carry
            loss = lambda p: cross_entropy_sum(p, data.x_train[idx], data.y_train[idx]) / batch  # noqa: E731
            updates, state = tx.update(jax.grad(loss)(params), state, params)
            return (optax.apply_updates(params, updates), state), None

        return jax.lax.scan(step, (params, tx.init(params)), batches)[0][0]

    keys = jnp.stack([jax.random.key(s) for s in seeds])
    batches = jnp.asarray(np.stack([_batches(s, n, steps, batch) for s in seeds]))
    trained = jax.jit(jax.vmap(train))(keys, batches)
    per_seed = [jax.tree.map(lambda x, i=i: x[i], trained) for i in range(len(seeds))]
    return np.array([accuracy(p, data.x_test, data.y_test) for p in per_seed])


@claim(
    CLAIMS,
    name="adax/digits-vs-adam",
    post=POST,
    statement="AdaX and AdaXW train a real model at least as well as Adam. Protocol: a "
    "(64, 128, 10) ReLU MLP on scikit-learn digits, minibatches of 64, 600 steps (about 28 "
    "epochs), the same 3 seeds for all; each optimizer at its published default (Adam lr "
    "1e-3; AdaX lr 1.5e-3 with an L2 decay of 5e-4 added to the gradient, and AdaXW lr 5e-3 "
    "with decoupled weight decay 5e-2, from the authors' code), "
    "no tuning.",
    expected="mean test accuracy of AdaX and of AdaXW >= Adam's - 1 point",
)
def digits_vs_adam() -> Measurement:
    """Each optimizer at its published default: these are sensible on this task, so none is tuned.

    A seed fixes the initialisation and the batch order, identical across optimizers; the
    train/test split is fixed (seed 0). The loss is the batch-mean cross-entropy.
    """
    data = load_digits_split(seed=0)
    seeds, steps, batch = (0, 1, 2), 600, 64
    txs = {
        "Adam": optax.adam(1e-3),
        # The authors' AdaX adds 5e-4 * theta to the gradient before the moments.
        "AdaX": optax.chain(
            optax.add_decayed_weights(5e-4),
            scale_by_adax(eps=0.0),
            optax.scale_by_learning_rate(1.5e-3),
        ),
        "AdaXW": adaxw(5e-3, weight_decay=5e-2),
    }
    acc = {name: _digits_accuracy(tx, data, seeds, steps, batch) for name, tx in txs.items()}
    mean = {name: float(a.mean()) for name, a in acc.items()}
    ok = min(mean["AdaX"], mean["AdaXW"]) >= mean["Adam"] - 0.01
    text = ", ".join(
        f"{name} {100 * m:.2f}% (seeds {', '.join(f'{100 * a:.1f}' for a in acc[name])})"
        for name, m in mean.items()
    )
    return Measurement(f"test accuracy, mean of {len(seeds)} seeds: {text}", ok=ok)
