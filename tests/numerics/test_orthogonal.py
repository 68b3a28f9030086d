"""orthogonal_map."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from jax.test_util import check_grads

from jaxtricks.numerics import orthogonal_map

KINDS = ["householder", "rotation", "symmetric"]
DETERMINANT = {"householder": lambda d: -1.0, "rotation": lambda d: 1.0}
DETERMINANT["symmetric"] = lambda d: (-1.0) ** (d + 1)


def _np_map(a, b, kind):
    """The post's three formulas, float64, on normalised inputs."""
    a = np.asarray(a, np.float64) / np.linalg.norm(a)
    b = np.asarray(b, np.float64) / np.linalg.norm(b)
    eye, s = np.eye(a.size), a + b
    if kind == "householder":
        v = a - b
        return eye - 2 * np.outer(v, v) / np.dot(v, v)
    if kind == "rotation":
        return eye + 2 * np.outer(b, a) - np.outer(s, s) / (1 + a @ b)
    return np.outer(s, s) / (1 + a @ b) - eye


def _random_pair(seed, d=5):
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal(d), rng.standard_normal(d)
    return a / np.linalg.norm(a), b / np.linalg.norm(b)


@pytest.mark.parametrize("kind", KINDS)
def test_matches_the_post_formulas(x64, kind):
    for seed in range(5):
        a, b = _random_pair(seed)
        np.testing.assert_allclose(orthogonal_map(a, b, kind=kind), _np_map(a, b, kind), atol=1e-13)


nonzero_vectors = arrays(np.float32, (6,), elements=st.floats(-4, 4, width=32)).filter(
    lambda v: np.linalg.norm(v) > 0.1
)


_jitted_map = jax.jit(orthogonal_map, static_argnames="kind")


@pytest.mark.parametrize("kind", KINDS)
@given(a=nonzero_vectors, b=nonzero_vectors)
def test_maps_a_to_b_orthogonally_with_the_stated_determinant(kind, a, b):
    t = np.asarray(_jitted_map(a, b, kind=kind), np.float64)
    a_hat, b_hat = a / np.linalg.norm(a), b / np.linalg.norm(b)
    # Near-degenerate pairs are accurate to ~sqrt(eps), elsewhere to a few eps.
    np.testing.assert_allclose(t @ a_hat, b_hat, atol=1e-3)
    np.testing.assert_allclose(t.T @ t, np.eye(6), atol=1e-5)
    np.testing.assert_allclose(np.linalg.det(t), DETERMINANT[kind](6), atol=1e-4)
    if kind != "rotation":  # the two reflections are symmetric and so also map b to a
        np.testing.assert_allclose(t, t.T, atol=1e-6)


@pytest.mark.parametrize("d", [2, 3, 8])
def test_symmetric_determinant_depends_on_the_dimension(d):
    a, b = _random_pair(d, d)
    assert np.isclose(np.linalg.det(orthogonal_map(a, b, kind="symmetric")), (-1.0) ** (d + 1))


