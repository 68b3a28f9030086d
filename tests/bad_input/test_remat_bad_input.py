"""Bad inputs of jaxtricks.remat: named errors, and the right answers on degenerate inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from probes import probe, raises

from jaxtricks.remat import (
    MemoryReport,
    Residual,
    checkpoint,
    max_batch_size,
    memory_report,
    policy,
    saved_residuals,
)

CKPT, POLICY, MEM = "remat.checkpoint", "remat.policy", "remat.memory_report"
SEARCH, SAVED = "remat.max_batch_size", "remat.saved_residuals"
REPORT, RESIDUAL = "remat.MemoryReport", "remat.Residual"
ROW = jax.ShapeDtypeStruct((4,), jnp.float32)


def _double(a):
    return a * 2.0


def _make(batch):
    return _double, (jax.ShapeDtypeStruct((batch, 256), jnp.float32),)


@probe("error", CKPT, MEM, SAVED)
@pytest.mark.parametrize("fn", [3, None, "full", jnp.ones(2)])
def test_fn_must_be_callable(fn):
    with raises(TypeError, "fn", "callable"):
        checkpoint(fn, "full")
    with raises(TypeError, "fn", "callable"):
        memory_report(fn, ROW)
    with raises(TypeError, "fn", "callable"):
        saved_residuals(fn, jnp.ones(4))


@probe("error", POLICY, CKPT)
@pytest.mark.parametrize(
    "spec,exc,fragments",
    [
        (
            "everything",
            ValueError,
            ("'everything'", "'none'", "'full'", "'dots'", "'save:<names>'"),
        ),
        ("Full", ValueError, ("'Full'", "'full'")),
        ("", ValueError, ("''",)),
        ("save:", ValueError, ("'save:'",)),
        ("save:a,", ValueError, ("'save:a,'",)),
        ((), ValueError, ("()",)),
        (("a", 3), TypeError, ("3",)),
        (("a", ""), ValueError, ("('a', '')",)),
        (3, TypeError, ("3",)),
        (b"full", TypeError, ("b'full'",)),
        ({"full": 1}, TypeError, ("{'full': 1}",)),
    ],
)
def test_policy_names_are_checked(spec, exc, fragments):
    with raises(exc, "policy", *fragments):
        policy(spec)
    with raises(exc, "policy", *fragments):
        checkpoint(jnp.sin, spec)


@probe("error", CKPT)
@pytest.mark.parametrize("prevent_cse", ["yes", 1, None])
def test_prevent_cse_is_a_bool(prevent_cse):
    with raises(TypeError, "prevent_cse", repr(prevent_cse)):
        checkpoint(jnp.sin, "full", prevent_cse=prevent_cse)


@probe("value", CKPT, POLICY)
@pytest.mark.parametrize("spec", ["none", None, "full", "dots", "dots_no_batch", "save:absent"])
def test_every_policy_keeps_the_exact_gradient(spec):
    # Names no value carries ("absent") save nothing: recomputation, same gradient, d/dx of
    # sum tanh(tanh(x)) = (1 - tanh(tanh x)^2)(1 - tanh(x)^2) in float64.
    f = checkpoint(lambda v: jnp.sum(jnp.tanh(jnp.tanh(v))), spec)
    x = np.linspace(-2.0, 2.0, 5)
    t = np.tanh(x)
    want = (1 - np.tanh(t) ** 2) * (1 - t**2)
    np.testing.assert_allclose(jax.grad(f)(jnp.asarray(x, jnp.float32)), want, rtol=1e-6)
    assert (policy(spec) is None) == (spec in ("none", None))


@probe("error", MEM, SAVED)
@pytest.mark.parametrize(
    "args,fragment",
    [(("abc",), "args[0]"), ((ROW, {"w": object()}), "args[1]['w']")],
)
def test_arguments_must_be_arrays_or_shape_dtype_structs(args, fragment):
    with raises(TypeError, fragment, "ShapeDtypeStruct"):
        memory_report(lambda *a: 0.0, *args)
    with raises(TypeError, fragment, "ShapeDtypeStruct"):
        saved_residuals(lambda *a: 0.0, *args)


@probe("error", MEM)
@pytest.mark.parametrize(
    "donate,exc,fragment",
    [
        (1, ValueError, "1"),
        ((0, 2), ValueError, "(0, 2)"),
        ("0", TypeError, "'0'"),
        (1.0, TypeError, "1.0"),
        (True, TypeError, "True"),
    ],
)
def test_donate_argnums_are_argument_positions(donate, exc, fragment):
    with raises(exc, "donate_argnums", fragment):
        memory_report(_double, ROW, donate_argnums=donate)


@probe("value", MEM, REPORT)
@pytest.mark.parametrize("shape", [(0, 4), (0,), (3, 0, 2)])
def test_zero_size_arguments_report_zero_bytes(shape):
    r = memory_report(_double, jax.ShapeDtypeStruct(shape, jnp.float32))
    assert isinstance(r, MemoryReport)
    assert r.argument_bytes == r.output_bytes == 0
    assert r.total_bytes == r.argument_bytes + r.output_bytes + r.temp_bytes - r.alias_bytes


@probe("value", MEM, REPORT)
def test_donated_argument_counts_once():
    x = jax.ShapeDtypeStruct((256, 256), jnp.float32)
    r = memory_report(_double, x, donate_argnums=-1)
    assert r.alias_bytes == 256 * 256 * 4
    assert r.total_bytes == r.argument_bytes + r.output_bytes + r.temp_bytes - r.alias_bytes


@probe("error", SEARCH)
@pytest.mark.parametrize("name", ["budget_bytes", "multiple_of", "max_batch"])
@pytest.mark.parametrize(
    "value,exc",
    [(0, ValueError), (-1, ValueError), (1.5e6, TypeError), (True, TypeError), ("8", TypeError)],
)
def test_search_sizes_are_positive_ints(name, value, exc):
    kwargs = {"budget_bytes": 10**6, name: value}
    with raises(exc, name, repr(value)):
        max_batch_size(_make, **kwargs)


@probe("error", SEARCH)
@pytest.mark.parametrize(
    "make_fn,exc,fragment",
    [
        (3, TypeError, "callable"),
        (lambda b: None, TypeError, "None"),
        (lambda b: (_double,), TypeError, "(fn, args)"),
        (lambda b: (3, [ROW]), TypeError, "(fn, args)"),
        (lambda b: (_double, ROW), TypeError, "(fn, args)"),
    ],
)
def test_make_fn_must_make_a_call(make_fn, exc, fragment):
    with raises(exc, "make_fn", fragment):
        max_batch_size(make_fn, 10**6)


@probe("value", SEARCH)
def test_search_edge_budgets():
    # 1 KiB in and 1 KiB out per row: batch b totals 2048 b bytes, so nothing fits below
    # 2048; a call whose memory does not grow runs up to max_batch.
    assert max_batch_size(_make, 2047) == 0
    assert max_batch_size(_make, 2048) == 1
    assert max_batch_size(_make, 10**9, multiple_of=8, max_batch=7) == 0
    assert max_batch_size(lambda b: (_double, (ROW,)), 10**6, max_batch=37) == 37


@probe("value", SAVED, RESIDUAL)
@pytest.mark.parametrize("shape", [(3,), (0, 3)])
def test_full_policy_saves_only_the_arguments(shape):
    x = jnp.ones(shape)
    residuals = saved_residuals(checkpoint(lambda v: jnp.sum(jnp.sin(v)), "full"), x)
    assert residuals == [Residual(shape, np.dtype("float32"), "from the argument v")]
