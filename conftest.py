"""Test configuration: strict numerics, and eight CPU devices for sharding tests."""

import os

# Must precede the first import of jax anywhere in the test session.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")

import pytest  # noqa: E402


def pytest_configure(config):
  config.addinivalue_line(
    "markers",
    "standard_promotion: run under jax_numpy_dtype_promotion='standard', for tests that "
    "also execute third-party code (optax, Keras, Flax) that relies on implicit promotion",
  )


@pytest.fixture(autouse=True)
def _dtype_promotion(request):
  if request.node.get_closest_marker("standard_promotion"):
    with jax.numpy_dtype_promotion("standard"):
      yield
  else:
    yield
