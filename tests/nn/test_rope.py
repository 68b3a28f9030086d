"""Tests of apply_rope, apply_rope_2d and rope_permutation against explicit rotation matrices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax.test_util import check_grads
from references import rope64

from jaxtricks.nn import apply_rope, apply_rope_2d, rope_permutation

B, T, N, H = 2, 5, 3, 8


def _pairs(h: int, layout: str) -> list[tuple[int, int]]:
    if layout == "interleaved":
        return [(2 * i, 2 * i + 1) for i in range(h // 2)]
    return [(i, i + h // 2) for i in range(h // 2)]


def _rotation(m: float, h: int, layout: str, base: float = 10000.0) -> np.ndarray:
    """The (h, h) float64 RoPE matrix at position m, pair i rotated by m * base^(-2i/h)."""
    r = np.zeros((h, h))
    for i, (a, b) in enumerate(_pairs(h, layout)):
        t = m * base ** (-2.0 * i / h)
        r[a, a], r[a, b], r[b, a], r[b, b] = np.cos(t), -np.sin(t), np.sin(t), np.cos(t)
    return r


def _rotation_2d(px: float, py: float, h: int, layout: str) -> np.ndarray:
    """blockdiag(R_x, R_y) with the h/2-dimensional rotary of each coordinate."""
    r = np.zeros((h, h))
    r[: h // 2, : h // 2] = _rotation(px, h // 2, layout)
    r[h // 2 :, h // 2 :] = _rotation(py, h // 2, layout)
    return r


def _reference(x: np.ndarray, positions: np.ndarray, layout: str) -> np.ndarray:
    """x (B, T, N, H), positions (B, T): every token multiplied by its rotation matrix."""
    x = np.asarray(x, np.float64)
    out = np.empty_like(x)
    for b in range(x.shape[0]):
        for t in range(x.shape[1]):
            out[b, t] = x[b, t] @ _rotation(float(positions[b, t]), x.shape[-1], layout).T
    return out


def _reference_2d(x: np.ndarray, positions: np.ndarray, layout: str) -> np.ndarray:
    x = np.asarray(x, np.float64)
    out = np.empty_like(x)
    for t in range(x.shape[0]):
        r = _rotation_2d(*map(float, positions[t]), x.shape[-1], layout)
        out[t] = x[t] @ r.T
    return out


def _x(shape=(B, T, N, H), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape)


LAYOUTS = ["interleaved", "half"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_matches_rotation_matrices(x64, layout):
    x = _x()
    pos = np.array([[0, 1, 2, 7, 300], [5, -3, 1000, 2, 2]])
    got = apply_rope(jnp.asarray(x), jnp.asarray(pos), layout=layout)
    np.testing.assert_allclose(np.asarray(got), _reference(x, pos, layout), atol=1e-12)
    # Shared positions (T,) broadcast over the batch; float offsets as when decoding.
    got = apply_rope(jnp.asarray(x), jnp.arange(T) + 0.5, layout=layout)
    want = _reference(x, np.broadcast_to(np.arange(T) + 0.5, (B, T)), layout)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-12)


def test_equinox_convention_is_half(x64):
    # equinox.nn.RotaryPositionalEmbedding (equinox/nn/_embedding.py) on x (T, H):
    # x * tile(cos(t * f), 2) + rotate_half(x) * tile(sin(t * f), 2), f = base^(-arange(0,H,2)/H),
    # t = 0..T-1, rotate_half(x) = [-x[H/2:], x[:H/2]] -- the "half" layout.
    x = _x((T, H))
    angles = np.arange(T)[:, None] * 10000.0 ** (-np.arange(0, H, 2) / H)
    rotated = np.concatenate([-x[:, H // 2 :], x[:, : H // 2]], axis=-1)
    want = x * np.tile(np.cos(angles), 2) + rotated * np.tile(np.sin(angles), 2)
    got = apply_rope(jnp.asarray(x)[None, :, None], jnp.arange(T), layout="half")[0, :, 0]
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-12)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_2d_matches_block_rotations(x64, layout):
    x = _x((T, N, H))
    pos = np.array([[0, 0], [1, 3], [4, 2], [15, 15], [-2, 7]])
    got = apply_rope_2d(jnp.asarray(x), jnp.asarray(pos), layout=layout)
    np.testing.assert_allclose(np.asarray(got), _reference_2d(x, pos, layout), atol=1e-12)


def _score(q, k, m, n, layout):
    return jnp.sum(apply_rope(q, m, layout=layout) * apply_rope(k, n, layout=layout))


@pytest.mark.parametrize("layout", LAYOUTS)
@given(m=st.integers(-2000, 2000), n=st.integers(-2000, 2000), shift=st.integers(-5000, 5000))
def test_score_depends_only_on_offset(x64, layout, m, n, shift):
    q, k = (jnp.asarray(_x((1, 1, H), s)) for s in (1, 2))
    m, n = jnp.array([m], jnp.float64), jnp.array([n], jnp.float64)
    a = _score(q, k, m, n, layout)
    b = _score(q, k, m + shift, n + shift, layout)
    np.testing.assert_allclose(float(a), float(b), atol=1e-9)


@given(
    p1=st.tuples(st.integers(-300, 300), st.integers(-300, 300)),
    p2=st.tuples(st.integers(-300, 300), st.integers(-300, 300)),
    shift=st.tuples(st.integers(-1000, 1000), st.integers(-1000, 1000)),
)
def test_2d_score_depends_only_on_offsets(x64, p1, p2, shift):
    q, k = (jnp.asarray(_x((1, 1, H), s)) for s in (3, 4))
    p1, p2, s = (jnp.array([v], jnp.float64) for v in (p1, p2, shift))
    a = jnp.sum(apply_rope_2d(q, p1) * apply_rope_2d(k, p2))
    b = jnp.sum(apply_rope_2d(q, p1 + s) * apply_rope_2d(k, p2 + s))
    np.testing.assert_allclose(float(a), float(b), atol=1e-9)


@pytest.mark.parametrize("layout", LAYOUTS)
@given(p1=st.integers(-500, 500), p2=st.integers(-500, 500))
def test_rotations_compose_and_are_orthogonal(x64, layout, p1, p2):
    # Rotation matrices read off the function: columns are the images of the unit vectors.
    eye = jnp.eye(H, dtype=jnp.float64)[:, None, :]  # (T=H, N=1, H): H unit vectors

    def matrix(p):
        return np.asarray(apply_rope(eye, jnp.full((H,), p, jnp.float64), layout=layout))[:, 0].T

    r1, r2, r12 = matrix(p1), matrix(p2), matrix(p2 - p1)
    np.testing.assert_allclose(r1.T @ r2, r12, atol=1e-10)
    np.testing.assert_allclose(r1.T @ r1, np.eye(H), atol=1e-12)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_norms_preserved(x64, layout):
    x = jnp.asarray(_x())
    pos = jnp.asarray(np.random.default_rng(5).integers(-(10**5), 10**5, size=(B, T)))
    got = apply_rope(x, pos, layout=layout)
    np.testing.assert_allclose(jnp.linalg.norm(got, axis=-1), jnp.linalg.norm(x, axis=-1))
    got = apply_rope_2d(x, jnp.stack([pos, -pos], -1), layout=layout)
    np.testing.assert_allclose(jnp.linalg.norm(got, axis=-1), jnp.linalg.norm(x, axis=-1))


def test_layouts_agree_under_permutation(x64):
    perm = rope_permutation(H)
    assert sorted(perm.tolist()) == list(range(H))
    for pair, (a, b) in zip(_pairs(H, "half"), zip(perm[: H // 2], perm[H // 2 :])):
        # Half-layout pair i holds interleaved pair i: features 2i, 2i+1.
        assert (perm[pair[0]], perm[pair[1]]) == (a, b) and b == a + 1
    x = jnp.asarray(_x())
    pos = jnp.arange(T) * 37
    half = apply_rope(x[..., perm], pos, layout="half")
    inter = apply_rope(x, pos, layout="interleaved")
    np.testing.assert_allclose(half, inter[..., perm], atol=1e-12)
    np.testing.assert_allclose(half[..., np.argsort(perm)], inter, atol=1e-12)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_jit_equals_eager_and_vmap_equals_loop(layout):
    x = jnp.asarray(_x(), jnp.float32)
    pos = jnp.asarray([[0, 1, 2, 3, 4], [9, 8, 7, 6, 5]])
    eager = apply_rope(x, pos, layout=layout)
    jitted = jax.jit(lambda a, p: apply_rope(a, p, layout=layout))(x, pos)
    np.testing.assert_allclose(jitted, eager, rtol=1e-6, atol=1e-6)
    mapped = jax.vmap(lambda a, p: apply_rope(a, p, layout=layout))(x, pos)
    loop = jnp.stack([apply_rope(x[b], pos[b], layout=layout) for b in range(B)])
    np.testing.assert_allclose(mapped, loop, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(mapped, eager, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_dtype_kept(dtype):
    x = jnp.asarray(_x(), dtype)
    pos = jnp.arange(T) * 4096
    out = apply_rope(x, pos)
    assert out.dtype == dtype
    assert apply_rope_2d(x, jnp.stack([pos, pos], -1), layout="half").dtype == dtype
    want = _reference(
        np.asarray(x, np.float64), np.broadcast_to(np.asarray(pos), (B, T)), "interleaved"
    )
    _assert_close_to_reference(out, want)


# ---------------------------------------------------------------- long contexts (float32)
LONG_H = 128


def _assert_close_to_reference(got, want):
    """float32 within 1e-5 absolute; bf16/f16 within one rounding of the exact value."""
    rel = 0.0 if got.dtype == jnp.float32 else 2.0**-8  # bf16: 8 significant bits
    got = np.asarray(got.astype(jnp.float32), np.float64)
    bound = 1e-5 + rel * np.abs(want)
    err = np.abs(got - want)
    assert np.all(err <= bound), f"max error {err.max():.2e} (bound {bound.max():.2e})"


def _fast_reference(x, positions, layout, base=10000.0):
    """Vectorised float64 RoPE, x (..., T, N, H), positions (T,): exact to ~|p| 2^-53 rad."""
    h = np.shape(x)[-1]
    angles = np.asarray(positions, np.float64)[:, None] * base ** (-np.arange(0, h, 2) / h)
    return rope64(x, angles, layout)


_jit_rope = jax.jit(apply_rope, static_argnames=("layout", "rotary_dim"))


@pytest.mark.parametrize("start", [10**6 - 64, 2**24 - 64])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("pos_dtype", [jnp.int32, jnp.float32])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_long_context_matches_float64(start, layout, pos_dtype, dtype):
    # float32 angles p * theta are off by ~p 2^-24 rad (a full turn near 2^24): the angles
    # are reduced exactly instead, so float32 stays within 1e-5 of float64 NumPy.
    pos = np.arange(start, start + 64)
    x = jnp.asarray(_x((1, 64, 2, LONG_H)), dtype)
    got = _jit_rope(x, jnp.asarray(pos, pos_dtype), layout=layout)
    assert got.dtype == dtype
    _assert_close_to_reference(got, _fast_reference(np.asarray(x, np.float64), pos, layout))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_long_context_2d_and_fractional_positions(layout):
    rng = np.random.default_rng(3)
    x = jnp.asarray(_x((1, 16, 1, LONG_H)), jnp.float32)
    grid = rng.integers(2**24 - 2**20, 2**24, size=(16, 2))
    got = jax.jit(apply_rope_2d, static_argnames="layout")(x, jnp.asarray(grid), layout=layout)
    want = _reference_2d(np.asarray(x)[0], grid, layout)
    _assert_close_to_reference(got[0], want)
    # Interpolated positions (float32, exact as given): quarter steps near 10^6.
    pos = (10**6 + 0.25 * np.arange(16)).astype(np.float32)
    got = _jit_rope(x, jnp.asarray(pos), layout=layout)
    _assert_close_to_reference(got, _fast_reference(np.asarray(x), pos.astype(np.float64), layout))


def _exact_angles(positions, h, base=10000.0):
    """(p theta_i) mod 2 pi from exact rationals (theta_i the float64 frequency)."""
    from fractions import Fraction

    two_pi = 2 * Fraction("3.14159265358979323846264338327950288419716939937510")
    theta = base ** (-np.arange(0, h, 2) / h)
    return np.array(
        [[float(Fraction(int(p)) * Fraction(float(t)) % two_pi) for t in theta] for p in positions]
    )


def test_int32_extremes_and_int64_positions():
    # Beyond float64's own accuracy for p theta (2^31 * 2^-53 rad): an exact reference.
    pos = np.array([2**31 - 1, 2**31 - 2, -(2**31), -(2**31) + 5, 1, -1, 0, 2**30 + 7])
    angles = _exact_angles(pos, 16)
    x = _x((8, 1, 16))
    want = np.empty_like(x)
    c, s = np.cos(angles)[:, None], np.sin(angles)[:, None]
    want[..., 0::2] = x[..., 0::2] * c - x[..., 1::2] * s
    want[..., 1::2] = x[..., 1::2] * c + x[..., 0::2] * s
    got = _jit_rope(jnp.asarray(x, jnp.float32), jnp.asarray(pos, jnp.int32))
    _assert_close_to_reference(got, want)
    with jax.enable_x64(True):  # int64 positions with float32 x: two 31-bit digits
        big = np.array([2**40 + 3, -(2**45) - 7, 2**31, 2**32 + 1, 12345, -1, 0, 9])
        angles = _exact_angles(big, 16)
        c, s = np.cos(angles)[:, None], np.sin(angles)[:, None]
        want[..., 0::2] = x[..., 0::2] * c - x[..., 1::2] * s
        want[..., 1::2] = x[..., 1::2] * c + x[..., 0::2] * s
        got = apply_rope(jnp.asarray(x, jnp.float32), jnp.asarray(big, jnp.int64))
        assert got.dtype == jnp.float32
        _assert_close_to_reference(got, want)


def test_exact_angles_under_vmap_and_grad():
    x = jnp.asarray(_x((3, 4, 2, 8)), jnp.float32)
    ct = jnp.asarray(_x((3, 4, 2, 8), 9), jnp.float32)
    pos = jnp.asarray([[10**6, 10**6 + 1, 2**24 - 1, 7]] * 3) + jnp.arange(3)[:, None]

    @jax.jit
    def run(x, pos):
        mapped = jax.vmap(apply_rope)(x, pos)
        # The rotation is linear in x: its gradient is the transposed rotation.
        grad = jax.grad(lambda a: jnp.sum(apply_rope(a, pos) * ct))(x)
        return mapped, apply_rope(x, pos), grad

    mapped, direct, grad = run(x, pos)
    np.testing.assert_allclose(mapped, direct, rtol=0, atol=1e-6)
    want = _reference(np.asarray(ct, np.float64), -np.asarray(pos), "interleaved")
    np.testing.assert_allclose(np.asarray(grad, np.float64), want, atol=1e-5)


# ---------------------------------------------------------------- partial rotary
def _hf_partial_rotary(x, positions, rotary_dim, layout, base=10000.0):
    """Hugging Face's partial rotary (GPT-NeoX, Phi) in float64 NumPy, x (T, N, H).

    ``inv_freq = 1 / base^(arange(0, R, 2) / R)``; ``emb = cat(freqs, freqs)``; the first
    ``R`` features become ``x_rot * cos + rotate_half(x_rot) * sin`` (``"half"``: halves of
    ``R/2``; ``"interleaved"``: GPT-J's pairs), the rest pass through.
    """
    r = rotary_dim
    inv_freq = 1.0 / base ** (np.arange(0, r, 2) / r)
    freqs = np.asarray(positions, np.float64)[:, None] * inv_freq
    x_rot, x_pass = x[..., :r], x[..., r:]
    if layout == "half":
        emb = np.concatenate([freqs, freqs], axis=-1)[:, None]
        rotated = np.concatenate([-x_rot[..., r // 2 :], x_rot[..., : r // 2]], axis=-1)
    else:
        emb = np.repeat(freqs, 2, axis=-1)[:, None]
        rotated = np.stack([-x_rot[..., 1::2], x_rot[..., 0::2]], axis=-1).reshape(x_rot.shape)
    return np.concatenate([x_rot * np.cos(emb) + rotated * np.sin(emb), x_pass], axis=-1)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_partial_rotary_matches_hugging_face_convention(x64, layout):
    x = _x((T, N, 10))  # H = 10: an odd number of pairs, only a prefix can rotate
    pos = np.array([0, 3, 17, 250, 999])
    for rotary_dim in (4, 10):
        got = _jit_rope(jnp.asarray(x), jnp.asarray(pos), layout=layout, rotary_dim=rotary_dim)
        want = _hf_partial_rotary(x, pos, rotary_dim, layout)
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-12)
        np.testing.assert_array_equal(np.asarray(got)[..., rotary_dim:], x[..., rotary_dim:])
    # rotary_dim = H is the full rotation.
    full = _jit_rope(jnp.asarray(x), jnp.asarray(pos), layout=layout)
    np.testing.assert_array_equal(full, got)


def test_partial_rotary_matches_transformers_if_installed():
    pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    from transformers.models.gpt_neox import modeling_gpt_neox as neox

    r, h = 4, 10
    x = _x((1, T, N, h))
    pos = np.array([0, 3, 17, 250, 999])
    inv_freq = 1.0 / 10000.0 ** (np.arange(0, r, 2) / r)
    emb = np.concatenate([pos[:, None] * inv_freq] * 2, axis=-1)[None]  # (1, T, R)
    cos, sin = torch.tensor(np.cos(emb)), torch.tensor(np.sin(emb))
    q = torch.tensor(x).transpose(1, 2)  # Hugging Face's layout is (B, N, T, H)
    try:  # recent versions rotate the first cos.shape[-1] features and pass the rest
        q_embed, _ = neox.apply_rotary_pos_emb(q, q, cos, sin)
    except RuntimeError:  # older ones take the rotary part only
        q_rot, _ = neox.apply_rotary_pos_emb(q[..., :r], q[..., :r], cos, sin)
        q_embed = torch.cat([q_rot, q[..., r:]], dim=-1)
    want = q_embed.transpose(1, 2).numpy()
    with jax.enable_x64(True):
        got = apply_rope(jnp.asarray(x), jnp.asarray(pos), layout="half", rotary_dim=r)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-12)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_gradients(x64, layout):
    x = jnp.asarray(_x((1, 3, 2, 4)))
    pos = jnp.array([0.0, 1.5, 7.0])
    # Jitted: check_grads evaluates the function many times; one compile each way.
    check_grads(jax.jit(lambda a, p: apply_rope(a, p, layout=layout)), (x, pos), order=1)
    check_grads(
        jax.jit(lambda a, p: apply_rope_2d(a, p, layout=layout)),
        (x, jnp.stack([pos, 2 * pos], -1)),
        order=1,
    )


def test_errors():
    x = jnp.zeros((B, T, N, H))
    with pytest.raises(ValueError, match="divisible by 2, got 7"):
        apply_rope(jnp.zeros((T, N, 7)), jnp.arange(T))
    with pytest.raises(ValueError, match=r"positions must have shape.*\(2, 5\).*got \(4,\)"):
        apply_rope(x, jnp.arange(4))
    with pytest.raises(ValueError, match=r"got \(3, 5\)"):
        apply_rope(x, jnp.zeros((3, T)))
    with pytest.raises(ValueError, match="layout must be one of"):
        apply_rope(x, jnp.arange(T), layout="neox")
    with pytest.raises(TypeError, match="floating"):
        apply_rope(jnp.zeros((B, T, N, H), jnp.int32), jnp.arange(T))
    with pytest.raises(ValueError, match=r"\(\.\.\., T, N, H\)"):
        apply_rope(jnp.zeros((T, H)), jnp.arange(T))
    with pytest.raises(ValueError, match="divisible by 4, got 6"):
        apply_rope_2d(jnp.zeros((T, N, 6)), jnp.zeros((T, 2)))
    with pytest.raises(ValueError, match=r"\(\.\.\., T\) \+ \(2,\).*got \(5,\)"):
        apply_rope_2d(x, jnp.arange(T))
    with pytest.raises(ValueError, match="head_dim must be divisible by 2, got 5"):
        rope_permutation(5)


def test_claims():
    from jaxtricks.reproduce.post_8265_rope import CLAIMS

    for c in CLAIMS:
        result = c.fn()
        assert result.ok, (c.name, result.measured)
