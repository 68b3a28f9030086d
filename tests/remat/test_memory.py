"""Tests for jaxtricks.remat memory_report, max_batch_size and saved_residuals."""

import contextlib
import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.ad_checkpoint import checkpoint_name

from jaxtricks.remat import checkpoint, max_batch_size, memory_report, saved_residuals

S = jax.ShapeDtypeStruct


def _step(w, x):
    """One SGD step of a tanh layer: memory grows with the batch (x, activations, grads)."""
    loss = lambda w: jnp.sum(jnp.tanh(x @ w) ** 2)  # noqa: E731
    return w - 0.1 * jax.grad(loss)(w)


def _make(b):
    return _step, (S((32, 32), jnp.float32), S((b, 32), jnp.float32))


def test_memory_report_equals_memory_analysis():
    args = _make(24)[1]
    for donate in ((), (0,)):
        stats = jax.jit(_step, donate_argnums=donate).lower(*args).compile().memory_analysis()
        r = memory_report(_step, *args, donate_argnums=donate)
        assert r.argument_bytes == stats.argument_size_in_bytes == (32 * 32 + 24 * 32) * 4
        assert r.output_bytes == stats.output_size_in_bytes == 32 * 32 * 4
        assert r.temp_bytes == stats.temp_size_in_bytes
        assert r.alias_bytes == stats.alias_size_in_bytes == (32 * 32 * 4 if donate else 0)
        assert r.total_bytes == r.argument_bytes + r.output_bytes + r.temp_bytes - r.alias_bytes


def test_memory_report_same_for_arrays_and_shape_structs():
    w, x = jnp.ones((32, 32)), jnp.ones((8, 32))
    assert memory_report(_step, w, x) == memory_report(
        _step, S(w.shape, w.dtype), S(x.shape, x.dtype)
    )


def _total(make, b):
    fn, args = make(b)
    return memory_report(fn, *args).total_bytes


@pytest.mark.parametrize("multiple_of", [1, 3])
def test_max_batch_size_equals_linear_scan(multiple_of):
    limit = 24
    totals = {b: _total(_make, b) for b in range(1, limit + 1)}
    assert all(totals[b] <= totals[b + 1] for b in range(1, limit))  # the documented assumption
    for budget in (totals[1] - 1, totals[1], totals[7] + 5, totals[13], totals[limit]):
        want = max(
            (b for b in range(multiple_of, limit + 1, multiple_of) if totals[b] <= budget),
            default=0,
        )
        assert max_batch_size(_make, budget, multiple_of=multiple_of, max_batch=limit) == want


def _make_quadratic(b):
    """Memory quadratic in the batch: the line through two totals is not the answer."""
    return (lambda x: x * 2), (S((b * b, 256), jnp.float32),)


def test_max_batch_size_nonlinear_memory_equals_scan():
    totals = {b: _total(_make_quadratic, b) for b in range(1, 31)}
    for budget in (totals[5], totals[23] + 7, totals[30] - 1):
        want = max(b for b in totals if totals[b] <= budget)
        assert max_batch_size(_make_quadratic, budget, max_batch=30) == want


def test_max_batch_size_four_compiles_when_memory_is_affine():
    seen = []

    def make(b):  # arguments and outputs only: exactly affine in b
        seen.append(b)
        return (lambda x: x * 2), (S((b, 64), jnp.float32),)

    budget = 300 * 2 * 64 * 4 + 1
    assert max_batch_size(make, budget) == 300
    assert len(seen) == 4, seen


def test_max_batch_size_stops_at_max_batch():
    assert max_batch_size(_make, 2**40, max_batch=13) == 13
    assert max_batch_size(_make, 2**40, multiple_of=4, max_batch=13) == 12
    assert max_batch_size(_make, 2**40, multiple_of=4, max_batch=3) == 0


@pytest.mark.parametrize(
    "kwargs,match,exc",
    [
        ({"budget_bytes": 0}, "budget_bytes must be a positive int, got 0", ValueError),
        ({"budget_bytes": -5}, "budget_bytes must be a positive int, got -5", ValueError),
        ({"budget_bytes": 1.5e6}, "budget_bytes must be a positive int, got 1500000.0", TypeError),
        (
            {"budget_bytes": 10**6, "multiple_of": 0},
            "multiple_of must be a positive int",
            ValueError,
        ),
        ({"budget_bytes": 10**6, "max_batch": -1}, "max_batch must be a positive int", ValueError),
    ],
)
def test_max_batch_size_bad_input(kwargs, match, exc):
    with pytest.raises(exc, match=match):
        max_batch_size(_make, **kwargs)


def _block(w1, w2, x):
    h = checkpoint_name(jnp.tanh(x @ w1), "hidden")
    return jnp.sum(jnp.sin(h @ w2))


def _printed(fn, *args):
    """The public printer's lines, an independent view of the same residuals."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        jax.ad_checkpoint.print_saved_residuals(fn, *args)
    return buf.getvalue().splitlines()


def test_saved_residuals_per_policy():
    w1, w2, x = jnp.ones((8, 16)), jnp.ones((16, 4)), jnp.ones((3, 8))
    args = (w1, w2, x)
    got = {s: saved_residuals(checkpoint(_block, s), *args) for s in ("none", "full", "dots")}
    got["save"] = saved_residuals(checkpoint(_block, "save:hidden"), *args)
    arg_shapes = [(8, 16), (16, 4), (3, 8)]
    # full: the arguments only.
    assert [r.shape for r in got["full"]] == arg_shapes
    assert all(r.reason.startswith("from the argument") for r in got["full"])
    # dots: the arguments and both matmul outputs, (3, 16) and (3, 4).
    dots = [r for r in got["dots"] if "dot_general" in r.reason]
    assert sorted(r.shape for r in dots) == [(3, 4), (3, 16)]
    assert len(got["dots"]) == 5
    # save:hidden: the arguments and the named (3, 16) value.
    named = [r for r in got["save"] if "named 'hidden'" in r.reason]
    assert [r.shape for r in named] == [(3, 16)] and len(got["save"]) == 4
    # none: more than full; it keeps the elementwise outputs (tanh, cos of the sin).
    assert len(got["none"]) > len(got["full"])
    assert any(r.shape == (3, 16) and "tanh" in r.reason for r in got["none"])
    for spec, residuals in got.items():
        fn = checkpoint(_block, "save:hidden" if spec == "save" else spec)
        lines = _printed(fn, *args)
        assert len(lines) == len(residuals)
        for r, line in zip(residuals, lines):
            assert line.endswith(r.reason)
            assert r.dtype == np.float32
