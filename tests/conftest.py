"""Test configuration: 8 simulated CPU devices, strict rank promotion, an x64 fixture.

The XLA flag must be set before JAX initialises its backends, hence at import time here.
"""

import os

_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FLAG}".strip()

import jax  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")

# JAX compiles on first call: no per-example deadline; few examples over fixed shapes.
settings.register_profile(
    "jaxtricks",
    max_examples=10,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile("jaxtricks")


@pytest.fixture
def x64():
    """Runs the test with 64-bit JAX types enabled (float64 references)."""
    with jax.enable_x64(True):
        yield


def _mesh8(axis_type):
    if jax.device_count() < 8:
        pytest.skip("needs 8 devices (XLA_FLAGS=--xla_force_host_platform_device_count=8)")
    return jax.make_mesh((8,), ("data",), axis_types=(axis_type,))


@pytest.fixture(scope="session")
def mesh8():
    """A 1-D mesh over the 8 simulated CPU devices, axis ``"data"``, automatic (GSPMD) axes."""
    return _mesh8(jax.sharding.AxisType.Auto)


@pytest.fixture(scope="session")
def mesh8_explicit():
    """The same mesh with explicit-sharding axes; use it under ``jax.set_mesh(mesh)``."""
    return _mesh8(jax.sharding.AxisType.Explicit)
