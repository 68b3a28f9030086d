"""Claims of "SPACES：“抽取-生成”式长文本摘要（法研杯总结）" (https://kexue.fm/archives/8046).

SPACES replaces the softmax cross-entropy :math:`\\operatorname{logsumexp}(s) - s_t` by a
sparse version whose log-partition runs over the ``k`` largest logits only (``k = 10``):
:math:`\\log \\sum_{i \\in \\Omega_k} e^{s_i} - s_t`, the target logit subtracted whether or not
it is among the top ``k``. Two properties make it a drop-in replacement: it is the ordinary
cross-entropy when ``k`` covers every class, and it is never negative.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxtricks.losses import topk_softmax_cross_entropy
from jaxtricks.reproduce._registry import Claim, Measurement, claim

CLAIMS: list[Claim] = []
POST = "8046"


def _post_formula(logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """The post's table, in float64: logsumexp of the k largest logits minus the target's."""
    s = logits.astype(np.float64)
    top = -np.sort(-s, axis=-1)[..., :k]
    m = top.max(axis=-1, keepdims=True)
    lse = m[..., 0] + np.log(np.exp(top - m).sum(axis=-1))
    return lse - np.take_along_axis(s, labels[..., None], axis=-1)[..., 0]


@claim(
    CLAIMS,
    name="topk/equals-ce-when-k-covers",
    post=POST,
    statement="The sparse (top-k) softmax cross-entropy, log sum over the top k of e^s minus "
    "the target logit, equals the softmax cross-entropy when k covers all classes, and is "
    "non-negative for every k.",
    expected="default = the post's formula (float64 NumPy) within 1e-5 relative for k = 10 "
    "(float32, 256 x 50 logits of scale 5, most targets outside the top 10); max |topk CE(k = "
    "K) - optax CE| <= 1e-5; min loss >= 0 over k in {1, 2, 10, 49, 50}, the post's formula "
    "and the include_target=True variant, logit scales 1 to 1e4",
)
def equals_ce_when_k_covers() -> Measurement:
    rng = np.random.default_rng(0)
    batch, classes = 256, 50
    logits = (5.0 * rng.standard_normal((batch, classes))).astype(np.float32)
    labels = rng.integers(0, classes, batch)
    fn = jax.jit(topk_softmax_cross_entropy, static_argnums=2)
    sparse = np.asarray(fn(logits, labels, 10), np.float64)
    post = _post_formula(logits, labels, 10)
    post_err = float(np.max(np.abs(sparse - post) / np.maximum(np.abs(post), 1.0)))
    ours = fn(logits, labels, classes)
    ref = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    diff = float(np.max(np.abs(np.asarray(ours) - np.asarray(ref))))

    ks = (1, 2, 10, classes - 1, classes)

    @jax.jit
    def lowest_loss(z: jax.Array) -> jax.Array:  # one compilation for every setting
        return jnp.min(
            jnp.stack(
                [
                    jnp.min(topk_softmax_cross_entropy(z, labels, k, include_target=inc))
                    for k in ks
                    for inc in (False, True)
                ]
            )
        )

    scales = np.array([1.0, 30.0, 1e4], np.float32)[:, None, None]
    z = (scales * rng.standard_normal((3, batch, classes))).astype(np.float32)
    lowest = float(jnp.min(jax.vmap(lowest_loss)(z)))
    return Measurement(
        f"max rel. error vs the post's formula (k = 10): {post_err:.1e}; max |diff| vs optax "
        f"at k = K: {diff:.1e}; min loss over all settings: {lowest:.3g}",
        ok=post_err <= 1e-5 and diff <= 1e-5 and lowest >= 0.0,
    )
