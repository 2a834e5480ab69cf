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


# Hypothesis profiles. "ci" (the default) is bounded and derandomized, so that CI is
# reproducible; "deep" (HYPOTHESIS_PROFILE=deep) runs 100x the examples, randomized, and
# shrinks a failure to a minimal example. tests/test_fuzz.py scales its example counts
# from the loaded profile's max_examples.
from hypothesis import HealthCheck, Phase, settings  # noqa: E402

settings.register_profile(
  "ci",
  max_examples=10,
  deadline=None,
  derandomize=True,
  # Every example compiles anew, so shrinking would take minutes: report as generated.
  phases=(Phase.explicit, Phase.reuse, Phase.generate),
  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
  print_blob=True,
)
settings.register_profile(
  "deep",
  max_examples=1000,
  deadline=None,
  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
  print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