def test_inputs_are_normalised():
    a, b = _random_pair(10)
    for kind in KINDS:
        np.testing.assert_allclose(
            orthogonal_map(3 * a, 0.5 * b, kind=kind), orthogonal_map(a, b, kind=kind), atol=1e-6
        )


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_degenerate_pairs(kind, sign):
    a, _ = _random_pair(11)
    b = sign * a
    t = np.asarray(orthogonal_map(a, b, kind=kind), np.float64)
    np.testing.assert_allclose(t @ a, b, atol=1e-6)
    np.testing.assert_allclose(t.T @ t, np.eye(5), atol=1e-6)
    np.testing.assert_allclose(np.linalg.det(t), DETERMINANT[kind](5), atol=1e-5)
    if kind == "rotation" and sign < 0:  # a rotation by pi in a plane containing a
        eigenvalues = np.sort(np.linalg.eigvalsh((t + t.T) / 2))
        np.testing.assert_allclose(eigenvalues, [-1, -1, 1, 1, 1], atol=1e-6)
    if kind == "rotation" and sign > 0:
        np.testing.assert_allclose(t, np.eye(5), atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_near_degenerate_pairs_stay_accurate(kind):
    a, noise = _random_pair(12)
    for scale in (1e-7, 1e-5, 1e-3):
        target = a if kind == "householder" else -a
        b = target + scale * noise
        b = b / np.linalg.norm(b)
        t = np.asarray(orthogonal_map(a, b, kind=kind), np.float64)
        np.testing.assert_allclose(t @ a, b, atol=1e-3)  # ~sqrt(float32 eps)
        np.testing.assert_allclose(t.T @ t, np.eye(5), atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_traced_zero_input_gives_a_finite_orthogonal_matrix(kind):
    # A concrete zero vector is an error; a traced one cannot be checked (documented).
    fn = jax.jit(lambda a, b: orthogonal_map(a, b, kind=kind))
    for a, b in [(jnp.zeros(4), jnp.array([0.0, 1.0, 0.0, 0.0])), (jnp.zeros(4), jnp.zeros(4))]:
        t = np.asarray(fn(a, b), np.float64)
        np.testing.assert_allclose(t.T @ t, np.eye(4), atol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_dtypes(dtype):
    a, b = _random_pair(13)
    t = orthogonal_map(jnp.asarray(a, dtype), jnp.asarray(b, dtype), kind="rotation")
    assert t.dtype == dtype
    np.testing.assert_allclose(np.float32(t), _np_map(a, b, "rotation"), atol=3e-2)


def test_jit_equals_eager_and_vmap_equals_loop():
    pairs = [_random_pair(s) for s in range(4)]
    a = np.stack([p[0] for p in pairs]).astype(np.float32)
    b = np.stack([p[1] for p in pairs]).astype(np.float32)
    loop = np.stack([orthogonal_map(a[i], b[i], kind="rotation") for i in range(4)])
    np.testing.assert_allclose(
        jax.vmap(lambda x, y: orthogonal_map(x, y, kind="rotation"))(a, b), loop, atol=1e-6
    )
    jitted = jax.jit(orthogonal_map, static_argnames="kind")(a[0], b[0], kind="rotation")
    np.testing.assert_allclose(jitted, loop[0], atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_differentiable(x64, kind):
    a, b = _random_pair(14, 4)
    check_grads(lambda a, b: orthogonal_map(a, b, kind=kind), (a, b), order=1)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("scale", [1e-30, 1e30])
def test_any_finite_scale_and_infinite_entries(kind, scale):
    # Normalised by the scaled safe norm: squares of 1e-30 and 1e30 leave float32.
    a, b = _random_pair(15, 4)
    t = orthogonal_map(jnp.asarray(a * scale, jnp.float32), jnp.asarray(b, jnp.float32), kind=kind)
    np.testing.assert_allclose(t, _np_map(a, b, kind), atol=2e-6)
    # Infinite entries: the limit of the normalisation, the direction of their signs.
    inf = np.array([np.inf, 1.0, -np.inf, 2.0], np.float32)
    t = orthogonal_map(jnp.asarray(inf), jnp.asarray(b, jnp.float32), kind=kind)
    np.testing.assert_allclose(t, _np_map(np.array([1.0, 0.0, -1.0, 0.0]), b, kind), atol=2e-6)


def test_errors():
    a = jnp.ones(3)
    with pytest.raises(ValueError, match="a must be nonzero"):
        orthogonal_map(jnp.zeros(3), a)
    with pytest.raises(ValueError, match="b must be nonzero"):
        orthogonal_map(a, jnp.zeros(3))
    with pytest.raises(ValueError, match="kind must be one of"):
        orthogonal_map(a, a, kind="givens")
    with pytest.raises(ValueError, match="1-D of the same length"):
        orthogonal_map(a, jnp.ones(4))
    with pytest.raises(ValueError, match="1-D of the same length"):
        orthogonal_map(jnp.ones((2, 3)), jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="D must be >= 2, got D = 1"):
        orthogonal_map(jnp.ones(1), jnp.ones(1))
    with pytest.raises(TypeError, match="a must have a floating dtype"):
        orthogonal_map(jnp.arange(3), a)


def test_claims_hold():
    from jaxtricks.reproduce import post_8453_orthogonal as post

    for c in post.CLAIMS:
        m = c.fn()
        assert m.ok, (c.name, m.measured)
